"""`landscape hessian`: top eigenpairs, trace and density of the (adversarial) Hessian."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..util import BadInput
from .common import (
    analysis_inputs,
    analysis_options,
    cli,
    common,
    progress_bar,
    run_name,
    summary,
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
    "--top", type=click.IntRange(min=1), default=20, show_default=True, help="Eigenpairs."
)
@click.option(
    "--method",
    type=click.Choice(["lanczos", "power"]),
    default="lanczos",
    show_default=True,
    help="Lanczos (scipy eigsh) or PyHessian's deflated power iteration.",
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
    help="Solver tolerance (1e-6 lanczos, 1e-3 power).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing."
)
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

    from .. import distributed
    from ..attacks import attack_config
    from ..hessian import check_options, hessian, load_hessian, store_hessian
    from ..store import find_complete

    globs = list(param_globs) or None
    eps_values = list(eps_list) or [0.0]
    names = _hessian_run_names(
        checkpoints, eps_values, name, norm=norm, params=",".join(globs) if globs else None
    )
    runs = []
    for ckpt, row in zip(checkpoints, names):
        inputs = analysis_inputs(ckpt, device=device, **data)
        check_options(
            inputs.model,
            top=top,
            method=method,
            params=globs,
            random_samples=random_samples,
            spec=inputs.spec,
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
        raise BadInput(
            f"several runs would be stored as the same group ({', '.join(groups)}); use --name"
        )
    cached = distributed.on_main(
        lambda: [
            find_complete(out, group, config, overwrite=overwrite) for _, _, group, config in runs
        ]
    )
    if dry_run:
        from ..dryrun import hessian_plan

        plan = hessian_plan(
            runs,
            cached,
            top=top,
            method=method,
            params=globs,
            random_samples=random_samples,
            save_vectors=save_vectors,
            trace=trace,
            density=density,
            batch_size=batch_size,
        )
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
                attrs = inputs.provenance(config, seed, time.perf_counter() - start)
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
            rows[group] = (
                stats
                if as_json
                else (
                    f"top3 {', '.join(f'{v:.4g}' for v in stats['top3'])} | scale {res.loss_scale:.4g} | "
                    f"{res.n_hvp} HVPs | {res.wall_s:.1f} s{' (cached)' if hit else ''}"
                )
            )
            bar.advance(task)
    summary(f"hessian -> {out}", rows, as_json)
