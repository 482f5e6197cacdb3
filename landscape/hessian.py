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
from copy import deepcopy as copy_module
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed
from .analysis import Analysis, Group, Inputs, PlanContext, Stored, speed_knob
from .attacks import AttackConfig, _random_start, attack_config, evaluate, perturb
from .checkpoint import build_from_spec
from .curvature import (
    MATRICES,
    METHODS,
    HessianOperator,
    NonFiniteProduct,
    check_top,
    hutchinson_trace,
    make_operator,
    select_params,
    slq_density,
    top_eigenpairs,
)
from .data import dataset_info
from .dryrun import F32, F64, HVP_BLOCK, I64, Plan, Tally, arrays_bytes
from .store import check_arrays, read_group, write_group
from .util import BadInput, make_generator

TRACE_PROBES = 100
DENSITY_PROBES = 4
DENSITY_STEPS = 80
DENSITY_POINTS = 1000


@dataclass(frozen=True)
class TopEigenpairs:
    """The top-k eigenpairs, eigenvalues descending, raw and divided by the loss scale;
    residuals ||A v - lambda v||; eigenvectors (k x P, float32) only when saved."""

    eigenvalues: np.ndarray
    normalized: np.ndarray
    residuals: np.ndarray
    eigenvectors: np.ndarray | None
    method: str


@dataclass(frozen=True)
class LossScale:
    """Liu et al. 4.2: L_eps at R fresh initializations, attacked on the same samples;
    `scale` is their mean (nan without samples). `init` says how the fresh weights were
    drawn: `spec` (the architecture's own initialization), `reset_parameters` (a copy of
    a user's module re-initialized through each submodule's `reset_parameters()`) or
    `none` (R = 0)."""

    random_losses: np.ndarray
    scale: float
    init: str


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of tr(A) with its standard error over `probes` probes."""

    mean: float
    stderr: float
    probes: int


@dataclass(frozen=True)
class SpectralDensity:
    """A spectral density by stochastic Lanczos quadrature, on `grid`."""

    grid: np.ndarray
    density: np.ndarray


@dataclass(frozen=True)
class HessianResult:
    """One run, composed of its parts; maps one-to-one onto `/hessian/<run>`.

    `matrix` is the curvature matrix (hessian, ggn or fisher) of L_eps; `loss` is L_eps
    at theta on the fixed examples; `n_hvp` counts every matrix-vector product of the
    run; `trace` and `density` are None unless asked for. `nonfinite` flags a run whose
    loss or a product was NaN/inf at theta: its eigenvalues and residuals are then NaN,
    never a solver's error or garbage.
    """

    matrix: str
    loss: float
    eigenpairs: TopEigenpairs
    loss_scale: LossScale
    trace: TraceEstimate | None
    density: SpectralDensity | None
    n_hvp: int
    wall_s: float
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
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
    if random_samples > 0 and loss_scale_init(spec) == "reset_parameters":
        reinitialized(model, 0)  # refuse a model it cannot re-initialize before any work
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


def reinitialized(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of `model` with every submodule's `reset_parameters()` run under torch
    seed `seed` (BatchNorm's also resets its running statistics); BadInput naming the
    parameters that no `reset_parameters` covers, whose trained values would stay."""
    copy = copy_module(model)
    reset: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in copy.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                reset.update(id(p) for p in module.parameters(recurse=False))
    kept = [n for n, p in copy.named_parameters() if id(p) not in reset]
    if kept:
        raise BadInput(
            f"the loss scale re-initializes the model through reset_parameters(), which no "
            f"module of {', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''} has; "
            "give the model's spec or random_samples=0 (--random-samples 0)"
        )
    return copy


def loss_scale_init(spec: Mapping[str, Any] | None) -> str:
    """How the loss scale re-initializes: `spec` (a fresh build of a landscape architecture)
    or `reset_parameters` (a copy of a model without one, such as a user's `--model`)."""
    return "spec" if spec is not None and spec.get("model") is None else "reset_parameters"


def random_init_losses(
    model: nn.Module,
    spec: Mapping[str, Any] | None,
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

    An initialization is a fresh build of `spec`, or, without a landscape spec
    (`loss_scale_init`), a copy of `model` re-initialized by `reinitialized`. Under
    torchrun the initializations are dealt to ranks; every rank gets all losses.
    """
    losses = [math.nan] * count
    from_spec = loss_scale_init(spec) == "spec"

    def work(r: int) -> float:
        if from_spec:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(r)
                fresh = build_from_spec(spec, X.device)
        else:
            fresh = reinitialized(model, r)
        fresh = fresh.to(dtype).eval()
        return float(evaluate(fresh, X, y, cfg, batch_size=batch_size, seed=seed).adv_loss)

    def record(r: int, loss: float) -> None:
        losses[r] = loss

    distributed.run_queue(list(range(count)), work, record)
    return np.asarray(distributed.broadcast_json(losses), dtype=np.float64)


@dataclass(frozen=True)
class Hessian(Analysis):
    """Top eigenpairs (and optionally trace and density) of a curvature matrix of L_eps.

    Liu et al. 4.2: the examples are attacked once at theta with PGD seeded by `seed`
    (eval mode; eps 0: clean); the matrix (`hessian`, the generalized Gauss-Newton `ggn`
    or the empirical Fisher `fisher`) is that of the mean loss on those fixed examples
    w.r.t. the parameters matching the name globs `params` (all when None). Eigenvalues
    are reported raw and divided by the loss scale: the mean L_eps of `random_samples`
    fresh initializations (seeds 0..R-1) attacked on the same samples. `method` and
    `tol` are those of `curvature.top_eigenpairs`; `trace` adds Hutchinson's estimate
    (100 probes), `density` an SLQ density (4 probes x 80 steps). `cache` keeps each
    batch's linearization between products (faster, memory grows with the data; see
    `curvature.HessianOperator`).
    """

    name: ClassVar[str] = "hessian"
    axes: ClassVar[tuple[str, ...]] = ("index",)

    attack: AttackConfig
    matrix: str = "hessian"
    top: int = 20
    method: str = "lanczos"
    params: tuple[str, ...] | None = None
    random_samples: int = 10
    save_vectors: bool = False
    trace: bool = False
    density: bool = False
    batch_size: int = 256
    seed: int = 0
    tol: float | None = None
    cache: bool = speed_knob(False)

    def check(self, inputs: Inputs) -> None:
        if self.matrix not in MATRICES:
            raise BadInput(
                f"{{arg}} {self.matrix!r} is not valid; use one of {', '.join(MATRICES)}",
                argument="matrix",
            )
        if self.method == "power" and self.matrix != "hessian":
            raise BadInput(
                f"{{arg}} power (PyHessian) computes Hessians only, not {self.matrix!r}; "
                "use lanczos",
                argument="method",
            )
        check_options(
            inputs.model,
            top=self.top,
            method=self.method,
            params=self.params,
            random_samples=self.random_samples,
            spec=inputs.spec,
        )

    def compute(self, inputs: Inputs, *, grid: Any = None, progress: Any = None) -> HessianResult:
        start = time.perf_counter()
        self.check(inputs)
        model, X, y, cfg = inputs.model, inputs.X, inputs.y, self.attack
        names = select_params(model, self.params)
        X_adv = _fixed_examples(model, X, y, cfg, self.batch_size, self.seed)
        op = make_operator(
            self.matrix, model, X_adv, y, params=names, batch_size=self.batch_size, cache=self.cache
        )
        loss = op.loss()
        nonfinite = not math.isfinite(loss)
        pairs = None
        if not nonfinite:
            try:
                pairs = top_eigenpairs(op, self.top, self.method, tol=self.tol, seed=self.seed)
            except NonFiniteProduct:
                pairs = None
            nonfinite = pairs is None or not np.isfinite(pairs.eigenvalues).all()
        n_hvp = op.n_hvp if pairs is None else pairs.n_hvp
        before = op.n_hvp
        trace = density = None
        if self.trace and not nonfinite:
            trace = TraceEstimate(*hutchinson_trace(op, TRACE_PROBES, self.seed), TRACE_PROBES)
        if self.density and not nonfinite:
            density = SpectralDensity(
                *slq_density(op, DENSITY_PROBES, DENSITY_STEPS, DENSITY_POINTS, seed=self.seed)
            )
        n_hvp += op.n_hvp - before
        if nonfinite:
            values = residuals = np.full(self.top, np.nan)
            vectors = np.full((self.top, op.dim), np.nan, dtype=np.float32)
        else:
            values, residuals = pairs.eigenvalues, pairs.residuals
            vectors = pairs.eigenvectors.float().cpu().numpy()
        scale = LossScale(np.zeros(0), math.nan, "none")
        if self.random_samples > 0:
            losses = random_init_losses(
                model,
                inputs.spec,
                X,
                y,
                cfg,
                self.random_samples,
                batch_size=self.batch_size,
                seed=self.seed,
                dtype=op.dtype,
            )
            scale = LossScale(losses, float(losses.mean()), loss_scale_init(inputs.spec))
        return HessianResult(
            matrix=self.matrix,
            loss=loss,
            eigenpairs=TopEigenpairs(
                values,
                values / scale.scale,
                residuals,
                vectors if self.save_vectors else None,
                self.method,
            ),
            loss_scale=scale,
            trace=trace,
            density=density,
            n_hvp=int(n_hvp),
            wall_s=time.perf_counter() - start,
            param_names=tuple(op.names),
            param_shapes=tuple(op.shapes[n] for n in op.names),
            nonfinite=nonfinite,
        )

    def plan(self, inputs: Inputs, context: PlanContext) -> Plan:
        """PGD once, the eigensolver's products and the residual check, the optional trace
        and density products, the loss, and R random initializations attacked and
        evaluated for the loss scale."""
        model, n, bs = inputs.model, int(inputs.X.shape[0]), self.batch_size
        weights = dict(model.named_parameters())
        dim = sum(weights[name].numel() for name in select_params(model, self.params))
        tally = Tally()
        if context.complete:
            tally.notes.append(f"{context.group} is stored complete with the same config")
        else:
            tally.pgd(n, bs, self.attack)
            tally.eigensolver(self.top, self.method, n, bs)
            if self.trace:
                tally.add(
                    "hvp", n, bs, rows=TRACE_PROBES, blocks=math.ceil(TRACE_PROBES / HVP_BLOCK)
                )
            if self.density:
                steps = min(DENSITY_STEPS, dim)
                tally.add("hvp", n, bs, steps, rows=DENSITY_PROBES)
                tally.notes.append(f"density: at most {steps} SLQ steps of {DENSITY_PROBES} probes")
            tally.add("forward", n, bs)
            tally.evaluate(n, bs, self.attack, self.random_samples)
        sizes = {
            "index": ((self.top,), I64),
            "eigenvalues": ((self.top,), F64),
            "eigenvalues_normalized": ((self.top,), F64),
            "residuals": ((self.top,), F64),
            "random_losses": ((self.random_samples,), F64),
        }
        if self.save_vectors:
            sizes["eigenvectors"] = ((self.top, dim), F32)
        if self.density:
            sizes["density_grid"] = ((DENSITY_POINTS,), F64)
            sizes["density"] = ((DENSITY_POINTS,), F64)
        return tally.plan("hessian", [context.group], context.calibration, arrays_bytes(sizes))

    def to_group(self, result: HessianResult) -> Group:
        """`index` (1..k) is the dimension scale of the eigen-arrays; `eigenvectors` (k x P,
        rows in the order of attr `param_names`, shapes in `param_shapes`) only when saved."""
        pairs, scale = result.eigenpairs, result.loss_scale
        arrays: dict[str, Any] = {
            "index": np.arange(1, len(pairs.eigenvalues) + 1),
            "eigenvalues": pairs.eigenvalues,
            "eigenvalues_normalized": pairs.normalized,
            "residuals": pairs.residuals,
            "random_losses": scale.random_losses,
        }
        dims: dict[str, Sequence[str | None]] = {
            "eigenvalues": ["index"],
            "eigenvalues_normalized": ["index"],
            "residuals": ["index"],
            "random_losses": ["random_sample"],
        }
        trace = result.trace or TraceEstimate(math.nan, math.nan, 0)
        attrs: dict[str, Any] = {
            "matrix": result.matrix,
            "loss_scale": scale.scale,
            "loss_scale_init": scale.init,
            "loss": result.loss,
            "n_hvp": result.n_hvp,
            "method": pairs.method,
            "wall_s": result.wall_s,
            "param_names": json.dumps(list(result.param_names)),
            "param_shapes": json.dumps([list(s) for s in result.param_shapes]),
            "trace": trace.mean,
            "trace_stderr": trace.stderr,
            "trace_probes": trace.probes,
            "nonfinite": result.nonfinite,
        }
        if pairs.eigenvectors is not None:
            arrays["eigenvectors"] = pairs.eigenvectors
            dims["eigenvectors"] = ["index", "parameter"]
        if result.density is not None:
            arrays["density_grid"] = result.density.grid
            arrays["density"] = result.density.density
            dims["density_grid"] = ["density_grid"]  # the coordinate of `density`
            dims["density"] = ["density_grid"]
        return Group(arrays, dims, attrs)

    def from_group(
        self, arrays: Mapping[str, Any], attrs: Mapping[str, Any], where: str
    ) -> HessianResult:
        return result_from_group(arrays, attrs, where)

    def summary(self, stored: Stored) -> dict[str, Any]:
        res = stored.result
        return {
            "top3": [round(float(v), 6) for v in res.eigenpairs.eigenvalues[:3]],
            "loss_scale": res.loss_scale.scale,
            "n_hvp": res.n_hvp,
            "wall_s": round(res.wall_s, 2),
            "cached": stored.cached,
            "nonfinite": res.nonfinite,
        }

    def summary_line(self, stats: Mapping[str, Any]) -> str:
        return (
            f"top3 {', '.join(f'{v:.4g}' for v in stats['top3'])} | scale {stats['loss_scale']:.4g} | "
            f"{stats['n_hvp']} HVPs | {stats['wall_s']:.1f} s{' (cached)' if stats['cached'] else ''}"
        )

    def warning(self, stored: Stored) -> str | None:
        res = stored.result
        if not res.nonfinite:
            return None
        return (
            f"non-finite loss or {self.matrix}-vector product at the checkpoint (eps "
            f"{self.attack.eps:.4g}, loss {res.loss}); eigenvalues stored as NaN, flagged nonfinite"
        )


def hessian(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    eps: float = 0.0,
    *,
    norm: str = "linf",
    attack: AttackConfig | None = None,
    spec: Mapping[str, Any] | None = None,
    **options: Any,
) -> HessianResult:
    """`Hessian(...)` computed on (model, X, y) without storing (`landscape.run` stores it).

    `attack` (same eps; it sets the norm and steps) replaces the papers' PGD defaults for
    the data family (from `spec`, else guessed from the channel count); `options` are the
    fields of `Hessian` (top, matrix, method, params, ...).
    """
    if "params" in options and options["params"] is not None:
        options["params"] = tuple(options["params"])
    cfg = _attack(X, eps, norm, attack, spec)
    return Hessian(attack=cfg, **options).compute(
        Inputs(model, X, y, spec=dict(spec or {}) or None)
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
    """Write a computed run as its group (`attrs`: the provenance); returns the group path."""
    content = Hessian(AttackConfig(0.0)).to_group(result)
    return write_group(
        path,
        _group(group),
        content.arrays,
        {**attrs, **content.attrs},
        dims=content.dims,
        overwrite=overwrite,
    )


def _stored_attr(
    attrs: Mapping[str, Any],
    key: str,
    convert: Callable[[Any], Any],
    where: str,
    default: Any = None,
) -> Any:
    if key not in attrs and default is not None:
        return default
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


def result_from_group(
    arrays: Mapping[str, Any], attrs: Mapping[str, Any], where: str
) -> HessianResult:
    """A stored run as the record `Hessian.compute` returned; BadInput for a group that is
    not shaped as `Hessian.to_group` makes it (hostile or foreign files)."""
    check_arrays(
        where,
        arrays,
        {"eigenvalues": 1, "eigenvalues_normalized": 1, "residuals": 1, "random_losses": 1},
    )
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
    trace_mean = _stored_attr(attrs, "trace", float, where)
    trace = None
    if math.isfinite(trace_mean):
        trace = TraceEstimate(
            trace_mean,
            _stored_attr(attrs, "trace_stderr", float, where),
            _stored_attr(attrs, "trace_probes", int, where, TRACE_PROBES),
        )
    density = None
    if "density" in arrays:
        density = SpectralDensity(arrays.get("density_grid", np.zeros(0)), arrays["density"])
    losses = arrays["random_losses"]
    init = _stored_attr(attrs, "loss_scale_init", str, where, "spec" if losses.size else "none")
    return HessianResult(
        matrix=_stored_attr(attrs, "matrix", str, where, "hessian"),
        loss=_stored_attr(attrs, "loss", float, where),
        eigenpairs=TopEigenpairs(
            arrays["eigenvalues"],
            arrays["eigenvalues_normalized"],
            arrays["residuals"],
            vectors,
            _stored_attr(attrs, "method", str, where),
        ),
        loss_scale=LossScale(losses, _stored_attr(attrs, "loss_scale", float, where), init),
        trace=trace,
        density=density,
        n_hvp=_stored_attr(attrs, "n_hvp", int, where),
        wall_s=_stored_attr(attrs, "wall_s", float, where),
        param_names=names,
        param_shapes=shapes,
        nonfinite=bool(attrs.get("nonfinite", False)),
    )


def load_hessian(path: str | Path, group: str) -> HessianResult:
    """Read a stored run back (see `result_from_group`)."""
    arrays, attrs = read_group(path, _group(group))
    return result_from_group(arrays, attrs, f"{path}:{_group(group)}")


def load_eigenvectors(path: str | Path, group: str) -> list[dict[str, Tensor]]:
    """Stored eigenvectors as name-keyed unit directions (CPU, fp32), top first.

    `group` is `/hessian/<run>` or the run name; the run must have been stored with
    `--save-vectors`.
    """
    result = load_hessian(path, group)
    vectors = result.eigenpairs.eigenvectors
    if vectors is None:
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
    for row in vectors:
        vector = torch.from_numpy(np.asarray(row, dtype=np.float32).copy())
        parts = torch.split(vector, sizes)
        out.append(
            {n: p.reshape(s) for n, p, s in zip(result.param_names, parts, result.param_shapes)}
        )
    return out
