"""PGD adversarial training with eps/LR schedules, periodic snapshots, traces and resume.

Layout of an output folder:
    init.pt              theta_0
    epoch_NNN.pt         checkpoints at --save-epochs
    period_K.pt          one snapshot at the end of each period (periodic scheduling)
    best.pt              with --early-stop: the evaluated epoch of lowest robust test error
    final.pt             the last model
    trace.h5             /trace: one row per mini-batch; /eval: per-epoch test metrics
                         (and training-subset metrics with --eval-train-samples)
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
from .optim import DEFAULT_LR, LOSSES, RULES, BatchLoss, BatchStats, StepContext, UpdateRule
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
# With --eval-train-samples N: the same metrics on the first N training images (no augmentation).
EVAL_TRAIN_COLUMNS = (
    "train_clean_error",
    "train_robust_error",
    "train_clean_loss",
    "train_robust_loss",
)
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
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    entropy_gamma: float = 0.03
    entropy_noise: float = 1e-4
    inner_lr: float = 0.1
    inner_momentum: float | None = None
    langevin_steps: int = 20
    mean_alpha: float = 0.75
    entropy_start: float = 0.0
    entropy_stop: float | None = None
    awp_gamma: float = 0.0
    awp_warmup: int = 5
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
    eval_train_samples: int = 0
    early_stop: bool = False
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        # No --lr: the optimizer's paper default (`optim.DEFAULT_LR`), stored resolved so
        # that the config names the rate the run used.
        if self.lr is None and self.optimizer in DEFAULT_LR:
            object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])

    def as_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @property
    def eval_columns(self) -> tuple[str, ...]:
        """The columns of trace.h5's /eval."""
        return EVAL_COLUMNS + (EVAL_TRAIN_COLUMNS if self.eval_train_samples else ())

    def evaluates_after(self, epoch: int) -> bool:
        """Whether epoch `epoch` (1-based) ends with a row of /eval."""
        return bool(self.eval_every) and (epoch % self.eval_every == 0 or epoch == self.epochs)

    def schedule(self) -> Schedule:
        warmup = float(self.eps_warmup) if self.eps_warmup is not None else float(self.epochs)
        eps = EpsSchedule(self.eps_schedule, self.eps, self.eps_min, self.eps_max, warmup)
        window = tuple(self.lr_decay_epochs) if self.lr_decay_epochs else None
        if window is not None and len(window) != 2:
            raise BadInput(f"--lr-decay-epochs takes two epochs A,B, got {list(window)}")
        if window is None and self.lr_schedule == "cosine":
            window = (0.0, float(self.epochs))  # one cosine over the run (over each period)
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
        for flag, value in (
            ("--momentum", self.momentum),
            ("--inner-momentum", self.inner_momentum),
        ):
            if value is not None and not 0 <= value < 1:
                raise BadInput(f"{flag} must lie in [0, 1), got {value}")
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
        if self.eval_train_samples < 0:
            raise BadInput(f"--eval-train-samples must be >= 0, got {self.eval_train_samples}")
        if self.early_stop and not self.eval_every:
            raise BadInput(
                "--early-stop keeps the epoch of the best robust test accuracy among the "
                "evaluations: give --eval-every N (Kanai et al. evaluate every epoch: 1)"
            )
        schedule = self.schedule()
        if self.periods and not any(schedule.changes(float(self.epochs))):
            raise BadInput(
                "--periods resets the LR and eps schedules, but both are constant here, so "
                "nothing would reset: give a decaying --lr-schedule (step, exponential, "
                "cosine) or an eps warmup (--eps-schedule), or use --save-epochs for "
                "snapshots of one run"
            )
        self.target_attack()

    def notices(self) -> list[str]:
        """Warnings about a valid config that may not do what its options suggest."""
        out = []
        if self.awp_gamma > 0 and self.awp_warmup >= self.epochs:
            out.append(
                f"--awp-warmup {self.awp_warmup} >= --epochs {self.epochs}: AWP is never applied"
            )
        if self.optimizer.startswith("entropy-sgd") and self.entropy_start >= self.epochs:
            out.append(
                f"--entropy-start {self.entropy_start:g} >= --epochs {self.epochs}: "
                "EntropySGD never runs (plain SGD steps only)"
            )
        if self.periods and not self.schedule().changes(float(self.epochs))[0]:
            out.append(
                "--periods with an LR that does not decay resets only eps; Liu et al.'s "
                "periodic runs (sec. 5, Table 1, C.1) also reset a decaying LR "
                "(--lr-schedule step, exponential or cosine)"
            )
        return out


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
    best: Path | None = None  # best.pt with --early-stop
    best_epoch: int | None = None
    warnings: tuple[str, ...] = ()


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
        clean, robust = m.get("test_clean_error", math.nan), m.get("test_robust_error", math.nan)
        best_epoch = done["train"].get("best_epoch")
        return TrainResult(
            out,
            final_path,
            config.epochs,
            int(done["train"].get("step", 0)),
            clean,
            robust,
            0.0,
            config.epochs,
            tuple(sorted(out.glob("period_*.pt"))),
            best=out / "best.pt" if best_epoch is not None else None,
            best_epoch=best_epoch,
            warnings=tuple(chance_warning(clean, robust, y_test)),
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
    evals: dict[str, list[float]] = {k: [] for k in config.eval_columns}
    start_epoch, step, wall_before = 0, 0, 0.0
    best: dict[str, float] | None = None  # the epoch --early-stop keeps, with its errors

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
        best = state.get("best")
    elif overwrite and distributed.world().is_main:
        for stale in [
            resume_path,
            final_path,
            out / "trace.h5",
            out / "best.pt",
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
            train_meta = {
                "config": config.as_dict(),
                "epoch": finished,
                "step": step,
                "eps": schedule.eps_at(finished - 1e-9),
            }
            if config.evaluates_after(finished):
                n = min(config.eval_samples, X_test.shape[0])
                ev = _evaluate(model, X_test[:n], y_test[:n], config)
                row = [finished, wall(), ev.clean_error, ev.adv_error, ev.clean_loss, ev.adv_loss]
                if config.eval_train_samples:
                    m = min(config.eval_train_samples, X_train.shape[0])
                    tr = _evaluate(model, X_train[:m], y_train[:m], config)
                    row += [tr.clean_error, tr.adv_error, tr.clean_loss, tr.adv_loss]
                for key, value in zip(config.eval_columns, row):
                    evals[key].append(float(value))
                if config.early_stop and improves(ev.adv_error, ev.clean_error, best):
                    best = {
                        "epoch": finished,
                        "robust_error": ev.adv_error,
                        "clean_error": ev.clean_error,
                        "samples": n,
                    }
                    save_checkpoint(
                        out / "best.pt", model, spec, train={**train_meta, "early_stop": best}
                    )
            if finished in config.save_epochs:
                save_checkpoint(out / f"epoch_{finished:03d}.pt", model, spec, train=train_meta)
            if finished in period_ends:
                k = sorted(period_ends).index(finished) + 1
                save_checkpoint(out / f"period_{k}.pt", model, spec, train=train_meta)
            write_trace(
                out / "trace.h5",
                rows,
                evals,
                {**attrs_common, **best_attrs(best), "status": "running", "elapsed_s": wall()},
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
                "best": best,
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
        "best_epoch": None if best is None else best["epoch"],
    }
    # The trace first: final.pt marks the run finished, so everything else must be there.
    write_trace(
        out / "trace.h5",
        rows,
        evals,
        {**attrs_common, **best_attrs(best), "status": "complete", "elapsed_s": wall()},
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
        best=None if best is None else out / "best.pt",
        best_epoch=None if best is None else best["epoch"],
        warnings=tuple(chance_warning(ev.clean_error, ev.adv_error, y_test)),
    )


def improves(robust_error: float, clean_error: float, best: Mapping[str, Any] | None) -> bool:
    """Early stopping's order (Kanai et al. E: the best robust test accuracy): a lower robust
    error, ties broken by a lower clean error; an equal pair keeps the earlier epoch."""
    return best is None or (robust_error, clean_error) < (
        best["robust_error"],
        best["clean_error"],
    )


def best_attrs(best: Mapping[str, Any] | None) -> dict[str, Any]:
    """trace.h5 attributes naming the epoch best.pt holds (none without --early-stop)."""
    return {} if best is None else {"best_epoch": int(best["epoch"])}


def constant_classifier_error(y: Tensor) -> float:
    """The error of the best constant classifier on labels `y`: it predicts the majority."""
    return 1.0 - torch.bincount(y).max().item() / y.numel()


def chance_warning(clean_error: float, robust_error: float, y: Tensor) -> list[str]:
    """A warning when the model does no better under attack than the best constant
    classifier on the test labels `y` (an untrained or collapsed model, Liu et al. Thm. 1)."""
    constant = constant_classifier_error(y)
    if robust_error < constant:
        return []
    return [
        f"training ended at chance level: test robust error {robust_error:.3f} (clean "
        f"{clean_error:.3f}) is no better than the constant classifier's {constant:.3f}; "
        "try another --lr, more --epochs or an eps warmup (--eps-schedule)"
    ]


def _evaluate(model: nn.Module, X: Tensor, y: Tensor, config: TrainConfig):
    """Test metrics under the run's own target attack, in eval mode; restores train mode."""
    with eval_mode(model):
        return evaluate(model, X, y, config.target_attack(), seed=config.seed)
