"""The `landscape` command: parsing, errors, progress and summaries; no science here."""

from __future__ import annotations

import json
import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from . import distributed
from .util import BadInput, parse_eps, resolve_device

console = Console(stderr=True)


class EpsType(click.ParamType):
    """eps as `8/255`, `0.031` or `0`."""

    name = "eps"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            return parse_eps(value)
        except BadInput as exc:
            self.fail(str(exc), param, ctx)


class EpochsType(click.ParamType):
    """A comma-separated list of epochs, like `100,150`."""

    name = "epochs"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            out = tuple(float(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} must be comma-separated epochs, like 100,150", param, ctx)
        if any(not math.isfinite(v) or v < 0 for v in out):
            self.fail(f"{value!r} must hold finite epochs >= 0", param, ctx)
        return out


EPS = EpsType()
EPOCHS = EpochsType()


def common(fn: Callable) -> Callable:
    """--device, --seed, --json and --debug on every command."""
    fn = click.option("--debug", is_flag=True, help="Show tracebacks.")(fn)
    fn = click.option(
        "--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout."
    )(fn)
    fn = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(fn)
    fn = click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")(
        fn
    )
    return fn


def foreign_options(fn: Callable) -> Callable:
    """How to read a checkpoint that is a bare state_dict."""
    fn = click.option(
        "--activation", default=None, help="Activation of a foreign state_dict (default relu)."
    )(fn)
    fn = click.option(
        "--width",
        type=click.IntRange(min=1),
        default=None,
        help="Width factor (for foreign state_dicts).",
    )(fn)
    fn = click.option("--arch", default=None, help="Architecture (for foreign state_dicts).")(fn)
    return fn


def summary(title: str, rows: dict[str, Any], as_json: bool) -> None:
    """A two-column table on stderr, or JSON on stdout with --json (rank 0 only under torchrun)."""
    if not distributed.world().is_main:
        return
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in rows.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


def progress_bar(total: int, label: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal or not distributed.world().is_main,
    )


def command_line() -> str:
    return " ".join(["landscape", *sys.argv[1:]])


def analysis_options(fn: Callable) -> Callable:
    """Options shared by every analysis of a checkpoint: data, attack and where results go."""
    for option in reversed(
        [
            click.option("--dataset", default=None, help="Dataset (default: the checkpoint's)."),
            click.option(
                "--data-root",
                type=click.Path(file_okay=False),
                default=None,
                help="Folder holding the dataset files.",
            ),
            click.option(
                "--split", type=click.Choice(["train", "test"]), default="train", show_default=True
            ),
            click.option(
                "--samples",
                type=click.IntRange(min=1),
                default=None,
                help="Use the first N examples of the split.",
            ),
            click.option(
                "--eps",
                "eps_list",
                type=EPS,
                multiple=True,
                help="Attack budget(s), like 8/255; repeat for several runs. Default: 0.",
            ),
            click.option(
                "--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True
            ),
            click.option(
                "--pgd-steps",
                type=click.IntRange(min=0),
                default=None,
                help="PGD iterations (default: papers' rule).",
            ),
            click.option(
                "--pgd-step-size",
                type=float,
                default=None,
                help="PGD step size (default: papers' rule).",
            ),
            click.option(
                "--out",
                type=click.Path(dir_okay=False),
                default="results.h5",
                show_default=True,
                help="HDF5 results file.",
            ),
            click.option(
                "--name", default=None, help="Run name (default: checkpoint stem plus key options)."
            ),
            click.option(
                "--overwrite",
                is_flag=True,
                help="Replace a stored run of the same name with another config.",
            ),
        ]
    ):
        fn = option(fn)
    return foreign_options(fn)


@dataclass
class AnalysisInputs:
    """A loaded checkpoint with its data, ready for an analysis."""

    model: Any
    spec: dict[str, Any]
    X: Any
    y: Any
    family: str
    checkpoint: str
    checkpoint_sha256: str
    device: Any


def analysis_inputs(
    checkpoint: str,
    *,
    device: str,
    dataset: str | None,
    data_root: str | None,
    split: str,
    samples: int | None,
    arch: str | None = None,
    width: int | None = None,
    activation: str | None = None,
) -> AnalysisInputs:
    """Load a checkpoint (eval mode) and the first `samples` examples of its dataset's split."""
    from .checkpoint import load_checkpoint, sha256_file
    from .data import dataset_info, load_dataset

    dev = distributed.init(device)
    model, spec = load_checkpoint(
        checkpoint, dev, arch=arch, width=width, dataset=dataset, activation=activation
    )
    name = dataset or spec["dataset"]
    X, y = load_dataset(name, split, data_root, dev)
    if samples is not None:
        X, y = X[:samples], y[:samples]
    return AnalysisInputs(
        model, spec, X, y, dataset_info(name).family, checkpoint, sha256_file(checkpoint), dev
    )


def run_name(checkpoint: str, name: str | None, **key_options: Any) -> str:
    """`--name`, or the checkpoint's stem plus the options that tell runs apart."""
    from .store import safe_run_name

    if name:
        return safe_run_name(name)
    parts = [Path(checkpoint).stem]
    parts += [
        f"{k}{v:.4g}" if isinstance(v, float) else f"{k}{v}"
        for k, v in key_options.items()
        if v is not None
    ]
    return safe_run_name("_".join(parts))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="adv-landscape")
def cli() -> None:
    """Loss landscapes of adversarial training: train, analyse, plot."""


@cli.command()
@click.option(
    "--dataset",
    default="digits",
    show_default=True,
    help="digits, mnist, fashion-mnist, cifar10, cifar100, svhn.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding the dataset files.",
)
@click.option(
    "--arch", default="lenet", show_default=True, help="linear, mlp, lenet, vgg, resnet18."
)
@click.option(
    "--width",
    type=click.IntRange(min=1),
    default=None,
    help="Width factor w of Table 2 (default per arch).",
)
@click.option(
    "--activation", default="relu", show_default=True, help="relu, elu, softplus, tanh, swish."
)
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--optimizer", default="adam", show_default=True, help="sgd, adam, entropy-sgd or entropy-sgd2."
)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="(Initial) learning rate.")
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--nesterov", is_flag=True, help="Nesterov momentum (SGD).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option(
    "--gamma",
    "entropy_gamma",
    type=float,
    default=0.03,
    show_default=True,
    help="EntropySGD scope gamma (eq. 10).",
)
@click.option(
    "--noise",
    "entropy_noise",
    type=float,
    default=1e-4,
    show_default=True,
    help="EntropySGD Langevin noise eps_E.",
)
@click.option(
    "--inner-lr",
    type=float,
    default=0.1,
    show_default=True,
    help="EntropySGD Langevin step size eta' (--lr is the outer eta).",
)
@click.option(
    "--langevin-steps",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="EntropySGD Langevin steps L (one mini-batch each).",
)
@click.option(
    "--mean-alpha",
    type=float,
    default=0.75,
    show_default=True,
    help="EntropySGD running-mean weight alpha of the newest theta'.",
)
@click.option(
    "--entropy-start",
    type=float,
    default=0.0,
    show_default=True,
    help="Epoch EntropySGD starts; before it, plain SGD at lr * gamma (entropy-sgd2: lr).",
)
@click.option(
    "--entropy-stop",
    type=float,
    default=None,
    help="Epoch from which plain SGD takes over again (Kanai et al. F.2: 150).",
)
@click.option(
    "--awp",
    "awp_gamma",
    type=float,
    default=0.0,
    show_default=True,
    help="AWP weight-perturbation size gamma (Wu et al.; 0: off).",
)
@click.option(
    "--awp-warmup",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Epochs without AWP at the start.",
)
@click.option(
    "--loss",
    type=click.Choice(["ce", "trades"]),
    default="ce",
    show_default=True,
    help="ce: PGD adversarial training; trades: TRADES (Zhang et al.).",
)
@click.option(
    "--beta",
    "trades_beta",
    type=float,
    default=6.0,
    show_default=True,
    help="TRADES weight of the KL term.",
)
@click.option(
    "--lr-schedule", default="constant", show_default=True, help="constant, step or exponential."
)
@click.option(
    "--lr-milestones",
    type=EPOCHS,
    default="",
    help="Step schedule: epochs where LR is multiplied by --lr-gamma.",
)
@click.option("--lr-gamma", type=float, default=0.1, show_default=True)
@click.option(
    "--lr-final",
    type=float,
    default=None,
    help="Exponential schedule: LR reached at the end of the decay.",
)
@click.option(
    "--lr-decay-epochs",
    type=EPOCHS,
    default="",
    help="Exponential schedule: A,B epochs of the decay.",
)
@click.option(
    "--lr-warmup",
    type=float,
    default=0.0,
    show_default=True,
    help="Linear LR warmup from 0 over this many epochs.",
)
@click.option(
    "--eps",
    type=EPS,
    default="0",
    show_default=True,
    help="Target budget in pixel units (8/255, 0.3); 0 = vanilla.",
)
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option(
    "--eps-schedule",
    default="constant",
    show_default=True,
    help="constant, linear or cosine (eq. 5).",
)
@click.option("--eps-min", type=float, default=0.0, show_default=True)
@click.option("--eps-max", type=EPS, default=None, help="eq. (5) eps_max (default: the target).")
@click.option(
    "--eps-warmup", type=float, default=None, help="Warmup length D in epochs (default: --epochs)."
)
@click.option(
    "--pgd-steps",
    type=click.IntRange(min=0),
    default=None,
    help="PGD iterations (default: papers' rule).",
)
@click.option(
    "--pgd-step-size", type=float, default=None, help="PGD step size (default: papers' rule)."
)
@click.option(
    "--periods",
    type=EPOCHS,
    default="",
    help="Periodic scheduling: epochs where LR and eps reset, like 100,150.",
)
@click.option(
    "--save-epochs", type=EPOCHS, default="", help="Also save checkpoints after these epochs."
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Test metrics every N epochs (0: end only).",
)
@click.option("--eval-samples", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--no-augment", is_flag=True, help="Turn off data augmentation.")
@click.option(
    "--out", type=click.Path(file_okay=False), default="checkpoints/run", show_default=True
)
@click.option("--overwrite", is_flag=True, help="Discard a finished or unfinished run in --out.")
@click.option("--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing.")
@common
def train(
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    out: str,
    overwrite: bool,
    dry_run: bool,
    data_root: str | None,
    no_augment: bool,
    save_epochs: tuple,
    **opts: Any,
) -> None:
    """PGD adversarial training (eps 0: vanilla), with checkpoints and a per-batch trace."""
    from .train import TrainConfig
    from .train import train as run_training

    config = TrainConfig(
        seed=seed, augment=not no_augment, save_epochs=tuple(int(e) for e in save_epochs), **opts
    )
    dev = distributed.init(device)
    if dry_run:
        from .dryrun import train_plan

        plan = train_plan(config, out, device=dev, data_root=data_root, overwrite=overwrite)
        return summary("dry run: train", plan.as_dict(), as_json)
    with progress_bar(config.epochs, "train") as bar:
        task = bar.add_task("train", total=config.epochs, info="")

        def report(done: int, total: int, stats: dict[str, float]) -> None:
            bar.update(
                task,
                completed=done,
                info=f"loss {stats['loss']:.3f} rob.err {stats['robust_error']:.3f}",
            )

        result = run_training(
            config,
            out,
            device=dev,
            data_root=data_root,
            overwrite=overwrite,
            progress=report,
            command=command_line(),
        )
    summary(
        "train",
        {
            "out": str(result.out_dir),
            "final": str(result.final),
            "epochs": result.epochs,
            "steps": result.steps,
            "resumed_from_epoch": result.resumed_from_epoch,
            "test_clean_error": result.test_clean_error,
            "test_robust_error": result.test_robust_error,
            "elapsed_s": result.elapsed_s,
            "snapshots": [str(p) for p in result.snapshots],
        },
        as_json,
    )


@cli.command(name="eval")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--dataset", default=None, help="Dataset (default: the checkpoint's).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option(
    "--eps", type=EPS, default=None, help="Attack budget (default: the checkpoint's training eps)."
)
@click.option(
    "--norm",
    type=click.Choice(["linf", "l2"]),
    default=None,
    help="Attack norm (default: the training norm).",
)
@click.option("--pgd-steps", type=click.IntRange(min=0), default=None)
@click.option("--pgd-step-size", type=float, default=None)
@click.option(
    "--samples", type=click.IntRange(min=1), default=None, help="Evaluate on the first N examples."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--t", type=click.FloatRange(0, 1), default=None, help="For a curve file: evaluate its point B(t).")
@foreign_options
@common
def eval_(
    checkpoints: tuple[str, ...],
    split: str,
    dataset: str | None,
    data_root: str | None,
    eps: float | None,
    norm: str | None,
    pgd_steps: int | None,
    pgd_step_size: float | None,
    samples: int | None,
    batch_size: int,
    t: float | None,
    arch: str | None,
    width: int | None,
    activation: str | None,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
) -> None:
    """Clean and robust error of one model, or of several as a snapshot ensemble; of the point
    B(t) of a curve file (from `landscape connect`) with --t, its BN statistics re-estimated."""
    from .attacks import attack_config, evaluate
    from .checkpoint import load_checkpoint
    from .connect import is_curve, point_model
    from .data import dataset_info, load_dataset

    dev = resolve_device(device)
    models, specs = [], []
    for path in checkpoints:
        if t is not None or is_curve(path):
            model, spec = point_model(path, t, dev, data_root=data_root, dataset=dataset, batch_size=batch_size)
        else:
            model, spec = load_checkpoint(
                path, dev, arch=arch, width=width, dataset=dataset, activation=activation
            )
        models.append(model)
        specs.append(spec)
    names = {s["dataset"] for s in specs}
    if len(names) > 1:
        raise BadInput(
            f"the checkpoints were trained on different datasets ({', '.join(sorted(names))})"
        )
    ds = dataset or specs[0]["dataset"]
    train_cfg = specs[0].get("train", {}).get("config", {})
    eps_value = eps if eps is not None else float(train_cfg.get("eps", 0.0))
    norm_value = norm or train_cfg.get("norm", "linf")
    cfg = attack_config(
        eps_value,
        family=dataset_info(ds).family,
        norm=norm_value,
        steps=pgd_steps,
        step_size=pgd_step_size,
    )
    X, y = load_dataset(ds, split, data_root, dev)
    if samples is not None:
        X, y = X[:samples], y[:samples]
    ev = evaluate(models, X, y, cfg, batch_size=batch_size, seed=seed)
    summary(
        "eval",
        {
            "checkpoints": list(checkpoints),
            "ensemble": len(models) > 1,
            **({"t": t} if t is not None else {}),
            "dataset": ds,
            "split": split,
            **ev.as_dict(),
        },
        as_json,
    )


@cli.command()
@click.argument("file", type=click.Path())
@common
def info(file: str, device: str, seed: int, as_json: bool, debug: bool) -> None:
    """Describe a checkpoint (spec, training config, metrics, sha256) or list a results file."""
    import h5py

    from . import store
    from .checkpoint import FORMAT, check_stored, read_checkpoint, sha256_file

    path = Path(file)
    if not path.is_file():
        raise BadInput(f"{path} does not exist")
    if h5py.is_hdf5(path):
        groups = store.list_groups(path)
        rows = {
            g: f"{a.get('status', '?')}  {a.get('created', '')}  {a.get('checkpoint', '')}"
            for g, a in groups
        }
        summary(f"{path} ({len(groups)} groups)", rows, as_json)
        return
    obj = read_checkpoint(path)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise BadInput(f"{path} is neither a landscape checkpoint nor a landscape results file")
    check_stored(obj, str(path))
    train_meta = obj.get("train", {})
    summary(
        str(path),
        {
            "format": f"{obj['format']} v{obj.get('version')}",
            "sha256": sha256_file(path),
            "spec": obj["spec"],
            "epoch": train_meta.get("epoch"),
            "step": train_meta.get("step"),
            "metrics": train_meta.get("metrics", {}),
            "config": train_meta.get("config", {}),
        },
        as_json,
    )


@cli.command()
@click.argument("file", type=click.Path())
@click.argument("groups", nargs=-1)
@click.option(
    "--format",
    "formats",
    default="png",
    show_default=True,
    help="Comma-separated: png, pdf, svg, html.",
)
@click.option("--out", type=click.Path(file_okay=False), default="figures", show_default=True)
@common
def plot(
    file: str,
    groups: tuple[str, ...],
    formats: str,
    out: str,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
) -> None:
    """Render stored results (all complete groups, or the GROUPS/analyses named) from FILE."""
    from .plots import parse_formats, render_file

    written = render_file(file, out, groups, parse_formats(formats))
    if not written:
        raise BadInput(f"{file} holds no group that a renderer knows")
    summary("plot", {"files": [str(p) for p in written]}, as_json)


@cli.command()
@click.argument("file", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), default="report.html", show_default=True)
@common
def report(file: str, out: str, device: str, seed: int, as_json: bool, debug: bool) -> None:
    """One self-contained interactive HTML page for a results file, with provenance."""
    from .plots.report import write_report

    summary("report", {"file": str(write_report(file, out))}, as_json)


@cli.command()
@click.option("--quick", "mode", flag_value="quick", default=True, help="Digits, CPU minutes (default).")
@click.option("--full", "mode", flag_value="full", help="The papers' datasets and settings (GPU, days).")
@click.option("--only", default="", help="Comma-separated recipe names (default: all).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option("--runs", type=click.Path(file_okay=False), default=None, help="Checkpoints and results (default runs/MODE).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Figures (default figures/, figures/full).")
@common
def figures(mode: str, only: str, data_root: str | None, runs: str | None, out: str | None, device: str, seed: int,
            as_json: bool, debug: bool) -> None:
    """Regenerate the papers' figures and tables from the recipes in analyses/ (cached, resumable)."""
    from .figures import run_figures

    names = [n.strip() for n in only.split(",") if n.strip()]
    outcomes = run_figures(mode, only=names, runs=runs, out=out, device=str(resolve_device(device)),
                           data_root=data_root, log=lambda line: console.print(line, markup=False, highlight=False))
    summary("figures", {o.name: f"{len(o.files)} files, {o.seconds:.0f} s" for o in outcomes}, as_json)


def _grid_progress(bar: Progress, task: Any) -> Callable[[int, int], None]:
    """A progress callback for grid analyses: points done and points per second."""
    import time

    start, calls = time.perf_counter(), [0]

    def update(done: int, total: int) -> None:
        calls[0] += 1
        rate = calls[0] / max(time.perf_counter() - start, 1e-9)
        bar.update(task, completed=done, total=total, info=f"{rate:.2f} points/s")

    return update


def _warn_nonfinite(group: str, arrays: dict[str, Any], axes: tuple[str, ...]) -> int:
    """One warning line on stderr naming where a grid met non-finite values; their count."""
    from .store import nonfinite_where

    mask = arrays.get("nonfinite")
    count = 0 if mask is None else int(mask.sum())
    if count:
        where = nonfinite_where(mask, {a: arrays[a] for a in axes})
        click.echo(
            f"Warning: {group}: non-finite loss at {count} of {mask.size} points ({where}); "
            "stored as NaN and flagged in `nonfinite`",
            err=True,
        )
    return count


def _eps_runs(
    checkpoint: str, name: str | None, eps_list: tuple, **key: Any
) -> list[tuple[float, str]]:
    """One run per --eps (default 0); an explicit --name gets an eps suffix when there are several."""
    values = list(eps_list) or [0.0]
    named = [f"{name}_eps{e:.4g}" if name and len(values) > 1 else name for e in values]
    return [(e, run_name(checkpoint, n, **key, eps=e)) for e, n in zip(values, named)]


def _rows(rows: dict[str, Any], eps: float, several: bool, stats: dict[str, Any]) -> None:
    """Summary rows of one run, prefixed by its eps when the command made several."""
    rows.update({(f"eps {eps:.4g}: " if several else "") + k: v for k, v in stats.items()})


def _grid_run(
    analysis: str,
    inputs: AnalysisInputs,
    out: str,
    run: str,
    config: dict[str, Any],
    shape: tuple[int, ...],
    fields: tuple[str, ...],
    compute: Callable[[Any, Callable[[int, int], None]], Any],
    *,
    overwrite: bool,
    seed: int,
) -> dict[str, Any] | None:
    """Cache check, resumable grid, progress, provenance and the atomic write of one run."""
    import time

    from .store import Grid, find_complete, provenance, read_group

    group = f"/{analysis}/{run}"
    # Under torchrun rank 0 alone reads and writes the results file and the sidecar;
    # the other ranks compute into an in-memory grid and return None.
    main = distributed.world().is_main
    cached = distributed.on_main(lambda: find_complete(out, group, config, overwrite=overwrite))
    if not cached:
        grids: list[Any] = []
        distributed.on_main(
            lambda: grids.append(Grid(out, group, config, shape, fields, overwrite=overwrite))
        )
        grid = grids[0] if main else Grid.in_memory(shape, fields)
        start = time.perf_counter()
        with progress_bar(math.prod(shape), analysis) as bar:
            result = compute(
                grid, _grid_progress(bar, bar.add_task(analysis, total=math.prod(shape), info=""))
            )
        if not main:
            return None
        attrs = provenance(
            command=command_line(),
            config=config,
            checkpoint=inputs.checkpoint,
            checkpoint_sha256=inputs.checkpoint_sha256,
            device=str(inputs.device),
            seed=seed,
            elapsed_s=time.perf_counter() - start,
        )
        attrs.update(result.attrs())
        grid.finish({}, attrs, extra=result.arrays(), dims=result.dims(), overwrite=overwrite)
    if not main:
        return None
    arrays, attrs = read_group(out, group)
    axes = [a for a in ("x", "y", "alpha", "radius") if a in arrays]
    return {
        "group": group,
        "cached": cached,
        "elapsed_s": float(attrs["elapsed_s"]),
        "nonfinite_points": _warn_nonfinite(group, arrays, tuple(axes)),
        "arrays": arrays,
    }


def _data_config(inputs: AnalysisInputs, split: str, attack: Any, seed: int) -> dict[str, Any]:
    return {
        "checkpoint_sha256": inputs.checkpoint_sha256,
        "dataset": inputs.spec["dataset"],
        "split": split,
        "examples": int(inputs.X.shape[0]),
        **attack.as_dict(),
        "seed": seed,
    }


@cli.command(name="surface")
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--dirs",
    type=click.Choice(["filter", "random", "eigen", "interp", "pca"]),
    default="filter",
    show_default=True,
    help="Directions: filter-normalized, unit random, top Hessian eigenvectors, toward --other, trajectory PCA.",
)
@click.option("--dim", type=click.IntRange(1, 2), default=1, show_default=True)
@click.option("--range", "xrange", default="-1:1:21", show_default=True, help="x grid a:b:n.")
@click.option("--yrange", default=None, help="y grid a:b:n with --dim 2 (default: --range).")
@click.option(
    "--bn",
    type=click.Choice(["eval", "recompute"]),
    default="eval",
    show_default=True,
    help="BatchNorm: checkpoint statistics, or re-estimated on the data at each point.",
)
@click.option(
    "--bias-bn",
    type=click.Choice(["ignore", "filter"]),
    default="ignore",
    show_default=True,
    help="--dirs filter, 1-D parameters: zero, or each entry scaled to |theta_j|.",
)
@click.option(
    "--hessian-group",
    default=None,
    help="--dirs eigen: [FILE:]/hessian/<run> saved with --save-vectors.",
)
@click.option(
    "--other", multiple=True, type=click.Path(), help="--dirs interp: one checkpoint per dimension."
)
@click.option(
    "--trajectory", type=click.Path(), default=None, help="--dirs pca: the trainer's output folder."
)
@click.option("--orthogonalize", is_flag=True, help="Gram-Schmidt the two directions (norms kept).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option(
    "--points-per-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Clean points per vmapped call (default 8 on CPU, 32 on GPU; 1: no vmap).",
)
@click.option("--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing.")
@analysis_options
@common
def surface_cmd(
    checkpoint: str,
    dirs: str,
    dim: int,
    xrange: str,
    yrange: str | None,
    bn: str,
    bias_bn: str,
    hessian_group: str | None,
    other: tuple[str, ...],
    trajectory: str | None,
    orthogonalize: bool,
    batch_size: int,
    points_per_batch: int | None,
    dry_run: bool,
    eps_list: tuple[float, ...],
    norm: str,
    pgd_steps: int | None,
    pgd_step_size: float | None,
    out: str,
    name: str | None,
    overwrite: bool,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    **data: Any,
) -> None:
    """Loss surface around a checkpoint in 1D or 2D: clean and adversarial loss and error."""
    import numpy as np

    from . import dryrun
    from .attacks import attack_config
    from .directions import make_directions
    from .surface import fields_for, parse_range, surface

    if yrange is not None and dim == 1:
        raise BadInput("--yrange needs --dim 2")
    xs = parse_range(xrange)
    ys = parse_range(yrange or xrange, "--yrange") if dim == 2 else None
    inputs = analysis_inputs(checkpoint, device=device, **data)
    family = inputs.family
    shape = (len(xs),) if ys is None else (len(xs), len(ys))
    rows, plans = {}, []
    calibration = dryrun.Calibration(inputs.model, inputs.X, inputs.y, batch_size=batch_size) if dry_run else None
    for eps, run in _eps_runs(checkpoint, name, eps_list, dirs=dirs, dim=f"{dim}d"):
        attack = attack_config(
            eps, family=family, norm=norm, steps=pgd_steps, step_size=pgd_step_size
        )
        options = {
            "bias_bn": bias_bn,
            "hessian_group": hessian_group,
            "other": list(other),
            "trajectory": trajectory,
            "orthogonal": orthogonalize,
        }
        config = {
            "analysis": "surface",
            "dirs": dirs,
            "dim": dim,
            "range": xrange,
            "yrange": yrange or xrange,
            "bn": bn,
            **options,
            **_data_config(inputs, data["split"], attack, seed),
        }
        if dry_run:
            plans.append(dryrun.surface_plan(
                inputs.model, inputs.X, inputs.y, out=out, group=f"/surface/{run}", config=config, shape=shape,
                attack=attack if eps > 0 else None, bn=bn, batch_size=batch_size, points_per_batch=points_per_batch,
                dirs=dirs, direction_options=options, spec=inputs.spec, seed=seed, overwrite=overwrite,
                calibration=calibration))
            continue
        directions = make_directions(
            dirs,
            inputs.model,
            dim,
            X=inputs.X,
            y=inputs.y,
            seed=seed,
            results_file=out,
            spec=inputs.spec,
            attack=attack if eps > 0 else None,
            **options,
        )

        def compute(
            grid: Any, progress: Callable[[int, int], None], eps: float = eps, directions=directions
        ) -> Any:
            return surface(
                inputs.model,
                inputs.X,
                inputs.y,
                directions,
                dim=dim,
                xrange=xs,
                yrange=ys,
                eps=eps,
                norm=norm,
                steps=pgd_steps,
                step_size=pgd_step_size,
                family=family,
                bn=bn,
                seed=seed,
                batch_size=batch_size,
                points_per_batch=points_per_batch,
                grid=grid,
                progress=progress,
            )

        res = _grid_run(
            "surface",
            inputs,
            out,
            run,
            config,
            shape,
            fields_for(eps),
            compute,
            overwrite=overwrite,
            seed=seed,
        )
        if res is None:  # a rank other than 0 under torchrun
            continue
        arrays = res.pop("arrays")
        ranges = {f"{f}_range": [float(np.nanmin(arrays[f])), float(np.nanmax(arrays[f]))] for f in fields_for(eps)}
        _rows(rows, eps, len(eps_list) > 1, {**res, **ranges})
    if dry_run:
        return summary("dry run: surface", dryrun.combine("surface", plans).as_dict(), as_json)
    summary("surface", {"out": out, **rows}, as_json)


@cli.command(name="cosine")
@click.argument("checkpoint", type=click.Path())
@click.option("--range", "arange", default="0:1:11", show_default=True, help="Grid of a: a:b:n.")
@click.option(
    "--repeats", type=click.IntRange(min=1), default=4, show_default=True, help="PGD random starts."
)
@click.option(
    "--hessian-group",
    default=None,
    help="[FILE:]/hessian/<run> saved with --save-vectors (default: computed here).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing.")
@analysis_options
@common
def cosine_cmd(
    checkpoint: str,
    arange: str,
    repeats: int,
    hessian_group: str | None,
    batch_size: int,
    dry_run: bool,
    eps_list: tuple[float, ...],
    norm: str,
    pgd_steps: int | None,
    pgd_step_size: float | None,
    out: str,
    name: str | None,
    overwrite: bool,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    **data: Any,
) -> None:
    """Perturbation cosine along the top eigenvector and a random direction (Liu et al. Fig. 3)."""
    from . import dryrun
    from .attacks import attack_config
    from .cosine import FIELDS, cosine
    from .surface import parse_range

    alphas = parse_range(arange)
    inputs = analysis_inputs(checkpoint, device=device, **data)
    family = inputs.family
    rows, plans = {}, []
    calibration = dryrun.Calibration(inputs.model, inputs.X, inputs.y, batch_size=batch_size) if dry_run else None
    for eps, run in _eps_runs(checkpoint, name, eps_list, norm=norm):
        attack = attack_config(
            eps, family=family, norm=norm, steps=pgd_steps, step_size=pgd_step_size
        )
        config = {
            "analysis": "cosine",
            "range": arange,
            "repeats": repeats,
            "hessian_group": hessian_group,
            **_data_config(inputs, data["split"], attack, seed),
        }
        if dry_run:
            plans.append(dryrun.cosine_plan(
                inputs.model, inputs.X, inputs.y, out=out, group=f"/cosine/{run}", config=config, alphas=alphas,
                attack=attack, repeats=repeats, batch_size=batch_size, hessian_group=hessian_group,
                overwrite=overwrite, calibration=calibration))
            continue

        def compute(grid: Any, progress: Callable[[int, int], None], eps: float = eps) -> Any:
            return cosine(
                inputs.model,
                inputs.X,
                inputs.y,
                eps=eps,
                norm=norm,
                steps=pgd_steps,
                step_size=pgd_step_size,
                family=family,
                alpha=alphas,
                repeats=repeats,
                seed=seed,
                batch_size=batch_size,
                hessian_group=hessian_group,
                results_file=out,
                grid=grid,
                progress=progress,
            )

        res = _grid_run(
            "cosine",
            inputs,
            out,
            run,
            config,
            alphas.shape,
            FIELDS,
            compute,
            overwrite=overwrite,
            seed=seed,
        )
        if res is None:  # a rank other than 0 under torchrun
            continue
        arrays = res.pop("arrays")
        last = ("cosine_top_mean", "cosine_random_mean", "zero_perturbations_top")
        _rows(rows, eps, len(eps_list) > 1, {**res, **{f"{k}_at_max_a": float(arrays[k][-1]) for k in last}})
    if dry_run:
        return summary("dry run: cosine", dryrun.combine("cosine", plans).as_dict(), as_json)
    summary("cosine", {"out": out, **rows}, as_json)


@cli.command(name="smoothness")
@click.argument("checkpoint", type=click.Path())
@click.option("--radii", default="1e-3:1:7", show_default=True, help="Log-spaced radii a:b:n.")
@click.option("--dirs", type=click.Choice(["random", "eigen"]), default="random", show_default=True)
@click.option(
    "--directions",
    "count",
    type=click.IntRange(min=1),
    default=None,
    help="Number of directions u (default 4 random, 1 eigen).",
)
@click.option(
    "--norms",
    default=None,
    help="Comma-separated from clean,linf,l2 (default all; clean at eps 0).",
)
@click.option(
    "--l2-match",
    type=click.Choice(["volume", "sqrt-d", "same"]),
    default="volume",
    show_default=True,
    help="L2 budget matched to the L-inf --eps: same-volume ball, eps*sqrt(d), or equal.",
)
@click.option("--l2-eps", type=EPS, default=None, help="Explicit L2 budget (overrides --l2-match).")
@click.option(
    "--hessian-group",
    default=None,
    help="--dirs eigen: [FILE:]/hessian/<run> saved with --save-vectors.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing.")
@analysis_options
@common
def smoothness_cmd(
    checkpoint: str,
    radii: str,
    dirs: str,
    count: int | None,
    norms: str | None,
    l2_match: str,
    l2_eps: float | None,
    hessian_group: str | None,
    batch_size: int,
    dry_run: bool,
    eps_list: tuple[float, ...],
    norm: str,
    pgd_steps: int | None,
    pgd_step_size: float | None,
    out: str,
    name: str | None,
    overwrite: bool,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    **data: Any,
) -> None:
    """Gradient-Lipschitz profile ||grad L(theta + r u) - grad L(theta)|| / r: clean, L-inf, L2.

    --eps is the L-inf budget; the L2 budget follows --l2-match (or --l2-eps); --norm is
    not used (both norms are profiled). Eigen directions are those of the L-inf L_eps."""
    from . import dryrun
    from .attacks import attack_config
    from .smoothness import fields_for, smoothness
    from .surface import parse_range

    rs = parse_range(radii, "--radii", log=True)
    chosen = tuple(n.strip() for n in norms.split(",") if n.strip()) if norms is not None else None
    inputs = analysis_inputs(checkpoint, device=device, **data)
    family = inputs.family
    rows, plans = {}, []
    calibration = dryrun.Calibration(inputs.model, inputs.X, inputs.y, batch_size=batch_size) if dry_run else None
    for eps, run in _eps_runs(checkpoint, name, eps_list, dirs=dirs):
        attack = attack_config(
            eps, family=family, norm="linf", steps=pgd_steps, step_size=pgd_step_size
        )
        use = chosen or (("clean", "linf", "l2") if eps > 0 else ("clean",))
        config = {
            "analysis": "smoothness",
            "radii": radii,
            "dirs": dirs,
            "directions": count,
            "norms": list(use),
            "l2_match": l2_match,
            "l2_eps": l2_eps,
            "hessian_group": hessian_group,
            **_data_config(inputs, data["split"], attack, seed),
        }
        if dry_run:
            plans.append(dryrun.smoothness_plan(
                inputs.model, inputs.X, inputs.y, out=out, group=f"/smoothness/{run}", config=config, radii=rs,
                attack=attack, norms=use, dirs=dirs, count=count, batch_size=batch_size,
                hessian_group=hessian_group, overwrite=overwrite, calibration=calibration))
            continue

        def compute(
            grid: Any, progress: Callable[[int, int], None], eps: float = eps, use: tuple = use
        ) -> Any:
            return smoothness(
                inputs.model,
                inputs.X,
                inputs.y,
                eps=eps,
                radius=rs,
                directions=dirs,
                count=count,
                norms=use,
                match=l2_match,
                l2_eps=l2_eps,
                steps=pgd_steps,
                step_size=pgd_step_size,
                family=family,
                seed=seed,
                batch_size=batch_size,
                hessian_group=hessian_group,
                results_file=out,
                grid=grid,
                progress=progress,
            )

        res = _grid_run(
            "smoothness",
            inputs,
            out,
            run,
            config,
            rs.shape,
            fields_for(use),
            compute,
            overwrite=overwrite,
            seed=seed,
        )
        if res is None:  # a rank other than 0 under torchrun
            continue
        arrays = res.pop("arrays")
        first = {f"lipschitz_{n}_at_min_r": float(arrays[f"lipschitz_{n}_mean"][0]) for n in use}
        _rows(rows, eps, len(eps_list) > 1, {**res, **first})
    if dry_run:
        return summary("dry run: smoothness", dryrun.combine("smoothness", plans).as_dict(), as_json)
    summary("smoothness", {"out": out, **rows}, as_json)


@cli.command(name="connect")
@click.argument("start", type=click.Path())
@click.argument("end", type=click.Path())
@click.option("--order", type=click.IntRange(min=1), default=None,
              help="Bezier order n (default: 2 for MNIST-like data, 4 for CIFAR-like, as the paper).")
@click.option("--eps", type=EPS, default="0", show_default=True, help="Budget to train and evaluate at; 0 = vanilla.")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option("--pgd-steps", type=click.IntRange(min=0), default=None, help="PGD iterations (default: papers' rule).")
@click.option("--pgd-step-size", type=float, default=None, help="PGD step size (default: papers' rule).")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True, help="Curve training epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="adam", show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="(Initial) learning rate.")
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="On the bends only.")
@click.option("--lr-schedule", default="constant", show_default=True, help="constant, step or exponential.")
@click.option("--lr-milestones", type=EPOCHS, default="", help="Step schedule: epochs where LR is times --lr-gamma.")
@click.option("--lr-gamma", type=float, default=0.1, show_default=True)
@click.option("--lr-final", type=float, default=None, help="Exponential schedule: LR reached at the end of the decay.")
@click.option("--lr-decay-epochs", type=EPOCHS, default="", help="Exponential schedule: A,B epochs of the decay.")
@click.option("--lr-warmup", type=float, default=0.0, show_default=True, help="Linear LR warmup (epochs).")
@click.option("--no-augment", is_flag=True, help="Turn off data augmentation in curve training.")
@click.option("--points", type=click.IntRange(min=2), default=61, show_default=True, help="Values of t evaluated.")
@click.option("--bn-inputs", type=click.Choice(["clean", "adv"]), default="clean", show_default=True,
              help="Inputs the BN statistics are re-estimated on at each t.")
@click.option("--samples", type=click.IntRange(min=1), default=None, help="Evaluate on the first N of each split.")
@click.option("--bn-samples", type=click.IntRange(min=1), default=None,
              help="Re-estimate BN on the first N training examples (default: all).")
@click.option("--dataset", default=None, help="Dataset (for foreign state_dicts; default: the checkpoints').")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Folder holding the dataset files.")
@click.option("--curve-out", type=click.Path(dir_okay=False), default=None,
              help="Curve file (default: <run>.curve.pt beside --out); reused or resumed when it matches.")
@click.option("--out", type=click.Path(dir_okay=False), default="results.h5", show_default=True, help="Results file.")
@click.option("--name", default=None, help="Run name (default: the checkpoints' stems plus order and eps).")
@click.option("--overwrite", is_flag=True, help="Replace a stored run, curve or partial work that has another config.")
@click.option("--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing.")
@foreign_options
@common
def connect_(start: str, end: str, order: int | None, eps: float, norm: str, pgd_steps: int | None,
             pgd_step_size: float | None, no_augment: bool, points: int, bn_inputs: str, samples: int | None,
             bn_samples: int | None, dataset: str | None, data_root: str | None, curve_out: str | None, out: str,
             name: str | None, overwrite: bool, dry_run: bool, arch: str | None, width: int | None,
             activation: str | None, device: str, seed: int, as_json: bool, debug: bool, **opts: Any) -> None:
    """Train a Bezier curve joining two checkpoints and evaluate it and the straight line along t."""
    import time

    from . import store
    from .attacks import attack_config
    from .checkpoint import sha256_file
    from .connect import (
        CurveConfig,
        barriers,
        check_evaluation,
        default_order,
        fields,
        load_endpoints,
        pair_label,
        train_curve,
    )
    from .connect import connect as connect_curve
    from .data import dataset_info, load_dataset

    dev = distributed.init(device)
    ends = load_endpoints(start, end, dev, arch=arch, width=width, dataset=dataset, activation=activation)
    ds, family = ends.spec["dataset"], dataset_info(ends.spec["dataset"]).family
    config = CurveConfig(order=order or default_order(family), eps=eps, norm=norm, pgd_steps=pgd_steps,
                            pgd_step_size=pgd_step_size, augment=not no_augment, seed=seed, **opts)
    config.validate(ends.spec)
    attack = attack_config(eps, family=family, norm=norm, steps=pgd_steps, step_size=pgd_step_size)
    check_evaluation(points, bn_inputs, attack)
    run = run_name(pair_label(start, end), name, order=config.order, eps=eps)
    group = f"/connect/{run}"
    settings = {**config.as_dict(), "start_sha256": ends.start_sha256, "end_sha256": ends.end_sha256,
                "points": points, "bn_inputs": bn_inputs, "samples": samples, "bn_samples": bn_samples,
                "attack": attack.as_dict()}
    curve_path = Path(curve_out) if curve_out else Path(out).parent / f"{run}.curve.pt"
    if dry_run:
        from .dryrun import connect_plan

        plan = connect_plan(ends, config, attack, out=out, group=group, settings=settings, curve_path=curve_path,
                            points=points, bn_inputs=bn_inputs, samples=samples, bn_samples=bn_samples,
                            data_root=data_root, device=dev, overwrite=overwrite)
        return summary("dry run: connect", plan.as_dict(), as_json)
    status = "stored"
    # Under torchrun rank 0 alone reads and writes the results file and its sidecar.
    main = distributed.world().is_main
    if not distributed.on_main(lambda: store.find_complete(out, group, settings, overwrite=overwrite)):
        grids: list[Any] = []
        distributed.on_main(lambda: grids.append(
            store.Grid(out, group, settings, (points,), fields(eps > 0), overwrite=overwrite)))
        grid = grids[0] if main else None
        started = time.perf_counter()
        with progress_bar(config.epochs, "connect") as bar:
            task = bar.add_task("curve", total=config.epochs, info="train curve")
            trained = train_curve(
                ends, config, curve_path, device=dev, data_root=data_root, overwrite=overwrite,
                progress=lambda done, total, s: bar.update(task, completed=done, info=f"loss {s['loss']:.3f}"))
            bar.update(task, completed=0, total=points, info="evaluate")
            X, y = load_dataset(ds, "train", data_root, dev)
            X_test, y_test = load_dataset(ds, "test", data_root, dev)
            result = connect_curve(
                trained.curve, (X[:samples], y[:samples]), (X_test[:samples], y_test[:samples]), attack,
                points=points, bn_inputs=bn_inputs, bn_data=(X[:bn_samples], y[:bn_samples]), seed=seed, grid=grid,
                progress=lambda done, total: bar.update(task, completed=done))
        if not main:
            return
        attrs = store.provenance(command=command_line(), config=settings, checkpoint=str(curve_path),
                                 checkpoint_sha256=sha256_file(curve_path), device=dev, seed=seed,
                                 elapsed_s=time.perf_counter() - started)
        attrs.update(order=config.order, start=start, end=end, start_sha256=ends.start_sha256,
                     end_sha256=ends.end_sha256, curve_epochs=trained.epochs)
        grid.finish({"t": result.t}, attrs, overwrite=overwrite)
        status = "reused" if trained.reused else "trained" + (
            f" (resumed from epoch {trained.resumed_from_epoch})" if trained.resumed_from_epoch else "")
    if not main:
        return
    arrays, _ = store.read_group(out, group)
    flagged = _warn_nonfinite(group, arrays, ("t",))
    summary("connect", {"group": f"{out}:{group}", "curve": str(curve_path), "curve_status": status,
                        "order": config.order, "eps": eps, "nonfinite_points": flagged,
                        **barriers(arrays)}, as_json)


def _hessian_run_names(
    checkpoints: tuple[str, ...], eps_values: list[float], name: str | None, **key: Any
) -> list[list[str]]:
    """Run names per checkpoint and eps: `--name` (suffixed when there are several runs) or
    the checkpoint stem plus the key options; stems that repeat get their folder's name."""
    stems = [Path(c).stem for c in checkpoints]
    labels = [
        s if stems.count(s) == 1 else f"{Path(c).resolve().parent.name}_{s}"
        for c, s in zip(checkpoints, stems)
    ]
    names = []
    for label in labels:
        row = []
        for eps in eps_values:
            if name is None:
                # run_name takes the stem of its first argument: the label is that stem.
                row.append(run_name(f"{label}.pt", None, eps=eps, **key))
            else:
                parts = [name, label] if len(labels) > 1 else [name]
                parts += [f"eps{eps:.4g}"] if len(eps_values) > 1 else []
                row.append(run_name(label, "_".join(parts)))
        names.append(row)
    return names


@cli.command(name="hessian")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Eigenpairs.")
@click.option(
    "--method",
    type=click.Choice(["lanczos", "power"]),
    default="lanczos",
    show_default=True,
    help="Lanczos (scipy eigsh) or PyHessian's deflated power iteration.",
)
@click.option(
    "--params", "param_globs", multiple=True, help="Only parameters matching this glob, like 'conv*'."
)
@click.option(
    "--random-samples",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Random initializations for the loss scale (0: no normalization).",
)
@click.option("--save-vectors", is_flag=True, help="Store the eigenvectors (k x P).")
@click.option("--trace", is_flag=True, help="Also estimate the trace (Hutchinson, 100 probes).")
@click.option("--density", is_flag=True, help="Also estimate the spectral density (SLQ).")
@click.option(
    "--tol", type=click.FloatRange(min=0), default=None, help="Solver tolerance (1e-6 lanczos, 1e-3 power)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing.")
@analysis_options
@common
def hessian_cmd(
    checkpoints: tuple[str, ...],
    top: int,
    method: str,
    param_globs: tuple[str, ...],
    random_samples: int,
    save_vectors: bool,
    trace: bool,
    density: bool,
    tol: float | None,
    batch_size: int,
    dry_run: bool,
    eps_list: tuple[float, ...],
    norm: str,
    pgd_steps: int | None,
    pgd_step_size: float | None,
    out: str,
    name: str | None,
    overwrite: bool,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    **data: Any,
) -> None:
    """Top Hessian eigenvalues of the adversarial loss, raw and loss-scale normalized (Liu et al. 4.2)."""
    import time

    from .attacks import attack_config
    from .hessian import check_options, hessian, load_hessian, store_hessian
    from .store import find_complete, provenance

    globs = list(param_globs) or None
    eps_values = list(eps_list) or [0.0]
    names = _hessian_run_names(
        checkpoints, eps_values, name, norm=norm, params=",".join(globs) if globs else None
    )
    runs = []
    for ckpt, row in zip(checkpoints, names):
        inputs = analysis_inputs(ckpt, device=device, **data)
        check_options(
            inputs.model, top=top, method=method, params=globs, random_samples=random_samples, spec=inputs.spec
        )
        for eps, run in zip(eps_values, row):
            attack = attack_config(
                eps, family=inputs.family, norm=norm, steps=pgd_steps, step_size=pgd_step_size
            )
            config = {
                "analysis": "hessian",
                "checkpoint_sha256": inputs.checkpoint_sha256,
                "dataset": inputs.spec["dataset"],
                "split": data["split"],
                "examples": int(inputs.X.shape[0]),
                **attack.as_dict(),
                "top": top,
                "method": method,
                "tol": tol,
                "params": globs,
                "random_samples": random_samples,
                "save_vectors": save_vectors,
                "trace": trace,
                "density": density,
                "batch_size": batch_size,
                "seed": seed,
            }
            runs.append((inputs, attack, f"/hessian/{run}", config))
    groups = [group for _, _, group, _ in runs]
    if len(set(groups)) < len(groups):
        raise BadInput(f"several runs would be stored as the same group ({', '.join(groups)}); use --name")
    cached = distributed.on_main(
        lambda: [find_complete(out, group, config, overwrite=overwrite) for _, _, group, config in runs]
    )
    if dry_run:
        from .dryrun import hessian_plan

        plan = hessian_plan(runs, cached, top=top, method=method, params=globs, random_samples=random_samples,
                            save_vectors=save_vectors, trace=trace, density=density, batch_size=batch_size)
        return summary(f"dry run: hessian -> {out}", plan.as_dict(), as_json)
    main = distributed.world().is_main
    rows: dict[str, Any] = {}
    with progress_bar(len(runs), "hessian") as bar:
        task = bar.add_task("hessian", total=len(runs), info="")
        for (inputs, attack, group, config), hit in zip(runs, cached):
            bar.update(task, info=group)
            if hit and not main:
                continue
            if hit:
                res = load_hessian(out, group)
            else:
                start = time.perf_counter()
                res = hessian(
                    inputs.model,
                    inputs.X,
                    inputs.y,
                    attack.eps,
                    top=top,
                    method=method,
                    params=globs,
                    attack=attack,
                    spec=inputs.spec,
                    random_samples=random_samples,
                    save_vectors=save_vectors,
                    trace=trace,
                    density=density,
                    batch_size=batch_size,
                    seed=seed,
                    tol=tol,
                )
                attrs = provenance(
                    command=command_line(),
                    config=config,
                    checkpoint=inputs.checkpoint,
                    checkpoint_sha256=inputs.checkpoint_sha256,
                    device=str(inputs.device),
                    seed=seed,
                    elapsed_s=time.perf_counter() - start,
                )
                if main:  # rank 0 writes under torchrun
                    store_hessian(out, group, res, attrs, overwrite=overwrite)
            if res.nonfinite and main:
                click.echo(
                    f"Warning: {group}: non-finite loss or Hessian-vector product at the checkpoint "
                    f"(eps {attack.eps:.4g}, loss {res.loss}); eigenvalues stored as NaN, flagged nonfinite",
                    err=True,
                )
            stats = {
                "top3": [round(float(v), 6) for v in res.eigenvalues[:3]],
                "loss_scale": res.loss_scale,
                "n_hvp": res.n_hvp,
                "wall_s": round(res.wall_s, 2),
                "cached": hit,
                "nonfinite": res.nonfinite,
            }
            rows[group] = stats if as_json else (
                f"top3 {', '.join(f'{v:.4g}' for v in stats['top3'])} | scale {res.loss_scale:.4g} | "
                f"{res.n_hvp} HVPs | {res.wall_s:.1f} s{' (cached)' if hit else ''}"
            )
            bar.advance(task)
    summary(f"hessian -> {out}", rows, as_json)


@cli.command(name="toy")
@click.argument("figure", type=click.Choice(["kanai-fig2", "kanai-fig4-5", "liu-fig5", "liu-thm1", "all"]))
@click.option("--out", type=click.Path(dir_okay=False), default="results.h5", show_default=True)
@click.option("--grid", type=click.IntRange(min=3), default=101, show_default=True, help="Points per θ axis.")
@click.option("--eps", "eps_list", type=EPS, multiple=True,
              help="Kanai: the budget (0.6); liu-fig5: band budgets (0.6 1.2); liu-thm1: training budgets.")
@click.option("--gamma", type=float, default=1.0, show_default=True, help="EntropySGD γ of −F(θ) (Kanai eq. 10).")
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="kanai-fig4-5: N Gaussian points.")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True,
              help="liu-thm1: attack norm.")
@click.option("--pgd-steps", type=click.IntRange(min=0), default=None, help="kanai-fig2 swish PGD iterations (200).")
@click.option("--pgd-step-size", type=float, default=None, help="kanai-fig2 swish PGD step (5 eps / steps).")
@click.option("--train-steps", type=click.IntRange(min=1), default=2000, show_default=True,
              help="liu-thm1: gradient-descent steps.")
@click.option("--overwrite", is_flag=True, help="Replace a stored figure computed with another config.")
@common
def toy_cmd(figure: str, out: str, eps_list: tuple[float, ...], overwrite: bool, device: str, seed: int,
            as_json: bool, debug: bool, **opts: Any) -> None:
    """Theory figures from closed forms and scipy (Kanai Fig. 2, 4-5; Liu Fig. 5, Thm. 1) into /toy/FIGURE."""
    import time

    from .store import find_complete, provenance, read_group, write_group
    from .toy import FIGURES, toy, toy_options

    dev = resolve_device(device)
    names = FIGURES if figure == "all" else (figure,)
    plans = [toy_options(f, eps=list(eps_list) or None, seed=seed, **opts) for f in names]
    cached = [find_complete(out, f"/toy/{c['figure']}", c, overwrite=overwrite) for c in plans]
    rows: dict[str, Any] = {"out": out}
    with progress_bar(len(plans), "toy") as bar:
        task = bar.add_task("toy", total=len(plans), info="")
        for config, hit in zip(plans, cached):
            group = f"/toy/{config['figure']}"
            if not hit:
                start = time.perf_counter()
                res = toy(config["figure"], device=dev, **config)
                attrs = provenance(command=command_line(), config=config, device=str(dev), seed=seed,
                                   elapsed_s=time.perf_counter() - start)
                write_group(out, group, res.arrays(), {**attrs, **res.attrs()}, dims=res.dims(), overwrite=overwrite)
            stored = read_group(out, group)[1]
            rows[group] = {"cached": hit, "elapsed_s": round(float(stored["elapsed_s"]), 2),
                           **({"threshold": float(stored["threshold"])} if "threshold" in stored else {})}
            bar.advance(task)
    summary(f"toy -> {out}", rows, as_json)


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on success, 2 on bad input, 1 on internal errors."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="landscape", standalone_mode=False)
        distributed.shutdown(wait=True)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Error: aborted", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(2)
    except BadInput as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        from .train import Diverged

        if debug:
            traceback.print_exc()
        if isinstance(exc, Diverged):
            click.echo(f"Error: {exc}", err=True)
        else:
            click.echo(
                f"Error: internal error {exc.__class__.__name__}: {exc} (rerun with --debug for the traceback)",
                err=True,
            )
        sys.exit(1)
    sys.exit(0)
