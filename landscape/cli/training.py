"""`landscape train` and `landscape eval`."""

from __future__ import annotations

from typing import Any

import click

from ..util import BadInput, resolve_device
from .common import (
    EPOCHS,
    EPS,
    cli,
    command_line,
    common,
    foreign_options,
    lr_schedule_options,
    pgd_options,
    progress_bar,
    state_data,
    summary,
)


@cli.command()
@click.option(
    "--dataset",
    default="digits",
    show_default=True,
    help="digits, mnist, mnist5k, fashion-mnist, cifar10, cifar100, svhn, or a file.npz.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding the dataset files.",
)
@click.option(
    "--arch",
    default="lenet",
    show_default=True,
    help="linear, mlp, lenet, vgg, resnet18, preact-resnet18[-v2][-bn], wrn-D-K (wrn-34-10), "
    "dm-wrn-D-K.",
)
@click.option(
    "--width",
    type=click.IntRange(min=1),
    default=None,
    help="Width factor w of Table 2 (default per arch).",
)
@click.option(
    "--activation",
    default=None,
    help="relu, elu, softplus, tanh, swish (default relu; dm-wrn: swish).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--optimizer", default="adam", show_default=True, help="sgd, adam, entropy-sgd or entropy-sgd2."
)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="(Initial) learning rate; eta for EntropySGD (Kanai et al. Alg. 1). "
    "Default per optimizer: adam 1e-3, sgd 0.1, entropy-sgd and entropy-sgd2 0.1.",
)
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--nesterov", is_flag=True, help="Nesterov momentum (SGD).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option(
    "--gamma",
    "entropy_gamma",
    type=float,
    default=0.03,
    show_default=True,
    help="EntropySGD scope gamma (eq. 10).",
)
@click.option(
    "--noise",
    "entropy_noise",
    type=float,
    default=1e-4,
    show_default=True,
    help="EntropySGD Langevin noise eps_E.",
)
@click.option(
    "--inner-lr",
    type=float,
    default=0.1,
    show_default=True,
    help="EntropySGD Langevin step size eta' (--lr is the outer eta).",
)
@click.option(
    "--inner-momentum",
    type=float,
    default=None,
    help="EntropySGD momentum of the Langevin steps (default: --momentum, as in Chaudhari "
    "et al.'s code; 0: Kanai et al. Alg. 1 as printed).",
)
@click.option(
    "--langevin-steps",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="EntropySGD Langevin steps L (one mini-batch each).",
)
@click.option(
    "--mean-alpha",
    type=float,
    default=0.75,
    show_default=True,
    help="EntropySGD running-mean weight alpha of the newest theta'.",
)
@click.option(
    "--entropy-start",
    type=float,
    default=0.0,
    show_default=True,
    help="Epoch EntropySGD starts; before it, plain SGD steps at --lr (Kanai et al. E.3: 5).",
)
@click.option(
    "--entropy-stop",
    type=float,
    default=None,
    help="Epoch from which plain SGD takes over again (Kanai et al. F.2: 150).",
)
@click.option(
    "--awp",
    "awp_gamma",
    type=float,
    default=0.0,
    show_default=True,
    help="AWP weight-perturbation size gamma (Wu et al.; 0: off).",
)
@click.option(
    "--awp-warmup",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Epochs without AWP at the start (Kanai et al. E.3 following Wu et al.: 5; "
    "F.2 with TRADES: 10; E.1 on CIFAR-10 names none: 0).",
)
@click.option(
    "--loss",
    type=click.Choice(["ce", "trades"]),
    default="ce",
    show_default=True,
    help="ce: PGD adversarial training; trades: TRADES (Zhang et al.).",
)
@click.option(
    "--beta",
    "trades_beta",
    type=float,
    default=6.0,
    show_default=True,
    help="TRADES weight of the KL term.",
)
@lr_schedule_options
@click.option(
    "--eps",
    type=EPS,
    default="0",
    show_default=True,
    help="Target budget in pixel units (8/255, 0.3); 0 = vanilla.",
)
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option(
    "--eps-schedule",
    default="constant",
    show_default=True,
    help="constant, linear or cosine (eq. 5).",
)
@click.option("--eps-min", type=float, default=0.0, show_default=True)
@click.option("--eps-max", type=EPS, default=None, help="eq. (5) eps_max (default: the target).")
@click.option(
    "--eps-warmup", type=float, default=None, help="Warmup length D in epochs (default: --epochs)."
)
@pgd_options
@click.option(
    "--periods",
    type=EPOCHS,
    default="",
    help="Periodic scheduling: epochs where LR and eps reset, like 100,150 "
    "(each period runs the whole schedule compressed to its length).",
)
@click.option(
    "--save-epochs", type=EPOCHS, default="", help="Also save checkpoints after these epochs."
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Test metrics every N epochs (0: end only).",
)
@click.option(
    "--eval-samples",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Evaluate on the first N test images.",
)
@click.option(
    "--eval-train-samples",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also evaluate on the first N training images, for train-beside-test curves (0: off).",
)
@click.option(
    "--early-stop",
    is_flag=True,
    help="Keep best.pt, the evaluated epoch of lowest robust test error (Kanai et al. E); "
    "needs --eval-every.",
)
@click.option("--no-augment", is_flag=True, help="Turn off data augmentation.")
@click.option(
    "--out", type=click.Path(file_okay=False), default="checkpoints/run", show_default=True
)
@click.option("--overwrite", is_flag=True, help="Discard a finished or unfinished run in --out.")
@click.option(
    "--dry-run", is_flag=True, help="Print the planned passes, time and result size; run nothing."
)
@common
def train(
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
    out: str,
    overwrite: bool,
    dry_run: bool,
    data_root: str | None,
    no_augment: bool,
    save_epochs: tuple,
    **opts: Any,
) -> None:
    """PGD adversarial training (eps 0: vanilla), with checkpoints and a per-batch trace."""
    from .. import distributed
    from ..models import default_activation
    from ..train import TrainConfig
    from ..train import train as run_training

    opts["activation"] = opts["activation"] or default_activation(opts["arch"])
    config = TrainConfig(
        seed=seed, augment=not no_augment, save_epochs=tuple(int(e) for e in save_epochs), **opts
    )
    dev = distributed.init(device)
    state_data(config.dataset)
    config.validate()
    if distributed.world().is_main:
        for line in config.notices():
            click.echo(f"Warning: {line}", err=True)
    if dry_run:
        from ..dryrun import train_plan

        plan = train_plan(config, out, device=dev, data_root=data_root, overwrite=overwrite)
        return summary("dry run: train", plan.as_dict(), as_json)
    with progress_bar(config.epochs, "train") as bar:
        task = bar.add_task("train", total=config.epochs, info="")

        def report(done: int, total: int, stats: dict[str, float]) -> None:
            bar.update(
                task,
                completed=done,
                info=f"loss {stats['loss']:.3f} rob.err {stats['robust_error']:.3f}",
            )

        result = run_training(
            config,
            out,
            device=dev,
            data_root=data_root,
            overwrite=overwrite,
            progress=report,
            command=command_line(),
        )
    summary(
        "train",
        {
            "out": str(result.out_dir),
            "final": str(result.final),
            "epochs": result.epochs,
            "steps": result.steps,
            "resumed_from_epoch": result.resumed_from_epoch,
            "test_clean_error": result.test_clean_error,
            "test_robust_error": result.test_robust_error,
            "elapsed_s": result.elapsed_s,
            "snapshots": [str(p) for p in result.snapshots],
            **({"best": str(result.best), "best_epoch": result.best_epoch} if result.best else {}),
        },
        as_json,
    )
    if distributed.world().is_main:
        for line in result.warnings:
            click.echo(f"Warning: {line}", err=True)


@cli.command(name="eval")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--dataset", default=None, help="Dataset (default: the checkpoint's).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option(
    "--eps", type=EPS, default=None, help="Attack budget (default: the checkpoint's training eps)."
)
@click.option(
    "--norm",
    type=click.Choice(["linf", "l2"]),
    default=None,
    help="Attack norm (default: the training norm).",
)
@click.option(
    "--attack",
    type=click.Choice(["pgd", "autoattack", "apgd-ce"]),
    default="pgd",
    show_default=True,
    help="pgd; autoattack (standard version: APGD-CE, APGD-T, FAB-T, Square) or its "
    'APGD-CE alone, from the extra: pip install "adv-landscape[autoattack]".',
)
@pgd_options
@click.option(
    "--samples", type=click.IntRange(min=1), default=None, help="Evaluate on the first N examples."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--t",
    type=click.FloatRange(0, 1),
    default=None,
    help="For a curve file: evaluate its point B(t).",
)
@foreign_options
@common
def eval_(
    checkpoints: tuple[str, ...],
    split: str,
    dataset: str | None,
    data_root: str | None,
    eps: float | None,
    norm: str | None,
    attack: str,
    pgd_steps: int | None,
    pgd_step_size: float | None,
    samples: int | None,
    batch_size: int,
    t: float | None,
    foreign: dict[str, Any],
    device: str,
    seed: int,
    as_json: bool,
    debug: bool,
) -> None:
    """Clean and robust error of one model, or of several as a snapshot ensemble; of the point
    B(t) of a curve file (from `landscape connect`) with --t, its BN statistics re-estimated.
    --attack autoattack or apgd-ce reports the robust error under AutoAttack instead of PGD."""
    from ..attacks import attack_config, autoattack_error, evaluate, require_autoattack
    from ..checkpoint import check_normalization, load_checkpoint
    from ..connect import is_curve, point_model
    from ..data import dataset_info, load_dataset

    if attack != "pgd":
        # Before any loading: a PGD-only option or a missing extra fails at once.
        if pgd_steps is not None or pgd_step_size is not None:
            raise BadInput(f"--pgd-steps and --pgd-step-size apply to --attack pgd, not {attack}")
        require_autoattack()
    dev = resolve_device(device)
    models, specs = [], []
    for path in checkpoints:
        if t is not None or is_curve(path):
            model, spec = point_model(
                path, t, dev, data_root=data_root, dataset=dataset, batch_size=batch_size
            )
        else:
            model, spec = load_checkpoint(path, dev, dataset=dataset, **foreign)
        models.append(model)
        specs.append(spec)
    names = {s["dataset"] for s in specs}
    if len(names) > 1:
        raise BadInput(
            f"the checkpoints were trained on different datasets ({', '.join(sorted(names))})"
        )
    ds = dataset or specs[0]["dataset"]
    train_cfg = specs[0].get("train", {}).get("config", {})
    eps_value = eps if eps is not None else float(train_cfg.get("eps", 0.0))
    norm_value = norm or train_cfg.get("norm", "linf")
    if attack == "pgd":
        cfg = attack_config(
            eps_value,
            family=dataset_info(ds).family,
            norm=norm_value,
            steps=pgd_steps,
            step_size=pgd_step_size,
        )
    X, y = load_dataset(ds, split, data_root, dev)
    if samples is not None:
        X, y = X[:samples], y[:samples]
    for path, model, spec in zip(checkpoints, models, specs):
        check_normalization(model, spec, X, y, path)
    state_data(ds)
    if attack == "pgd":
        result = evaluate(models, X, y, cfg, batch_size=batch_size, seed=seed).as_dict()
    else:
        result = autoattack_error(
            models,
            X,
            y,
            eps=eps_value,
            norm=norm_value,
            version="standard" if attack == "autoattack" else attack,
            seed=seed,
            batch_size=batch_size,
        ).as_dict()
    summary(
        "eval",
        {
            "checkpoints": list(checkpoints),
            "ensemble": len(models) > 1,
            **({"t": t} if t is not None else {}),
            "dataset": ds,
            "split": split,
            "method": attack,
            **result,
        },
        as_json,
    )
