"""Commands over stored results and recipes: info, plot, report, figures, toy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..util import BadInput, resolve_device
from .common import EPS, cli, common, run_jobs, stderr_console, summary


@cli.command()
@click.argument("file", type=click.Path())
@common
def info(file: str, device: str, seed: int, as_json: bool, debug: bool) -> None:
    """Describe a checkpoint (spec, training config, metrics, sha256), a foreign state_dict
    (its architecture and the flags that load it), an .npz dataset, or list a results file."""
    import h5py

    from .. import store
    from ..checkpoint import FORMAT, check_stored, read_checkpoint, sha256_file
    from ..data import dataset_info, is_npz

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
    if is_npz(path):
        data = dataset_info(str(path))
        summary(
            str(path),
            {
                "read as": data.note,
                "input shape": list(data.input_shape),
                "classes": data.num_classes,
                "mean": [round(m, 4) for m in data.mean],
                "std": [round(s, 4) for s in data.std],
                "use with": f"--dataset {path}",
            },
            as_json,
        )
        return
    obj = read_checkpoint(path)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        summary(str(path), _foreign_info(path, obj), as_json)
        return
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


def _foreign_info(path: Path, obj: Any) -> dict[str, Any]:
    """What a file that is not ours holds: the architecture its state_dict's keys and
    shapes fit, checked by loading it, with the flags that load it; or its first keys."""
    from ..checkpoint import _foreign_state, load_checkpoint, sha256_file
    from ..data import matching_datasets
    from ..foreign import recognize
    from ..models import parse_arch

    try:
        state = _foreign_state(obj, path)
    except BadInput:
        raise BadInput(
            f"{path} is neither a landscape checkpoint, a state_dict nor a landscape results file"
        ) from None
    rows: dict[str, Any] = {
        "format": f"foreign state_dict ({len(state)} tensors, "
        f"{sum(t.numel() for t in state.values() if t.is_floating_point()):,} numbers)",
        "sha256": sha256_file(path),
    }
    found = recognize(state)
    if found is None:
        rows["architecture"] = "none known: load it with --model FILE.py:FACTORY"
        rows["first keys"] = [f"{k} {tuple(state[k].shape)}" for k in list(state)[:8]]
        return rows
    parsed = parse_arch(found.arch)
    fitting = []
    for name in matching_datasets(found.in_channels, found.num_classes, found.input_size):
        try:
            load_checkpoint(path, arch=found.arch, width=found.width, dataset=name)
        except BadInput:
            continue
        fitting.append(name)
    rows.update(
        {
            "architecture": found.arch,
            "naming": found.convention,
            "depth": parsed.depth,
            "width": parsed.width if parsed.width is not None else found.width,
            "classes": found.num_classes,
            "input channels": found.in_channels,
            "datasets it fits": fitting or "none of the named ones: use a file.npz",
            "load with": f"{found.flags()} --dataset {fitting[0] if fitting else 'FILE.npz'}",
        }
    )
    if found.alternatives:
        rows["same keys, other forward"] = ", ".join(f"--arch {a}" for a in found.alternatives)
    return rows


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
    "--mnist",
    "mode",
    flag_value="mnist",
    help="Real MNIST (mnist5k, or --dataset mnist with --data-root), LeNet, CPU within an hour.",
)
@click.option(
    "--full", "mode", flag_value="full", help="The papers' datasets and settings (GPU, days)."
)
@click.option(
    "--dataset",
    default=None,
    help="Run the tier's models on this dataset instead of its own (e.g. --mnist --dataset mnist).",
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
    help="Figures (default figures/, figures/mnist, figures/full).",
)
@click.option(
    "--recipes",
    type=click.Path(file_okay=False),
    default=None,
    help="A folder of recipe TOML files (default: those shipped in the package).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Recompute the results whose recipe settings changed and drop those a recipe no "
    "longer makes (unchanged results stay cached); without it a changed recipe is refused.",
)
@click.option(
    "--launcher",
    type=click.Choice(["local", "ray", "slurm"]),
    default="local",
    show_default=True,
    help="Run the trainings and recipes in this process, as Ray tasks or as SLURM jobs.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="ray/slurm: reruns of a task whose worker died, was preempted or timed out.",
)
@click.option(
    "--ray-address",
    default=None,
    help="ray: the cluster to join (auto, ray://HOST:10001); default: start one here.",
)
@click.option("--slurm-partition", default=None, help="slurm: the partition.")
@click.option(
    "--slurm-time",
    type=click.IntRange(min=1),
    default=None,
    help="slurm: minutes per job (default 1440); a job that runs out is requeued and resumes.",
)
@click.option(
    "--slurm-gpus",
    type=click.IntRange(min=0),
    default=None,
    help="slurm: GPUs per job (default 1, 0 with --device cpu).",
)
@click.option(
    "--slurm-local",
    is_flag=True,
    help="slurm: run the jobs as processes here (submitit's LocalExecutor), without a cluster.",
)
@common
def figures(
    mode: str,
    dataset: str | None,
    only: str,
    data_root: str | None,
    runs: str | None,
    out: str | None,
    recipes: str | None,
    overwrite: bool,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    **launch: Any,
) -> None:
    """Regenerate the papers' figures and tables from the shipped recipes (cached, resumable)."""
    from ..figures import RECIPE_DIR, run_figures
    from ..launchers import LaunchOptions

    names = [n.strip() for n in only.split(",") if n.strip()]
    outcomes = run_figures(
        mode,
        only=names,
        runs=runs,
        out=out,
        device=device,
        data_root=data_root,
        folder=recipes or RECIPE_DIR,
        log=lambda line: stderr_console().print(line, markup=False, highlight=False),
        launch=LaunchOptions(**launch),
        dataset=dataset,
        overwrite=overwrite,
    )
    summary(
        "figures",
        {
            o.name: f"{len(o.files)} files, {o.seconds:.0f} s" + (f", {o.check}" if o.check else "")
            for o in outcomes
        },
        as_json,
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
    grid: int,
    eps_list: tuple[float, ...],
    overwrite: bool,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    **opts: Any,
) -> None:
    """Theory figures from closed forms and scipy (Kanai Fig. 2, 4-5; Liu Fig. 5, Thm. 1) into /toy/FIGURE."""
    from ..toy import FIGURES, Toy

    dev = resolve_device(device)
    jobs = []
    for name in FIGURES if figure == "all" else (figure,):
        job = Toy(name, points=grid, eps=eps_list, seed=seed, device=dev, **opts)
        job.check(None)
        jobs.append((None, job, name, name))
    run_jobs("toy", jobs, out=out, overwrite=overwrite, dry_run=False, as_json=as_json)
