"""PGD adversarial training with eps/LR schedules, periodic snapshots, traces and resume.

Layout of an output folder:
    init.pt              theta_0
    epoch_NNN.pt         checkpoints at --save-epochs
    period_K.pt          one snapshot at the end of each period (periodic scheduling)
    final.pt             the last model
    trace.h5             /trace: one row per mini-batch; /eval: per-epoch test metrics
    resume.pt            everything needed to continue after a kill (removed at the end)

Resuming restarts from the last finished epoch with the saved RNG and optimizer
states, so an interrupted run ends bit-identical to an uninterrupted one on the same
device. The update rules (SGD, Adam, EntropySGD and its second-order variant, AWP) and
the objectives (PGD cross-entropy, TRADES) live in `optim.py`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed, store
from .attacks import AttackConfig, attack_config, evaluate
from .checkpoint import build_from_spec, model_spec, read_checkpoint, save_checkpoint
from .data import augment, batches, dataset_info, load_dataset
from .optim import LOSSES, RULES, BatchLoss, BatchStats, StepContext, UpdateRule
from .params import eval_mode, global_norm
from .schedules import EpsSchedule, LrSchedule, Periods, Schedule
from .util import BadInput, atomic_path, make_generator

TRACE_COLUMNS = (
    "step",
    "epoch",
    "eps",
    "lr",
    "loss",
    "robust_error",
    "grad_norm",
    "distance_from_init",
)
EVAL_COLUMNS = ("epoch", "wall_time", "clean_error", "robust_error", "clean_loss", "robust_loss")
OPTIMIZERS = tuple(RULES)
RESUME_KEYS = {
    "config",
    "model",
    "theta0",
    "rule",
    "rng",
    "rows",
    "evals",
    "epoch",
    "step",
    "wall_time",
}


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; its JSON form identifies the run for resuming."""

    dataset: str = "digits"
    arch: str = "lenet"
    width: int | None = None
    activation: str = "relu"
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    entropy_gamma: float = 0.03
    entropy_noise: float = 1e-4
    inner_lr: float = 0.1
    langevin_steps: int = 20
    mean_alpha: float = 0.75
    entropy_start: float = 0.0
    entropy_stop: float | None = None
    awp_gamma: float = 0.0
    awp_warmup: int = 0
    loss: str = "ce"
    trades_beta: float = 6.0
    lr_schedule: str = "constant"
    lr_milestones: tuple[float, ...] = ()
    lr_gamma: float = 0.1
    lr_final: float | None = None
    lr_decay_epochs: tuple[float, ...] = ()
    lr_warmup: float = 0.0
    eps: float = 0.0
    norm: str = "linf"
    eps_schedule: str = "constant"
    eps_min: float = 0.0
    eps_max: float | None = None
    eps_warmup: float | None = None
    pgd_steps: int | None = None
    pgd_step_size: float | None = None
    periods: tuple[float, ...] = ()
    save_epochs: tuple[int, ...] = ()
    eval_every: int = 0
    eval_samples: int = 1000
    augment: bool = True
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def schedule(self) -> Schedule:
        warmup = float(self.eps_warmup) if self.eps_warmup is not None else float(self.epochs)
        eps = EpsSchedule(self.eps_schedule, self.eps, self.eps_min, self.eps_max, warmup)
        window = tuple(self.lr_decay_epochs) if self.lr_decay_epochs else None
        if window is not None and len(window) != 2:
            raise BadInput(f"--lr-decay-epochs takes two epochs A,B, got {list(window)}")
        lr = LrSchedule(
            self.lr_schedule,
            self.lr,
            tuple(self.lr_milestones),
            self.lr_gamma,
            self.lr_final,
            window,
            self.lr_warmup,
        )
        return Schedule(eps, lr, Periods(float(self.epochs), tuple(self.periods)))

    def target_attack(self) -> AttackConfig:
        """PGD at the target eps with the papers' defaults for the dataset's family."""
        return attack_config(
            self.eps,
            family=dataset_info(self.dataset).family,
            norm=self.norm,
            steps=self.pgd_steps,
            step_size=self.pgd_step_size,
        )

    def validate(self) -> None:
        if self.epochs < 1:
            raise BadInput(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise BadInput(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if any(not 0 < e <= self.epochs for e in self.save_epochs):
            raise BadInput(f"--save-epochs {list(self.save_epochs)} must lie in 1..{self.epochs}")
        if self.weight_decay < 0:
            raise BadInput(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.loss not in LOSSES:
            raise BadInput(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.langevin_steps < 1:
            raise BadInput(f"--langevin-steps must be >= 1, got {self.langevin_steps}")
        if not 0 < self.mean_alpha <= 1:
            raise BadInput(f"--mean-alpha must lie in (0, 1], got {self.mean_alpha}")
        if self.entropy_start < 0 or (
            self.entropy_stop is not None and self.entropy_stop <= self.entropy_start
        ):
            raise BadInput(
                f"--entropy-start {self.entropy_start} and --entropy-stop {self.entropy_stop} "
                "must satisfy 0 <= start < stop"
            )
        if (self.entropy_start > 0 or self.entropy_stop is not None) and not (
            self.optimizer.startswith("entropy-sgd")
        ):
            raise BadInput(
                "--entropy-start/--entropy-stop set the EntropySGD window; "
                "use them with --optimizer entropy-sgd or entropy-sgd2"
            )
        if self.awp_warmup < 0:
            raise BadInput(f"--awp-warmup must be >= 0 epochs, got {self.awp_warmup}")
        for flag, value in (("--gamma", self.entropy_gamma), ("--inner-lr", self.inner_lr)):
            if not (math.isfinite(value) and value > 0):
                raise BadInput(f"{flag} must be a finite number > 0, got {value}")
        for flag, value in (
            ("--noise", self.entropy_noise),
            ("--awp", self.awp_gamma),
            ("--beta", self.trades_beta),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise BadInput(f"{flag} must be a finite number >= 0, got {value}")
        self.schedule()
        self.target_attack()


def make_batch_loss(
    family: str, config: TrainConfig, generator: torch.Generator
) -> Callable[[float], BatchLoss]:
    """For a given eps, the run's objective on a mini-batch (see `optim.BatchLoss`).

    The attack runs on the model in train mode with frozen BN statistics, using the
    iteration count of the target eps for the whole run (constant cost per step).
    """
    target = config.target_attack()

    def at_eps(eps: float) -> BatchLoss:
        cfg = None
        if eps > 0:
            cfg = attack_config(
                eps,
                family=family,
                norm=config.norm,
                steps=target.steps,
                step_size=config.pgd_step_size,
            )
        return BatchLoss(cfg, generator, config.loss, config.trades_beta)

    return at_eps


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    final: Path
    epochs: int
    steps: int
    test_clean_error: float
    test_robust_error: float
    elapsed_s: float
    resumed_from_epoch: int
    snapshots: tuple[Path, ...] = field(default_factory=tuple)


def _rng_state(gens: dict[str, torch.Generator]) -> dict[str, Tensor]:
    return {k: g.get_state() for k, g in gens.items()}


def _trace_arrays(rows: dict[str, list[float]]) -> dict[str, np.ndarray]:
    out = {k: np.asarray(rows[k], dtype=np.float64) for k in rows}
    if "step" in out:
        out["step"] = out["step"].astype(np.int64)
    return out


def write_trace(
    path: Path, rows: dict[str, list[float]], evals: dict[str, list[float]], attrs: dict[str, Any]
) -> None:
    """Replace trace.h5 atomically with the rows so far: both groups go into a fresh
    temporary file that is renamed over the old one, so a kill at any moment leaves the
    previous epoch's complete trace (never no file, nor one without /eval).

    Each group has one dimension: `/trace` runs along `step` (epoch, eps, lr, ... are
    variables along it), `/eval` along `epoch`."""
    with atomic_path(path) as tmp:
        tmp.unlink()  # write_group starts a new results file where none exists
        store.write_group(
            tmp,
            "/trace",
            _trace_arrays(rows),
            attrs,
            dims={k: ("step",) for k in TRACE_COLUMNS[1:]},
        )
        if evals["epoch"]:
            store.write_group(
                tmp,
                "/eval",
                _trace_arrays(evals),
                attrs,
                dims={k: ("epoch",) for k in EVAL_COLUMNS[1:]},
            )


def stored_run(
    out: Path, config: TrainConfig, *, overwrite: bool, device: str | torch.device = "cpu"
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the finished checkpoint, the resume state) of this config found in `out`, each None
    where absent. Another config, or a file that is not this trainer's, is bad input unless
    `overwrite`, which ignores both."""
    if overwrite:
        return None, None
    cfg_json = store.canonical_config(config.as_dict())
    final_path, resume_path = out / "final.pt", out / "resume.pt"
    if final_path.exists():
        done = read_checkpoint(final_path)
        if not isinstance(done, Mapping) or not isinstance(done.get("train"), Mapping):
            raise BadInput(
                f"{final_path} is not a checkpoint of this trainer; use another --out or --overwrite"
            )
        if store.canonical_config(done["train"].get("config", {})) != cfg_json:
            raise BadInput(
                f"{out} already holds a finished run with another config; use another --out or --overwrite"
            )
        return done, None
    if not resume_path.exists():
        return None, None
    state = read_checkpoint(resume_path, map_location=device)
    if not isinstance(state, Mapping) or not RESUME_KEYS <= set(state):
        raise BadInput(
            f"{resume_path} is not a resume file of this trainer; pass --overwrite to discard it"
        )
    if store.canonical_config(state.get("config", {})) != cfg_json:
        raise BadInput(
            f"{out} holds an unfinished run with another config; use another --out or --overwrite"
        )
    return None, state


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    data_root: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    command: str = "landscape train",
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train (or resume) a model as `config` says and write the folder described above.

    `stop_after_epochs` ends the call early after that many epochs of this call, as an
    interruption would, leaving a resumable folder (for tests and time-boxed jobs).
    """
    config.validate()
    device = torch.device(device)
    out = Path(out_dir)
    info = dataset_info(config.dataset)
    X_train, y_train = load_dataset(config.dataset, "train", data_root, device)
    X_test, y_test = load_dataset(config.dataset, "test", data_root, device)
    spec = model_spec(config.arch, config.dataset, width=config.width, activation=config.activation)
    final_path, resume_path = out / "final.pt", out / "resume.pt"
    done, state = stored_run(out, config, overwrite=overwrite, device=device)
    if done is not None:
        resume_path.unlink(missing_ok=True)  # left by a kill just after final.pt
        m = done["train"].get("metrics", {})
        return TrainResult(
            out,
            final_path,
            config.epochs,
            int(done["train"].get("step", 0)),
            m.get("test_clean_error", math.nan),
            m.get("test_robust_error", math.nan),
            0.0,
            config.epochs,
            tuple(sorted(out.glob("period_*.pt"))),
        )

    torch.manual_seed(config.seed)
    model = build_from_spec(spec, device)
    theta0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    gens = {
        "data": make_generator(config.seed + 1, device),
        "attack": make_generator(config.seed + 2, device),
    }
    rule: UpdateRule = RULES[config.optimizer](model, config)
    schedule = config.schedule()
    at_eps = make_batch_loss(info.family, config, gens["attack"])
    rows: dict[str, list[float]] = {k: [] for k in TRACE_COLUMNS}
    evals: dict[str, list[float]] = {k: [] for k in EVAL_COLUMNS}
    start_epoch, step, wall_before = 0, 0, 0.0

    if state is not None:
        model.load_state_dict(state["model"])
        theta0 = {k: v.to(device) for k, v in state["theta0"].items()}
        rule.load_state_dict(state["rule"])
        for k, g in gens.items():
            g.set_state(state["rng"][k].cpu())
        rows = {k: list(v) for k, v in state["rows"].items()}
        evals = {k: list(v) for k, v in state["evals"].items()}
        start_epoch, step, wall_before = (
            int(state["epoch"]),
            int(state["step"]),
            float(state["wall_time"]),
        )
    elif overwrite and distributed.world().is_main:
        for stale in [
            resume_path,
            final_path,
            out / "trace.h5",
            *out.glob("epoch_*.pt"),
            *out.glob("period_*.pt"),
        ]:
            stale.unlink(missing_ok=True)
    # Under torchrun every rank has read the folder before rank 0, the only writer, changes it.
    distributed.barrier()
    main = distributed.world().is_main
    if start_epoch == 0 and main:
        save_checkpoint(
            out / "init.pt", model, spec, train={"config": config.as_dict(), "epoch": 0, "step": 0}
        )

    period_ends = {round(e) for e in schedule.periods.ends()} if config.periods else set()
    steps_per_epoch = math.ceil(X_train.shape[0] / config.batch_size)
    t_start = time.perf_counter()
    attrs_common = {
        "command": command,
        "config": store.canonical_config(config.as_dict()),
        "seed": config.seed,
        "device": str(device),
    }

    def wall() -> float:
        return wall_before + time.perf_counter() - t_start

    epochs_run = 0
    for epoch in range(start_epoch, config.epochs):
        model.train()
        stream = batches(X_train, y_train, config.batch_size, shuffle=True, generator=gens["data"])
        epoch_stats: list[tuple[BatchStats, Tensor]] = []
        epoch_meta: list[tuple[float, float, float]] = []
        index = 0

        def draw(it: Iterator = stream) -> tuple[Tensor, Tensor] | None:
            nonlocal index
            batch = next(it, None)
            if batch is None:
                return None
            index += 1
            x, y = batch
            return (augment(config.dataset, x, gens["data"]) if config.augment else x), y

        while index < steps_per_epoch:
            d = epoch + index / steps_per_epoch
            lr, eps = schedule.lr_at(d), schedule.eps_at(d)
            rule.set_lr(lr)
            dist = global_norm({k: p.detach() - theta0[k] for k, p in model.named_parameters()})
            first = index
            produced = rule.step(draw, StepContext(lr, eps, at_eps(eps), d))
            if not produced:
                break
            for k, s in enumerate(produced):
                epoch_stats.append((s, dist))
                epoch_meta.append((epoch + (first + k) / steps_per_epoch, eps, lr))
        host = (
            torch.stack(
                [
                    torch.stack(
                        [s.loss.float(), s.robust_error.float(), s.grad_norm.float(), dist.float()]
                    )
                    for s, dist in epoch_stats
                ]
            )
            .cpu()
            .numpy()
        )
        bad = ~np.isfinite(host[:, 0])
        if bad.any():
            first = int(np.argmax(bad))
            raise Diverged(
                f"training loss became {host[first, 0]} at epoch {epoch + 1}, step {step + first}; "
                f"the last good state is {resume_path if resume_path.exists() else out / 'init.pt'}"
            )
        for (d_frac, eps, lr), (loss, err, gn, dist) in zip(epoch_meta, host):
            for key, value in zip(TRACE_COLUMNS, (step, d_frac, eps, lr, loss, err, gn, dist)):
                rows[key].append(float(value))
            step += 1

        finished = epoch + 1
        distributed.sync_buffers(model)
        if main:
            if config.eval_every and (
                finished % config.eval_every == 0 or finished == config.epochs
            ):
                n = min(config.eval_samples, X_test.shape[0])
                ev = _evaluate(model, X_test[:n], y_test[:n], config)
                for key, value in zip(
                    EVAL_COLUMNS,
                    (finished, wall(), ev.clean_error, ev.adv_error, ev.clean_loss, ev.adv_loss),
                ):
                    evals[key].append(float(value))
            train_meta = {
                "config": config.as_dict(),
                "epoch": finished,
                "step": step,
                "eps": schedule.eps_at(finished - 1e-9),
            }
            if finished in config.save_epochs:
                save_checkpoint(out / f"epoch_{finished:03d}.pt", model, spec, train=train_meta)
            if finished in period_ends:
                k = sorted(period_ends).index(finished) + 1
                save_checkpoint(out / f"period_{k}.pt", model, spec, train=train_meta)
            write_trace(
                out / "trace.h5",
                rows,
                evals,
                {**attrs_common, "status": "running", "elapsed_s": wall()},
            )
            state = {
                "config": config.as_dict(),
                "model": model.state_dict(),
                "theta0": theta0,
                "rule": rule.state_dict(),
                "rng": _rng_state(gens),
                "rows": rows,
                "evals": evals,
                "epoch": finished,
                "step": step,
                "wall_time": wall(),
            }
            with atomic_path(resume_path) as tmp:
                torch.save(state, tmp)
            if progress:
                progress(
                    finished,
                    config.epochs,
                    {
                        "loss": float(np.mean(host[:, 0])),
                        "robust_error": float(np.mean(host[:, 1])),
                    },
                )
        epochs_run += 1
        if (
            stop_after_epochs is not None
            and epochs_run >= stop_after_epochs
            and finished < config.epochs
        ):
            return TrainResult(
                out, resume_path, finished, step, math.nan, math.nan, wall(), start_epoch
            )

    if not main:
        return TrainResult(
            out, final_path, config.epochs, step, math.nan, math.nan, wall(), start_epoch
        )
    ev = _evaluate(model, X_test, y_test, config)
    metrics = {
        "test_clean_error": ev.clean_error,
        "test_robust_error": ev.adv_error,
        "test_clean_loss": ev.clean_loss,
        "test_robust_loss": ev.adv_loss,
        "attack": ev.attack.as_dict(),
    }
    train_meta = {
        "config": config.as_dict(),
        "epoch": config.epochs,
        "step": step,
        "eps": schedule.eps_at(config.epochs - 1e-9),
        "metrics": metrics,
        "wall_time": wall(),
    }
    # The trace first: final.pt marks the run finished, so everything else must be there.
    write_trace(
        out / "trace.h5", rows, evals, {**attrs_common, "status": "complete", "elapsed_s": wall()}
    )
    save_checkpoint(final_path, model, spec, train=train_meta)
    resume_path.unlink(missing_ok=True)
    return TrainResult(
        out,
        final_path,
        config.epochs,
        step,
        ev.clean_error,
        ev.adv_error,
        wall(),
        start_epoch,
        tuple(sorted(out.glob("period_*.pt"))),
    )


def _evaluate(model: nn.Module, X: Tensor, y: Tensor, config: TrainConfig):
    """Test metrics under the run's own target attack, in eval mode; restores train mode."""
    with eval_mode(model):
        return evaluate(model, X, y, config.target_attack(), seed=config.seed)
