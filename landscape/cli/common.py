"""What every command shares: option types and groups, loading a checkpoint with its data,
summaries, progress bars, and the cached, resumable run of one grid analysis."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
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

from .. import distributed
from ..util import BadInput, parse_eps

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

    def provenance(self, config: dict[str, Any], seed: int, elapsed_s: float) -> dict[str, Any]:
        """The provenance attributes of a run on this checkpoint (`store.provenance`)."""
        from ..store import provenance

        return provenance(
            command=command_line(),
            config=config,
            checkpoint=self.checkpoint,
            checkpoint_sha256=self.checkpoint_sha256,
            device=str(self.device),
            seed=seed,
            elapsed_s=elapsed_s,
        )


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
    from ..checkpoint import load_checkpoint, sha256_file
    from ..data import dataset_info, load_dataset

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
@click.version_option(package_name="adv-landscape")
def cli() -> None:
    """Loss landscapes of adversarial training: train, analyse, plot."""


def grid_progress(bar: Progress, task: Any) -> Callable[[int, int], None]:
    """A progress callback for grid analyses: points done and points per second."""
    import time

    start, calls = time.perf_counter(), [0]

    def update(done: int, total: int) -> None:
        calls[0] += 1
        rate = calls[0] / max(time.perf_counter() - start, 1e-9)
        bar.update(task, completed=done, total=total, info=f"{rate:.2f} points/s")

    return update


def warn_nonfinite(group: str, arrays: dict[str, Any], axes: tuple[str, ...]) -> int:
    """One warning line on stderr naming where a grid met non-finite values; their count."""
    from ..store import nonfinite_where

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


def eps_runs(
    checkpoint: str, name: str | None, eps_list: tuple, **key: Any
) -> list[tuple[float, str]]:
    """One run per --eps (default 0); an explicit --name gets an eps suffix when there are several."""
    values = list(eps_list) or [0.0]
    named = [f"{name}_eps{e:.4g}" if name and len(values) > 1 else name for e in values]
    return [(e, run_name(checkpoint, n, **key, eps=e)) for e, n in zip(values, named)]


def add_rows(rows: dict[str, Any], eps: float, several: bool, stats: dict[str, Any]) -> None:
    """Summary rows of one run, prefixed by its eps when the command made several."""
    rows.update({(f"eps {eps:.4g}: " if several else "") + k: v for k, v in stats.items()})


def open_grid(
    out: str,
    group: str,
    config: dict[str, Any],
    shape: tuple[int, ...],
    fields: Sequence[str],
    *,
    overwrite: bool,
) -> Any:
    """The run's resumable `store.Grid`, or None on every rank when it is stored complete.

    Under torchrun rank 0 alone opens the results file and the sidecar (its BadInput
    reaches every rank); the other ranks compute into an in-memory grid.
    """
    from ..store import Grid

    grids: list[Any] = []

    def open_on_main() -> bool:
        grids.append(Grid(out, group, config, shape, fields, overwrite=overwrite))
        return grids[0].stored

    if distributed.on_main(open_on_main):
        return None
    return grids[0] if grids else Grid.in_memory(shape, fields)


def grid_run(
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

    from ..store import read_group

    group = f"/{analysis}/{run}"
    # Under torchrun rank 0 alone reads and writes the results file and the sidecar;
    # the other ranks compute into an in-memory grid and return None.
    main = distributed.world().is_main
    grid = open_grid(out, group, config, shape, fields, overwrite=overwrite)
    cached = grid is None
    if not cached:
        start = time.perf_counter()
        with progress_bar(math.prod(shape), analysis) as bar:
            result = compute(
                grid, grid_progress(bar, bar.add_task(analysis, total=math.prod(shape), info=""))
            )
        if not main:
            return None
        attrs = inputs.provenance(config, seed, time.perf_counter() - start)
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
        "nonfinite_points": warn_nonfinite(group, arrays, tuple(axes)),
        "arrays": arrays,
    }


def data_config(inputs: AnalysisInputs, split: str, attack: Any, seed: int) -> dict[str, Any]:
    return {
        "checkpoint_sha256": inputs.checkpoint_sha256,
        "dataset": inputs.spec["dataset"],
        "split": split,
        "examples": int(inputs.X.shape[0]),
        **attack.as_dict(),
        "seed": seed,
    }
