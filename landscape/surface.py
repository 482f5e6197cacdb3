"""Loss surfaces: L(theta + a d1) in 1D and L(theta + a d1 + b d2) in 2D (Li et al. 2018;
Liu et al. Fig. 12; Kanai et al. appendix F.1, Fig. 7).

At every grid point: the clean loss and error, and for eps > 0 the adversarial loss and
error with PGD regenerated at that point (eval mode, the same random start at every point:
common random numbers keep the surface free of start-to-start noise). BatchNorm runs in
eval mode with the checkpoint's statistics (`bn="eval"`) or with statistics re-estimated
on the analysed data at each point (`bn="recompute"`, a size-weighted average over its
batches, as for mode connectivity).

One model instance serves every point: parameters are swapped in by name through
`torch.func.functional_call`. Clean points are evaluated `points_per_batch` at a time by
`torch.func.vmap` over stacked parameter sets (default 8 on a CPU, 32 on an accelerator).
Points are processed in fixed blocks of flat grid indices, so an interrupted and resumed
run repeats exactly the same arithmetic and gives bit-identical arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from .analysis import Analysis, Group, Inputs, PlanContext, Stored, given, speed_knob
from .attacks import AttackConfig, attack_config, perturb
from .directions import FILE_KINDS, Directions, compute_directions, load_directions, on_params
from .dryrun import BOOL, F32, F64, Plan, Tally, arrays_bytes
from .params import (
    ParamDict,
    combine,
    estimate_bn,
    eval_mode,
    forward_at,
    functional_forward,
    global_norm,
    named_params,
)
from .store import MASKS, Grid, resolve_grid
from .util import BadInput, make_generator

BN_MODES = ("eval", "recompute")
CLEAN_FIELDS = ("loss", "error")
ADV_FIELDS = ("adv_loss", "adv_error")
Progress = Callable[[int, int], None]


def parse_range(text: str, argument: str = "range", *, log: bool = False) -> np.ndarray:
    """`a:b:n` -> n points from a to b inclusive (np.linspace; n = 1 gives a).

    a < b and n >= 1 are required; `log` spaces the points geometrically and needs a > 0.
    `argument` is the caller's name for `text`, which errors name.
    """
    parts = str(text).split(":")
    example = "1e-3:1:7" if log else "-1:1:21"
    if len(parts) != 3:
        raise BadInput(f"{{arg}} {text!r} must be a:b:n, like {example}", argument=argument)
    try:
        a, b = float(parts[0]), float(parts[1])
        n = int(parts[2])
    except ValueError as exc:
        raise BadInput(
            f"{{arg}} {text!r} must be two numbers and an integer count, like {example}",
            argument=argument,
        ) from exc
    if not (math.isfinite(a) and math.isfinite(b)):
        raise BadInput(f"{{arg}} {text!r} must have finite ends", argument=argument)
    if n < 1:
        raise BadInput(
            f"{{arg}} {text!r} asks for {n} points; the count must be >= 1", argument=argument
        )
    if a == b:
        raise BadInput(f"{{arg}} {text!r} has zero length; give a < b", argument=argument)
    if a > b:
        raise BadInput(
            f"{{arg}} {text!r} is inverted; give a < b, like {example}", argument=argument
        )
    if log:
        if a <= 0:
            raise BadInput(f"{{arg}} {text!r} is log-spaced and needs a > 0", argument=argument)
        return np.geomspace(a, b, n)
    return np.linspace(a, b, n)


@dataclass(frozen=True)
class SurfaceResult:
    """The arrays of one `/surface/<run>` group (`y` and the adversarial fields are optional)."""

    x: np.ndarray
    loss: np.ndarray
    error: np.ndarray
    done: np.ndarray
    nonfinite: np.ndarray  # points whose loss was NaN/inf (stored as NaN)
    y: np.ndarray | None = None
    adv_loss: np.ndarray | None = None
    adv_error: np.ndarray | None = None
    explained_variance_ratio: np.ndarray | None = None  # pca directions
    trajectory: np.ndarray | None = None  # pca: (checkpoints, dim) coordinates
    trajectory_epoch: np.ndarray | None = None
    direction_norms: tuple[float, ...] = ()

    def attrs(self) -> dict[str, list[float]]:
        """The global norm of each direction: the parameter distance of coordinate 1."""
        return {"direction_norms": list(self.direction_norms)}

    def coords(self) -> dict[str, np.ndarray]:
        return {"x": self.x} if self.y is None else {"x": self.x, "y": self.y}

    def fields(self) -> dict[str, np.ndarray]:
        names = CLEAN_FIELDS + (ADV_FIELDS if self.adv_loss is not None else ())
        return {n: getattr(self, n) for n in names}

    def extras(self) -> dict[str, np.ndarray]:
        names = ("explained_variance_ratio", "trajectory", "trajectory_epoch")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def dims(self) -> dict[str, tuple[str | None, ...]]:
        axes = tuple(self.coords())
        out: dict[str, tuple[str | None, ...]] = {n: axes for n in (*self.fields(), *MASKS)}
        extras = {
            "explained_variance_ratio": ("direction",),
            "trajectory": ("checkpoint", "direction"),
            "trajectory_epoch": ("checkpoint",),
        }
        return {**out, **{n: extras[n] for n in self.extras()}}

    def arrays(self) -> dict[str, np.ndarray]:
        masks = {m: getattr(self, m) for m in MASKS}
        return {**self.coords(), **self.fields(), **masks, **self.extras()}


def fields_for(eps: float) -> tuple[str, ...]:
    return CLEAN_FIELDS + (ADV_FIELDS if eps > 0 else ())


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy as logsumexp(z) - z_y: F.cross_entropy's numbers, several
    times faster on a CPU, where it is a large part of a small model's clean point."""
    return torch.logsumexp(logits, -1) - logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)


def _sums(logits: Tensor, y: Tensor) -> Tensor:
    """[summed cross-entropy, number of errors] of one batch, in float64."""
    loss = _cross_entropy(logits, y).sum().double()
    return torch.stack([loss, (logits.argmax(-1) != y).sum().double()])


def point_losses(
    forward: Callable[[Tensor], Tensor],
    X: Tensor,
    y: Tensor,
    *,
    attack: AttackConfig | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> tuple[float, float]:
    """Mean loss and error of `forward` on (X, y), or on PGD examples against it if `attack`."""
    total = torch.zeros(2, dtype=torch.float64, device=X.device)
    for i in range(0, X.shape[0], batch_size):
        xb, yb = X[i : i + batch_size], y[i : i + batch_size]
        if attack is not None:
            xb = perturb(forward, xb, yb, attack, generator=generator)
        with torch.no_grad():
            total += _sums(forward(xb), yb)
    loss, err = (total / X.shape[0]).tolist()
    return loss, err


def _stacked_losses(
    model: nn.Module, stacked: Mapping[str, Tensor], X: Tensor, y: Tensor, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean clean loss and error at P stacked parameter sets, one vmapped forward per batch.

    A call holds P x `batch_size` examples' activations. Inference mode, not just no_grad:
    it also skips version counting and view tracking, a few percent of a small model's point.
    """
    points = next(iter(stacked.values())).shape[0]
    total = torch.zeros(points, 2, dtype=torch.float64, device=X.device)
    with torch.inference_mode():
        for i in range(0, X.shape[0], batch_size):
            xb, yb = X[i : i + batch_size], y[i : i + batch_size]
            logits = vmap(lambda p, xb=xb: functional_forward(model, p, xb))(dict(stacked))
            target = yb.expand(points, -1)
            loss = _cross_entropy(logits, target).sum(1)
            wrong = (logits.argmax(-1) != target).sum(1)
            total += torch.stack([loss.double(), wrong.double()], dim=1)
    out = (total / X.shape[0]).cpu().numpy()
    return out[:, 0], out[:, 1]


def _stack(base: ParamDict, directions: Sequence[ParamDict], coeffs: Tensor) -> ParamDict:
    """base + sum_k coeffs[:, k] d_k for every row of coeffs: tensors with a leading point axis.

    One `addmm` per parameter (coefficients x stacked directions) rather than a clone and
    one multiply-add per direction: on small models this bookkeeping is a visible part of
    a clean point.
    """
    out = {}
    for name, b in base.items():
        flat = torch.stack([d[name].reshape(-1) for d in directions])
        rows = torch.addmm(b.reshape(1, -1), coeffs.to(b.dtype), flat)
        out[name] = rows.view(coeffs.shape[0], *b.shape)
    return out


def _point(
    model: nn.Module,
    base: ParamDict,
    vectors: Sequence[ParamDict],
    coeffs: Tensor,
    recompute: bool,
    X: Tensor,
    batch_size: int,
) -> Callable[[Tensor], Tensor]:
    """The model's forward at base + sum_k c_k d_k (BN re-estimated on X when `recompute`)."""
    params = combine(base, *((float(c), d) for c, d in zip(coeffs.tolist(), vectors)))
    buffers = estimate_bn(model, params, X, batch_size=batch_size) if recompute else None
    return forward_at(model, params, buffers)


def default_points_per_batch(device: torch.device) -> int:
    """Clean points per vmapped call: 32 on an accelerator, 8 on a CPU (on digits LeNet
    w=1-2, VGG and MLP models 8 was 1.1-2.6x faster per point than one at a time)."""
    return 8 if device.type == "cpu" else 32


def surface(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    directions: str | Directions | Sequence[ParamDict] = "filter",
    *,
    dim: int = 1,
    xrange: tuple[float, float, int] | Sequence[float] = (-1.0, 1.0, 21),
    yrange: tuple[float, float, int] | Sequence[float] | None = None,
    eps: float = 0.0,
    norm: str = "linf",
    steps: int | None = None,
    step_size: float | None = None,
    family: str | None = None,
    bn: str = "eval",
    seed: int = 0,
    batch_size: int = 1024,
    points_per_batch: int | None = None,
    grid: Grid | None = None,
    progress: Progress | None = None,
    **direction_options,
) -> SurfaceResult:
    """The loss surface around the model's parameters (see the module docstring).

    `directions` is a computed kind (`filter`, `random`, `eigen`, made by
    `compute_directions` with `direction_options`), a `Directions` (for instance read by
    `directions.load_directions`), or `dim` name-keyed dicts. `xrange`/`yrange` are (a, b, n) or explicit coordinates. With `grid`, points
    already done there are skipped and new ones are recorded in it (resumable runs).
    """
    if dim not in (1, 2):
        raise BadInput(f"{{arg}} {dim} is not valid; use 1 or 2", argument="dim")
    if bn not in BN_MODES:
        raise BadInput(
            f"{{arg}} {bn!r} is not valid; use one of {', '.join(BN_MODES)}", argument="bn"
        )
    xs = _coords(xrange, "xrange")
    ys = _coords(yrange if yrange is not None else xrange, "yrange") if dim == 2 else None
    family = family or ("mnist-like" if X.shape[1] == 1 else "cifar-like")
    attack = (
        attack_config(eps, family=family, norm=norm, steps=steps, step_size=step_size)
        if eps > 0
        else None
    )
    if isinstance(directions, str):
        directions = compute_directions(
            directions, model, dim, X=X, y=y, seed=seed, **direction_options
        )
    dset = directions if isinstance(directions, Directions) else Directions(list(directions))
    if len(dset.vectors) != dim:
        raise BadInput(f"a {dim}D surface needs {dim} directions, got {len(dset.vectors)}")

    shape = (len(xs),) if ys is None else (len(xs), len(ys))
    fields = fields_for(eps)
    grid = resolve_grid(grid, shape, fields)
    arrays, done = grid.arrays, grid.done

    device = X.device
    base = named_params(model)
    vectors = [on_params(d, base) for d in dset.vectors]
    grid_coeffs = np.stack(np.meshgrid(xs, *([ys] if ys is not None else []), indexing="ij"), -1)
    coeffs = torch.as_tensor(grid_coeffs.reshape(-1, dim), dtype=torch.float64, device=device)
    recompute = bn == "recompute" and has_batchnorm(model)
    per_call = 1 if recompute else (points_per_batch or default_points_per_batch(device))
    total = coeffs.shape[0]
    flat_done = done.reshape(-1)
    # Work units: the fixed blocks of flat indices that still hold a pending point. Under
    # torchrun they are dealt to ranks from a shared queue; the arithmetic of a block does
    # not depend on the rank, so the arrays equal one process's bit for bit.
    blocks = [s for s in range(0, total, per_call) if not flat_done[s : s + per_call].all()]

    def work(start: int) -> list[tuple[tuple[int, ...], dict[str, float]]]:
        block = range(start, min(start + per_call, total))
        pending = [i for i in block if not flat_done[i]]
        if per_call > 1:
            loss, err = _stacked_losses(
                model, _stack(base, vectors, coeffs[block.start : block.stop]), X, y, batch_size
            )
        out = []
        for i in pending:
            if per_call > 1:
                values = {"loss": float(loss[i - start]), "error": float(err[i - start])}
            else:
                forward = _point(model, base, vectors, coeffs[i], recompute, X, batch_size)
                values = dict(zip(CLEAN_FIELDS, point_losses(forward, X, y, batch_size=batch_size)))
            if attack is not None:
                if per_call > 1:
                    forward = _point(model, base, vectors, coeffs[i], False, X, batch_size)
                gen = make_generator(seed, device)
                adv = point_losses(
                    forward, X, y, attack=attack, generator=gen, batch_size=batch_size
                )
                values.update(zip(ADV_FIELDS, adv))
            out.append(([int(j) for j in np.unravel_index(i, shape)], values))
        return out

    with eval_mode(model):
        grid.run(blocks, work, progress)

    traj = dset.trajectory
    return SurfaceResult(
        x=xs,
        y=ys,
        done=done.copy(),
        nonfinite=grid.nonfinite.copy(),
        **{f: arrays[f].copy() for f in fields},
        explained_variance_ratio=None if traj is None else traj.explained_variance_ratio,
        trajectory=None if traj is None else traj.coordinates,
        trajectory_epoch=None if traj is None else traj.epochs,
        direction_norms=tuple(float(global_norm(v)) for v in vectors),
    )


def _coords(spec: str | tuple[float, float, int] | Sequence[float], argument: str) -> np.ndarray:
    """`"a:b:n"` or a tuple (a, b, n) is a range; a list or array holds the coordinates."""
    if isinstance(spec, str):
        return parse_range(spec, argument)
    if isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[2], int):
        return parse_range(f"{spec[0]}:{spec[1]}:{spec[2]}", argument)
    arr = np.asarray(spec, dtype=float)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise BadInput(
            f"{{arg}} {spec!r} must be a:b:n or a non-empty list of finite numbers",
            argument=argument,
        )
    return arr


@dataclass(frozen=True)
class Surface(Analysis):
    """The loss surface (module docstring) as an analysis: `dirs` names the directions
    (computed here for filter, random and eigen; read by the caller for interp, pca and a
    stored `hessian_group`, and given as `directions`); `direction_options` are the
    recorded options of that choice; `attack` at eps 0 means a clean surface."""

    name: ClassVar[str] = "surface"
    grid: ClassVar[bool] = True
    axes: ClassVar[tuple[str, ...]] = ("x", "y")
    ranges: ClassVar[dict[str, bool]] = {"xrange": False, "yrange": False}

    attack: AttackConfig
    dirs: str = "filter"
    dim: int = 1
    xrange: tuple[float, ...] = tuple(np.linspace(-1.0, 1.0, 21))
    yrange: tuple[float, ...] | None = None
    bn: str = "eval"
    bias_bn: str = "ignore"
    orthogonal: bool = False
    hessian_group: str | None = None
    other: tuple[str, ...] = ()
    trajectory: str | None = None
    batch_size: int = speed_knob(1024)
    points_per_batch: int | None = speed_knob(None)
    seed: int = 0
    directions: Directions | None = given()

    def check(self, inputs: Inputs) -> None:
        if self.dim not in (1, 2):
            raise BadInput(f"{{arg}} {self.dim} is not valid; use 1 or 2", argument="dim")
        if self.bn not in BN_MODES:
            raise BadInput(
                f"{{arg}} {self.bn!r} is not valid; use one of {', '.join(BN_MODES)}", argument="bn"
            )
        if self.directions is None and self.dirs in FILE_KINDS:
            raise BadInput(
                f"{{arg}} {self.dirs} directions are read from files by the caller "
                "(directions.load_directions); pass them as `directions`",
                argument="dirs",
            )

    def with_files(self, inputs: Inputs | None, results_file: str | Path | None) -> Surface:
        """`interp`, `pca` and stored `eigen` directions, read for `compute`."""
        loaded = load_directions(
            self.dirs,
            inputs.model,
            self.dim,
            hessian_group=self.hessian_group,
            results_file=results_file,
            other=self.other,
            trajectory=self.trajectory,
            spec=inputs.spec,
            orthogonal=self.orthogonal,
        )
        return self if loaded is None else replace(self, directions=loaded)

    def shape(self, inputs: Inputs) -> tuple[int, ...]:
        ys = self.yrange if self.yrange is not None else self.xrange
        return (len(self.xrange),) if self.dim == 1 else (len(self.xrange), len(ys))

    def fields(self) -> tuple[str, ...]:
        return fields_for(self.attack.eps)

    def compute(
        self, inputs: Inputs, *, grid: Grid | None = None, progress: Progress | None = None
    ) -> SurfaceResult:
        directions = self.directions or compute_directions(
            self.dirs,
            inputs.model,
            self.dim,
            X=inputs.X,
            y=inputs.y,
            seed=self.seed,
            bias_bn=self.bias_bn,
            attack=self.attack if self.attack.eps > 0 else None,
            orthogonal=self.orthogonal,
        )
        return surface(
            inputs.model,
            inputs.X,
            inputs.y,
            directions,
            dim=self.dim,
            xrange=np.asarray(self.xrange),
            yrange=None if self.yrange is None else np.asarray(self.yrange),
            eps=self.attack.eps,
            norm=self.attack.norm,
            steps=self.attack.steps,
            step_size=self.attack.step_size,
            family=inputs.family,
            bn=self.bn,
            seed=self.seed,
            batch_size=self.batch_size,
            points_per_batch=self.points_per_batch,
            grid=grid,
            progress=progress,
        )

    def plan(self, inputs: Inputs, context: PlanContext) -> Plan:
        """Per point a clean pass (vmapped `points_per_batch` at a time, or BN
        re-estimation plus a clean pass) and, for eps > 0, PGD plus an adversarial forward."""
        from .dryrun import eigen_directions_passes

        model, shape = inputs.model, self.shape(inputs)
        n, bs = int(inputs.X.shape[0]), self.batch_size
        attack = self.attack if self.attack.eps > 0 else None
        tally = Tally()
        if self.dirs == "eigen" and self.directions is None:
            eigen_directions_passes(tally, self.dim, n, attack)
        tally.resume_note(context)
        recompute = self.bn == "recompute" and has_batchnorm(model)
        per_call = (
            1 if recompute else (self.points_per_batch or default_points_per_batch(inputs.X.device))
        )
        flat = context.done.reshape(-1)
        for start in range(0, flat.size, per_call):
            block = flat[start : start + per_call]
            pending = int((~block).sum())
            if not pending:
                continue
            if per_call > 1:
                tally.add("forward_stacked", n, bs, rows=block.size)
            else:
                tally.add("forward", n, bs, 2 if recompute else 1)
            tally.pgd(n, bs, attack, pending)
            if attack is not None:
                tally.add("forward", n, bs, pending)
        sizes = {"x": ((shape[0],), F64), "done": (shape, BOOL), "nonfinite": (shape, BOOL)}
        if self.dim == 2:
            sizes["y"] = ((shape[1],), F64)
        sizes.update({f: (shape, F64) for f in self.fields()})
        trajectory = None if self.directions is None else self.directions.trajectory
        if trajectory is not None:
            sizes["explained_variance_ratio"] = ((self.dim,), F32)
            sizes["trajectory"] = ((len(trajectory.paths), self.dim), F32)
            sizes["trajectory_epoch"] = ((len(trajectory.paths),), F64)
        return tally.plan(
            "surface", [context.group], context.calibration, arrays_bytes(sizes), per_call
        )

    def to_group(self, result: SurfaceResult) -> Group:
        return Group(result.arrays(), dict(result.dims()), result.attrs())

    def from_group(
        self, arrays: Mapping[str, Any], attrs: Mapping[str, Any], where: str
    ) -> SurfaceResult:
        names = [f.name for f in fields(SurfaceResult) if f.name != "direction_norms"]
        return SurfaceResult(
            **{n: arrays.get(n) for n in names},
            direction_norms=tuple(float(v) for v in attrs.get("direction_norms", ())),
        )

    def summary(self, stored: Stored) -> dict[str, Any]:
        return {
            f"{f}_range": [
                float(np.nanmin(stored.arrays[f])),
                float(np.nanmax(stored.arrays[f])),
            ]
            for f in self.fields()
        }
