"""The empirical gradient-Lipschitz profile of the adversarial loss (Liu et al. Prop. 2;
Kanai et al. Theorems 1-2, Lemmas 4-5).

    lipschitz(r) = ||grad L_eps(theta + r u) - grad L_eps(theta)|| / r

for unit directions u and log-spaced radii r, with PGD regenerated at theta + r u, for the
clean loss (the reference: it tends to ||H u|| as r -> 0 for a smooth network), the L-inf
adversarial loss and the L2 adversarial loss at a matched budget. Prop. 2 bounds the
adversarial profile by C_thetatheta + 2 eps C_thetax / r: a profile that grows as r
shrinks is that term made visible; Kanai et al. predict L-inf grows more than L2.

Directions: `random` (seeded Gaussians of unit norm) or `eigen` (the top Hessian
eigenvectors of L_eps at the L-inf budget, or of the clean loss when eps = 0), one u per
direction; mean and std (ddof = 1) over the directions. Each direction's attacks share
one random start at theta and at every radius (common random numbers).

Matched L2 budget (`match`):
- `volume` (default): the L2 ball with the volume of the L-inf ball of radius eps in
  d = C*H*W dimensions, eps_2 = 2 eps Gamma(d/2 + 1)^(1/d) / sqrt(pi) (about
  eps sqrt(2d / (pi e)) for large d);
- `sqrt-d`: eps_2 = eps sqrt(d), the L2 ball through the corners of the L-inf ball;
- `same`: eps_2 = eps, as in Kanai et al.'s toy figures.
The L2 attack runs as many iterations as the L-inf one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad

from .analysis import Analysis, Group, Inputs, PlanContext, Stored, given, speed_knob
from .attacks import AttackConfig, attack_config, perturb
from .directions import Directions, compute_directions, load_directions, on_params, unit
from .dryrun import BOOL, F64, Plan, Tally, arrays_bytes
from .params import ParamDict, combine, eval_mode, forward_at, functional_forward, named_params
from .store import MASKS, Grid, resolve_grid
from .util import BadInput, make_generator

NORMS = ("clean", "linf", "l2")
MATCH = ("volume", "sqrt-d", "same")
DIRECTION_KINDS = ("random", "eigen")
DEFAULT_RADIUS = tuple(np.geomspace(1e-3, 1.0, 7))
Progress = Callable[[int, int], None]


def matched_l2_eps(eps: float, d: int, rule: str = "volume") -> float:
    """The L2 budget matched to an L-inf budget `eps` in `d` input dimensions (module docstring)."""
    if rule not in MATCH:
        raise BadInput(
            f"{{arg}} {rule!r} is not valid; use one of {', '.join(MATCH)}", argument="rule"
        )
    if rule == "same":
        return float(eps)
    if rule == "sqrt-d":
        return float(eps * math.sqrt(d))
    return float(2 * eps * math.exp(math.lgamma(d / 2 + 1) / d) / math.sqrt(math.pi))


def fields_for(norms: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"lipschitz_{n}_{s}" for n in norms for s in ("mean", "std"))


@dataclass(frozen=True)
class SmoothnessResult:
    """The arrays of one `/smoothness/<run>` group, indexed by `radius`; `eps` per norm goes to attrs."""

    radius: np.ndarray
    done: np.ndarray
    nonfinite: np.ndarray  # radii whose gradients were NaN/inf (stored as NaN)
    lipschitz: dict[str, np.ndarray] = field(default_factory=dict)  # "lipschitz_<norm>_<mean|std>"
    eps: dict[str, float] = field(default_factory=dict)  # norm -> budget
    directions: int = 1  # behind each mean and std; the verdicts' sample size

    def arrays(self) -> dict[str, np.ndarray]:
        return {"radius": self.radius, **self.lipschitz, **{m: getattr(self, m) for m in MASKS}}

    def dims(self) -> dict[str, tuple[str]]:
        return {f: ("radius",) for f in (*self.lipschitz, *MASKS)}

    def attrs(self) -> dict[str, float]:
        return {**{f"eps_{n}": e for n, e in self.eps.items()}, "directions": self.directions}


def check_norms(norms: Sequence[str] | None, eps: float) -> tuple[str, ...]:
    """The profiled norms: as given, or clean, linf and l2 (clean only at eps 0)."""
    norms = tuple(norms) if norms is not None else (NORMS if eps > 0 else ("clean",))
    if not norms or any(n not in NORMS for n in norms):
        raise BadInput(
            f"{{arg}} {','.join(norms)!r} is not valid; choose from {', '.join(NORMS)}",
            argument="norms",
        )
    if eps == 0 and any(n != "clean" for n in norms):
        raise BadInput(
            "{arg} linf/l2 need {arg:eps} > 0; with eps 0 only the clean profile exists",
            argument="norms",
        )
    return norms


def loss_gradient(
    model: nn.Module, params: ParamDict, X: Tensor, y: Tensor, batch_size: int = 1024
) -> Tensor:
    """grad of the mean cross-entropy on (X, y) at `params`, flattened in the params' order."""

    def loss(p: ParamDict, xb: Tensor, yb: Tensor) -> Tensor:
        return F.cross_entropy(functional_forward(model, p, xb), yb, reduction="sum") / X.shape[0]

    total = None
    for i in range(0, X.shape[0], batch_size):
        g = grad(loss)(params, X[i : i + batch_size], y[i : i + batch_size])
        flat = torch.cat([g[k].reshape(-1) for k in params])
        total = flat if total is None else total + flat
    return total


def _adv_gradient(
    model: nn.Module,
    params: ParamDict,
    X: Tensor,
    y: Tensor,
    attack: AttackConfig | None,
    seed: int,
    batch_size: int,
) -> Tensor:
    """grad L_eps at `params`: PGD examples generated there (seeded), then the loss gradient."""
    if attack is not None:
        forward = forward_at(model, params)
        gen = make_generator(seed, X.device)
        X = torch.cat(
            [
                perturb(
                    forward, X[i : i + batch_size], y[i : i + batch_size], attack, generator=gen
                )
                for i in range(0, X.shape[0], batch_size)
            ]
        )
    return loss_gradient(model, params, X, y, batch_size)


def smoothness(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    eps: float,
    radius: Sequence[float] | np.ndarray = DEFAULT_RADIUS,
    directions: str | Directions | Sequence[ParamDict] = "random",
    count: int | None = None,
    norms: Sequence[str] | None = None,
    match: str = "volume",
    l2_eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    family: str | None = None,
    seed: int = 0,
    batch_size: int = 1024,
    grid: Grid | None = None,
    progress: Progress | None = None,
) -> SmoothnessResult:
    """The gradient-Lipschitz profile (module docstring) at the L-inf budget `eps`.

    `norms` defaults to clean, linf and l2 (clean only when eps = 0); `l2_eps` overrides
    the `match` rule. `count` directions (default 4 random, 1 eigen).
    """
    norms = check_norms(norms, eps)
    radii = np.asarray(radius, dtype=float)
    if radii.ndim != 1 or radii.size == 0 or not np.all(np.isfinite(radii)) or np.any(radii <= 0):
        raise BadInput("the radii must be a non-empty list of finite numbers > 0")
    family = family or ("mnist-like" if X.shape[1] == 1 else "cifar-like")
    d = int(np.prod(X.shape[1:]))
    eps2 = float(l2_eps) if l2_eps is not None else matched_l2_eps(eps, d, match)
    attacks: dict[str, AttackConfig | None] = {"clean": None}
    if eps > 0:
        attacks["linf"] = attack_config(
            eps, family=family, norm="linf", steps=steps, step_size=step_size
        )
        attacks["l2"] = attack_config(
            eps2, family=family, norm="l2", steps=attacks["linf"].steps, step_size=step_size
        )
    budgets = {"clean": 0.0, "linf": float(eps), "l2": eps2}

    if isinstance(directions, str):
        if directions not in DIRECTION_KINDS:
            raise BadInput(
                f"{{arg}} {directions!r} is not valid; use {', '.join(DIRECTION_KINDS)}",
                argument="directions",
            )
        n = count or (4 if directions == "random" else 1)
        directions = compute_directions(
            directions, model, n, X=X, y=y, seed=seed, attack=attacks.get("linf")
        )
    vectors = directions.vectors if isinstance(directions, Directions) else list(directions)
    if not vectors:
        raise BadInput("the smoothness profile needs at least one direction")
    base = named_params(model)
    vectors = [unit(on_params(v, base)) for v in vectors]
    seeds = [
        int(np.random.SeedSequence([seed, j]).generate_state(1)[0]) for j in range(len(vectors))
    ]

    fields = fields_for(norms)
    shape = (radii.size,)
    grid = resolve_grid(grid, shape, fields)
    arrays, done = grid.arrays, grid.done
    g0: dict[tuple[str, int], Tensor] = {}

    def work(i: int) -> list[tuple[tuple[int], dict[str, float]]]:
        r = float(radii[i])
        values: dict[str, float] = {}
        for n in norms:
            ratios = []
            for j, u in enumerate(vectors):
                g = _adv_gradient(
                    model, combine(base, (r, u)), X, y, attacks[n], seeds[j], batch_size
                )
                ratios.append(float(torch.linalg.vector_norm(g - g0[(n, j)])) / r)
            values[f"lipschitz_{n}_mean"] = float(np.mean(ratios))
            values[f"lipschitz_{n}_std"] = float(np.std(ratios, ddof=1)) if len(ratios) > 1 else 0.0
        return [((i,), values)]

    pending = [i for i in range(radii.size) if not done[i]]
    with eval_mode(model):
        if pending:  # the reference gradients at theta, on every rank
            g0.update(
                ((n, j), _adv_gradient(model, base, X, y, attacks[n], seeds[j], batch_size))
                for n in norms
                for j in range(len(vectors))
            )
        grid.run(pending, work, progress)  # one radius per task
    return SmoothnessResult(
        radius=radii,
        done=done.copy(),
        nonfinite=grid.nonfinite.copy(),
        lipschitz={f: arrays[f].copy() for f in fields},
        eps={n: budgets[n] for n in norms},
        directions=len(vectors),
    )


@dataclass(frozen=True)
class Smoothness(Analysis):
    """The gradient-Lipschitz profile (module docstring) as an analysis: `attack` is the
    L-inf attack (its eps the budget), `radii` the radii r, `dirs` random or eigen
    (`count` of them), `directions` given ones (read by the caller from
    `hessian_group`, which is recorded), else computed here."""

    name: ClassVar[str] = "smoothness"
    grid: ClassVar[bool] = True
    axes: ClassVar[tuple[str, ...]] = ("radius",)
    ranges: ClassVar[dict[str, bool]] = {"radii": True}

    attack: AttackConfig
    radii: tuple[float, ...] = DEFAULT_RADIUS
    dirs: str = "random"
    count: int | None = None
    norms: tuple[str, ...] | None = None
    l2_match: str = "volume"
    l2_eps: float | None = None
    hessian_group: str | None = None
    batch_size: int = speed_knob(1024)
    seed: int = 0
    directions: Directions | None = given()

    def with_files(self, inputs: Inputs | None, results_file: str | Path | None) -> Smoothness:
        """Eigen directions from a stored `hessian_group`, read for `compute`."""
        count = self.count or (4 if self.dirs == "random" else 1)
        loaded = load_directions(
            self.dirs,
            inputs.model,
            count,
            hessian_group=self.hessian_group,
            results_file=results_file,
        )
        return self if loaded is None else replace(self, directions=loaded)

    def profiled(self) -> tuple[str, ...]:
        return check_norms(self.norms, self.attack.eps)

    def check(self, inputs: Inputs) -> None:
        self.profiled()
        if self.dirs not in DIRECTION_KINDS:
            raise BadInput(
                f"{{arg}} {self.dirs!r} is not valid; use {', '.join(DIRECTION_KINDS)}",
                argument="dirs",
            )
        matched_l2_eps(self.attack.eps, 1, self.l2_match)

    def shape(self, inputs: Inputs) -> tuple[int, ...]:
        return (len(self.radii),)

    def fields(self) -> tuple[str, ...]:
        return fields_for(self.profiled())

    def compute(
        self, inputs: Inputs, *, grid: Grid | None = None, progress: Progress | None = None
    ) -> SmoothnessResult:
        return smoothness(
            inputs.model,
            inputs.X,
            inputs.y,
            eps=self.attack.eps,
            radius=self.radii,
            directions=self.directions or self.dirs,
            count=self.count,
            norms=self.profiled(),
            match=self.l2_match,
            l2_eps=self.l2_eps,
            steps=self.attack.steps,
            step_size=self.attack.step_size,
            family=inputs.family,
            seed=self.seed,
            batch_size=self.batch_size,
            grid=grid,
            progress=progress,
        )

    def plan(self, inputs: Inputs, context: PlanContext) -> Plan:
        """For each norm and direction, the gradient at theta and at every pending radius,
        each after PGD (L-inf and L2 run the same iterations)."""
        from .dryrun import eigen_directions_passes

        norms, n, bs = self.profiled(), int(inputs.X.shape[0]), self.batch_size
        tally = Tally()
        k = self.count or (4 if self.dirs == "random" else 1)
        linf = self.attack if self.attack.eps > 0 else None
        if self.dirs == "eigen" and self.directions is None:
            eigen_directions_passes(tally, k, n, linf)
        tally.resume_note(context)
        pending = int((~context.done).sum())
        points = (pending + 1 if pending else 0) * k
        for norm in norms:
            tally.pgd(n, bs, linf if norm != "clean" else None, points)
            tally.add("weight_grad", n, bs, points)
        shape = self.shape(inputs)
        sizes = {"radius": (shape, F64), "done": (shape, BOOL), "nonfinite": (shape, BOOL)}
        sizes.update({f: (shape, F64) for f in self.fields()})
        return tally.plan("smoothness", [context.group], context.calibration, arrays_bytes(sizes))

    def to_group(self, result: SmoothnessResult) -> Group:
        return Group(result.arrays(), dict(result.dims()), result.attrs())

    def from_group(
        self, arrays: Mapping[str, Any], attrs: Mapping[str, Any], where: str
    ) -> SmoothnessResult:
        norms = self.profiled()
        return SmoothnessResult(
            radius=arrays["radius"],
            done=arrays["done"],
            nonfinite=arrays["nonfinite"],
            lipschitz={f: arrays[f] for f in fields_for(norms)},
            eps={n: float(attrs[f"eps_{n}"]) for n in norms},
            directions=int(attrs.get("directions", 1)),
        )

    def summary(self, stored: Stored) -> dict[str, Any]:
        return {
            f"lipschitz_{n}_at_min_r": float(stored.arrays[f"lipschitz_{n}_mean"][0])
            for n in self.profiled()
        }
