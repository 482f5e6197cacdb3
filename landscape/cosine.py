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
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .attacks import AttackConfig, attack_config, perturb
from .directions import make_directions, on_params, random_direction, unit
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
class Cosine:
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
    hessian_group: str | None = None,
    results_file: str | None = None,
    precision: str = "fp32",
    grid: Grid | None = None,
    progress: Progress | None = None,
) -> Cosine:
    """Liu et al.'s perturbation cosine along `top` and `random` unit directions (module docstring).

    `directions` may give both as name-keyed dicts (they are normalized to unit norm);
    by default `top` is read from `hessian_group` or computed (top eigenvector of the
    Hessian of L_eps on (X, y)) and `random` is drawn from `seed`. `precision` (fp32, bf16,
    fp16) is the dtype the attacks and evaluations run in; the directions, their Hessian
    and the parameters theta +- a v stay fp32.
    """
    dtype = precision_dtype(precision)
    if repeats < 1:
        raise BadInput(f"--repeats {repeats} must be >= 1")
    alphas = np.asarray(alpha, dtype=float)
    if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)):
        raise BadInput("the alpha grid must be a non-empty list of finite numbers")
    family = family or ("mnist-like" if X.shape[1] == 1 else "cifar-like")
    attack = attack_config(eps, family=family, norm=norm, steps=steps, step_size=step_size)
    base = named_params(model)
    given = dict(directions or {})
    unknown = sorted(set(given) - set(KINDS))
    if unknown:
        raise BadInput(f"unknown direction kind(s) {unknown}; use {', '.join(KINDS)}")
    if "top" not in given:
        given["top"] = make_directions(
            "eigen",
            model,
            1,
            X=X,
            y=y,
            seed=seed,
            hessian_group=hessian_group,
            results_file=results_file,
            attack=attack if eps > 0 else None,
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
    return Cosine(
        alpha=alphas,
        done=done.copy(),
        examples=int(X.shape[0]),
        repeats=repeats,
        nonfinite=grid.nonfinite.copy(),
        **out,
    )
