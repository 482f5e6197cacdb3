"""Grid analyses of one checkpoint: surface, cosine, smoothness."""

from __future__ import annotations

from typing import Any

import click

from ..util import BadInput
from .common import (
    EPS,
    analysis_inputs,
    analysis_options,
    cli,
    common,
    eps_jobs,
    eps_runs,
    run_jobs,
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
    from ..surface import Surface, parse_range

    if yrange is not None and dim == 1:
        raise BadInput("--yrange needs --dim 2")
    xs = tuple(parse_range(xrange))
    ys = tuple(parse_range(yrange or xrange, "yrange")) if dim == 2 else None
    inputs = analysis_inputs(checkpoint, device=device, **data)
    runs = eps_runs(
        checkpoint, name, eps_list, dirs=dirs, dim=f"{dim}d", **precision_key(precision)
    )
    jobs = eps_jobs(
        inputs,
        runs,
        lambda attack: Surface(
            attack,
            dirs=dirs,
            dim=dim,
            xrange=xs,
            yrange=ys,
            bn=bn,
            bias_bn=bias_bn,
            orthogonal=orthogonalize,
            hessian_group=hessian_group,
            other=other,
            trajectory=trajectory,
            batch_size=batch_size,
            points_per_batch=points_per_batch,
            seed=seed,
            precision=precision,
        ),
        out=out,
        norm=norm,
        pgd_steps=pgd_steps,
        pgd_step_size=pgd_step_size,
    )
    run_jobs("surface", jobs, out=out, overwrite=overwrite, dry_run=dry_run, as_json=as_json)


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
    from ..cosine import Cosine
    from ..surface import parse_range

    alphas = tuple(parse_range(arange))
    inputs = analysis_inputs(checkpoint, device=device, **data)
    jobs = eps_jobs(
        inputs,
        eps_runs(checkpoint, name, eps_list, norm=norm, **precision_key(precision)),
        lambda attack: Cosine(
            attack,
            alpha=alphas,
            repeats=repeats,
            hessian_group=hessian_group,
            batch_size=batch_size,
            seed=seed,
            precision=precision,
        ),
        out=out,
        norm=norm,
        pgd_steps=pgd_steps,
        pgd_step_size=pgd_step_size,
    )
    run_jobs("cosine", jobs, out=out, overwrite=overwrite, dry_run=dry_run, as_json=as_json)


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
    from ..smoothness import Smoothness
    from ..surface import parse_range

    rs = tuple(parse_range(radii, "radii", log=True))
    chosen = tuple(n.strip() for n in norms.split(",") if n.strip()) if norms is not None else None
    inputs = analysis_inputs(checkpoint, device=device, **data)
    jobs = eps_jobs(
        inputs,
        eps_runs(checkpoint, name, eps_list, dirs=dirs),
        lambda attack: Smoothness(
            attack,
            radii=rs,
            dirs=dirs,
            count=count,
            norms=chosen,
            l2_match=l2_match,
            l2_eps=l2_eps,
            hessian_group=hessian_group,
            batch_size=batch_size,
            seed=seed,
        ),
        out=out,
        pgd_steps=pgd_steps,
        pgd_step_size=pgd_step_size,
    )
    run_jobs("smoothness", jobs, out=out, overwrite=overwrite, dry_run=dry_run, as_json=as_json)
