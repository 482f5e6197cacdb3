"""Grid analyses of one checkpoint: surface, cosine, smoothness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ..util import BadInput
from .common import (
    EPS,
    AnalysisInputs,
    add_rows,
    analysis_inputs,
    analysis_options,
    cli,
    common,
    data_config,
    eps_runs,
    grid_run,
    summary,
)

precision_option = click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
    help="Dtype the network is evaluated in, PGD included (directions stay fp32).",
)


def precision_key(precision: str) -> dict[str, str]:
    """The precision's entry in a run's config and name: none for fp32, so results stored
    before the option existed stay valid, and a bf16 run never reuses an fp32 one."""
    return {} if precision == "fp32" else {"precision": precision}


@dataclass(frozen=True)
class GridJob:
    """One eps run of a grid command: its config and shape, and how to compute, plan and
    summarise it (`compute(grid, progress)`, `plan(calibration)`, `stats(arrays)`)."""

    config: dict[str, Any]
    shape: tuple[int, ...]
    fields: tuple[str, ...]
    compute: Callable[[Any, Callable[[int, int], None]], Any]
    plan: Callable[[Any], Any]
    stats: Callable[[dict[str, Any]], dict[str, Any]]


def run_grid_command(
    analysis: str,
    inputs: AnalysisInputs,
    runs: list[tuple[float, str]],
    job: Callable[[float, str], GridJob],
    *,
    out: str,
    overwrite: bool,
    seed: int,
    batch_size: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Every eps run of one grid command: computed (cached, resumable) or only planned."""
    from .. import dryrun

    rows: dict[str, Any] = {}
    plans = []
    calibration = (
        dryrun.Calibration(inputs.model, inputs.X, inputs.y, batch_size=batch_size)
        if dry_run
        else None
    )
    for eps, run in runs:
        work = job(eps, run)
        if dry_run:
            plans.append(work.plan(calibration))
            continue
        res = grid_run(
            analysis,
            inputs,
            out,
            run,
            work.config,
            work.shape,
            work.fields,
            work.compute,
            overwrite=overwrite,
            seed=seed,
        )
        if res is None:  # a rank other than 0 under torchrun
            continue
        arrays = res.pop("arrays")
        add_rows(rows, eps, len(runs) > 1, {**res, **work.stats(arrays)})
    if dry_run:
        summary(f"dry run: {analysis}", dryrun.combine(analysis, plans).as_dict(), as_json)
    else:
        summary(analysis, {"out": out, **rows}, as_json)


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
    help="Points per vmapped call (default 8 on CPU, 32 on GPU; 1: no vmap).",
)
@precision_option
@click.option(
    "--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing."
)
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
    precision: str,
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

    from .. import dryrun
    from ..attacks import attack_config
    from ..directions import make_directions
    from ..surface import fields_for, parse_range, surface

    if yrange is not None and dim == 1:
        raise BadInput("--yrange needs --dim 2")
    xs = parse_range(xrange)
    ys = parse_range(yrange or xrange, "--yrange") if dim == 2 else None
    inputs = analysis_inputs(checkpoint, device=device, **data)
    shape = (len(xs),) if ys is None else (len(xs), len(ys))
    options = {
        "bias_bn": bias_bn,
        "hessian_group": hessian_group,
        "other": list(other),
        "trajectory": trajectory,
        "orthogonal": orthogonalize,
    }

    def job(eps: float, run: str) -> GridJob:
        attack = attack_config(
            eps, family=inputs.family, norm=norm, steps=pgd_steps, step_size=pgd_step_size
        )
        adversarial = attack if eps > 0 else None
        config = {
            "analysis": "surface",
            "dirs": dirs,
            "dim": dim,
            "range": xrange,
            "yrange": yrange or xrange,
            "bn": bn,
            **options,
            **data_config(inputs, data["split"], attack, seed),
            **precision_key(precision),
        }

        def compute(grid: Any, progress: Callable[[int, int], None]) -> Any:
            directions = make_directions(
                dirs,
                inputs.model,
                dim,
                X=inputs.X,
                y=inputs.y,
                seed=seed,
                results_file=out,
                spec=inputs.spec,
                attack=adversarial,
                **options,
            )
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
                family=inputs.family,
                bn=bn,
                seed=seed,
                batch_size=batch_size,
                points_per_batch=points_per_batch,
                precision=precision,
                grid=grid,
                progress=progress,
            )

        def plan(calibration: Any) -> Any:
            return dryrun.surface_plan(
                inputs.model,
                inputs.X,
                inputs.y,
                out=out,
                group=f"/surface/{run}",
                config=config,
                shape=shape,
                attack=adversarial,
                bn=bn,
                batch_size=batch_size,
                points_per_batch=points_per_batch,
                dirs=dirs,
                direction_options=options,
                spec=inputs.spec,
                seed=seed,
                overwrite=overwrite,
                calibration=calibration,
            )

        def stats(arrays: dict[str, Any]) -> dict[str, Any]:
            return {
                f"{f}_range": [float(np.nanmin(arrays[f])), float(np.nanmax(arrays[f]))]
                for f in fields_for(eps)
            }

        return GridJob(config, shape, fields_for(eps), compute, plan, stats)

    runs = eps_runs(
        checkpoint, name, eps_list, dirs=dirs, dim=f"{dim}d", **precision_key(precision)
    )
    run_grid_command(
        "surface",
        inputs,
        runs,
        job,
        out=out,
        overwrite=overwrite,
        seed=seed,
        batch_size=batch_size,
        dry_run=dry_run,
        as_json=as_json,
    )


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
@precision_option
@click.option(
    "--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing."
)
@analysis_options
@common
def cosine_cmd(
    checkpoint: str,
    arange: str,
    repeats: int,
    hessian_group: str | None,
    batch_size: int,
    precision: str,
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
    from .. import dryrun
    from ..attacks import attack_config
    from ..cosine import FIELDS, cosine
    from ..surface import parse_range

    alphas = parse_range(arange)
    inputs = analysis_inputs(checkpoint, device=device, **data)

    def job(eps: float, run: str) -> GridJob:
        attack = attack_config(
            eps, family=inputs.family, norm=norm, steps=pgd_steps, step_size=pgd_step_size
        )
        config = {
            "analysis": "cosine",
            "range": arange,
            "repeats": repeats,
            "hessian_group": hessian_group,
            **data_config(inputs, data["split"], attack, seed),
            **precision_key(precision),
        }

        def compute(grid: Any, progress: Callable[[int, int], None]) -> Any:
            return cosine(
                inputs.model,
                inputs.X,
                inputs.y,
                eps=eps,
                norm=norm,
                steps=pgd_steps,
                step_size=pgd_step_size,
                family=inputs.family,
                alpha=alphas,
                repeats=repeats,
                seed=seed,
                batch_size=batch_size,
                hessian_group=hessian_group,
                results_file=out,
                precision=precision,
                grid=grid,
                progress=progress,
            )

        def plan(calibration: Any) -> Any:
            return dryrun.cosine_plan(
                inputs.model,
                inputs.X,
                inputs.y,
                out=out,
                group=f"/cosine/{run}",
                config=config,
                alphas=alphas,
                attack=attack,
                repeats=repeats,
                batch_size=batch_size,
                hessian_group=hessian_group,
                overwrite=overwrite,
                calibration=calibration,
            )

        def stats(arrays: dict[str, Any]) -> dict[str, Any]:
            last = ("cosine_top_mean", "cosine_random_mean", "zero_perturbations_top")
            return {f"{k}_at_max_a": float(arrays[k][-1]) for k in last}

        return GridJob(config, alphas.shape, FIELDS, compute, plan, stats)

    runs = eps_runs(checkpoint, name, eps_list, norm=norm, **precision_key(precision))
    run_grid_command(
        "cosine",
        inputs,
        runs,
        job,
        out=out,
        overwrite=overwrite,
        seed=seed,
        batch_size=batch_size,
        dry_run=dry_run,
        as_json=as_json,
    )


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
@click.option(
    "--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing."
)
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
    from .. import dryrun
    from ..attacks import attack_config
    from ..smoothness import fields_for, smoothness
    from ..surface import parse_range

    rs = parse_range(radii, "--radii", log=True)
    chosen = tuple(n.strip() for n in norms.split(",") if n.strip()) if norms is not None else None
    inputs = analysis_inputs(checkpoint, device=device, **data)

    def job(eps: float, run: str) -> GridJob:
        attack = attack_config(
            eps, family=inputs.family, norm="linf", steps=pgd_steps, step_size=pgd_step_size
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
            **data_config(inputs, data["split"], attack, seed),
        }

        def compute(grid: Any, progress: Callable[[int, int], None]) -> Any:
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
                family=inputs.family,
                seed=seed,
                batch_size=batch_size,
                hessian_group=hessian_group,
                results_file=out,
                grid=grid,
                progress=progress,
            )

        def plan(calibration: Any) -> Any:
            return dryrun.smoothness_plan(
                inputs.model,
                inputs.X,
                inputs.y,
                out=out,
                group=f"/smoothness/{run}",
                config=config,
                radii=rs,
                attack=attack,
                norms=use,
                dirs=dirs,
                count=count,
                batch_size=batch_size,
                hessian_group=hessian_group,
                overwrite=overwrite,
                calibration=calibration,
            )

        def stats(arrays: dict[str, Any]) -> dict[str, Any]:
            return {f"lipschitz_{n}_at_min_r": float(arrays[f"lipschitz_{n}_mean"][0]) for n in use}

        return GridJob(config, rs.shape, fields_for(use), compute, plan, stats)

    runs = eps_runs(checkpoint, name, eps_list, dirs=dirs)
    run_grid_command(
        "smoothness",
        inputs,
        runs,
        job,
        out=out,
        overwrite=overwrite,
        seed=seed,
        batch_size=batch_size,
        dry_run=dry_run,
        as_json=as_json,
    )
