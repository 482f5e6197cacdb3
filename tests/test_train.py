import h5py
import numpy as np
import pytest
import torch

from landscape.checkpoint import load_checkpoint, read_checkpoint
from landscape.train import TRACE_COLUMNS, Diverged, TrainConfig, train
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
