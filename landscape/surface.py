"""Loss surfaces: L(theta + a d1) in 1D and L(theta + a d1 + b d2) in 2D (Li et al. 2018;
Liu et al. Fig. 12; Kanai et al. appendix F.1, Fig. 7).

At every grid point: the clean loss and error, and for eps > 0 the adversarial loss and
error with PGD regenerated at that point (eval mode, the same random start at every point:
common random numbers keep the surface free of start-to-start noise). BatchNorm runs in
eval mode with the checkpoint's statistics (`bn="eval"`) or with statistics re-estimated
on the analysed data at each point (`bn="recompute"`, a size-weighted average over its
batches, as for mode connectivity).

One model instance serves every point: parameters are swapped in by name through
`torch.func.functional_call`. Points are evaluated `points_per_batch` at a time by
`torch.func.vmap` over stacked parameter sets (default 8 on a CPU, 32 on an accelerator):
the clean forward, and for eps > 0 every PGD iteration (one vmapped forward and input
gradient for all the points, `attacks.perturb_points`) and the adversarial forward. The
stacked PGD uses the single-point path's random start at every point, so it gives the
single-point numbers up to float rounding; its points per call are capped so that their
saved activations stay within a memory budget (`adversarial_points_per_call`). Points are
processed in fixed blocks of flat grid indices, so an interrupted and resumed run repeats
exactly the same arithmetic and gives bit-identical arrays.

`precision` (`fp32`, `bf16`, `fp16`) is the dtype the network is evaluated in, PGD included;
directions and the parameters of each point are computed in fp32 and cast at the call
(`params.functional_forward`), losses are summed in fp64.
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
from .attacks import AttackConfig, attack_config, perturb, perturb_points
from .directions import FILE_KINDS, Directions, compute_directions, load_directions, on_params
from .dryrun import BOOL, F32, F64, Plan, Tally, arrays_bytes
from .params import (
    ParamDict,
    estimate_bn,
    eval_mode,
    forward_at,
    functional_forward,
    global_norm,
    named_params,
    precision_dtype,
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


def _vmapped(
    model: nn.Module,
    stacked: Mapping[str, Tensor],
    x: Tensor,
    dtype: torch.dtype | None,
    *,
    per_point: bool,
) -> Tensor:
    """Logits (P, B, classes) at P stacked parameter sets, of one batch x (B, ...) shared by
    every point or, `per_point`, of a batch of its own per point, x (P, B, ...)."""
    return vmap(
        lambda p, xb: functional_forward(model, p, xb, dtype=dtype),
        in_dims=(0, 0 if per_point else None),
    )(dict(stacked), x)


def _points_minor(x: Tensor) -> Tensor:
    """Per-point image batches x (P, B, C, H, W), stored as (B, H, W, P, C).

    vmap runs a convolution whose input and weights both carry the point axis as one grouped
    convolution over (B, P x C, H, W); in this layout that view is channels-last without a
    copy, oneDNN's fast path for grouped convolutions on a CPU. Measured per stacked PGD
    iteration on digits (8 points): LeNet 11%, VGG 5%, ResNet-18 30% faster; an MLP, which
    flattens its input, 25% slower, so only models with convolutions use it.
    """
    return x.permute(1, 3, 4, 0, 2).contiguous().permute(3, 0, 4, 1, 2)


def _stacked_losses(
    model: nn.Module,
    stacked: Mapping[str, Tensor],
    X: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    attack: AttackConfig | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and error at P stacked parameter sets, on (X, y) or, with `attack`, on PGD
    examples made at each point (`perturb_points`: one vmapped forward and input gradient
    per iteration for all P), started from the generator of `seed` as `point_losses` does.

    The final forward of a batch is vmapped too, in inference mode (not just no_grad: it
    also skips version counting and view tracking, a few percent of a small model's point).
    A call holds P x `batch_size` examples' activations. On a CPU, models with convolutions
    get their per-point batches in the layout of `_points_minor`.
    """
    points = next(iter(stacked.values())).shape[0]
    generator = make_generator(seed, X.device) if attack is not None else None
    relayout = (
        X.dim() == 4
        and X.device.type == "cpu"
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
    )
    total = torch.zeros(points, 2, dtype=torch.float64, device=X.device)
    for i in range(0, X.shape[0], batch_size):
        xb, yb = X[i : i + batch_size], y[i : i + batch_size]
        if attack is not None:
            shape = (points, *xb.shape)

            def forward(x: Tensor, shape: tuple[int, ...] = shape) -> Tensor:
                x = _points_minor(x.view(shape)) if relayout else x.view(shape)
                return _vmapped(model, stacked, x, dtype, per_point=True).flatten(0, 1)

            xb = perturb_points(forward, xb, yb, attack, points, generator=generator).view(shape)
            if relayout:
                xb = _points_minor(xb)
        with torch.inference_mode():
            logits = _vmapped(model, stacked, xb, dtype, per_point=attack is not None)
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
    a clean point. Single points use it too, so they get the stacked points' parameters.
    """
    out = {}
    for name, b in base.items():
        flat = torch.stack([d[name].reshape(-1) for d in directions])
        rows = torch.addmm(b.reshape(1, -1), coeffs.to(b.dtype), flat)
        out[name] = rows.view(coeffs.shape[0], *b.shape)
    return out


ACTIVATION_PROBE = (1, 2)  # examples in the two forwards that measure activation sizes


def _activation_bytes(model: nn.Module, X: Tensor) -> int:
    """Bytes autograd saves per example for an input gradient at fp32 (eval mode): the
    difference of a one- and a two-example forward, so the weights it saves drop out."""
    params = named_params(model)
    sizes = []
    with eval_mode(model), torch.enable_grad():
        for n in ACTIVATION_PROBE:
            saved = [0]

            def pack(t: Tensor, saved: list[int] = saved) -> Tensor:
                saved[0] += t.numel() * t.element_size()
                return t

            x = X[:1].repeat(n, *([1] * (X.dim() - 1))).requires_grad_(True)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                functional_forward(model, params, x)
            sizes.append(saved[0])
    return max(sizes[1] - sizes[0], 1)


def stacked_pgd_budget(device: torch.device) -> int:
    """Bytes of saved activations one stacked PGD call may hold: a quarter of a CUDA
    device's memory, 1 GiB elsewhere (CPU memory is shared with everything else)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return 1 << 30


def adversarial_points_per_call(
    model: nn.Module, X: Tensor, batch_size: int, points_per_batch: int
) -> int:
    """Points attacked per stacked PGD call: `points_per_batch`, fewer (at least 1) when
    their saved activations for a batch would exceed `stacked_pgd_budget` (sizes at fp32,
    an upper bound for bf16 and fp16; measured by two tiny forwards, `ACTIVATION_PROBE`).
    Small models stack every point of a block."""
    per_point = _activation_bytes(model, X) * min(batch_size, X.shape[0])
    return max(1, min(points_per_batch, stacked_pgd_budget(X.device) // per_point))


def default_points_per_batch(device: torch.device) -> int:
    """Points per vmapped call: 32 on an accelerator, 8 on a CPU (on digits LeNet w=1-2, VGG
    and MLP models 8 clean points were 1.1-2.6x faster per point than one at a time, and
    stacked PGD on LeNet w=2 1.3x; 16 and 32 gained no more)."""
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
    precision: str = "fp32",
    grid: Grid | None = None,
    progress: Progress | None = None,
    **direction_options,
) -> SurfaceResult:
    """The loss surface around the model's parameters (see the module docstring).

    `directions` is a computed kind (`filter`, `random`, `eigen`, made by
    `compute_directions` with `direction_options`), a `Directions` (for instance read by
    `directions.load_directions`), or `dim` name-keyed dicts. `xrange`/`yrange` are (a, b, n) or explicit coordinates. With `grid`, points
    already done there are skipped and new ones are recorded in it (resumable runs).
    `precision` is the dtype of the network's evaluation (fp32, bf16, fp16).
    """
    if dim not in (1, 2):
        raise BadInput(f"{{arg}} {dim} is not valid; use 1 or 2", argument="dim")
    if bn not in BN_MODES:
        raise BadInput(
            f"{{arg}} {bn!r} is not valid; use one of {', '.join(BN_MODES)}", argument="bn"
        )
    dtype = precision_dtype(precision)
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

    adv_per_call = (
        adversarial_points_per_call(model, X, batch_size, per_call)
        if attack is not None and per_call > 1 and blocks
        else 1
    )

    def block_values(block: range) -> dict[str, np.ndarray]:
        """Every field at every point of a block, done points included, so that a block's
        arithmetic never depends on what an earlier run finished."""
        stacked = _stack(base, vectors, coeffs[block.start : block.stop])
        if per_call == 1:
            params = {name: rows[0] for name, rows in stacked.items()}
            buffers = (
                estimate_bn(model, params, X, batch_size=batch_size, dtype=dtype)
                if recompute
                else None
            )
            forward = forward_at(model, params, buffers, dtype)
            found = point_losses(forward, X, y, batch_size=batch_size)
            if attack is not None:
                gen = make_generator(seed, device)
                found += point_losses(
                    forward, X, y, attack=attack, generator=gen, batch_size=batch_size
                )
            return {f: np.array([v]) for f, v in zip(fields, found)}
        values = dict(
            zip(CLEAN_FIELDS, _stacked_losses(model, stacked, X, y, batch_size, dtype=dtype))
        )
        if attack is not None:
            chunks = [
                _stacked_losses(
                    model,
                    {name: rows[c : c + adv_per_call] for name, rows in stacked.items()},
                    X,
                    y,
                    batch_size,
                    attack=attack,
                    seed=seed,
                    dtype=dtype,
                )
                for c in range(0, len(block), adv_per_call)
            ]
            for k, f in enumerate(ADV_FIELDS):
                values[f] = np.concatenate([chunk[k] for chunk in chunks])
        return values

    def work(start: int) -> list[tuple[list[int], dict[str, float]]]:
        block = range(start, min(start + per_call, total))
        values = block_values(block)
        return [
            (
                [int(j) for j in np.unravel_index(i, shape)],
                {f: float(values[f][i - start]) for f in fields},
            )
            for i in block
            if not flat_done[i]
        ]

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
    precision: str = precision_field()
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
            precision=self.precision,
            grid=grid,
            progress=progress,
        )

    def plan(self, inputs: Inputs, context: PlanContext) -> Plan:
        """Per point a clean pass (vmapped `points_per_batch` at a time, or BN
        re-estimation plus a clean pass) and, for eps > 0, PGD plus an adversarial forward
        (stacked in chunks of `adversarial_points_per_call` when the clean pass is vmapped)."""
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
        adv_per_call = 1
        if attack is not None and per_call > 1 and not context.done.all():
            adv_per_call = adversarial_points_per_call(model, inputs.X, bs, per_call)
            for examples in ACTIVATION_PROBE:  # the forwards that size the stacked attack
                tally.add("forward", examples, examples)
        flat = context.done.reshape(-1)
        for start in range(0, flat.size, per_call):
            block = flat[start : start + per_call]
            if block.all():
                continue
            if per_call == 1:
                tally.add("forward", n, bs, 2 if recompute else 1)
                tally.pgd(n, bs, attack)
                if attack is not None:
                    tally.add("forward", n, bs)
                continue
            tally.add("forward_stacked", n, bs, rows=block.size)
            if attack is None:
                continue
            # A block attacks all its points, done ones too (its arithmetic is fixed).
            for chunk in range(0, block.size, adv_per_call):
                rows = min(adv_per_call, block.size - chunk)
                tally.add("input_grad_stacked", n, bs, attack.steps, rows=rows)
                tally.add("forward", n, bs, rows=rows)
        sizes = {"x": ((shape[0],), F64), "done": (shape, BOOL), "nonfinite": (shape, BOOL)}
        if self.dim == 2:
            sizes["y"] = ((shape[1],), F64)
        sizes.update({f: (shape, F64) for f in self.fields()})
        trajectory = None if self.directions is None else self.directions.trajectory
        if trajectory is not None:
            sizes["explained_variance_ratio"] = ((self.dim,), F32)
            sizes["trajectory"] = ((len(trajectory.paths), self.dim), F32)
            sizes["trajectory_epoch"] = ((len(trajectory.paths),), F64)
        points = {"forward_stacked": per_call, "input_grad_stacked": adv_per_call}
        return tally.plan(
            "surface", [context.group], context.calibration, arrays_bytes(sizes), points
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
