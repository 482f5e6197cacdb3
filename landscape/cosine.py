"""Perturbation cosine similarity along a parameter direction (Liu et al. sec. 4.2, Fig. 3, 10).

For a unit direction v (`top`: the top Hessian eigenvector of L_eps; `random`: a seeded
Gaussian of unit global norm) and each a of the grid, PGD examples x'_+ at theta + a v
and x'_- at theta - a v (eval mode); the statistic is the mean over examples of
cos(x'_+ - x, x'_- - x), repeated R times over PGD random starts (mean and std over
the repeats, std with ddof = 1, 0 when R = 1), with the robust error at theta +- a v.

Choices the paper leaves open:
- The + and - attacks of one repeat share their random start (common random numbers),
  so a = 0 gives exactly 1 and any drop is caused by the parameter change. Repeat r
  uses the same start at every a. (Liu et al.'s scripts draw the two independently.)
- An example whose perturbation is exactly zero on either side (eps = 0, a zero input
  gradient with no random start, a clamp that undoes the start) has no cosine: it is
  left out of the mean and counted in `zero_perturbations_<kind>` (summed over the
  repeats). When a repeat has no example left, its value is the fraction of its
  examples whose two perturbations are identical (1 when all are zero), never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from .analysis import (
    Analysis,
    Group,
    Inputs,
    PlanContext,
    Stored,
    given,
    precision_field,
    speed_knob,
)
from .attacks import AttackConfig, attack_config, perturb
from .directions import compute_directions, load_directions, on_params, random_direction, unit
from .dryrun import BOOL, F64, I64, Plan, Tally, arrays_bytes
from .params import ParamDict, combine, eval_mode, forward_at, named_params, precision_dtype
from .store import MASKS, Grid, resolve_grid
from .util import BadInput, make_generator

KINDS = ("top", "random")
STATS = (
    "cosine_{}_mean",
    "cosine_{}_std",
    "robust_error_{}_plus",
    "robust_error_{}_minus",
    "zero_perturbations_{}",
)
FIELDS = tuple(s.format(k) for k in KINDS for s in STATS)
DEFAULT_ALPHA = tuple(np.linspace(0.0, 1.0, 11))
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CosineResult:
    """The arrays of one `/cosine/<run>` group, each indexed by `alpha`."""

    alpha: np.ndarray
    cosine_top_mean: np.ndarray
    cosine_top_std: np.ndarray
    robust_error_top_plus: np.ndarray
    robust_error_top_minus: np.ndarray
    zero_perturbations_top: np.ndarray
    cosine_random_mean: np.ndarray
    cosine_random_std: np.ndarray
    robust_error_random_plus: np.ndarray
    robust_error_random_minus: np.ndarray
    zero_perturbations_random: np.ndarray
    done: np.ndarray
    nonfinite: np.ndarray  # values of a whose statistics were NaN/inf (stored as NaN)
    examples: int = 0
    repeats: int = 0

    def arrays(self) -> dict[str, np.ndarray]:
        return {"alpha": self.alpha, **{f: getattr(self, f) for f in (*FIELDS, *MASKS)}}

    def dims(self) -> dict[str, tuple[str]]:
        return {f: ("alpha",) for f in (*FIELDS, *MASKS)}

    def attrs(self) -> dict[str, int]:
        """What the zero counts are out of: examples x repeats per direction kind and a."""
        return {"examples": self.examples, "repeats": self.repeats}


def check_grid(alpha: Sequence[float] | np.ndarray, repeats: int) -> np.ndarray:
    """The grid of a as an array; BadInput for an empty or non-finite grid or no repeats."""
    if repeats < 1:
        raise BadInput(f"{{arg}} {repeats} must be >= 1", argument="repeats")
    alphas = np.asarray(alpha, dtype=float)
    if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)):
        raise BadInput("the alpha grid must be a non-empty list of finite numbers")
    return alphas


def perturbation_cosine(d_plus: Tensor, d_minus: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-example cos(d_plus, d_minus), the mask of zero-perturbation examples, and the
    mask of examples whose two perturbations are identical. Excluded examples get 0."""
    a, b = d_plus.flatten(1), d_minus.flatten(1)
    zero = ~(a != 0).any(1) | ~(b != 0).any(1)
    na = torch.linalg.vector_norm(a, dim=1)
    nb = torch.linalg.vector_norm(b, dim=1)
    cos = torch.where(zero, torch.zeros_like(na), (a * b).sum(1) / (na * nb).clamp_min(1e-30))
    return cos, zero, (a == b).all(1)


def repeat_seed(seed: int, repeat: int) -> int:
    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0])


def _attack_pair(
    model: nn.Module,
    base: ParamDict,
    v: ParamDict,
    a: float,
    X: Tensor,
    y: Tensor,
    attack: AttackConfig,
    seed: int,
    batch_size: int,
    dtype: torch.dtype | None = None,
) -> tuple[float, int, float, float]:
    """One repeat at one a: (mean cosine, zero count, robust error +, robust error -), the
    network evaluated in `dtype` (PGD included; default fp32).

    Non-finite logits at theta +- a v (a diverging loss) make every value NaN: PGD's sign
    steps would otherwise turn NaN gradients into finite-looking perturbations."""
    plus, minus = combine(base, (a, v)), combine(base, (-a, v))
    gens = [make_generator(seed, X.device) for _ in range(2)]
    cos_sum = torch.zeros((), dtype=torch.float64, device=X.device)
    kept = zeros = identical = 0
    wrong = torch.zeros(2, dtype=torch.float64, device=X.device)
    finite = torch.ones((), dtype=torch.bool, device=X.device)
    for i in range(0, X.shape[0], batch_size):
        xb, yb = X[i : i + batch_size], y[i : i + batch_size]
        deltas = []
        for j, params in enumerate((plus, minus)):
            forward = forward_at(model, params, dtype=dtype)
            x_adv = perturb(forward, xb, yb, attack, generator=gens[j])
            with torch.no_grad():
                logits = forward(x_adv)
                finite &= torch.isfinite(logits).all()
                wrong[j] += (logits.argmax(1) != yb).sum()
            deltas.append(x_adv - xb)
        cos, zero, same = perturbation_cosine(*deltas)
        cos_sum += cos.double().sum()
        kept += int((~zero).sum())
        zeros += int(zero.sum())
        identical += int((same & zero).sum())
    if not bool(finite):
        return math.nan, zeros, math.nan, math.nan
    if kept:
        mean = float(cos_sum) / kept
    else:
        mean = identical / zeros
    err_plus, err_minus = (wrong / X.shape[0]).tolist()
    return mean, zeros, err_plus, err_minus


def cosine(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int | None = None,
    step_size: float | None = None,
    family: str | None = None,
    alpha: Sequence[float] | np.ndarray = DEFAULT_ALPHA,
    directions: Mapping[str, ParamDict] | None = None,
    repeats: int = 4,
    seed: int = 0,
    batch_size: int = 1024,
    precision: str = "fp32",
    grid: Grid | None = None,
    progress: Progress | None = None,
) -> CosineResult:
    """Liu et al.'s perturbation cosine along `top` and `random` unit directions (module docstring).

    `directions` may give either or both as name-keyed dicts (normalized to unit norm;
    for instance a stored eigenvector read by `directions.load_directions`); by default
    `top` is computed (the top eigenvector of the Hessian of L_eps on (X, y)) and
    `random` is drawn from `seed`. `precision` (fp32, bf16, fp16) is the dtype the
    attacks and evaluations run in; the directions, their Hessian and the parameters
    theta +- a v stay fp32.
    """
    dtype = precision_dtype(precision)
    alphas = check_grid(alpha, repeats)
    family = family or ("mnist-like" if X.shape[1] == 1 else "cifar-like")
    attack = attack_config(eps, family=family, norm=norm, steps=steps, step_size=step_size)
    base = named_params(model)
    given = dict(directions or {})
    unknown = sorted(set(given) - set(KINDS))
    if unknown:
        raise BadInput(f"unknown direction kind(s) {unknown}; use {', '.join(KINDS)}")
    if "top" not in given:
        given["top"] = compute_directions(
            "eigen", model, 1, X=X, y=y, seed=seed, attack=attack if eps > 0 else None
        ).vectors[0]
    if "random" not in given:
        given["random"] = random_direction(base, make_generator(seed, X.device))
    vectors = {k: unit(on_params(given[k], base, f"the {k} direction")) for k in KINDS}

    shape = (alphas.size,)
    grid = resolve_grid(grid, shape, FIELDS)
    arrays, done = grid.arrays, grid.done

    def work(i: int) -> list[tuple[tuple[int], dict[str, float]]]:
        a = alphas[i]
        values: dict[str, float] = {}
        for kind in KINDS:
            runs = np.array(
                [
                    _attack_pair(
                        model,
                        base,
                        vectors[kind],
                        float(a),
                        X,
                        y,
                        attack,
                        repeat_seed(seed, r),
                        batch_size,
                        dtype,
                    )
                    for r in range(repeats)
                ]
            )
            values[f"cosine_{kind}_mean"] = float(runs[:, 0].mean())
            values[f"cosine_{kind}_std"] = float(runs[:, 0].std(ddof=1)) if repeats > 1 else 0.0
            values[f"zero_perturbations_{kind}"] = float(runs[:, 1].sum())
            values[f"robust_error_{kind}_plus"] = float(runs[:, 2].mean())
            values[f"robust_error_{kind}_minus"] = float(runs[:, 3].mean())
        return [((i,), values)]

    with eval_mode(model):  # one value of a per task, dealt to ranks under torchrun
        grid.run([i for i in range(alphas.size) if not done[i]], work, progress)
    out = {f: arrays[f].copy() for f in FIELDS}
    for kind in KINDS:
        key = f"zero_perturbations_{kind}"
        out[key] = np.nan_to_num(out[key], nan=-1).astype(np.int64)
    return CosineResult(
        alpha=alphas,
        done=done.copy(),
        examples=int(X.shape[0]),
        repeats=repeats,
        nonfinite=grid.nonfinite.copy(),
        **out,
    )


@dataclass(frozen=True)
class Cosine(Analysis):
    """Liu et al.'s perturbation cosine (module docstring) as an analysis: `alpha` is the
    grid of a, `directions` optional given ones (`top` read by the caller from the
    recorded `hessian_group`), else computed here."""

    name: ClassVar[str] = "cosine"
    grid: ClassVar[bool] = True
    axes: ClassVar[tuple[str, ...]] = ("alpha",)
    ranges: ClassVar[dict[str, bool]] = {"alpha": False}

    attack: AttackConfig
    alpha: tuple[float, ...] = DEFAULT_ALPHA
    repeats: int = 4
    hessian_group: str | None = None
    batch_size: int = speed_knob(1024)
    seed: int = 0
    precision: str = precision_field()
    directions: Mapping[str, ParamDict] | None = given()

    def check(self, inputs: Inputs) -> None:
        check_grid(self.alpha, self.repeats)

    def with_files(self, inputs: Inputs | None, results_file: str | Path | None) -> Cosine:
        """The top direction from a stored `hessian_group`, read for `compute`."""
        top = load_directions(
            "eigen", inputs.model, 1, hessian_group=self.hessian_group, results_file=results_file
        )
        return self if top is None else replace(self, directions={"top": top.vectors[0]})

    def shape(self, inputs: Inputs) -> tuple[int, ...]:
        return (len(self.alpha),)

    def fields(self) -> tuple[str, ...]:
        return FIELDS

    def compute(
        self, inputs: Inputs, *, grid: Grid | None = None, progress: Progress | None = None
    ) -> CosineResult:
        return cosine(
            inputs.model,
            inputs.X,
            inputs.y,
            eps=self.attack.eps,
            norm=self.attack.norm,
            steps=self.attack.steps,
            step_size=self.attack.step_size,
            family=inputs.family,
            alpha=self.alpha,
            directions=self.directions,
            repeats=self.repeats,
            seed=self.seed,
            batch_size=self.batch_size,
            precision=self.precision,
            grid=grid,
            progress=progress,
        )

    def plan(self, inputs: Inputs, context: PlanContext) -> Plan:
        """Per a, for the top and the random direction, `repeats` times, PGD and a forward
        at theta + a v and at theta - a v."""
        from .dryrun import eigen_directions_passes

        n, bs, attack = int(inputs.X.shape[0]), self.batch_size, self.attack
        tally = Tally()
        if not (self.directions and "top" in self.directions):
            eigen_directions_passes(tally, 1, n, attack if attack.eps > 0 else None)
        tally.resume_note(context)
        times = int((~context.done).sum()) * 2 * self.repeats * 2
        tally.pgd(n, bs, attack, times)
        tally.add("forward", n, bs, times)
        shape = self.shape(inputs)
        sizes = {"alpha": (shape, F64), "done": (shape, BOOL), "nonfinite": (shape, BOOL)}
        sizes.update({f: (shape, F64 if not f.startswith("zero") else I64) for f in FIELDS})
        return tally.plan("cosine", [context.group], context.calibration, arrays_bytes(sizes))

    def to_group(self, result: CosineResult) -> Group:
        return Group(result.arrays(), dict(result.dims()), result.attrs())

    def from_group(
        self, arrays: Mapping[str, Any], attrs: Mapping[str, Any], where: str
    ) -> CosineResult:
        return CosineResult(
            alpha=arrays["alpha"],
            **{f: arrays[f] for f in (*FIELDS, *MASKS)},
            examples=int(attrs.get("examples", 0)),
            repeats=int(attrs.get("repeats", 0)),
        )

    def summary(self, stored: Stored) -> dict[str, Any]:
        last = ("cosine_top_mean", "cosine_random_mean", "zero_perturbations_top")
        return {f"{k}_at_max_a": float(stored.arrays[k][-1]) for k in last}
