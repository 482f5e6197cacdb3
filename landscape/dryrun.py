"""Dry runs: what a command would compute, how long it would take and what it would write.

`--dry-run` on train, hessian, surface, cosine, smoothness and connect validates the
options exactly as the command does, then counts passes instead of running them, times
a short calibration on the chosen device and adds up the result arrays. Nothing is
written and no file is modified.

Unit: an *example-pass* is one example through the network one way. A batch of b
examples run forward counts b forward example-passes; its backward counts b more.
Passes are counted by kind, each with its forward and its backward:

- `forward`: a forward without gradients (evaluation, BN re-estimation);
- `forward_stacked`: a clean surface point evaluated with P parameter sets per vmapped
  call (P x b example-passes per call of b examples);
- `input_grad`: forward + backward to the input (one PGD iteration);
- `input_grad_stacked`: one PGD iteration at P stacked surface points per vmapped call
  (P x b example-passes each way; the adversarial forward that follows counts as
  `forward` with P x b example-passes in one call);
- `weight_grad`: forward + backward to the weights (a training step, AWP's proxy step,
  the gradients of `smoothness`); TRADES' two forwards count 2b;
- `hvp`: one Hessian-vector product on b examples, forward-over-reverse: counted as one
  forward and one backward, each carrying a tangent (about twice the work; the time
  estimate calibrates a real product).

`calls` counts the network's invocations (batches) per kind; a vmapped block of vectors
or points is one call. Counts are exact except for iterative eigensolvers (Lanczos,
PyHessian's power iteration) and SLQ, whose numbers of products depend on the spectrum:
those are estimates or upper bounds and the plan says so. The time estimate is the sum
over kinds of example-passes times the seconds per example-pass measured on one real
batch of the real model (warm-up first, synchronized on CUDA); data loading, PGD
bookkeeping, scipy and file writes are not included. Result sizes are the bytes of the
arrays (dtype x shape) of the HDF5 groups and checkpoints, without HDF5 or pickle
overhead.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from . import store
from .attacks import AttackConfig, perturb, perturb_points
from .params import eval_mode, functional_forward
from .util import make_generator

KINDS = ("forward", "forward_stacked", "input_grad", "input_grad_stacked", "weight_grad", "hvp")
BACKWARD_KINDS = ("input_grad", "input_grad_stacked", "weight_grad", "hvp")
STACKED_KINDS = ("forward_stacked", "input_grad_stacked")
CALIBRATION_SECONDS = 0.25  # per kind
CALIBRATION_REPEATS = 10
HVP_BLOCK = 16  # vectors per vmapped pass: HessianOperator's default block
F64, F32, I64, BOOL = 8, 4, 8, 1


@dataclass(frozen=True)
class Plan:
    """What a command would do: example-passes and calls by kind, estimated seconds, result
    bytes; `exact` is False when a count is an estimate or an upper bound (see `notes`)."""

    command: str
    runs: tuple[str, ...]
    passes: Mapping[str, int]
    calls: Mapping[str, int]
    seconds: float
    result_bytes: int
    exact: bool = True
    notes: tuple[str, ...] = ()
    device: str = ""
    seconds_per_pass: Mapping[str, float] = field(default_factory=dict)

    @property
    def forward_passes(self) -> int:
        return int(sum(self.passes.values()))

    @property
    def backward_passes(self) -> int:
        return int(sum(self.passes.get(k, 0) for k in BACKWARD_KINDS))

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "command": self.command,
            "runs": list(self.runs),
            "unit": "example-passes (examples x passes through the network)",
            "forward_passes": self.forward_passes,
            "backward_passes": self.backward_passes,
            "passes_by_kind": {k: int(v) for k, v in self.passes.items() if v},
            "calls_by_kind": {k: int(v) for k, v in self.calls.items() if v},
            "exact": self.exact,
            "estimated_seconds": self.seconds,
            "estimated_time": _duration(self.seconds),
            "result_bytes": self.result_bytes,
            "result_size": size_text(self.result_bytes),
            "device": self.device,
            "seconds_per_example_pass": {
                k: float(f"{v:.3g}") for k, v in self.seconds_per_pass.items()
            },
            "notes": list(self.notes),
        }


def combine(command: str, plans: Sequence[Plan]) -> Plan:
    """One plan for a command that makes several runs (several eps, checkpoints)."""
    passes: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    rates: dict[str, float] = {}
    for p in plans:
        passes.update(p.passes)
        calls.update(p.calls)
        rates.update(p.seconds_per_pass)
    notes = tuple(dict.fromkeys(n for p in plans for n in p.notes))
    return Plan(
        command,
        tuple(r for p in plans for r in p.runs),
        dict(passes),
        dict(calls),
        float(sum(p.seconds for p in plans)),
        int(sum(p.result_bytes for p in plans)),
        all(p.exact for p in plans),
        notes,
        plans[0].device if plans else "",
        rates,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def size_text(n: float) -> str:
    """A byte count for people: `512 B`, `1.5 KiB`, `2.0 GiB`."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


# ------------------------------------------------------------------------- calibration


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Calibration:
    """Seconds per example-pass of each kind, measured on demand on one real batch of the
    real model on its device (one warm-up, then repeats for about a quarter second)."""

    def __init__(
        self,
        model: nn.Module,
        X: Tensor,
        y: Tensor,
        *,
        batch_size: int,
        params: Sequence[str] | None = None,
    ) -> None:
        self.model, self.params = model, params
        self.x, self.y = X[:batch_size], y[:batch_size]
        self.device = self.x.device
        self.per_example: dict[tuple[str, int], float] = {}

    def _work(self, kind: str, points: int) -> Callable[[], object]:
        model, x, y = self.model, self.x, self.y
        if kind == "forward":
            return lambda: model(x)
        if kind == "forward_stacked":
            stacked = {
                n: p.detach().unsqueeze(0).expand(points, *p.shape)
                for n, p in model.named_parameters()
            }
            return lambda: vmap(lambda p: functional_forward(model, p, x))(stacked)
        step = AttackConfig(eps=8 / 255, steps=1, step_size=2 / 255)
        if kind == "input_grad_stacked":
            stacked = {
                n: p.detach().unsqueeze(0).expand(points, *p.shape)
                for n, p in model.named_parameters()
            }

            def forward(z: Tensor) -> Tensor:
                per_point = z.view(points, *x.shape)
                return vmap(lambda p, xb: functional_forward(model, p, xb))(stacked, per_point)

            gen = make_generator(0, self.device)
            return lambda: perturb_points(
                lambda z: forward(z).flatten(0, 1), x, y, step, points, generator=gen
            )
        if kind == "input_grad":
            # One real PGD iteration, with its sign, projection and clamp.
            return lambda: perturb(model, x, y, step, generator=make_generator(0, self.device))
        if kind == "weight_grad":
            weights = [p for p in model.parameters() if p.requires_grad]

            def weight_grad() -> object:
                with torch.enable_grad():
                    return torch.autograd.grad(F.cross_entropy(model(x), y), weights)

            return weight_grad
        from .curvature import HessianOperator

        op = HessianOperator(model, x, y, params=self.params, batch_size=x.shape[0])
        v = torch.randn(op.dim, generator=make_generator(0, self.device), device=self.device)
        return lambda: op.matvec(v)

    def _measure(self, kind: str, points: int) -> float:
        with eval_mode(self.model):
            work = self._work(kind, points)
            with torch.no_grad() if kind in ("forward", "forward_stacked") else torch.enable_grad():
                work()
                _sync(self.device)
                repeats, start = 0, time.perf_counter()
                while repeats < CALIBRATION_REPEATS:
                    work()
                    _sync(self.device)
                    repeats += 1
                    if time.perf_counter() - start >= CALIBRATION_SECONDS:
                        break
                elapsed = time.perf_counter() - start
        return elapsed / repeats / (self.x.shape[0] * points)

    def seconds(self, passes: Mapping[str, int], points: int | Mapping[str, int] = 1) -> float:
        """Estimated wall time of these example-passes (`points` stacked per vmapped call, one
        number for both stacked kinds or one per kind)."""
        total = 0.0
        for kind, count in passes.items():
            key = _rate_key(kind, points)
            if count:
                if key not in self.per_example:
                    self.per_example[key] = self._measure(*key)
                total += count * self.per_example[key]
        return total


def _rate_key(kind: str, points: int | Mapping[str, int]) -> tuple[str, int]:
    """The calibration entry of a kind: stacked kinds are measured at their points per call."""
    if kind not in STACKED_KINDS:
        return kind, 1
    return kind, points if isinstance(points, int) else points.get(kind, 1)


# ---------------------------------------------------------------------------- counting


@dataclass
class Tally:
    """Example-passes and calls by kind, accumulated while walking a command's loops."""

    passes: Counter = field(default_factory=Counter)
    calls: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    exact: bool = True

    def add(
        self,
        kind: str,
        examples: int,
        batch_size: int,
        times: int = 1,
        rows: int = 1,
        blocks: int = 1,
    ) -> None:
        """`times` passes of `kind` over `examples` in batches; each example carries `rows`
        rows (P stacked points, SLQ's vmapped probes), served by `blocks` calls per batch
        (vmapped blocks of vectors)."""
        if times <= 0 or examples <= 0:
            return
        self.passes[kind] += examples * times * rows
        self.calls[kind] += math.ceil(examples / batch_size) * times * blocks

    def pgd(
        self, examples: int, batch_size: int, attack: AttackConfig | None, times: int = 1
    ) -> None:
        """PGD from `perturb`: one input-gradient pass per iteration (nothing at eps 0)."""
        if attack is not None and attack.eps > 0:
            self.add("input_grad", examples, batch_size, attack.steps * times)

    def evaluate(
        self, examples: int, batch_size: int, attack: AttackConfig, times: int = 1
    ) -> None:
        """`attacks.evaluate`: PGD plus a clean and an adversarial forward (eps 0: one forward)."""
        self.pgd(examples, batch_size, attack, times)
        self.add("forward", examples, batch_size, times * (2 if attack.eps > 0 else 1))

    def resume_note(self, context: Any) -> None:
        """What a grid run's stored state leaves to do (`analysis.PlanContext`)."""
        _resume_note(self, context.done, context.complete)

    def eigensolver(self, k: int, method: str, examples: int, batch_size: int) -> None:
        """Top-k eigenpairs (`curvature.top_eigenpairs`): the solver's products, then the k
        of the residual check (vmapped in blocks)."""
        from .curvature import POWER_MAX_ITER

        if method == "power":
            self.add("hvp", examples, batch_size, k * POWER_MAX_ITER)
            self.add("weight_grad", examples, batch_size)
            self.notes.append(
                f"power iteration: at most {POWER_MAX_ITER} products per eigenvalue (an upper bound)"
            )
        elif method == "block":
            self.add("hvp", examples, batch_size, block_estimate(k))
            self.notes.append(
                f"block Lanczos top-{k}: about {block_estimate(k)} products (it stops when "
                "every residual is small)"
            )
        else:
            self.add("hvp", examples, batch_size, lanczos_estimate(k))
            self.notes.append(
                f"Lanczos top-{k}: about {lanczos_estimate(k)} products (ARPACK stops when it converges)"
            )
        self.exact = False
        self.add("hvp", examples, batch_size, rows=k, blocks=math.ceil(k / HVP_BLOCK))

    def plan(
        self,
        command: str,
        runs: Sequence[str],
        calibration: Calibration,
        result_bytes: int,
        points: int | Mapping[str, int] = 1,
    ) -> Plan:
        seconds = calibration.seconds(self.passes, points)
        rates = {k: calibration.per_example[_rate_key(k, points)] for k in KINDS if self.passes[k]}
        return Plan(
            command,
            tuple(runs),
            {k: int(self.passes[k]) for k in KINDS if self.passes[k]},
            {k: int(self.calls[k]) for k in KINDS if self.calls[k]},
            seconds,
            int(result_bytes),
            self.exact,
            tuple(self.notes),
            str(calibration.device),
            rates,
        )


def block_estimate(k: int) -> int:
    """Products block Lanczos typically spends on the top k: about 7k (100-144 for k = 20
    on the digits LeNet with blocks of 4-12, `curvature._block_size`); not a bound."""
    return 7 * k


def lanczos_estimate(k: int) -> int:
    """Products ARPACK's Lanczos typically spends on the top k (ncv = max(2k + 1, 20)):
    about ncv + 5k, fitted on digits models (k = 1..20 took 21..131); not a bound."""
    return max(2 * k + 1, 20) + 5 * k


def eigen_directions_passes(
    tally: Tally, k: int, examples: int, attack: AttackConfig | None, batch_size: int = 256
) -> None:
    """`hessian.eigen_directions`: PGD once at theta, then the top-k eigenpairs (Lanczos)."""
    tally.pgd(examples, batch_size, attack)
    tally.eigensolver(k, "lanczos", examples, batch_size)


def arrays_bytes(shapes: Mapping[str, tuple[tuple[int, ...], int]]) -> int:
    return int(sum(math.prod(shape) * size for shape, size in shapes.values()))


# ----------------------------------------------------------------------- stored state


def grid_done(
    out: str | Path,
    group: str,
    config: Mapping[str, Any],
    shape: tuple[int, ...],
    fields: Sequence[str],
    *,
    overwrite: bool,
) -> tuple[np.ndarray, bool]:
    """(points already done, stored complete) for a grid run: the run's own `store.Grid`,
    opened read-only, so the plan makes the real run's decisions and writes nothing."""
    grid = store.Grid(out, group, config, shape, fields, overwrite=overwrite, read_only=True)
    return (np.ones(shape, dtype=bool), True) if grid.stored else (grid.done, False)


def _resume_note(tally: Tally, done: np.ndarray, complete: bool) -> None:
    if complete:
        tally.notes.append("stored complete with the same config: nothing to compute")
    elif done.any():
        tally.notes.append(f"{int(done.sum())} of {done.size} points already done (sidecar)")


# ------------------------------------------------------------------------ the commands


def _state_bytes(model: nn.Module) -> int:
    return int(sum(t.numel() * t.element_size() for t in model.state_dict().values()))


def _fresh_model(spec: Mapping[str, Any], device: torch.device) -> nn.Module:
    """The architecture of `spec` for calibration, built without touching the global RNG."""
    from .checkpoint import build_from_spec

    with torch.random.fork_rng(devices=[]):
        return build_from_spec(spec, device)


def _train_start(config: Any, folder: Path, overwrite: bool) -> int | None:
    """The epoch `train` would start from in `folder` (None: finished with this config),
    with the same refusals (`train.stored_run`)."""
    from .train import stored_run

    done, state = stored_run(folder, config, overwrite=overwrite)
    if done is not None:
        return None
    return 0 if state is None else int(state["epoch"])


def train_plan(
    config: Any,
    out: str | Path,
    *,
    device: torch.device,
    data_root: str | Path | None = None,
    overwrite: bool = False,
) -> Plan:
    """`landscape train` (a `TrainConfig`): per mini-batch the attack at the scheduled eps
    (TRADES adds a clean forward), AWP's proxy gradient when on, and the training pass
    (TRADES: two forwards); test evaluations every `eval_every` epochs (and of the training
    subset with `eval_train_samples`) and at the end."""
    from .checkpoint import model_spec
    from .data import load_dataset
    from .train import TRACE_COLUMNS

    config.validate()
    X, y = load_dataset(config.dataset, "train", data_root, device)
    X_test, _ = load_dataset(config.dataset, "test", data_root, device)
    spec = model_spec(config.arch, config.dataset, width=config.width, activation=config.activation)
    start = _train_start(config, Path(out), overwrite)
    target = config.target_attack()
    schedule = config.schedule()
    tally = Tally()
    n, n_test, bs = int(X.shape[0]), int(X_test.shape[0]), config.batch_size
    per_epoch = math.ceil(n / bs)
    sizes = [min(bs, n - i * bs) for i in range(per_epoch)]
    entropy = config.optimizer.startswith("entropy")
    window = (
        config.entropy_start,
        math.inf if config.entropy_stop is None else config.entropy_stop,
    )
    trades = config.loss == "trades"
    if start is None:
        tally.notes.append("finished with the same config: nothing to train")
    for epoch in range(config.epochs if start is None else start, config.epochs):
        index = 0
        while index < per_epoch:
            # One step of the rule: L mini-batches inside EntropySGD's window, else one.
            d = epoch + index / per_epoch
            step = config.langevin_steps if entropy and window[0] <= d < window[1] else 1
            adversarial = schedule.eps_at(d) > 0
            awp = config.awp_gamma > 0 and d >= config.awp_warmup
            forwards = 2 if trades and adversarial else 1
            for b in sizes[index : index + step]:
                if adversarial:
                    tally.add("forward", b, b, int(trades))
                    tally.add("input_grad", b, b, target.steps)
                tally.add("weight_grad", b, b, forwards * (2 if awp else 1))
            index += step
        if config.evaluates_after(epoch + 1):
            tally.evaluate(min(config.eval_samples, n_test), 500, target)
            if config.eval_train_samples:
                tally.evaluate(min(config.eval_train_samples, n), 500, target)
    if start is not None:
        tally.evaluate(n_test, 500, target)
    evals = sum(1 for e in range(1, config.epochs + 1) if config.evaluates_after(e))
    files = 2 + len(config.save_epochs) + (len(schedule.periods.ends()) if config.periods else 0)
    files += int(config.early_stop)  # best.pt
    model = _fresh_model(spec, device)
    rows = config.epochs * per_epoch
    result = files * _state_bytes(model) + rows * len(TRACE_COLUMNS) * F64
    result += evals * len(config.eval_columns) * F64
    tally.notes.append(
        f"{files} checkpoints of {size_text(_state_bytes(model))} and a trace of {rows} rows; "
        "resume.pt is rewritten every epoch and removed at the end"
    )
    calibration = Calibration(model, X, y, batch_size=bs)
    return tally.plan("train", [str(out)], calibration, result)
