"""`landscape hessian`: top eigenpairs, trace and density of the (adversarial) Hessian."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import (
    DATA_OPTIONS,
    analysis_inputs,
    analysis_options,
    cli,
    common,
    eps_jobs,
    run_jobs,
    run_name,
)


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
@click.option(
    "--matrix",
    type=click.Choice(["hessian", "ggn", "fisher"]),
    default="hessian",
    show_default=True,
    help="Hessian, generalized Gauss-Newton or empirical Fisher of the (adversarial) loss.",
)
@click.option(
    "--top", type=click.IntRange(min=1), default=20, show_default=True, help="Eigenpairs."
)
@click.option(
    "--method",
    type=click.Choice(["lanczos", "block", "power"]),
    default="lanczos",
    show_default=True,
    help="ARPACK Lanczos (scipy eigsh, the reference), block Lanczos on the device (the "
    "fastest) or PyHessian's deflated power iteration.",
)
@click.option(
    "--cache",
    is_flag=True,
    help="Keep each batch's linearization between products: faster, memory grows with --samples.",
)
@click.option(
    "--params",
    "param_globs",
    multiple=True,
    help="Only parameters matching this glob, like 'conv*'.",
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
    "--tol",
    type=click.FloatRange(min=0),
    default=None,
    help="Solver tolerance (relative residual: 1e-6 lanczos, 1e-3 block; power: 1e-3).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing."
)
@analysis_options
@common
def hessian_cmd(
    checkpoints: tuple[str, ...],
    param_globs: tuple[str, ...],
    eps_list: tuple[float, ...],
    norm: str,
    pgd_steps: int | None,
    pgd_step_size: float | None,
    out: str,
    name: str | None,
    overwrite: bool,
    dry_run: bool,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    **options: Any,
) -> None:
    """Top eigenvalues of the Hessian (or GGN, Fisher) of the adversarial loss, raw and
    loss-scale normalized (Liu et al. 4.2)."""
    from ..hessian import Hessian

    data = {k: options.pop(k) for k in DATA_OPTIONS}
    globs = tuple(param_globs) or None
    eps_values = list(eps_list) or [0.0]
    key = {"norm": norm, "params": ",".join(globs) if globs else None}
    if options["matrix"] != "hessian":
        key = {"matrix": options["matrix"], **key}
    names = _hessian_run_names(checkpoints, eps_values, name, **key)
    jobs = []
    for ckpt, row in zip(checkpoints, names):
        inputs = analysis_inputs(ckpt, device=device, **data)
        jobs += eps_jobs(
            inputs,
            list(zip(eps_values, row)),
            lambda attack: Hessian(attack, params=globs, seed=seed, **options),
            out=out,
            norm=norm,
            pgd_steps=pgd_steps,
            pgd_step_size=pgd_step_size,
        )
    run_jobs("hessian", jobs, out=out, overwrite=overwrite, dry_run=dry_run, as_json=as_json)
