"""Adversarial-budget and learning-rate schedules, with periodic resets (Liu et al. sec. 5).

All schedules are functions of the (fractional) epoch d = epoch + batch / batches_per_epoch.
Periodic adversarial scheduling maps d into its period and rescales it to the whole run,
so the schedule inside each period is the full schedule compressed to that period (Liu et
al. sec. 5: "calculated based on the ratio of the current epoch index to the current
period length"; C.1, Fig. 6).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from .util import BadInput

EPS_SCHEDULES = ("constant", "linear", "cosine")
LR_SCHEDULES = ("constant", "step", "exponential", "cosine")


@dataclass(frozen=True)
class Periods:
    """Reset points (epochs) splitting [0, total) into periods."""

    total: float
    resets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        bounds = (0.0, *self.resets, self.total)
        if any(b <= a for a, b in zip(bounds, bounds[1:])):
            raise BadInput(
                f"period resets {list(self.resets)} must increase strictly inside (0, {self.total})"
            )

    @property
    def bounds(self) -> tuple[float, ...]:
        return (0.0, *self.resets, float(self.total))

    def index(self, d: float) -> int:
        return min(bisect.bisect_right(self.resets, d), len(self.resets))

    def local(self, d: float) -> float:
        """d mapped into its period and rescaled to the whole run's length."""
        if not self.resets:
            return d
        b = self.bounds
        k = self.index(d)
        start, end = b[k], b[k + 1]
        # Rounded to 1e-9 epochs: d - start carries float error (5 + 2/6 - 4 scaled by 3
        # gives 3.9999999999999996), which would move a milestone by one mini-batch.
        return round((d - start) * self.total / (end - start), 9)

    def ends(self) -> list[float]:
        """The epochs at which each period ends (a snapshot is taken there)."""
        return list(self.bounds[1:])


@dataclass(frozen=True)
class EpsSchedule:
    """eq. (5): constant, or cosine/linear warmup from eps_min to eps_max over D epochs,
    clipped to [0, target]; after the warmup the value at d = D is kept."""

    kind: str
    target: float
    eps_min: float = 0.0
    eps_max: float | None = None
    warmup: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in EPS_SCHEDULES:
            raise BadInput(
                f"unknown eps schedule {self.kind!r}; choose one of {', '.join(EPS_SCHEDULES)}"
            )
        if self.kind != "constant" and not self.warmup > 0:
            raise BadInput(f"eps warmup length must be > 0 epochs, got {self.warmup}")

    def __call__(self, d: float) -> float:
        if self.kind == "constant":
            return self.target
        hi = self.target if self.eps_max is None else self.eps_max
        r = min(max(d, 0.0), self.warmup) / self.warmup
        if self.kind == "cosine":
            value = 0.5 * (1 - math.cos(r * math.pi)) * (hi - self.eps_min) + self.eps_min
        else:
            value = (hi - self.eps_min) * r + self.eps_min
        return min(max(value, 0.0), self.target)


@dataclass(frozen=True)
class LrSchedule:
    """constant; step (times gamma at each milestone); exponential (geometric from lr
    to lr_final between two epochs A, B, the VGG schedule of C.1); cosine (annealing from
    lr to lr_final, default 0, between A and B: the cycle of snapshot ensembles, Liu et
    al.'s [24]); an optional linear warmup from 0 over the first `warmup` epochs multiplies
    any of them (C.2.3)."""

    kind: str
    lr: float
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    lr_final: float | None = None
    decay_window: tuple[float, float] | None = None
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LR_SCHEDULES:
            raise BadInput(
                f"unknown LR schedule {self.kind!r}; choose one of {', '.join(LR_SCHEDULES)}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInput(f"learning rate must be a finite number > 0, got {self.lr}")
        if self.kind in ("exponential", "cosine"):
            if self.decay_window is None or (self.kind == "exponential" and self.lr_final is None):
                needs = " and {arg:lr_final}" if self.kind == "exponential" else ""
                raise BadInput(
                    f"the {self.kind} LR schedule needs {{arg}} A,B{needs}",
                    argument="lr_decay_epochs",
                )
            a, b = self.decay_window
            if not b > a:
                raise BadInput(
                    f"{{arg}} {a},{b}: the end must come after the start",
                    argument="lr_decay_epochs",
                )
            final = self.final
            if not (math.isfinite(final) and (final > 0 or (self.kind == "cosine" and final == 0))):
                raise BadInput(
                    f"{{arg}} must be > 0 (>= 0 for the cosine schedule), got {final}",
                    argument="lr_final",
                )
        if list(self.milestones) != sorted(self.milestones):
            raise BadInput(f"LR milestones {list(self.milestones)} must be increasing")

    @property
    def final(self) -> float:
        """The rate the exponential or cosine decay ends at."""
        return 0.0 if self.lr_final is None else float(self.lr_final)

    def __call__(self, d: float) -> float:
        if self.kind == "step":
            value = self.lr * self.gamma ** bisect.bisect_right(self.milestones, d)
        elif self.kind in ("exponential", "cosine"):
            a, b = self.decay_window  # type: ignore[misc]
            r = min(max((d - a) / (b - a), 0.0), 1.0)
            if self.kind == "exponential":
                value = self.lr * (self.final / self.lr) ** r
            else:
                value = self.final + (self.lr - self.final) * 0.5 * (1 + math.cos(math.pi * r))
        else:
            value = self.lr
        if self.warmup > 0 and d < self.warmup:
            value *= d / self.warmup
        return value


@dataclass(frozen=True)
class Schedule:
    """eps and LR as functions of the epoch, with optional periodic resets of both."""

    eps: EpsSchedule
    lr: LrSchedule
    periods: Periods

    def local(self, d: float) -> float:
        return self.periods.local(d)

    def eps_at(self, d: float) -> float:
        return self.eps(self.local(d))

    def lr_at(self, d: float) -> float:
        return self.lr(self.local(d))

    def changes(self, total: float, samples: int = 1001) -> tuple[bool, bool]:
        """(whether the LR decays, whether eps changes) over a run of `total` epochs: what
        a periodic reset would restart. The LR decays when it ends a run below its peak."""
        grid = [total * k / samples for k in range(samples)]
        lrs = [self.lr(d) for d in grid]
        return lrs[-1] < max(lrs), len({self.eps(d) for d in grid}) > 1
