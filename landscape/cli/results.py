"""Commands over stored results and recipes: info, plot, report, figures, toy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..util import BadInput, resolve_device
from .common import (
    EPS,
    cli,
    command_line,
    common,
    progress_bar,
    stderr_console,
    summary,
)


@cli.command()
@click.argument("file", type=click.Path())
@common
def info(file: str, device: str, seed: int, as_json: bool, debug: bool) -> None:
    """Describe a checkpoint (spec, training config, metrics, sha256) or list a results file."""
    import h5py

    from .. import store
    from ..checkpoint import FORMAT, check_stored, read_checkpoint, sha256_file

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
    from ..plots import parse_formats, render_file

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
    from ..plots.report import write_report

    summary("report", {"file": str(write_report(file, out))}, as_json)


@cli.command()
@click.option(
    "--quick", "mode", flag_value="quick", default=True, help="Digits, CPU minutes (default)."
)
@click.option(
    "--full", "mode", flag_value="full", help="The papers' datasets and settings (GPU, days)."
)
@click.option("--only", default="", help="Comma-separated recipe names (default: all).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option(
    "--runs",
    type=click.Path(file_okay=False),
    default=None,
    help="Checkpoints and results (default runs/MODE).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Figures (default figures/, figures/full).",
)
@common
def figures(
    mode: str,
    only: str,
    data_root: str | None,
    runs: str | None,
    out: str | None,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
) -> None:
    """Regenerate the papers' figures and tables from the recipes in analyses/ (cached, resumable)."""
    from ..figures import run_figures

    names = [n.strip() for n in only.split(",") if n.strip()]
    outcomes = run_figures(
        mode,
        only=names,
        runs=runs,
        out=out,
        device=str(resolve_device(device)),
        data_root=data_root,
        log=lambda line: stderr_console().print(line, markup=False, highlight=False),
    )
    summary(
        "figures", {o.name: f"{len(o.files)} files, {o.seconds:.0f} s" for o in outcomes}, as_json
    )


@cli.command(name="toy")
@click.argument(
    "figure", type=click.Choice(["kanai-fig2", "kanai-fig4-5", "liu-fig5", "liu-thm1", "all"])
)
@click.option("--out", type=click.Path(dir_okay=False), default="results.h5", show_default=True)
@click.option(
    "--grid", type=click.IntRange(min=3), default=101, show_default=True, help="Points per θ axis."
)
@click.option(
    "--eps",
    "eps_list",
    type=EPS,
    multiple=True,
    help="Kanai: the budget (0.6); liu-fig5: band budgets (0.6 1.2); liu-thm1: training budgets.",
)
@click.option(
    "--gamma",
    type=float,
    default=1.0,
    show_default=True,
    help="EntropySGD γ of −F(θ) (Kanai eq. 10).",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="kanai-fig4-5: N Gaussian points.",
)
@click.option(
    "--norm",
    type=click.Choice(["linf", "l2"]),
    default="linf",
    show_default=True,
    help="liu-thm1: attack norm.",
)
@click.option(
    "--pgd-steps",
    type=click.IntRange(min=0),
    default=None,
    help="kanai-fig2 swish PGD iterations (200).",
)
@click.option(
    "--pgd-step-size", type=float, default=None, help="kanai-fig2 swish PGD step (5 eps / steps)."
)
@click.option(
    "--train-steps",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="liu-thm1: gradient-descent steps.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace a stored figure computed with another config."
)
@common
def toy_cmd(
    figure: str,
    out: str,
    eps_list: tuple[float, ...],
    overwrite: bool,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    **opts: Any,
) -> None:
    """Theory figures from closed forms and scipy (Kanai Fig. 2, 4-5; Liu Fig. 5, Thm. 1) into /toy/FIGURE."""
    import time

    from ..store import find_complete, provenance, read_group, write_group
    from ..toy import FIGURES, toy, toy_options

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
                attrs = provenance(
                    command=command_line(),
                    config=config,
                    device=str(dev),
                    seed=seed,
                    elapsed_s=time.perf_counter() - start,
                )
                write_group(
                    out,
                    group,
                    res.arrays(),
                    {**attrs, **res.attrs()},
                    dims=res.dims(),
                    overwrite=overwrite,
                )
            stored = read_group(out, group)[1]
            rows[group] = {
                "cached": hit,
                "elapsed_s": round(float(stored["elapsed_s"]), 2),
                **({"threshold": float(stored["threshold"])} if "threshold" in stored else {}),
            }
            bar.advance(task)
    summary(f"toy -> {out}", rows, as_json)
