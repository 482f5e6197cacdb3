"""`landscape connect`: mode connectivity along a trained Bezier curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import (
    EPS,
    cli,
    common,
    foreign_options,
    lr_schedule_options,
    pgd_options,
    progress_bar,
    run_jobs,
    run_name,
)
from .grids import precision_key, precision_option


@cli.command(name="connect")
@click.argument("start", type=click.Path())
@click.argument("end", type=click.Path())
@click.option(
    "--order",
    type=click.IntRange(min=1),
    default=None,
    help="Bezier order n (default: 2 for MNIST-like data, 4 for CIFAR-like, as the paper).",
)
@click.option(
    "--eps",
    type=EPS,
    default="0",
    show_default=True,
    help="Budget to train and evaluate at; 0 = vanilla.",
)
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@pgd_options
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Curve training epochs.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="adam", show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="(Initial) learning rate.")
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option(
    "--weight-decay", type=float, default=0.0, show_default=True, help="On the bends only."
)
@lr_schedule_options
@click.option("--no-augment", is_flag=True, help="Turn off data augmentation in curve training.")
@click.option(
    "--points",
    type=click.IntRange(min=2),
    default=61,
    show_default=True,
    help="Values of t evaluated.",
)
@click.option(
    "--bn-inputs",
    type=click.Choice(["clean", "adv"]),
    default="clean",
    show_default=True,
    help="Inputs the BN statistics are re-estimated on at each t.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate on the first N of each split.",
)
@click.option(
    "--bn-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Re-estimate BN on the first N training examples (default: all).",
)
@click.option(
    "--dataset", default=None, help="Dataset (for foreign state_dicts; default: the checkpoints')."
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding the dataset files.",
)
@click.option(
    "--curve-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Curve file (default: <run>.curve.pt beside --out); reused or resumed when it matches.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="results.h5",
    show_default=True,
    help="Results file.",
)
@click.option(
    "--name", default=None, help="Run name (default: the checkpoints' stems plus order and eps)."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a stored run, curve or partial work that has another config.",
)
@precision_option
@click.option(
    "--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing."
)
@foreign_options
@common
def connect_(
    start: str,
    end: str,
    order: int | None,
    eps: float,
    norm: str,
    pgd_steps: int | None,
    pgd_step_size: float | None,
    no_augment: bool,
    points: int,
    bn_inputs: str,
    samples: int | None,
    bn_samples: int | None,
    dataset: str | None,
    data_root: str | None,
    curve_out: str | None,
    out: str,
    name: str | None,
    overwrite: bool,
    precision: str,
    dry_run: bool,
    foreign: dict[str, Any],
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    **opts: Any,
) -> None:
    """Train a Bezier curve joining two checkpoints and evaluate it and the straight line along t."""
    from .. import distributed
    from ..attacks import attack_config
    from ..connect import (
        Connect,
        CurveConfig,
        curve_inputs,
        default_order,
        load_endpoints,
        pair_label,
    )
    from ..data import dataset_info

    dev = distributed.init(device)
    ends = load_endpoints(start, end, dev, dataset=dataset, **foreign)
    family = dataset_info(ends.spec["dataset"]).family
    training = CurveConfig(
        order=order or default_order(family),
        eps=eps,
        norm=norm,
        pgd_steps=pgd_steps,
        pgd_step_size=pgd_step_size,
        augment=not no_augment,
        seed=seed,
        **opts,
    )
    inputs = curve_inputs(
        ends, training, data_root=data_root, samples=samples, bn_samples=bn_samples, device=dev
    )
    attack = attack_config(eps, family=family, norm=norm, steps=pgd_steps, step_size=pgd_step_size)
    job = Connect(attack, points=points, bn_inputs=bn_inputs, seed=seed, precision=precision)
    job.check(inputs)
    run = run_name(
        pair_label(start, end), name, order=training.order, **precision_key(precision), eps=eps
    )
    curve = Path(curve_out) if curve_out else Path(out).parent / f"{run}.curve.pt"
    inputs, steps, rows = _curve_step(
        job, inputs, run, curve, out=out, data_root=data_root, overwrite=overwrite, dry_run=dry_run
    )
    jobs = [(inputs, job, run, run)]
    run_jobs(
        "connect",
        jobs,
        out=out,
        overwrite=overwrite,
        dry_run=dry_run,
        as_json=as_json,
        steps=steps,
        rows=rows,
    )


def _curve_step(
    job: Any,
    inputs: Any,
    run: str,
    curve: Path,
    *,
    out: str,
    data_root: str | None,
    overwrite: bool,
    dry_run: bool,
) -> tuple[Any, list[Any], dict[str, Any]]:
    """The curve training before the evaluation: skipped when the evaluation is stored,
    planned under --dry-run, else run (reusing or resuming `curve`). Returns the inputs
    with the trained curve, the plans of this step and its summary rows."""
    from .. import analysis as lib
    from ..connect import train_curve, train_curve_plan

    _, stored = lib.stored_state(job, inputs, out=out, name=run, overwrite=overwrite)
    rows = {"curve": str(curve), "curve_status": "stored", "order": inputs.training.order}
    if dry_run:
        plan = train_curve_plan(
            inputs, curve, data_root=data_root, overwrite=overwrite, needed=not stored
        )
        return inputs, [plan], rows
    if stored:
        return inputs, [], rows
    epochs = inputs.training.epochs
    with progress_bar(epochs, "curve") as bar:
        task = bar.add_task("curve", total=epochs, info="train curve")
        trained = train_curve(
            inputs.ends,
            inputs.training,
            curve,
            device=inputs.device,
            data_root=data_root,
            overwrite=overwrite,
            progress=lambda done, total, s: bar.update(
                task, completed=done, info=f"loss {s['loss']:.3f}"
            ),
        )
    return inputs.with_curve(trained), [], {**rows, "curve_status": trained.status}
