import dataclasses
import math

import h5py
import numpy as np
import pytest
import torch

from landscape.checkpoint import load_checkpoint, read_checkpoint
from landscape.cli import main
from landscape.optim import DEFAULT_LR
from landscape.train import (
    EVAL_COLUMNS,
    EVAL_TRAIN_COLUMNS,
    TRACE_COLUMNS,
    Diverged,
    TrainConfig,
    chance_warning,
    train,
)
from landscape.util import BadInput

SMALL = dict(arch="lenet", width=1, epochs=3, eps=0.1, batch_size=128)


def trace(path):
    with h5py.File(path / "trace.h5") as f:
        return {k: f["trace"][k][()] for k in f["trace"]}, dict(f["trace"].attrs)


def test_folder_layout_and_trace_meaning(digits_run):
    names = sorted(p.name for p in digits_run.iterdir())
    assert names == ["epoch_001.pt", "final.pt", "init.pt", "trace.h5"]
    rows, attrs = trace(digits_run)
    assert set(rows) == set(TRACE_COLUMNS) and attrs["status"] == "complete"
    n = len(rows["step"])
    assert n == 2 * 23  # 1440 images, batch 64, 2 epochs
    assert np.array_equal(rows["step"], np.arange(n))
    assert rows["distance_from_init"][0] == 0.0 and rows["distance_from_init"][-1] > 0
    assert np.all(rows["eps"] == 0.1) and np.all(rows["lr"] == 1e-3)
    assert np.all(rows["grad_norm"] > 0) and np.all(
        (rows["robust_error"] >= 0) & (rows["robust_error"] <= 1)
    )
    assert rows["epoch"][0] == 0.0 and rows["epoch"][23] == 1.0
    # distance_from_init is ||theta - theta_0|| at the weights the batch's gradient was taken at.
    init, _ = load_checkpoint(digits_run / "init.pt")
    epoch1, _ = load_checkpoint(digits_run / "epoch_001.pt")
    d = torch.sqrt(
        sum(((a - b) ** 2).sum() for a, b in zip(init.parameters(), epoch1.parameters()))
    )
    assert np.isclose(rows["distance_from_init"][23], d.item(), rtol=1e-5)


def test_final_checkpoint_records_config_and_metrics(digits_run):
    obj = read_checkpoint(digits_run / "final.pt")
    assert obj["train"]["config"]["eps"] == 0.1 and obj["train"]["epoch"] == 2
    m = obj["train"]["metrics"]
    assert 0 <= m["test_clean_error"] <= m["test_robust_error"] <= 1


def test_resume_after_interruption_is_exact(tmp_path):
    cfg = TrainConfig(**SMALL, eval_every=1, eval_samples=100)
    whole = train(cfg, tmp_path / "whole", device="cpu")
    part = train(cfg, tmp_path / "part", device="cpu", stop_after_epochs=1)
    assert part.epochs == 1 and (tmp_path / "part" / "resume.pt").exists()
    assert not (tmp_path / "part" / "final.pt").exists()
    resumed = train(cfg, tmp_path / "part", device="cpu")
    assert resumed.resumed_from_epoch == 1
    a = read_checkpoint(tmp_path / "whole" / "final.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "part" / "final.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, _ = trace(tmp_path / "whole")
    rb, _ = trace(tmp_path / "part")
    for k in TRACE_COLUMNS:
        assert np.array_equal(ra[k], rb[k]), k
    assert not (tmp_path / "part" / "resume.pt").exists()
    assert (whole.test_clean_error, whole.test_robust_error) == (
        resumed.test_clean_error,
        resumed.test_robust_error,
    )


def test_finished_run_is_reused_and_clash_refused(digits_run):
    cfg = TrainConfig(arch="lenet", width=1, epochs=2, eps=0.1, save_epochs=(1,))
    before = (digits_run / "final.pt").stat().st_mtime_ns
    again = train(cfg, digits_run, device="cpu")
    assert (digits_run / "final.pt").stat().st_mtime_ns == before and again.steps == 46
    with pytest.raises(BadInput, match="another config"):
        train(TrainConfig(arch="lenet", width=1, epochs=3, eps=0.1), digits_run, device="cpu")


def test_periodic_snapshots_and_schedule(tmp_path):
    cfg = TrainConfig(
        arch="lenet",
        width=1,
        epochs=4,
        eps=0.1,
        eps_schedule="linear",
        periods=(2,),
        batch_size=256,
        lr_schedule="step",
        lr_milestones=(2,),
    )
    result = train(cfg, tmp_path / "p", device="cpu")
    assert [p.name for p in result.snapshots] == ["period_1.pt", "period_2.pt"]
    rows, _ = trace(tmp_path / "p")
    # Two periods of 2 epochs: the 4-epoch schedule compressed into each, reset at epoch 2.
    first = rows["epoch"] < 2
    assert rows["eps"][0] == 0.0 and rows["eps"][first.sum()] == 0.0
    assert np.allclose(rows["eps"][first], 0.1 * rows["epoch"][first] * 2 / 4)
    assert np.all(rows["lr"][rows["epoch"] % 2 < 1] == 1e-3)
    assert np.allclose(rows["lr"][rows["epoch"] % 2 >= 1], 1e-4)
    p2 = read_checkpoint(tmp_path / "p" / "period_2.pt")["state_dict"]
    final = read_checkpoint(tmp_path / "p" / "final.pt")["state_dict"]
    assert all(torch.equal(p2[k], final[k]) for k in final)


TINY = dict(arch="mlp", width=1, eps=0.0, batch_size=256, optimizer="sgd", lr=0.1)


@pytest.mark.parametrize(
    "lr_options",
    [
        dict(lr_schedule="step", lr_milestones=(2, 4), lr_gamma=0.1),
        dict(lr_schedule="exponential", lr_decay_epochs=(1, 5), lr_final=1e-3),
        dict(lr_schedule="cosine"),
    ],
    ids=["step", "exponential", "cosine"],
)
def test_periodic_run_resets_a_decaying_lr_in_every_period(tmp_path, lr_options):
    """Liu et al. sec. 5 / C.1 Fig. 6: with --periods the LR trace jumps back to its initial
    value at each period start and decays within each period, the 6-epoch schedule
    compressed into 2 epochs; eps (linear warmup) restarts from 0 alike."""
    cfg = TrainConfig(
        **{**TINY, "eps": 0.05},
        epochs=6,
        periods=(2, 4),
        pgd_steps=1,
        eps_schedule="linear",
        **lr_options,
    )
    result = train(cfg, tmp_path / "p", device="cpu")
    assert [p.name for p in result.snapshots] == ["period_1.pt", "period_2.pt", "period_3.pt"]
    rows, _ = trace(tmp_path / "p")
    period = (rows["epoch"] // 2).astype(int)
    assert np.array_equal(np.unique(period), [0, 1, 2]) and np.all(np.bincount(period) == 12)
    for k in range(3):
        lr, eps = rows["lr"][period == k], rows["eps"][period == k]
        assert lr[0] == 0.1 and eps[0] == 0.0  # the reset
        assert np.all(np.diff(lr) <= 0) and lr[-1] < 0.1 * 0.5  # decays within the period
        assert np.all(np.diff(eps) > 0)
    starts = np.flatnonzero(np.diff(period)) + 1
    assert np.all(rows["lr"][starts] > rows["lr"][starts - 1])  # jumps back up
    assert np.allclose(rows["lr"][period == 0], rows["lr"][period == 2], rtol=1e-12)


def test_periods_refused_when_nothing_resets_and_warned_without_lr_decay(tmp_path, capsys):
    """A constant LR and a constant eps: --periods would only take snapshots of one run, so
    it is refused; a constant LR with an eps warmup resets eps only, with a warning."""
    with pytest.raises(BadInput, match="nothing would reset"):
        TrainConfig(**TINY, epochs=4, periods=(2,)).validate()
    eps_only = TrainConfig(**{**TINY, "eps": 0.1}, epochs=4, periods=(2,), eps_schedule="cosine")
    eps_only.validate()
    assert len(eps_only.notices()) == 1 and "decaying LR" in eps_only.notices()[0]
    decaying = TrainConfig(**TINY, epochs=4, periods=(2,), lr_schedule="cosine")
    decaying.validate()
    assert decaying.notices() == []
    common = ["train", "--arch", "mlp", "--width", "1", "--epochs", "2", "--batch-size", "512",
              "--eps", "0.05", "--pgd-steps", "1", "--periods", "1", "--device", "cpu"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main([*common, "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("Error: --periods resets")
    assert not (tmp_path / "c").exists()
    with pytest.raises(SystemExit) as exc:
        main([*common, "--eps-schedule", "linear", "--out", str(tmp_path / "w"), "--json"])
    err = capsys.readouterr().err
    assert exc.value.code == 0 and "Warning: --periods with an LR that does not decay" in err


def eval_group(path):
    with h5py.File(path / "trace.h5") as f:
        return {k: f["eval"][k][()] for k in f["eval"]}, dict(f["eval"].attrs)


# Adam at 1e-2, then at 1.0 from epoch 3: the robust test error is best early and worse after.
SPOILED = dict(
    arch="mlp",
    width=1,
    epochs=4,
    eps=0.1,
    pgd_steps=2,
    batch_size=128,
    lr=1e-2,
    lr_schedule="step",
    lr_milestones=(2,),
    lr_gamma=100.0,
    eval_every=1,
    eval_samples=200,
    early_stop=True,
)


def test_early_stopping_keeps_the_best_epoch_and_resumes_to_it(tmp_path):
    """best.pt holds the epoch of lowest robust test error among /eval's rows (Kanai et al.
    E), named in its metadata, in final.pt and in trace.h5; here not the last epoch. A run
    killed after the best epoch resumes to the same best.pt."""
    cfg = TrainConfig(**SPOILED, save_epochs=(1, 2, 3, 4))
    result = train(cfg, tmp_path / "whole", device="cpu")
    evals, attrs = eval_group(tmp_path / "whole")
    assert list(evals["epoch"]) == [1, 2, 3, 4]
    order = np.lexsort((evals["clean_error"], evals["robust_error"]))
    best_epoch = int(evals["epoch"][order[0]])
    assert best_epoch < 4 and evals["robust_error"][-1] > evals["robust_error"].min()
    assert result.best_epoch == best_epoch and attrs["best_epoch"] == best_epoch
    best = read_checkpoint(tmp_path / "whole" / "best.pt")
    assert best["train"]["epoch"] == best_epoch
    stop = best["train"]["early_stop"]
    assert stop["robust_error"] == evals["robust_error"].min() and stop["samples"] == 200
    same = read_checkpoint(tmp_path / "whole" / f"epoch_{best_epoch:03d}.pt")["state_dict"]
    assert all(torch.equal(best["state_dict"][k], same[k]) for k in same)
    assert read_checkpoint(result.final)["train"]["best_epoch"] == best_epoch
    # The best model scores on the evaluated images what /eval recorded for its epoch.
    from landscape.attacks import evaluate
    from landscape.data import load_dataset

    model, _ = load_checkpoint(tmp_path / "whole" / "best.pt")
    X, y = load_dataset("digits", "test")
    ev = evaluate(model, X[:200], y[:200], cfg.target_attack(), seed=cfg.seed)
    assert ev.adv_error == stop["robust_error"]

    cut = TrainConfig(**SPOILED, save_epochs=(1, 2, 3, 4))
    train(cut, tmp_path / "part", device="cpu", stop_after_epochs=best_epoch + 1)
    resumed = train(cut, tmp_path / "part", device="cpu")
    assert resumed.resumed_from_epoch == best_epoch + 1 and resumed.best_epoch == best_epoch
    again = read_checkpoint(tmp_path / "part" / "best.pt")
    assert again["train"]["early_stop"] == stop
    assert all(torch.equal(best["state_dict"][k], again["state_dict"][k]) for k in same)


def test_eval_train_samples_records_training_subset_curves(tmp_path):
    """/eval gets train_* columns: the run's attack on the first N training images in eval
    mode, equal to evaluating the epoch's checkpoint there (Kanai et al. Figs. 3, 6)."""
    cfg = TrainConfig(
        arch="mlp",
        width=1,
        epochs=2,
        eps=0.1,
        pgd_steps=2,
        batch_size=256,
        eval_every=1,
        eval_samples=100,
        eval_train_samples=150,
        save_epochs=(1,),
    )
    train(cfg, tmp_path / "t", device="cpu")
    evals, _ = eval_group(tmp_path / "t")
    assert set(evals) == {*EVAL_COLUMNS, *EVAL_TRAIN_COLUMNS} and len(evals["epoch"]) == 2
    from landscape.attacks import evaluate
    from landscape.data import load_dataset

    X, y = load_dataset("digits", "train")
    for k, name in enumerate(("epoch_001.pt", "final.pt")):
        model, _ = load_checkpoint(tmp_path / "t" / name)
        ev = evaluate(model, X[:150], y[:150], cfg.target_attack(), seed=cfg.seed)
        assert evals["train_robust_error"][k] == ev.adv_error
        assert evals["train_clean_loss"][k] == ev.clean_loss
    assert not np.array_equal(evals["train_robust_error"], evals["robust_error"])
    # Evaluating leaves training untouched: the same run without /eval ends bit-identical.
    plain = dataclasses.replace(cfg, eval_every=0, eval_train_samples=0)
    train(plain, tmp_path / "plain", device="cpu")
    a = read_checkpoint(tmp_path / "t" / "final.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "plain" / "final.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_chance_level_ends_with_a_warning(tmp_path, capsys):
    """A model no better under attack than the constant classifier (here: not trained at
    all, lr 1e-9) finishes with a `Warning:` line; one below the constant's error does not."""
    args = ["train", "--arch", "mlp", "--width", "1", "--epochs", "1", "--batch-size", "512",
            "--eps", "0.3", "--pgd-steps", "2", "--device", "cpu", "--json"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main([*args, "--lr", "1e-9", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert exc.value.code == 0 and "Warning: training ended at chance level" in err
    y = torch.tensor([0, 0, 0, 1, 2])  # the constant classifier errs on 2 of 5
    assert chance_warning(0.1, 0.4, y) and chance_warning(0.1, math.nan, y)
    assert chance_warning(0.1, 0.39, y) == []


def test_default_lr_is_the_optimizers_paper_value():
    """No --lr: Adam 1e-3, SGD 0.1 and EntropySGD's eta 0.1 (Kanai et al. E.1), stored
    resolved in the config; a given --lr is kept."""
    assert {name: TrainConfig(optimizer=name).lr for name in DEFAULT_LR} == {
        "sgd": 0.1,
        "adam": 1e-3,
        "entropy-sgd": 0.1,
        "entropy-sgd2": 0.1,
    }
    assert TrainConfig(optimizer="entropy-sgd", lr=0.5).as_dict()["lr"] == 0.5


def test_divergence_stops_with_message(tmp_path):
    cfg = TrainConfig(
        arch="mlp", width=1, epochs=3, optimizer="sgd", lr=1e30, momentum=0.0, batch_size=256
    )
    with pytest.raises(Diverged, match="epoch 1"):
        train(cfg, tmp_path / "d", device="cpu")
    assert (tmp_path / "d" / "init.pt").exists() and not (tmp_path / "d" / "final.pt").exists()


@pytest.mark.parametrize(
    "bad",
    [
        dict(optimizer="rmsprop"),
        dict(eps_schedule="poly"),
        dict(epochs=0),
        dict(save_epochs=(7,)),
        dict(arch="alexnet"),
        dict(dataset="imagenet"),
        dict(periods=(0,)),
        dict(norm="l1"),
        dict(early_stop=True),
        dict(eval_train_samples=-1),
        dict(periods=(1,)),
        dict(lr_schedule="cosine", lr_final=-0.1),
    ],
)
def test_bad_configs_write_nothing(tmp_path, bad):
    with pytest.raises(BadInput):
        train(TrainConfig(**{**SMALL, **bad}), tmp_path / "x", device="cpu")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_issue_acceptance_lenet4_eps01():
    """The foundation issue's yardstick: clean test error < 15%, robust < 50% in 20 epochs."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        r = train(TrainConfig(arch="lenet", width=4, epochs=20, eps=0.1), tmp, device="cpu")
    assert r.test_clean_error < 0.15 and r.test_robust_error < 0.5


@pytest.mark.slow
def test_large_eps_collapses_to_constant_classifier(tmp_path):
    """Theorem 1 / C.2.4 on digits: eps 0.3 drives LeNet w=4 to a constant prediction."""
    r = train(TrainConfig(arch="lenet", width=4, epochs=20, eps=0.3), tmp_path / "c", device="cpu")
    model, _ = load_checkpoint(r.final)
    from landscape.data import load_dataset

    X, _ = load_dataset("digits", "test")
    with torch.no_grad():
        predictions = model(X).argmax(1)
    assert predictions.unique().numel() == 1
    assert r.test_clean_error > 0.85
