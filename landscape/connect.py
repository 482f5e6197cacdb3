"""Mode connectivity: a trained Bezier curve between two models (Liu et al. C.2.5, Fig. 15;
Garipov et al. 2018).

The curve of order n >= 1 joins the endpoints theta_0 (start) and theta_n (end):

    B(t) = sum_i C(n, i) (1 - t)^(n - i) t^i theta_i,   t in [0, 1]        (Liu et al. eq. 30)

(the paper prints C(n, t); it means C(n, i)). The endpoints are fixed; the n - 1 bends are
initialised on the segment, theta_i = theta_0 + i/n (theta_n - theta_0), and trained to
minimise E_{t ~ U[0,1]} L_eps(B(t)) with one t per mini-batch, the PGD examples generated at
B(t). B(t) is a name-keyed parameter dict evaluated by a functional call on one private copy
of the network (the template), so any architecture works and the endpoint models are never
touched. An order-1 curve is the straight line: it has no bends and nothing is trained.

BatchNorm. Running statistics are buffers, not points on the curve:
- training: BN runs in train mode on batch statistics (the attack too, with the running
  statistics frozen, as in `landscape.train`); the running-stat updates land in the
  template's own buffers, a scratch set that nothing reads.
- evaluation: at each t the statistics are re-estimated from fresh buffers by one pass over
  the training data in train mode, each batch weighted by its size (for equal batches this
  is torch's momentum=None cumulative average), then the model is evaluated in eval mode.
  Each running mean is then the mean over the whole data of that layer's input in this
  batched pass; the running variance is the size-weighted mean of the unbiased batch
  variances. With `bn_inputs="adv"` the pass sees PGD examples, generated in eval mode at
  the clean re-estimated statistics so that the attack itself does not feed the new ones.
  Models without BN skip all of this.

Resuming. Training saves `<curve>.resume.pt` after every epoch (bends, optimizer and RNG
states); a rerun with the same config and endpoints continues bit-identically on the same
device. Evaluation records each finished t in a `landscape.store.Grid`. Every t uses the
same attack seed (common random numbers), so the points do not depend on their order.

Two steps. `train_curve` is the trainer of the curve (it reads and writes the curve and
resume files; `train_curve_plan` is its dry run); `Connect` is the evaluation as an
analysis on `CurveInputs` (the endpoints, the data and the curve, loaded by the caller
with `curve_inputs`), run cached and stored by `analysis.run`. The caller trains first,
unless `analysis.stored_state` finds the evaluation stored already.

Curve file (`torch.load(..., weights_only=True)` reads it): format "landscape-curve",
version, spec, order, `control_points` {parameter name: tensor (n + 1, *shape)} from
theta_0 to theta_n, `endpoints` (paths and sha256), `train` (config, epoch, step, history).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed, store
from .analysis import (
    Analysis,
    Group,
    Inputs,
    PlanContext,
    Stored,
    foreign_reading,
    precision_field,
)
from .attacks import AttackConfig, attack_config, evaluate, perturb
from .checkpoint import build_from_spec, build_stored, load_checkpoint, read_checkpoint, sha256_file
from .data import augment, batches, dataset_info, load_dataset
from .dryrun import BOOL, F32, F64, Calibration, Plan, Tally, arrays_bytes, size_text
from .optim import BatchLoss, StepContext, UpdateRule
from .params import (
    ParamDict,
    estimate_bn,
    flatten,
    forward_at,
    functional_forward,
    named_params,
    precision_dtype,
)
from .train import Diverged, TrainConfig
from .util import BadInput, atomic_path, make_generator

CURVE_FORMAT = "landscape-curve"
CURVE_VERSION = 1
BN_INPUTS = ("clean", "adv")
OPTIMIZERS = ("sgd", "adam")
METRICS = ("train_loss", "train_error", "test_loss", "test_error")
# What must agree between the endpoints for a curve to join them.
SPEC_KEYS = ("arch", "width", "activation", "dataset", "input_shape", "num_classes")


def default_order(family: str) -> int:
    """The paper's choice: second order for MNIST pairs, fourth order for CIFAR pairs."""
    return 2 if family == "mnist-like" else 4


def bezier_coefficients(t: float | Tensor, order: int) -> Tensor:
    """C(n, i) (1 - t)^(n - i) t^i for i = 0..n (eq. 30); they sum to 1 (binomial theorem).

    A float t is computed in float64 on the CPU; a tensor t in its own dtype on its device,
    so that drawing t during training never waits for the device.
    """
    tt = t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)
    i = torch.arange(order + 1, dtype=tt.dtype, device=tt.device)
    binom = torch.tensor(
        [math.comb(order, k) for k in range(order + 1)], dtype=tt.dtype, device=tt.device
    )
    return binom * (1 - tt) ** (order - i) * tt**i


class BezierCurve(nn.Module):
    """B(t) over the parameters of `net`: fixed endpoints, trainable bends.

    The control points are flat vectors in the order of `net.named_parameters()`, so a point
    costs one matrix-vector product; `params_at` splits it back into tensors by name. `net`
    is the private template: its own parameters are frozen scratch space and its buffers
    the scratch BN statistics of training. As a module, the curve is the network at B(t)
    for its current `t` (set once per mini-batch in training).
    """

    def __init__(
        self,
        net: nn.Module,
        start: Mapping[str, Tensor],
        end: Mapping[str, Tensor],
        order: int,
        bends: Tensor | None = None,
    ):
        super().__init__()
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise BadInput(f"curve order {order!r} must be an integer >= 1")
        self.order = order
        self.net = net
        for p in net.parameters():
            p.requires_grad_(False)
        own = dict(net.named_parameters())
        self.names = list(own)
        self.shapes = [own[n].shape for n in self.names]
        self.sizes = [own[n].numel() for n in self.names]
        for label, point in (("start", start), ("end", end)):
            missing = [n for n in self.names if n not in point]
            wrong = [n for n in self.names if n in point and point[n].shape != own[n].shape]
            if missing or wrong:
                first = (missing or wrong)[0]
                raise BadInput(
                    f"the curve's {label} point does not fit the network: {len(missing)} missing "
                    f"and {len(wrong)} misshapen parameters (first {first})"
                )
        device = next(iter(own.values())).device
        a = flatten(start, self.names).detach().to(device, torch.float32)
        b = flatten(end, self.names).detach().to(device, torch.float32)
        self.register_buffer("start", a)
        self.register_buffer("end", b)
        if bends is None:
            frac = torch.arange(1, order, dtype=torch.float32, device=device) / order
            bends = a + frac[:, None] * (b - a)
        self.bends = nn.Parameter(
            bends.detach().to(device, torch.float32).reshape(order - 1, a.numel())
        )
        self.t: float | Tensor = 0.5

    def forward(self, x: Tensor) -> Tensor:
        return functional_forward(self.net, self.params_at(self.t), x)

    def _split(self, flat: Tensor) -> ParamDict:
        return {n: v.view(s) for n, v, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def params_at(self, t: float | Tensor) -> ParamDict:
        """B(t) by name; differentiable in the bends. B(0), B(1) are the endpoints exactly."""
        c = bezier_coefficients(t, self.order).to(self.start.device, self.start.dtype)
        flat = c[0] * self.start + c[-1] * self.end
        if self.order > 1:
            flat = torch.addmv(flat, self.bends.t(), c[1:-1])
        return self._split(flat)

    def line_at(self, t: float | Tensor) -> ParamDict:
        """The straight line (1 - t) theta_0 + t theta_n, the baseline of Fig. 15."""
        c = bezier_coefficients(t, 1).to(self.start.device, self.start.dtype)
        return self._split(c[0] * self.start + c[1] * self.end)

    def control_points(self) -> dict[str, Tensor]:
        """{name: (n + 1, *shape)} from theta_0 to theta_n, detached."""
        stacked = torch.cat([self.start[None], self.bends.detach(), self.end[None]])
        return {
            n: v.reshape(self.order + 1, *s)
            for n, v, s in zip(self.names, stacked.split(self.sizes, dim=1), self.shapes)
        }

    @classmethod
    def from_control_points(
        cls, net: nn.Module, points: Mapping[str, Tensor], order: int
    ) -> BezierCurve:
        names = [n for n, _ in net.named_parameters()]
        missing = [n for n in names if n not in points]
        if missing:
            raise BadInput(
                f"the curve has no control points for {missing[0]} (and {len(missing) - 1} more)"
            )
        bad = [n for n in names if points[n].shape[0] != order + 1]
        if bad:
            raise BadInput(f"control points of {bad[0]} are not {order + 1} (order {order} + 1)")
        start = {n: points[n][0] for n in names}
        end = {n: points[n][-1] for n in names}
        rows = [flatten({n: points[n][i] for n in names}) for i in range(1, order)]
        return cls(net, start, end, order, torch.stack(rows) if rows else None)

    def load_point(self, params: Mapping[str, Tensor]) -> None:
        """Copy a point into the template's own parameters (detached), so that code that calls
        the network directly (the attack's many forward passes) runs without functional calls."""
        with torch.no_grad():
            own = dict(self.net.named_parameters())
            torch._foreach_copy_([own[n] for n in self.names], [params[n] for n in self.names])


# ---------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class Endpoints:
    """Two checkpoints that a curve may join: their parameters, shared spec and hashes."""

    start: ParamDict
    end: ParamDict
    spec: dict[str, Any]
    start_path: str
    end_path: str
    start_sha256: str
    end_sha256: str


def load_endpoints(
    start: str | Path,
    end: str | Path,
    device: str | torch.device = "cpu",
    *,
    dataset: str | None = None,
    **foreign: Any,
) -> Endpoints:
    """Load both checkpoints; refuse a pair that differs in architecture, width, activation
    or dataset (`foreign` are `load_checkpoint`'s options for foreign state_dicts)."""
    models, specs = [], []
    for path in (start, end):
        model, spec = load_checkpoint(path, device, dataset=dataset, **foreign)
        models.append(model)
        specs.append(spec)
    for key in SPEC_KEYS:
        if specs[0].get(key) != specs[1].get(key):
            raise BadInput(
                f"{start} has {key}={specs[0].get(key)!r} but {end} has {specs[1].get(key)!r}; "
                f"a curve joins two models of the same arch, width, activation and dataset"
            )
    spec = {k: v for k, v in specs[0].items() if k != "train"}
    return Endpoints(
        named_params(models[0]),
        named_params(models[1]),
        spec,
        str(start),
        str(end),
        sha256_file(start),
        sha256_file(end),
    )


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class CurveConfig:
    """Every option of curve training; its JSON form (with the endpoints' hashes) identifies
    a curve for reuse and resuming. Optimizer and LR schedule are the trainer's."""

    order: int = 2
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_milestones: tuple[float, ...] = ()
    lr_gamma: float = 0.1
    lr_final: float | None = None
    lr_decay_epochs: tuple[float, ...] = ()
    lr_warmup: float = 0.0
    eps: float = 0.0
    norm: str = "linf"
    pgd_steps: int | None = None
    pgd_step_size: float | None = None
    augment: bool = True
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def trainer(self, spec: Mapping[str, Any]) -> TrainConfig:
        """The same options as a `TrainConfig`, for the trainer's optimizer and schedules.

        Weight decay there applies to every trainable parameter, which on a curve are the
        bends only."""
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        own = {k: v for k, v in dataclasses.asdict(self).items() if k in fields}
        return TrainConfig(
            dataset=spec["dataset"],
            arch=spec["arch"],
            width=spec["width"],
            activation=spec.get("activation", "relu"),
            **own,
        )

    def validate(self, spec: Mapping[str, Any]) -> None:
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 1:
            raise BadInput(f"{{arg}} must be an integer >= 1, got {self.order!r}", argument="order")
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(
                f"unknown optimizer {self.optimizer!r} for a curve; choose one of {', '.join(OPTIMIZERS)}"
            )
        self.trainer(spec).validate()

    @property
    def trained_epochs(self) -> int:
        """The epochs a curve of this config is trained: none for the line (order 1)."""
        return self.epochs if self.order > 1 else 0

    def attack(self, family: str) -> AttackConfig | None:
        """The PGD attack the curve is trained against (None at eps 0), by the papers' rule
        for the data `family` unless its steps and step size are given."""
        if self.eps == 0:
            return None
        return attack_config(
            self.eps,
            family=family,
            norm=self.norm,
            steps=self.pgd_steps,
            step_size=self.pgd_step_size,
        )


@dataclass(frozen=True)
class CurveBatchLoss:
    """The curve's objective on one mini-batch, in the trainer's `BatchLoss` protocol, so the
    trainer's `UpdateRule` trains the bends: `attack` draws t ~ U[0, 1] (one per mini-batch)
    and makes the PGD examples at B(t) in the curve's mode with frozen BN statistics, as the
    trainer does; `loss` scores them with `objective` under the curve, i.e. at that B(t)."""

    objective: BatchLoss
    t_generator: torch.Generator

    def attack(self, curve: BezierCurve, x: Tensor, y: Tensor, part: slice | None = None) -> Tensor:
        curve.t = torch.rand((), generator=self.t_generator, device=curve.start.device)
        if self.objective.attack_cfg is None:
            return x if part is None else x[part]
        with torch.no_grad():
            curve.load_point(curve.params_at(curve.t))
        return self.objective.attack(curve.net, x, y, part)

    def loss(
        self, forward: Callable[[Tensor], Tensor], x: Tensor, x_adv: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor]:
        return self.objective.loss(forward, x, x_adv, y)

    def __call__(self, curve: BezierCurve, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.loss(curve, x, self.attack(curve, x, y), y)


@dataclass(frozen=True)
class CurveTraining:
    """The outcome of `train_curve`: the curve and how it was obtained."""

    curve: BezierCurve
    path: Path
    spec: dict[str, Any]
    epochs: int
    steps: int
    resumed_from_epoch: int
    reused: bool
    complete: bool
    loss: tuple[float, ...]
    robust_error: tuple[float, ...]
    elapsed_s: float

    @property
    def status(self) -> str:
        """What the call did: `reused`, `trained` or `trained (resumed from epoch k)`."""
        if self.reused:
            return "reused"
        resumed = self.resumed_from_epoch
        return "trained" + (f" (resumed from epoch {resumed})" if resumed else "")


def _identity(config: CurveConfig, ends: Endpoints) -> str:
    return store.canonical_config(
        {
            "config": config.as_dict(),
            "start_sha256": ends.start_sha256,
            "end_sha256": ends.end_sha256,
        }
    )


def resume_path(curve_out: str | Path) -> Path:
    return Path(curve_out).with_suffix(".resume.pt")


def save_curve(
    path: str | Path,
    curve: BezierCurve,
    spec: Mapping[str, Any],
    *,
    endpoints: Mapping[str, str],
    train: Mapping[str, Any],
) -> Path:
    """Write a curve file atomically (plain tensors and data only; see the module docstring)."""
    payload = {
        "format": CURVE_FORMAT,
        "version": CURVE_VERSION,
        "spec": dict(spec),
        "order": curve.order,
        "control_points": {k: v.cpu().clone() for k, v in curve.control_points().items()},
        "endpoints": dict(endpoints),
        "train": dict(train),
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


def _read_curve_file(path: str | Path) -> dict[str, Any]:
    obj = read_checkpoint(path)
    if not (isinstance(obj, Mapping) and obj.get("format") == CURVE_FORMAT):
        raise BadInput(f"{path} is not a landscape curve file (made by `landscape connect`)")
    return obj


def is_curve(path: str | Path) -> bool:
    """Whether `path` is a curve file (a missing or unreadable file is not)."""
    try:
        _read_curve_file(path)
    except BadInput:
        return False
    return True


def load_curve(path: str | Path, device: str | torch.device = "cpu") -> tuple[BezierCurve, dict]:
    """A curve file as a `BezierCurve` on `device`, with the file's other contents.

    Contents that `save_curve` would not write are BadInput naming the file."""
    obj = _read_curve_file(path)
    net = build_stored(obj.get("spec"), str(path), device)
    points, order = obj.get("control_points"), obj.get("order")
    if not isinstance(points, Mapping) or not all(torch.is_tensor(v) for v in points.values()):
        raise BadInput(
            f"{path} holds no control points as tensors; it was not written by landscape"
        )
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise BadInput(
            f"{path} has order {order!r}, not an integer >= 1; it was not written by landscape"
        )
    for key in ("endpoints", "train"):
        if not isinstance(obj.get(key, {}), Mapping):
            raise BadInput(f"{path} has a malformed {key!r} entry; it was not written by landscape")
    try:
        curve = BezierCurve.from_control_points(
            net, {k: v.to(device) for k, v in points.items()}, order
        )
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from exc
    return curve, obj


def stored_curve(
    out: Path,
    config: CurveConfig,
    ends: Endpoints,
    *,
    overwrite: bool,
    device: str | torch.device = "cpu",
) -> tuple[tuple[BezierCurve, dict] | None, dict[str, Any] | None]:
    """(the finished curve in `out` as `load_curve` gives it, the resume state beside it) for
    this config and these endpoints, each None where absent. Another config or other
    endpoints are bad input unless `overwrite`, which ignores them."""
    identity = _identity(config, ends)
    resume = resume_path(out)
    if out.exists():
        curve, obj = load_curve(out, device)
        stored = store.canonical_config(
            {
                "config": obj.get("train", {}).get("config", {}),
                "start_sha256": obj.get("endpoints", {}).get("start_sha256"),
                "end_sha256": obj.get("endpoints", {}).get("end_sha256"),
            }
        )
        if stored == identity:
            return (curve, obj), None
        if not overwrite:
            raise BadInput(
                f"{out} holds a curve with another config or other endpoints; use another "
                "{arg} or {arg:overwrite}",
                argument="curve_out",
            )
    if not resume.exists():
        return None, None
    state = read_checkpoint(resume, map_location=device)
    if isinstance(state, Mapping) and state.get("identity") == identity:
        return None, state
    if not overwrite:
        raise BadInput(
            f"{resume} holds an unfinished curve with another config or other "
            "endpoints; use another {arg} or {arg:overwrite}",
            argument="curve_out",
        )
    return None, None


def train_curve(
    ends: Endpoints,
    config: CurveConfig,
    curve_out: str | Path,
    *,
    device: str | torch.device = "cpu",
    data_root: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    stop_after_epochs: int | None = None,
) -> CurveTraining:
    """Train the bends of a curve between `ends` (or reuse/resume one) and write `curve_out`.

    A curve file (or resume state) with the same config and endpoints is reused (resumed);
    one with another config is an error unless `overwrite`, which discards it.
    `stop_after_epochs` ends this call early, as an interruption would, leaving the resume
    file (for tests and time-boxed jobs).
    """
    config.validate(ends.spec)
    device = torch.device(device)
    out, resume = Path(curve_out), resume_path(curve_out)
    identity = _identity(config, ends)
    meta_ends = {
        "start": ends.start_path,
        "start_sha256": ends.start_sha256,
        "end": ends.end_path,
        "end_sha256": ends.end_sha256,
    }

    reused, state = stored_curve(out, config, ends, overwrite=overwrite, device=device)
    if reused is not None:
        curve, obj = reused
        resume.unlink(missing_ok=True)  # left by a kill just after the curve file
        meta = obj["train"]
        return CurveTraining(
            curve=curve,
            path=out,
            spec=dict(obj["spec"]),
            epochs=int(meta["epoch"]),
            steps=int(meta["step"]),
            resumed_from_epoch=int(meta["epoch"]),
            reused=True,
            complete=True,
            loss=tuple(meta["history"]["loss"]),
            robust_error=tuple(meta["history"]["robust_error"]),
            elapsed_s=0.0,
        )
    # Every rank reads the files above; then rank 0, the only writer, may change them.
    distributed.barrier()
    main = distributed.world().is_main
    if overwrite and state is None and main:
        resume.unlink(missing_ok=True)
        out.unlink(missing_ok=True)

    trainer_cfg = config.trainer(ends.spec)
    X, y = load_dataset(ends.spec["dataset"], "train", data_root, device)
    curve = BezierCurve(build_from_spec(ends.spec, device), ends.start, ends.end, config.order)
    rule = UpdateRule(curve, trainer_cfg)
    schedule = trainer_cfg.schedule()
    gens = {
        "data": make_generator(config.seed + 1, device),
        "attack": make_generator(config.seed + 2, device),
        "t": make_generator(config.seed + 3, device),
    }
    attack = config.attack(dataset_info(ends.spec["dataset"]).family)
    batch_loss = CurveBatchLoss(BatchLoss(attack, gens["attack"]), gens["t"])
    history: dict[str, list[float]] = {"loss": [], "robust_error": []}
    start_epoch, step, wall_before = 0, 0, 0.0
    if state is not None:
        with torch.no_grad():
            curve.bends.copy_(state["bends"])
        rule.load_state_dict(state["rule"])
        for k, g in gens.items():
            g.set_state(state["rng"][k].cpu())
        history = {k: list(v) for k, v in state["history"].items()}
        start_epoch, step = int(state["epoch"]), int(state["step"])
        wall_before = float(state["wall_time"])

    epochs = config.trained_epochs
    steps_per_epoch = math.ceil(X.shape[0] / config.batch_size)
    t_start = time.perf_counter()

    def wall() -> float:
        return wall_before + time.perf_counter() - t_start

    def outcome(path: Path, epochs_done: int, complete: bool) -> CurveTraining:
        return CurveTraining(
            curve=curve,
            path=path,
            spec=ends.spec,
            epochs=epochs_done,
            steps=step,
            resumed_from_epoch=start_epoch,
            reused=False,
            complete=complete,
            loss=tuple(history["loss"]),
            robust_error=tuple(history["robust_error"]),
            elapsed_s=wall(),
        )

    epochs_run = 0
    for epoch in range(start_epoch, epochs):
        curve.train()
        stream = batches(X, y, config.batch_size, shuffle=True, generator=gens["data"])

        def draw(it: Iterator = stream) -> tuple[Tensor, Tensor] | None:
            batch = next(it, None)
            if batch is None:
                return None
            xb, yb = batch
            return (augment(ends.spec["dataset"], xb, gens["data"]) if config.augment else xb), yb

        stats = []
        for index in range(steps_per_epoch):
            d = epoch + index / steps_per_epoch
            lr = schedule.lr_at(d)
            rule.set_lr(lr)
            stats += rule.step(draw, StepContext(lr, config.eps, batch_loss, d))
        host = torch.stack([torch.stack([s.loss, s.robust_error]) for s in stats]).cpu().numpy()
        if not np.isfinite(host[:, 0]).all():
            raise Diverged(
                f"curve training loss became non-finite in epoch {epoch + 1}; lower --lr "
                f"(the last good state is {resume if resume.exists() else 'the initial segment'})"
            )
        history["loss"].append(float(host[:, 0].mean()))
        history["robust_error"].append(float(host[:, 1].mean()))
        step += len(stats)
        finished = epoch + 1
        state = {
            "identity": identity,
            "bends": curve.bends.detach(),
            "rule": rule.state_dict(),
            "rng": {k: g.get_state() for k, g in gens.items()},
            "history": history,
            "epoch": finished,
            "step": step,
            "wall_time": wall(),
        }
        if main:
            with atomic_path(resume) as tmp:
                torch.save(state, tmp)
        if progress and main:
            progress(
                finished,
                epochs,
                {"loss": history["loss"][-1], "robust_error": history["robust_error"][-1]},
            )
        epochs_run += 1
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs and finished < epochs:
            return outcome(resume, finished, complete=False)

    train_meta = {
        "config": config.as_dict(),
        "epoch": epochs,
        "step": step,
        "history": history,
        "wall_time": wall(),
    }
    if main:
        save_curve(out, curve, ends.spec, endpoints=meta_ends, train=train_meta)
        resume.unlink(missing_ok=True)
    return outcome(out, epochs, complete=True)


def train_curve_plan(
    inputs: CurveInputs,
    curve_out: str | Path,
    *,
    data_root: str | Path | None = None,
    overwrite: bool = False,
    needed: bool = True,
) -> Plan:
    """The dry run of `train_curve` for the curve of `inputs`: per mini-batch of the training
    split PGD at B(t) and a training pass, for the epochs still to run (none when
    `curve_out` holds this curve, or when the curve is not `needed` because its evaluation
    is stored); its result is the curve file. Same checks and refusals, nothing written."""
    ends, config, device = inputs.ends, inputs.training, inputs.device
    X, y = load_dataset(ends.spec["dataset"], "train", data_root, device)
    path = Path(curve_out)
    tally = Tally()
    epochs = config.trained_epochs
    start = epochs
    if needed:
        reused, state = stored_curve(path, config, ends, overwrite=overwrite, device=device)
        if reused is not None:
            tally.notes.append(f"{path} holds this curve: no training")
        else:
            start = 0 if state is None else int(state["epoch"])
        if state is not None:
            tally.notes.append(f"curve training resumes after epoch {start}")
    attack = config.attack(inputs.family)
    n, bs = int(X.shape[0]), config.batch_size
    for b in [min(bs, n - i) for i in range(0, n, bs)] * (epochs - start):
        tally.pgd(b, b, attack)
        tally.add("weight_grad", b, b)
    curve_bytes = (config.order + 1) * sum(p.numel() for p in inputs.model.net.parameters()) * F32
    tally.notes.append(f"curve file {path}: {size_text(curve_bytes)} of control points")
    calibration = Calibration(inputs.model, X, y, batch_size=bs)
    return tally.plan("connect", [str(path)], calibration, curve_bytes)


# --------------------------------------------------------------------------- evaluation


def point_buffers(
    net: nn.Module,
    params: Mapping[str, Tensor],
    X: Tensor,
    y: Tensor,
    *,
    bn_inputs: str = "clean",
    attack: AttackConfig | None = None,
    batch_size: int = 500,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> dict[str, Tensor]:
    """The BN statistics used to evaluate `params`: clean, or (`bn_inputs="adv"`) on PGD
    examples generated in eval mode at the clean statistics; estimated with the network in
    `dtype` (default fp32) and returned in it."""
    clean = estimate_bn(net, params, X, batch_size=batch_size, dtype=dtype)
    if bn_inputs == "clean" or not clean:
        return clean
    if attack is None or attack.eps == 0:
        raise BadInput("{arg} adv needs an attack with eps > 0", argument="bn_inputs")
    gen = make_generator(seed, X.device)

    def adversarial(xb: Tensor, yb: Tensor) -> Tensor:
        return perturb(forward_at(net, params, clean, dtype), xb, yb, attack, generator=gen)

    return estimate_bn(net, params, X, y, batch_size=batch_size, attack=adversarial, dtype=dtype)


def check_evaluation(points: int, bn_inputs: str, attack: AttackConfig) -> None:
    """BadInput for evaluation options that cannot work, before anything is computed."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise BadInput(
            f"{{arg}} must be an integer >= 2 (t = 0 and t = 1), got {points!r}", argument="points"
        )
    if bn_inputs not in BN_INPUTS:
        raise BadInput(
            f"unknown {{arg}} {bn_inputs!r}; choose one of {', '.join(BN_INPUTS)}",
            argument="bn_inputs",
        )
    if bn_inputs == "adv" and attack.eps == 0:
        raise BadInput("{arg} adv needs {arg:eps} > 0", argument="bn_inputs")


def pair_label(start: str | Path, end: str | Path) -> str:
    """`a-b` from the file stems, or from the folder names when the stems agree (final.pt)."""
    a, b = Path(start), Path(end)
    return f"{a.parent.name}-{b.parent.name}" if a.stem == b.stem else f"{a.stem}-{b.stem}"


def fields(adversarial: bool) -> list[str]:
    """The per-t datasets of `/connect/<run>`, curve then straight line."""
    names = list(METRICS) + ([f"adv_{m}" for m in METRICS] if adversarial else [])
    return names + [f"line_{n}" for n in names]


@dataclass(frozen=True)
class Connectivity:
    """Metrics along the curve and along the straight line at each t; the group
    `/connect/<run>`. The `adv_` twins are None when eps = 0; `done` marks finished t."""

    t: np.ndarray
    train_loss: np.ndarray
    train_error: np.ndarray
    test_loss: np.ndarray
    test_error: np.ndarray
    line_train_loss: np.ndarray
    line_train_error: np.ndarray
    line_test_loss: np.ndarray
    line_test_error: np.ndarray
    done: np.ndarray
    nonfinite: np.ndarray  # t whose loss was NaN/inf (stored as NaN)
    adv_train_loss: np.ndarray | None = None
    adv_train_error: np.ndarray | None = None
    adv_test_loss: np.ndarray | None = None
    adv_test_error: np.ndarray | None = None
    line_adv_train_loss: np.ndarray | None = None
    line_adv_train_error: np.ndarray | None = None
    line_adv_test_loss: np.ndarray | None = None
    line_adv_test_error: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @property
    def complete(self) -> bool:
        return bool(self.done.all())


def barrier(values: np.ndarray, t: np.ndarray) -> float:
    """max_t [f(t) - ((1 - t) f(0) + t f(1))]: the largest rise above the chord joining the
    endpoint values (Garipov et al.; 0 for a path no worse than its endpoints)."""
    chord = (1 - t) * values[0] + t * values[-1]
    return float(np.max(values - chord))


def barriers(arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Barrier heights and maxima of the training loss and test error, curve and line, from
    stored arrays: robust (`adv_`) when present, else clean."""
    t = np.asarray(arrays["t"])
    robust = "adv_train_loss" in arrays
    out: dict[str, float] = {}
    for metric in ("train_loss", "test_error"):
        key = f"adv_{metric}" if robust else metric
        for prefix, what in (("", "curve"), ("line_", "line")):
            values = np.asarray(arrays[prefix + key])
            out[f"{key}_barrier_{what}"] = barrier(values, t)
            out[f"{key}_max_{what}"] = float(np.max(values))
    return out


def connect(
    curve: BezierCurve,
    train_data: tuple[Tensor, Tensor],
    test_data: tuple[Tensor, Tensor],
    attack: AttackConfig,
    *,
    points: int = 61,
    bn_inputs: str = "clean",
    bn_data: tuple[Tensor, Tensor] | None = None,
    batch_size: int = 500,
    seed: int = 0,
    precision: str = "fp32",
    grid: store.Grid | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop_after_points: int | None = None,
) -> Connectivity:
    """Loss and error along the curve and along the straight line at `points` values of t
    (Liu et al. C.2.5, Fig. 15), in eval mode with BN re-estimated at each t on `bn_data`
    (default: `train_data`).

    With a `grid`, finished points persist as they finish and are skipped on a rerun.
    `stop_after_points` ends early (as an interruption would); the result is then partial.
    `precision` (fp32, bf16, fp16) is the dtype of the evaluation, BN re-estimation and PGD
    included; B(t) itself is computed in fp32.
    """
    check_evaluation(points, bn_inputs, attack)
    dtype = precision_dtype(precision)
    names = fields(attack.eps > 0)
    grid = store.resolve_grid(grid, (points,), names)
    ts = np.linspace(0.0, 1.0, points)
    values, done = grid.arrays, grid.done
    pending = [i for (i,) in grid.pending()][:stop_after_points]
    X_bn, y_bn = bn_data if bn_data is not None else train_data
    net = curve.net

    def work(i: int) -> list[tuple[tuple[int], dict[str, float]]]:
        row: dict[str, float] = {}
        for prefix, at in (("", curve.params_at), ("line_", curve.line_at)):
            with torch.no_grad():
                params = at(float(ts[i]))
            stats = point_buffers(
                net,
                params,
                X_bn,
                y_bn,
                bn_inputs=bn_inputs,
                attack=attack,
                batch_size=batch_size,
                seed=seed,
                dtype=dtype,
            )
            net.eval()
            for split, (X, y) in (("train", train_data), ("test", test_data)):
                ev = evaluate(
                    forward_at(net, params, stats, dtype),
                    X,
                    y,
                    attack,
                    batch_size=batch_size,
                    seed=seed,
                )
                row[f"{prefix}{split}_loss"] = ev.clean_loss
                row[f"{prefix}{split}_error"] = ev.clean_error
                if attack.eps > 0:
                    row[f"{prefix}adv_{split}_loss"] = ev.adv_loss
                    row[f"{prefix}adv_{split}_error"] = ev.adv_error
        return [((i,), row)]

    # Points of t are dealt to ranks from a shared queue under torchrun; rank 0 records them.
    grid.run(pending, work, progress)
    return Connectivity(
        t=ts,
        done=done.copy(),
        nonfinite=grid.nonfinite.copy(),
        **{k: v.copy() for k, v in values.items()},
    )


@dataclass(kw_only=True)
class CurveInputs(Inputs):
    """What `Connect` evaluates: `model` is the curve (a `BezierCurve`), `X, y` the training
    examples evaluated, `test` the test examples, `bn` the examples the BN statistics are
    re-estimated on. The endpoints and the curve's training config identify the curve
    before it is trained (a stored run is found without training it); `checkpoint` is the
    curve file once `with_curve` gives the trained curve."""

    ends: Endpoints
    training: CurveConfig
    test: tuple[Tensor, Tensor]
    bn: tuple[Tensor, Tensor]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.training.validate(self.ends.spec)

    def data_config(self) -> dict[str, Any]:
        return {
            **foreign_reading(self.ends.spec),
            "curve": self.training.as_dict(),
            "start_sha256": self.ends.start_sha256,
            "end_sha256": self.ends.end_sha256,
            "dataset": self.dataset,
            "examples": int(self.X.shape[0]),
            "test_examples": int(self.test[0].shape[0]),
            "bn_examples": int(self.bn[0].shape[0]),
        }

    def provenance(
        self, config: Mapping[str, Any], seed: int, elapsed_s: float, command: str
    ) -> dict[str, Any]:
        """The curve file's provenance, the endpoints it joins, its order and epochs."""
        return {
            **super().provenance(config, seed, elapsed_s, command),
            "order": self.training.order,
            "start": self.ends.start_path,
            "end": self.ends.end_path,
            "start_sha256": self.ends.start_sha256,
            "end_sha256": self.ends.end_sha256,
            "curve_epochs": self.training.trained_epochs,
        }

    def with_curve(self, trained: CurveTraining) -> CurveInputs:
        """These inputs with the curve `train_curve` finished as the model and its file as
        the checkpoint (hashed on rank 0, which wrote it)."""
        if not trained.complete:
            raise BadInput(f"the curve in {trained.path} is not trained to the end; resume it")
        sha = distributed.on_main(lambda: sha256_file(trained.path))
        return dataclasses.replace(
            self, model=trained.curve, checkpoint=str(trained.path), checkpoint_sha256=sha
        )


def curve_inputs(
    ends: Endpoints,
    training: CurveConfig,
    *,
    data_root: str | Path | None = None,
    samples: int | None = None,
    bn_samples: int | None = None,
    device: str | torch.device = "cpu",
) -> CurveInputs:
    """Load the data of a `Connect` run between `ends` (the caller's step, like
    `load_endpoints`): the first `samples` examples of each split and the first
    `bn_samples` training examples for BN (all by default). The model is the curve's
    initial segment until `CurveInputs.with_curve` gives the trained curve."""
    device = torch.device(device)
    name = ends.spec["dataset"]
    X, y = load_dataset(name, "train", data_root, device)
    X_test, y_test = load_dataset(name, "test", data_root, device)
    with torch.random.fork_rng(devices=[]):  # the scratch template leaves the global RNG be
        net = build_from_spec(ends.spec, device)
    return CurveInputs(
        BezierCurve(net, ends.start, ends.end, training.order),
        X[:samples],
        y[:samples],
        spec=ends.spec,
        family=dataset_info(name).family,
        device=device,
        dataset=name,
        ends=ends,
        training=training,
        test=(X_test[:samples], y_test[:samples]),
        bn=(X[:bn_samples], y[:bn_samples]),
    )


@dataclass(frozen=True)
class Connect(Analysis):
    """`connect` as an analysis: the metrics along the curve of `CurveInputs` and along the
    straight line between its endpoints at `points` values of t, a grid over t. The curve
    is trained before, by the caller (`train_curve`); this evaluates the curve it is given.
    """

    name: ClassVar[str] = "connect"
    takes: ClassVar[str] = "pair"
    grid: ClassVar[bool] = True
    axes: ClassVar[tuple[str, ...]] = ("t",)

    attack: AttackConfig
    points: int = 61
    bn_inputs: str = "clean"
    batch_size: int = 500
    seed: int = 0
    precision: str = precision_field()

    def check(self, inputs: Inputs | None) -> None:
        if not isinstance(inputs, CurveInputs):
            raise BadInput("connect evaluates a curve: its inputs are `curve_inputs(...)`")
        check_evaluation(self.points, self.bn_inputs, self.attack)

    def shape(self, inputs: Inputs | None) -> tuple[int, ...]:
        return (self.points,)

    def fields(self) -> tuple[str, ...]:
        return tuple(fields(self.attack.eps > 0))

    def compute(
        self,
        inputs: CurveInputs,
        *,
        grid: store.Grid | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Connectivity:
        return connect(
            inputs.model,
            (inputs.X, inputs.y),
            inputs.test,
            self.attack,
            points=self.points,
            bn_inputs=self.bn_inputs,
            bn_data=inputs.bn,
            batch_size=self.batch_size,
            seed=self.seed,
            precision=self.precision,
            grid=grid,
            progress=progress,
        )

    def plan(self, inputs: CurveInputs, context: PlanContext) -> Plan:
        """At every pending t, for the curve and the line: BN re-estimation when the network
        has BN (a clean pass; with `bn_inputs="adv"` also PGD and a pass on the attacked
        data) and an evaluation of each split."""
        from .surface import has_batchnorm

        tally = Tally()
        tally.resume_note(context)
        times, bs = 2 * int((~context.done).sum()), self.batch_size
        if has_batchnorm(inputs.model):
            n_bn = int(inputs.bn[0].shape[0])
            tally.add("forward", n_bn, bs, times)
            if self.bn_inputs == "adv":
                tally.pgd(n_bn, bs, self.attack, times)
                tally.add("forward", n_bn, bs, times)
        for X in (inputs.X, inputs.test[0]):
            tally.evaluate(int(X.shape[0]), bs, self.attack, times)
        shape = (self.points,)
        sizes = {"t": (shape, F64), "done": (shape, BOOL), "nonfinite": (shape, BOOL)}
        sizes.update({f: (shape, F64) for f in self.fields()})
        return tally.plan("connect", [context.group], context.calibration, arrays_bytes(sizes))

    def to_group(self, result: Connectivity) -> Group:
        arrays = result.arrays()
        return Group(arrays, {name: ("t",) for name in arrays if name != "t"}, {})

    def from_group(
        self, arrays: Mapping[str, Any], attrs: Mapping[str, Any], where: str
    ) -> Connectivity:
        names = ("t", "done", "nonfinite", *self.fields())
        store.check_arrays(where, arrays, dict.fromkeys(names, 1))
        return Connectivity(**{n: arrays[n] for n in names})

    def summary(self, stored: Stored) -> dict[str, Any]:
        return {"eps": self.attack.eps, **barriers(stored.arrays)}


def point_model(
    path: str | Path,
    t: float | None,
    device: str | torch.device = "cpu",
    *,
    data_root: str | Path | None = None,
    dataset: str | None = None,
    batch_size: int = 500,
) -> tuple[nn.Module, dict[str, Any]]:
    """The network at B(t) of a curve file, in eval mode, its BN statistics re-estimated at
    t on the clean training split; and a spec whose `train` entry is the curve's training
    metadata (so its eps and norm are the defaults of `landscape eval`)."""
    if t is None:
        raise BadInput(
            f"{path} is a curve; choose a point on it with {{arg}} in [0, 1]", argument="t"
        )
    if not 0.0 <= t <= 1.0:
        raise BadInput(f"{{arg}} {t} lies outside the curve; choose t in [0, 1]", argument="t")
    curve, obj = load_curve(path, device)
    spec = dict(obj["spec"])
    if dataset is not None and dataset != spec["dataset"]:
        raise BadInput(f"{path} is a curve on {spec['dataset']!r}, not on {dataset!r}")
    net = curve.net
    with torch.no_grad():
        params = curve.params_at(t)
    stats: dict[str, Tensor] = {}
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        X, _ = load_dataset(spec["dataset"], "train", data_root, device)
        stats = estimate_bn(net, params, X, batch_size=batch_size)
    curve.load_point(params)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name in stats:
                buf.copy_(stats[name])
    net.eval()
    return net, {**spec, "train": obj.get("train", {})}
