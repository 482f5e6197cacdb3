"""Hessian spectra of the adversarial loss (Liu et al. 2020, sec. 4.2, Fig. 2 and 9).

Adversarial examples are generated once at theta with a fixed seed (eval mode); the
Hessian is that of the mean loss on those fixed examples w.r.t. the trainable
parameters (or a name-glob subset). Its top eigenvalues are reported raw and divided
by the loss scale: the mean adversarial loss of R fresh initializations of the same
architecture (seeds 0..R-1), each attacked on the same samples.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed
from .attacks import AttackConfig, _random_start, attack_config, evaluate, perturb
from .checkpoint import build_from_spec
from .curvature import (
    METHODS,
    HessianOperator,
    NonFiniteProduct,
    check_top,
    hutchinson_trace,
    select_params,
    slq_density,
    top_eigenpairs,
)
from .data import dataset_info
from .store import check_arrays, read_group, write_group
from .util import BadInput, make_generator

TRACE_PROBES = 100
DENSITY_PROBES = 4
DENSITY_STEPS = 80
DENSITY_POINTS = 1000


@dataclass(frozen=True)
class HessianResult:
    """One run; maps one-to-one onto the HDF5 group `/hessian/<run>`.

    `loss` is L_eps(theta) on the fixed examples; `loss_scale` is the mean of
    `random_losses` (nan without random samples, and then so are the normalized
    eigenvalues); `n_hvp` counts every Hessian-vector product of the run; `trace` is
    nan and the density arrays are empty unless asked for. `nonfinite` flags a run whose
    loss or a Hessian-vector product was NaN/inf at theta: its eigenvalues, residuals,
    trace and density are then NaN/empty rather than a solver's error or garbage.
    """

    eigenvalues: np.ndarray
    eigenvalues_normalized: np.ndarray
    residuals: np.ndarray
    random_losses: np.ndarray
    loss_scale: float
    loss: float
    n_hvp: int
    method: str
    wall_s: float
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    eigenvectors: np.ndarray | None
    trace: float
    trace_stderr: float
    density_grid: np.ndarray
    density: np.ndarray
    nonfinite: bool = False


def check_options(
    model: nn.Module,
    *,
    top: int,
    method: str = "lanczos",
    params: Sequence[str] | None = None,
    random_samples: int = 0,
    spec: Mapping[str, Any] | None = None,
) -> list[str]:
    """Validate a request before any work or output; returns the parameter names it covers."""
    if method not in METHODS:
        raise BadInput(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if (
        isinstance(random_samples, bool)
        or not isinstance(random_samples, int)
        or random_samples < 0
    ):
        raise BadInput(f"random samples {random_samples!r} must be an integer >= 0")
    if random_samples > 0 and spec is None:
        raise BadInput("the loss scale needs the model spec (spec=...) or random_samples=0")
    if method == "power" and distributed.world().distributed:
        raise BadInput(
            "{arg} power (PyHessian) runs in one process; use lanczos under torchrun",
            argument="method",
        )
    names = select_params(model, params)
    dims = dict(model.named_parameters())
    check_top(top, sum(dims[n].numel() for n in names))
    return names


def _attack(
    X: Tensor, eps: float, norm: str, attack: AttackConfig | None, spec: Mapping[str, Any] | None
) -> AttackConfig:
    """`attack` as given (it sets the norm too), else the papers' PGD defaults for the data family."""
    if attack is not None:
        if attack.eps != eps:
            raise BadInput(f"attack eps {attack.eps} disagrees with eps {eps}")
        return attack
    family = (
        dataset_info(spec["dataset"]).family
        if spec is not None
        else ("mnist-like" if X.shape[1] == 1 else "cifar-like")
    )
    return attack_config(eps, family=family, norm=norm)


def _fixed_examples(
    model: nn.Module, X: Tensor, y: Tensor, cfg: AttackConfig, batch_size: int, seed: int
) -> Tensor:
    """x' generated once at theta (eval mode, fixed seed); eps 0 is the clean data.

    The batches of `batch_size` are attacked in order from one generator, as `pgd` does.
    Under torchrun a rank attacks only the batches that its `HessianOperator` (same
    batch size) reads and, for the others, draws just their random starts to keep the
    generator in step; so each attacked batch is exactly the one-process batch, and the
    PGD work is split like the products. The batches of other ranks stay clean and unread.
    """
    model.eval()
    if cfg.eps == 0:
        return X
    gen = make_generator(seed, X.device)
    starts = range(0, X.shape[0], batch_size)
    mine = set(distributed.shard(len(starts)))
    out = X.clone()
    for b, i in enumerate(starts):
        xb, yb = X[i : i + batch_size], y[i : i + batch_size]
        if b in mine:
            out[i : i + batch_size] = perturb(model, xb, yb, cfg, generator=gen)
        elif cfg.random_start:
            _random_start(xb, cfg, gen)
    return out


def random_init_losses(
    spec: Mapping[str, Any],
    X: Tensor,
    y: Tensor,
    cfg: AttackConfig,
    count: int,
    *,
    batch_size: int = 256,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """L_eps at `count` fresh initializations (torch seeds 0..count-1), PGD at each (eval mode).

    Under torchrun the initializations are dealt to ranks; every rank gets all losses.
    """
    losses = [math.nan] * count

    def work(r: int) -> float:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(r)
            model = build_from_spec(spec, X.device).to(dtype).eval()
        return float(evaluate(model, X, y, cfg, batch_size=batch_size, seed=seed).adv_loss)

    def record(r: int, loss: float) -> None:
        losses[r] = loss

    distributed.run_queue(list(range(count)), work, record)
    return np.asarray(distributed.broadcast_json(losses), dtype=np.float64)


def hessian(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    eps: float = 0.0,
    *,
    norm: str = "linf",
    top: int = 20,
    method: str = "lanczos",
    params: Sequence[str] | None = None,
    attack: AttackConfig | None = None,
    spec: Mapping[str, Any] | None = None,
    random_samples: int = 10,
    save_vectors: bool = False,
    trace: bool = False,
    density: bool = False,
    batch_size: int = 256,
    seed: int = 0,
    tol: float | None = None,
) -> HessianResult:
    """Top-`top` Hessian eigenpairs of L_eps at the model's parameters (Liu et al. 4.2).

    The examples are attacked once at theta with PGD seeded by `seed` (eps 0: clean);
    `attack` (same eps; it sets the norm and steps) replaces the papers' defaults for the
    data family (from `spec`, else guessed from the channel count). `params` are name
    globs (fnmatch) restricting the Hessian to a sub-block. `spec` (the checkpoint's) is
    needed for the random initializations of the loss scale unless `random_samples` is
    0. `method` and `tol` are those of `curvature.top_eigenpairs`. `trace` adds
    Hutchinson's estimate (100 probes), `density` an SLQ density (4 probes x 80 steps).
    """
    start = time.perf_counter()
    names = check_options(
        model, top=top, method=method, params=params, random_samples=random_samples, spec=spec
    )
    cfg = _attack(X, eps, norm, attack, spec)
    X_adv = _fixed_examples(model, X, y, cfg, batch_size, seed)
    op = HessianOperator(model, X_adv, y, params=names, batch_size=batch_size)
    loss = op.loss()
    nonfinite = not math.isfinite(loss)
    pairs = None
    if not nonfinite:
        try:
            pairs = top_eigenpairs(op, top, method, tol=tol, seed=seed)
        except NonFiniteProduct:
            pairs = None
        nonfinite = pairs is None or not np.isfinite(pairs.eigenvalues).all()
    n_hvp = op.n_hvp if pairs is None else pairs.n_hvp
    before = op.n_hvp
    trace_mean, trace_err = math.nan, math.nan
    if trace and not nonfinite:
        trace_mean, trace_err = hutchinson_trace(op, TRACE_PROBES, seed)
    grid, dens = np.zeros(0), np.zeros(0)
    if density and not nonfinite:
        grid, dens = slq_density(op, DENSITY_PROBES, DENSITY_STEPS, DENSITY_POINTS, seed=seed)
    n_hvp += op.n_hvp - before
    if nonfinite:
        values = residuals = np.full(top, np.nan)
        vectors = torch.full((top, op.dim), math.nan) if save_vectors else None
    else:
        values, residuals, vectors = pairs.eigenvalues, pairs.residuals, pairs.eigenvectors
    losses = np.zeros(0)
    scale = math.nan
    if random_samples > 0:
        losses = random_init_losses(
            spec, X, y, cfg, random_samples, batch_size=batch_size, seed=seed, dtype=op.dtype
        )
        scale = float(losses.mean())
    return HessianResult(
        eigenvalues=values,
        eigenvalues_normalized=values / scale,
        residuals=residuals,
        random_losses=losses,
        loss_scale=scale,
        loss=loss,
        n_hvp=int(n_hvp),
        method=method,
        wall_s=time.perf_counter() - start,
        param_names=tuple(op.names),
        param_shapes=tuple(op.shapes[n] for n in op.names),
        eigenvectors=vectors.float().cpu().numpy() if save_vectors else None,
        trace=trace_mean,
        trace_stderr=trace_err,
        density_grid=grid,
        density=dens,
        nonfinite=nonfinite,
    )


def eigen_directions(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    k: int,
    eps: float = 0.0,
    *,
    norm: str = "linf",
    attack: AttackConfig | None = None,
    params: Sequence[str] | None = None,
    spec: Mapping[str, Any] | None = None,
    method: str = "lanczos",
    batch_size: int = 256,
    seed: int = 0,
    tol: float | None = None,
) -> list[dict[str, Tensor]]:
    """The top-k Hessian eigenvectors of L_eps as name-keyed unit directions on the model's device.

    Computed exactly as `hessian` does (same fixed examples for the same seed), without
    the loss scale. Directions hold only the names of the (sub-)Hessian.
    """
    names = check_options(model, top=k, method=method, params=params)
    cfg = _attack(X, eps, norm, attack, spec)
    X_adv = _fixed_examples(model, X, y, cfg, batch_size, seed)
    op = HessianOperator(model, X_adv, y, params=names, batch_size=batch_size)
    try:
        pairs = top_eigenpairs(op, k, method, tol=tol, seed=seed)
    except NonFiniteProduct as exc:
        raise BadInput(
            f"the Hessian is non-finite at this checkpoint ({exc}); it has no eigen directions"
        ) from exc
    return [{n: t.clone() for n, t in op.to_dict(v).items()} for v in pairs.eigenvectors]


def _group(group: str) -> str:
    """`/hessian/<run>`, `hessian/<run>` or a bare run name, as the group path."""
    g = group.strip("/")
    return "/" + (g if g.startswith("hessian/") else f"hessian/{g}")


def store_hessian(
    path: str | Path,
    group: str,
    result: HessianResult,
    attrs: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> str:
    """Write a run as the group of DESIGN.md (`attrs`: the provenance); returns the group path.

    `index` (1..k) is the dimension scale of the eigen-arrays; `eigenvectors` (k x P,
    rows in the order of attr `param_names`, shapes in `param_shapes`) only when saved.
    """
    k = len(result.eigenvalues)
    arrays: dict[str, Any] = {
        "index": np.arange(1, k + 1),
        "eigenvalues": result.eigenvalues,
        "eigenvalues_normalized": result.eigenvalues_normalized,
        "residuals": result.residuals,
        "random_losses": result.random_losses,
    }
    dims: dict[str, Sequence[str | None]] = {
        "eigenvalues": ["index"],
        "eigenvalues_normalized": ["index"],
        "residuals": ["index"],
        "random_losses": ["random_sample"],
    }
    meta: dict[str, Any] = {
        **attrs,
        "loss_scale": result.loss_scale,
        "loss": result.loss,
        "n_hvp": result.n_hvp,
        "method": result.method,
        "wall_s": result.wall_s,
        "param_names": json.dumps(list(result.param_names)),
        "param_shapes": json.dumps([list(s) for s in result.param_shapes]),
        "trace": result.trace,
        "trace_stderr": result.trace_stderr,
        "nonfinite": result.nonfinite,
    }
    if result.eigenvectors is not None:
        arrays["eigenvectors"] = result.eigenvectors
        dims["eigenvectors"] = ["index", "parameter"]
    if result.density.size:
        arrays["density_grid"] = result.density_grid
        arrays["density"] = result.density
        dims["density_grid"] = ["density_grid"]  # the coordinate of `density`
        dims["density"] = ["density_grid"]
    return write_group(path, _group(group), arrays, meta, dims=dims, overwrite=overwrite)


def _stored_attr(
    attrs: Mapping[str, Any], key: str, convert: Callable[[Any], Any], where: str
) -> Any:
    try:
        return convert(attrs[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(
            f"{where}: attribute {key!r} is missing or malformed; the group is not as `landscape hessian` stores it"
        ) from exc


def _names(text: str) -> tuple[str, ...]:
    names = json.loads(text)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("not a list of names")
    return tuple(names)


def _shapes(text: str) -> tuple[tuple[int, ...], ...]:
    shapes = json.loads(text)
    if not isinstance(shapes, list) or not all(
        isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s) for s in shapes
    ):
        raise ValueError("not a list of shapes")
    return tuple(tuple(s) for s in shapes)


def load_hessian(path: str | Path, group: str) -> HessianResult:
    """Read a stored run back as the record `hessian` returned; BadInput for a group that is
    not shaped as `store_hessian` writes it (hostile or foreign files)."""
    where = f"{path}:{_group(group)}"
    needs = {"eigenvalues": 1, "eigenvalues_normalized": 1, "residuals": 1, "random_losses": 1}
    arrays, attrs = read_group(path, _group(group), needs=needs)
    names = _stored_attr(attrs, "param_names", _names, where)
    shapes = _stored_attr(attrs, "param_shapes", _shapes, where)
    if len(names) != len(shapes):
        raise BadInput(f"{where}: attributes 'param_names' and 'param_shapes' disagree in length")
    vectors = arrays.get("eigenvectors")
    if vectors is not None:
        check_arrays(where, arrays, {"eigenvectors": 2})
        expected = (len(arrays["eigenvalues"]), sum(math.prod(s) for s in shapes))
        if vectors.shape != expected:
            raise BadInput(
                f"{where}: dataset 'eigenvectors' has shape {vectors.shape}, expected {expected} "
                f"(eigenvalues x parameters)"
            )
    return HessianResult(
        eigenvalues=arrays["eigenvalues"],
        eigenvalues_normalized=arrays["eigenvalues_normalized"],
        residuals=arrays["residuals"],
        random_losses=arrays["random_losses"],
        loss_scale=_stored_attr(attrs, "loss_scale", float, where),
        loss=_stored_attr(attrs, "loss", float, where),
        n_hvp=_stored_attr(attrs, "n_hvp", int, where),
        method=_stored_attr(attrs, "method", str, where),
        wall_s=_stored_attr(attrs, "wall_s", float, where),
        param_names=names,
        param_shapes=shapes,
        eigenvectors=vectors,
        trace=_stored_attr(attrs, "trace", float, where),
        trace_stderr=_stored_attr(attrs, "trace_stderr", float, where),
        density_grid=arrays.get("density_grid", np.zeros(0)),
        density=arrays.get("density", np.zeros(0)),
        nonfinite=bool(attrs.get("nonfinite", False)),
    )


def load_eigenvectors(path: str | Path, group: str) -> list[dict[str, Tensor]]:
    """Stored eigenvectors as name-keyed unit directions (CPU, fp32), top first.

    `group` is `/hessian/<run>` or the run name; the run must have been stored with
    `--save-vectors`.
    """
    result = load_hessian(path, group)
    if result.eigenvectors is None:
        raise BadInput(
            f"{path}:{_group(group)} holds no eigenvectors; compute the run again with "
            "save_vectors=True (`landscape hessian --save-vectors`)"
        )
    if result.nonfinite:
        raise BadInput(
            f"{path}:{_group(group)} is flagged nonfinite (the loss was NaN/inf there); it has no eigenvectors"
        )
    sizes = [math.prod(s) for s in result.param_shapes]
    out = []
    for row in result.eigenvectors:
        vector = torch.from_numpy(np.asarray(row, dtype=np.float32).copy())
        parts = torch.split(vector, sizes)
        out.append(
            {n: p.reshape(s) for n, p, s in zip(result.param_names, parts, result.param_shapes)}
        )
    return out
