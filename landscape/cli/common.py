"""What every command shares: option types and groups, loading a checkpoint with its data,
summaries, progress bars, and the cached, resumable run of one grid analysis."""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._version import __version__
from ..util import BadInput, parse_eps

# Nothing heavy at import time: `landscape --help` must answer at once, so torch, numpy,
# rich and landscape's analyses are imported inside the commands and helpers that use them.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


@functools.cache
def stderr_console() -> Console:
    """The console of progress bars and logs (stderr), made on first use."""
    from rich.console import Console

    return Console(stderr=True)


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


FOREIGN_KEYS = ("arch", "width", "activation", "model", "model_kwargs", "normalize")


def foreign_load_options(
    arch: str | None,
    width: int | None,
    activation: str | None,
    model: str | None,
    model_kwargs: str | None,
    normalize: str | None,
) -> dict[str, Any]:
    """The options of `foreign_options`, checked, as keyword arguments of `load_checkpoint`.
    A named `--model` is imported here: the user asked for it."""
    from ..foreign import import_factory, parse_model_kwargs, parse_normalize

    kwargs = parse_model_kwargs(model_kwargs)
    if model_kwargs is not None and model is None:
        raise BadInput("--model-kwargs needs --model")
    if model is not None and (arch is not None or width is not None):
        raise BadInput("--model builds the network itself; drop --arch and --width")
    if normalize is not None:
        parse_normalize(normalize)
    if model is not None:
        import_factory(model)
    return {
        "arch": arch,
        "width": width,
        "activation": activation,
        "model": model,
        "model_kwargs": kwargs if model_kwargs is not None else None,
        "normalize": normalize,
    }


def foreign_options(fn: Callable) -> Callable:
    """How to read a checkpoint that is a bare state_dict: --arch, --width, --activation,
    --model, --model-kwargs, --normalize, handed to the command as one `foreign` dict of
    `load_checkpoint` keyword arguments."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        kwargs["foreign"] = foreign_load_options(**{k: kwargs.pop(k) for k in FOREIGN_KEYS})
        return fn(*args, **kwargs)

    for option in reversed(
        [
            click.option(
                "--arch",
                default=None,
                help="Architecture of a foreign state_dict (lenet, resnet18, preact-resnet18, "
                "wrn-34-10, dm-wrn-28-10, ...; see `landscape info FILE`).",
            ),
            click.option(
                "--width",
                type=click.IntRange(min=1),
                default=None,
                help="Width factor of a foreign state_dict (default: read off its shapes).",
            ),
            click.option(
                "--activation",
                default=None,
                help="Activation of a foreign state_dict (default relu; dm-wrn: swish).",
            ),
            click.option(
                "--model",
                default=None,
                help="Your network: MODULE:FACTORY or path/to/file.py:FACTORY, returning an "
                "nn.Module (imports and runs that code).",
            ),
            click.option(
                "--model-kwargs",
                default=None,
                help="Keyword arguments of --model's factory, like depth=28,widen=10.",
            ),
            click.option(
                "--normalize",
                default=None,
                help="Input normalization in front of a foreign model: dataset, none or "
                "MEAN/STD (default: none for wrn/dm-wrn/preact and --model, else dataset).",
            ),
        ]
    ):
        command = option(command)
    return command


def lr_schedule_options(fn: Callable) -> Callable:
    """The LR schedule of training and of curve training (`schedules.LrSchedule`)."""
    for option in reversed(
        [
            click.option(
                "--lr-schedule",
                default="constant",
                show_default=True,
                help="constant, step, exponential or cosine.",
            ),
            click.option(
                "--lr-milestones",
                type=EPOCHS,
                default="",
                help="Step schedule: epochs where LR is multiplied by --lr-gamma.",
            ),
            click.option("--lr-gamma", type=float, default=0.1, show_default=True),
            click.option(
                "--lr-final",
                type=float,
                default=None,
                help="Exponential schedule: LR reached at the end of the decay.",
            ),
            click.option(
                "--lr-decay-epochs",
                type=EPOCHS,
                default="",
                help="Exponential schedule: A,B epochs of the decay.",
            ),
            click.option(
                "--lr-warmup",
                type=float,
                default=0.0,
                show_default=True,
                help="Linear LR warmup from 0 over this many epochs.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def summary(title: str, rows: dict[str, Any], as_json: bool) -> None:
    """A two-column table on stderr, or JSON on stdout with --json (rank 0 only under torchrun)."""
    from rich.console import Console
    from rich.table import Table

    from .. import distributed

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
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .. import distributed

    console = stderr_console()
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


# The options of `analysis_options` (and the `foreign` dict of `foreign_options`) that
# `analysis_inputs` takes.
DATA_OPTIONS = ("dataset", "data_root", "split", "samples", "foreign")


# PGD's iterations and step, defaulting to the papers' rule (`attacks.attack_config`).
PGD_OPTIONS = (
    click.option(
        "--pgd-steps",
        type=click.IntRange(min=0),
        default=None,
        help="PGD iterations (default: papers' rule).",
    ),
    click.option(
        "--pgd-step-size", type=float, default=None, help="PGD step size (default: papers' rule)."
    ),
)


def pgd_options(fn: Callable) -> Callable:
    """`--pgd-steps` and `--pgd-step-size` (`PGD_OPTIONS`)."""
    for option in reversed(PGD_OPTIONS):
        fn = option(fn)
    return fn


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
            *PGD_OPTIONS,
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


def analysis_inputs(
    checkpoint: str,
    *,
    device: str,
    dataset: str | None,
    data_root: str | None,
    split: str,
    samples: int | None,
    foreign: dict[str, Any] | None = None,
) -> Any:
    """`analysis.load_inputs` for a command, which also says how an .npz dataset was read."""
    from .. import distributed
    from ..analysis import load_inputs

    dev = distributed.init(device)
    inputs = load_inputs(
        checkpoint,
        device=dev,
        dataset=dataset,
        data_root=data_root,
        split=split,
        samples=samples,
        foreign=foreign,
    )
    state_data(inputs.dataset)
    return inputs


def state_data(name: str) -> None:
    """One line on stderr saying how an .npz dataset was read (layout, scale, classes)."""
    from .. import distributed
    from ..data import dataset_info, is_npz

    if is_npz(name) and distributed.world().is_main:
        stderr_console().print(f"Data: {dataset_info(name).note}", markup=False, highlight=False)


def run_name(checkpoint: str, name: str | None, **key_options: Any) -> str:
    """`--name`, or the checkpoint's stem plus the options that tell runs apart."""
    from ..store import safe_run_name

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
@click.version_option(version=__version__)
def cli() -> None:
    """Loss landscapes of adversarial training: train, analyse, plot."""
    from ..util import tune_cpu_allocator

    tune_cpu_allocator()  # a command is about to run (help and usage errors never get here)


def grid_progress(bar: Progress, task: Any) -> Callable[[int, int], None]:
    """A progress callback for grid analyses: points done and points per second."""
    import time

    start, calls = time.perf_counter(), [0]

    def update(done: int, total: int) -> None:
        calls[0] += 1
        rate = calls[0] / max(time.perf_counter() - start, 1e-9)
        bar.update(task, completed=done, total=total, info=f"{rate:.2f} points/s")

    return update


def eps_runs(
    checkpoint: str, name: str | None, eps_list: tuple, **key: Any
) -> list[tuple[float, str]]:
    """One run per --eps (default 0); an explicit --name gets an eps suffix when there are several."""
    values = list(eps_list) or [0.0]
    named = [f"{name}_eps{e:.4g}" if name and len(values) > 1 else name for e in values]
    return [(e, run_name(checkpoint, n, **key, eps=e)) for e, n in zip(values, named)]


def eps_jobs(
    inputs: Any,
    runs: Sequence[tuple[float, str]],
    make: Callable[[Any], Any],
    *,
    out: str,
    norm: str = "linf",
    pgd_steps: int | None = None,
    pgd_step_size: float | None = None,
) -> list[tuple[Any, Any, str, str]]:
    """The jobs of `run_jobs`, one per (eps, run name): the analysis `make(attack)` at that
    eps (the papers' PGD defaults for the data unless overridden), its files read
    (`with_files`) and its options checked before anything runs. The files do not depend
    on eps, so they are read once and handed to every job."""
    from dataclasses import fields, replace

    from ..attacks import attack_config

    jobs, read = [], None
    for eps, run in runs:
        attack = attack_config(
            eps, family=inputs.family, norm=norm, steps=pgd_steps, step_size=pgd_step_size
        )
        job = make(attack)
        if read is None:
            job = read = job.with_files(inputs, out)
        elif "directions" in {f.name for f in fields(job)}:
            job = replace(job, directions=read.directions)
        job.check(inputs)
        jobs.append((inputs, job, run, f"eps {eps:.4g}"))
    return jobs


def add_rows(rows: dict[str, Any], label: str, several: bool, stats: dict[str, Any]) -> None:
    """Summary rows of one run, prefixed by its label (`eps 0.1`) when the command made several."""
    rows.update({(f"{label}: " if several else "") + k: v for k, v in stats.items()})


def run_jobs(
    title: str,
    jobs: Sequence[tuple[Any, Any, str, str]],
    *,
    out: str,
    overwrite: bool,
    dry_run: bool,
    as_json: bool,
    steps: Sequence[Any] = (),
    rows: dict[str, Any] | None = None,
) -> None:
    """Run (or, with --dry-run, plan) every (inputs, analysis, run name, row label) of one
    command through the library (`analysis.run`, `analysis.plan`), then print one summary.

    Every run's stored state is checked before any is computed, so a clash in a later
    run stops the command before it writes anything. `steps` are the plans of what the
    command does before its runs (training a curve), `rows` that work's summary rows.
    """
    from .. import analysis as lib
    from .. import distributed
    from ..dryrun import Calibration, combine
    from ..store import find_complete

    groups = [lib.group_path(job, name) for _, job, name, _ in jobs]
    if len(set(groups)) < len(groups):
        raise BadInput(
            f"several runs would be stored as the same group ({', '.join(groups)}); use --name"
        )
    distributed.on_main(
        lambda: [
            find_complete(out, group, job.config(inputs), overwrite=overwrite, tidy=False)
            for (inputs, job, _, _), group in zip(jobs, groups)
        ]
    )
    if dry_run:
        calibrations: dict[int, Any] = {}
        plans = []
        for inputs, job, name, _ in jobs:
            if id(inputs) not in calibrations:
                calibrations[id(inputs)] = Calibration(
                    inputs.model,
                    inputs.X,
                    inputs.y,
                    batch_size=job.batch_size,
                    params=getattr(job, "params", None),
                )
            plans.append(
                lib.plan(
                    job,
                    inputs,
                    out=out,
                    name=name,
                    overwrite=overwrite,
                    calibration=calibrations[id(inputs)],
                )
            )
        plan = combine(title, [*steps, *plans])
        return summary(f"dry run: {title} -> {out}", plan.as_dict(), as_json)
    table: dict[str, Any] = {}
    for inputs, job, name, label in jobs:
        total = math.prod(job.shape(inputs)) if job.grid else 1
        with progress_bar(total, title) as bar:
            task = bar.add_task(title, total=total, info=name)
            stored = lib.run(
                job,
                inputs,
                out=out,
                name=name,
                overwrite=overwrite,
                progress=grid_progress(bar, task),
                command=command_line(),
            )
        if stored is None:  # a rank other than 0 under torchrun
            continue
        stats = job.summary(stored)
        warning = job.warning(stored)
        if warning:
            click.echo(f"Warning: {stored.group}: {warning}", err=True)
        if not job.grid:
            table[stored.group] = stats if as_json else job.summary_line(stats)
            continue
        stats = {
            "group": stored.group,
            "cached": stored.cached,
            "elapsed_s": stored.elapsed_s,
            "nonfinite_points": int(stored.arrays["nonfinite"].sum()),
            **stats,
        }
        add_rows(table, label, len(jobs) > 1, stats)
    if any(job.grid for _, job, _, _ in jobs):
        table = {"out": out, **table}
    summary(f"{title} -> {out}", {**table, **(rows or {})}, as_json)
