"""`landscape connect`: mode connectivity along a trained Bezier curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import distributed
from .common import (
    EPS,
    cli,
    command_line,
    common,
    foreign_options,
    lr_schedule_options,
    open_grid,
    progress_bar,
    run_name,
    summary,
    warn_nonfinite,
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
    arch: str | None,
    width: int | None,
    activation: str | None,
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    **opts: Any,
) -> None:
    """Train a Bezier curve joining two checkpoints and evaluate it and the straight line along t."""
    import time

    from .. import store
    from ..attacks import attack_config
    from ..checkpoint import sha256_file
    from ..connect import (
        CurveConfig,
        barriers,
        check_evaluation,
        default_order,
        fields,
        load_endpoints,
        pair_label,
        train_curve,
    )
    from ..connect import connect as connect_curve
    from ..data import dataset_info, load_dataset

    dev = distributed.init(device)
    ends = load_endpoints(
        start, end, dev, arch=arch, width=width, dataset=dataset, activation=activation
    )
    ds, family = ends.spec["dataset"], dataset_info(ends.spec["dataset"]).family
    config = CurveConfig(
        order=order or default_order(family),
        eps=eps,
        norm=norm,
        pgd_steps=pgd_steps,
        pgd_step_size=pgd_step_size,
        augment=not no_augment,
        seed=seed,
        **opts,
    )
    config.validate(ends.spec)
    attack = attack_config(eps, family=family, norm=norm, steps=pgd_steps, step_size=pgd_step_size)
    check_evaluation(points, bn_inputs, attack)
    run = run_name(
        pair_label(start, end), name, order=config.order, **precision_key(precision), eps=eps
    )
    group = f"/connect/{run}"
    settings = {
        **config.as_dict(),
        "start_sha256": ends.start_sha256,
        "end_sha256": ends.end_sha256,
        "points": points,
        "bn_inputs": bn_inputs,
        "samples": samples,
        "bn_samples": bn_samples,
        "attack": attack.as_dict(),
        **precision_key(precision),
    }
    curve_path = Path(curve_out) if curve_out else Path(out).parent / f"{run}.curve.pt"
    if dry_run:
        from ..dryrun import connect_plan

        plan = connect_plan(
            ends,
            config,
            attack,
            out=out,
            group=group,
            settings=settings,
            curve_path=curve_path,
            points=points,
            bn_inputs=bn_inputs,
            samples=samples,
            bn_samples=bn_samples,
            data_root=data_root,
            device=dev,
            overwrite=overwrite,
        )
        return summary("dry run: connect", plan.as_dict(), as_json)
    status = "stored"
    # Under torchrun rank 0 alone reads and writes the results file and its sidecar.
    main = distributed.world().is_main
    grid = open_grid(out, group, settings, (points,), fields(eps > 0), overwrite=overwrite)
    if grid is not None:
        started = time.perf_counter()
        with progress_bar(config.epochs, "connect") as bar:
            task = bar.add_task("curve", total=config.epochs, info="train curve")
            trained = train_curve(
                ends,
                config,
                curve_path,
                device=dev,
                data_root=data_root,
                overwrite=overwrite,
                progress=lambda done, total, s: bar.update(
                    task, completed=done, info=f"loss {s['loss']:.3f}"
                ),
            )
            bar.update(task, completed=0, total=points, info="evaluate")
            X, y = load_dataset(ds, "train", data_root, dev)
            X_test, y_test = load_dataset(ds, "test", data_root, dev)
            result = connect_curve(
                trained.curve,
                (X[:samples], y[:samples]),
                (X_test[:samples], y_test[:samples]),
                attack,
                points=points,
                bn_inputs=bn_inputs,
                bn_data=(X[:bn_samples], y[:bn_samples]),
                seed=seed,
                precision=precision,
                grid=grid,
                progress=lambda done, total: bar.update(task, completed=done),
            )
        if not main:
            return
        attrs = store.provenance(
            command=command_line(),
            config=settings,
            checkpoint=str(curve_path),
            checkpoint_sha256=sha256_file(curve_path),
            device=dev,
            seed=seed,
            elapsed_s=time.perf_counter() - started,
        )
        attrs.update(
            order=config.order,
            start=start,
            end=end,
            start_sha256=ends.start_sha256,
            end_sha256=ends.end_sha256,
            curve_epochs=trained.epochs,
        )
        grid.finish({"t": result.t}, attrs, overwrite=overwrite)
        status = (
            "reused"
            if trained.reused
            else "trained"
            + (
                f" (resumed from epoch {trained.resumed_from_epoch})"
                if trained.resumed_from_epoch
                else ""
            )
        )
    if not main:
        return
    arrays, _ = store.read_group(out, group)
    flagged = warn_nonfinite(group, arrays, ("t",))
    summary(
        "connect",
        {
            "group": f"{out}:{group}",
            "curve": str(curve_path),
            "curve_status": status,
            "order": config.order,
            "eps": eps,
            "nonfinite_points": flagged,
            **barriers(arrays),
        },
        as_json,
    )
