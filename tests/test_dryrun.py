"""--dry-run: pass counts against independent counts of real tiny runs, result sizes against
the arrays actually written, a finite time estimate, nothing written, bad input still exit 2."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape import store
from landscape.checkpoint import read_checkpoint
from landscape.cli import main
from landscape.dryrun import lanczos_estimate


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--device", "cpu"])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def dry(args, capsys) -> dict:
    code, out, err = run([*args, "--dry-run", "--json"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["dry_run"] and plan["device"] == "cpu"
    assert math.isfinite(plan["estimated_seconds"]) and plan["estimated_seconds"] >= 0
    rates = plan["seconds_per_example_pass"]
    assert set(rates) == set(plan["passes_by_kind"])
    assert all(math.isfinite(v) and v > 0 for v in rates.values())
    return plan


@pytest.fixture
def counter(monkeypatch):
    """Counts every call of the networks (an nn.Sequential whose first module is the input
    normalization): calls, example rows forward, and backward calls and rows reaching the
    output. A vmapped call counts once, with the rows of its (unbatched) input."""
    c = SimpleNamespace(calls=0, rows=0, back_calls=0, back_rows=0)
    original = nn.Sequential.forward

    def forward(self, x):
        out = original(self, x)
        if "normalize" not in self._modules:
            return out
        c.calls += 1
        c.rows += x.shape[0]
        if out.requires_grad:

            def hook(g):
                c.back_calls += 1
                c.back_rows += g.shape[0]

            out.register_hook(hook)
        return out

    monkeypatch.setattr(nn.Sequential, "forward", forward)
    return c


def assert_counts(plan: dict, c: SimpleNamespace) -> None:
    """Exact agreement of a plan without vmapped points with the counted run."""
    assert plan["exact"]
    assert sum(plan["calls_by_kind"].values()) == c.calls
    assert plan["forward_passes"] == c.rows
    assert plan["backward_passes"] == c.back_rows
    backward_calls = sum(
        v for k, v in plan["calls_by_kind"].items() if k in ("input_grad", "weight_grad")
    )
    assert backward_calls == c.back_calls


def group_bytes(path: Path, group: str) -> int:
    arrays, _ = store.read_group(path, group)
    return sum(np.asarray(a).nbytes for a in arrays.values())


def test_surface_counts_sizes_and_resume(digits_run, tmp_path, capsys, counter):
    ckpt = str(digits_run / "final.pt")
    out = tmp_path / "s.h5"
    args = ["surface", ckpt, "--dim", "2", "--range", "-1:1:3", "--yrange", "-1:1:2",
            "--eps", "0.1", "--pgd-steps", "2", "--samples", "150", "--batch-size", "64",
            "--out", str(out)]  # fmt: skip
    plan = dry([*args, "--points-per-batch", "1"], capsys)
    assert not out.exists() and not list(tmp_path.iterdir())
    # 6 points x 3 batches x (clean + PGD-2 + adversarial forward)
    assert plan["calls_by_kind"] == {"forward": 6 * 3 * 2, "input_grad": 6 * 3 * 2}
    assert plan["passes_by_kind"] == {"forward": 6 * 150 * 2, "input_grad": 6 * 150 * 2}
    counter.__init__(calls=0, rows=0, back_calls=0, back_rows=0)
    code, _, err = run([*args, "--points-per-batch", "1"], capsys)
    assert code == 0, err
    assert_counts(plan, counter)
    group = plan["runs"][0]
    assert plan["result_bytes"] == group_bytes(out, group)
    assert out.stat().st_size < plan["result_bytes"] + 64 * 1024

    # Vmapped clean points: 4 points per call, blocks of 4 and 2, P rows per example.
    vm = dry([*args, "--points-per-batch", "4", "--out", str(tmp_path / "v.h5")], capsys)
    assert vm["calls_by_kind"]["forward_stacked"] == 2 * 3
    assert vm["passes_by_kind"]["forward_stacked"] == 6 * 150
    counter.__init__(calls=0, rows=0, back_calls=0, back_rows=0)
    assert run([*args, "--points-per-batch", "4", "--out", str(tmp_path / "v.h5")], capsys)[0] == 0
    assert sum(vm["calls_by_kind"].values()) == counter.calls

    # Stored complete: nothing to compute. A sidecar with 2 points done: 4 left.
    assert dry(args, capsys)["forward_passes"] == 0
    _, attrs = store.read_group(out, group)
    config = json.loads(attrs["config"])
    partial = tmp_path / "p.h5"
    grid = store.Grid(partial, group, config, (3, 2), ("loss", "error", "adv_loss", "adv_error"))
    for idx in ((0, 0), (2, 1)):
        grid.record(idx, {"loss": 1.0, "error": 0.0, "adv_loss": 1.0, "adv_error": 0.0})
    grid.flush()
    before = sorted(p.name for p in tmp_path.iterdir())
    left = dry([*args, "--points-per-batch", "1", "--out", str(partial)], capsys)
    assert left["passes_by_kind"] == {"forward": 4 * 150 * 2, "input_grad": 4 * 150 * 2}
    assert any("2 of 6 points already done" in n for n in left["notes"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cosine_counts_and_size(digits_run, tmp_path, capsys, counter):
    ckpt = str(digits_run / "final.pt")
    hfile = tmp_path / "h.h5"
    code, _, err = run(["hessian", ckpt, "--eps", "0.1", "--top", "1", "--samples", "60",
                        "--random-samples", "0", "--save-vectors", "--name", "h", "--out", str(hfile)],
                       capsys)  # fmt: skip
    assert code == 0, err
    out = tmp_path / "c.h5"
    args = ["cosine", ckpt, "--eps", "0.1", "--range", "0:0.5:3", "--repeats", "2",
            "--pgd-steps", "3", "--samples", "100", "--batch-size", "64",
            "--hessian-group", f"{hfile}:/hessian/h", "--out", str(out)]  # fmt: skip
    plan = dry(args, capsys)
    assert not out.exists()
    # 3 a x 2 directions x 2 repeats x 2 signs x 2 batches x (PGD-3 + a forward)
    assert plan["calls_by_kind"] == {"forward": 48, "input_grad": 3 * 48}
    counter.__init__(calls=0, rows=0, back_calls=0, back_rows=0)
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert_counts(plan, counter)
    assert plan["result_bytes"] == group_bytes(out, plan["runs"][0])
    # Without a stored eigenvector the top direction costs a Lanczos run: an estimate.
    computed = dry([*args[:-4], "--out", str(tmp_path / "c2.h5")], capsys)
    assert not computed["exact"] and computed["passes_by_kind"]["hvp"] > 0


def test_smoothness_counts(digits_run, tmp_path, capsys, counter):
    out = tmp_path / "m.h5"
    args = ["smoothness", str(digits_run / "final.pt"), "--eps", "0.1", "--radii", "1e-2:1:2",
            "--directions", "2", "--pgd-steps", "2", "--samples", "50", "--out", str(out)]  # fmt: skip
    plan = dry(args, capsys)
    # 3 norms x 2 directions x (theta + 2 radii) gradients; PGD-2 before the 2 adversarial ones
    assert plan["calls_by_kind"] == {"input_grad": 2 * 2 * 3 * 2, "weight_grad": 3 * 2 * 3}
    counter.__init__(calls=0, rows=0, back_calls=0, back_rows=0)
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert_counts(plan, counter)
    assert plan["result_bytes"] == group_bytes(out, plan["runs"][0])


@pytest.mark.parametrize(
    "options",
    [
        ["--loss", "trades", "--awp", "0.01", "--eps-schedule", "linear", "--eval-every", "1",
         "--eval-samples", "100", "--save-epochs", "1"],
        # eps is 0 until d = 0.29, so how the window groups mini-batches changes the count
        ["--optimizer", "entropy-sgd", "--langevin-steps", "4", "--entropy-start", "0.5",
         "--eps-schedule", "linear", "--eps-min", "-0.04", "--eps-warmup", "1", "--periods", "1"],
        # the training-subset evaluation adds passes and /eval columns, early stopping best.pt
        ["--eval-every", "1", "--eval-samples", "50", "--eval-train-samples", "60", "--early-stop",
         "--lr-schedule", "cosine", "--periods", "1", "--awp", "0.01", "--awp-warmup", "1"],
    ],
    ids=["trades-awp-schedule", "entropy-sgd-periods", "eval-train-early-stop"],
)  # fmt: skip
def test_train_counts_and_size(options, tmp_path, capsys, counter):
    out = tmp_path / "t"
    args = ["train", "--arch", "mlp", "--width", "1", "--epochs", "2", "--batch-size", "256",
            "--eps", "0.1", "--pgd-steps", "2", "--out", str(out), *options]  # fmt: skip
    plan = dry(args, capsys)
    assert not out.exists()
    counter.__init__(calls=0, rows=0, back_calls=0, back_rows=0)
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert_counts(plan, counter)
    checkpoints = sorted(out.glob("*.pt"))
    state = sum(
        t.numel() * t.element_size()
        for p in checkpoints
        for t in read_checkpoint(p)["state_dict"].values()
    )
    with h5py.File(out / "trace.h5", "r") as f:
        trace = sum(f[g][k].nbytes for g in f for k in f[g])
    assert plan["result_bytes"] == state + trace
    # A finished run with the same config trains nothing; resuming counts only what is left.
    assert dry(args, capsys)["forward_passes"] == 0


def test_train_resume_counts_only_the_rest(tmp_path, capsys):
    from landscape.train import TrainConfig, train

    config = TrainConfig(arch="mlp", width=1, epochs=3, batch_size=512, eps=0.1, pgd_steps=1)
    full = dry(["train", "--arch", "mlp", "--width", "1", "--epochs", "3", "--batch-size", "512",
                "--eps", "0.1", "--pgd-steps", "1", "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    train(config, tmp_path / "r", device="cpu", stop_after_epochs=2)
    rest = dry(["train", "--arch", "mlp", "--width", "1", "--epochs", "3", "--batch-size", "512",
                "--eps", "0.1", "--pgd-steps", "1", "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    per_epoch = 1440 * 2  # one PGD step and one training pass per example
    evaluation = 357 * 3  # the final test evaluation: PGD-1 and two forwards
    assert full["forward_passes"] == 3 * per_epoch + evaluation
    assert rest["forward_passes"] == per_epoch + evaluation


def test_connect_counts_and_size(digits_run, tmp_path, capsys, counter):
    out = tmp_path / "k.h5"
    args = ["connect", str(digits_run / "final.pt"), str(digits_run / "epoch_001.pt"),
            "--eps", "0.1", "--pgd-steps", "2", "--epochs", "1", "--batch-size", "512",
            "--points", "3", "--samples", "100", "--name", "k", "--out", str(out)]  # fmt: skip
    plan = dry(args, capsys)
    assert not out.exists() and not list(tmp_path.iterdir())
    # training: 3 batches x (PGD-2 + step); evaluation: 3 t x 2 paths x 2 splits x (PGD-2 + 2)
    assert plan["calls_by_kind"] == {"input_grad": 3 * 2 + 12 * 2, "weight_grad": 3, "forward": 24}
    counter.__init__(calls=0, rows=0, back_calls=0, back_rows=0)
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert_counts(plan, counter)
    curve = read_checkpoint(tmp_path / "k.curve.pt")["control_points"]
    curve_bytes = sum(t.numel() * t.element_size() for t in curve.values())
    assert plan["result_bytes"] == group_bytes(out, "/connect/k") + curve_bytes
    # Stored: nothing to do.
    assert dry(args, capsys)["forward_passes"] == 0


@pytest.fixture(scope="module")
def vgg_pair(tmp_path_factory):
    """Two untrained VGG w=1 digits checkpoints: a model with BatchNorm."""
    from landscape.checkpoint import build_from_spec, model_spec, save_checkpoint

    folder = tmp_path_factory.mktemp("vgg")
    spec = model_spec("vgg", "digits", width=1)
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(folder / f"v{seed}.pt", build_from_spec(spec), spec)
    return folder / "v0.pt", folder / "v1.pt"


def test_batchnorm_re_estimation_counts(vgg_pair, tmp_path, capsys, counter):
    a, b = (str(p) for p in vgg_pair)
    runs = {
        "connect": ["connect", a, b, "--eps", "0.1", "--pgd-steps", "1", "--epochs", "1",
                    "--batch-size", "720", "--points", "2", "--samples", "50",
                    "--bn-samples", "600", "--bn-inputs", "adv", "--name", "v"],
        "surface": ["surface", a, "--bn", "recompute", "--range", "-1:1:2", "--eps", "0.1",
                    "--pgd-steps", "1", "--samples", "300", "--batch-size", "128"],
    }  # fmt: skip
    plans = {}
    for command, args in runs.items():
        args = [*args, "--out", str(tmp_path / f"{command}.h5")]
        plans[command] = dry(args, capsys)
        counter.__init__(calls=0, rows=0, back_calls=0, back_rows=0)
        code, _, err = run(args, capsys)
        assert code == 0, err
        assert_counts(plans[command], counter)
    # connect, per t and path (2 x 2): BN on 600 clean examples (2 batches of 500), PGD-1 on
    # them and BN again; each split (1 batch) PGD-1 and 2 forwards. Training: 2 batches.
    assert plans["connect"]["calls_by_kind"] == {
        "forward": 4 * (2 + 2 + 2 * 2),
        "input_grad": 2 + 4 * (2 + 2),
        "weight_grad": 2,
    }
    # surface, per point and batch (2 x 3): BN re-estimation, clean and adversarial forward
    assert plans["surface"]["calls_by_kind"] == {"forward": 2 * 3 * 3, "input_grad": 2 * 3}


def test_hessian_estimate_and_size(digits_run, tmp_path, capsys):
    out = tmp_path / "h.h5"
    args = ["hessian", str(digits_run / "final.pt"), "--eps", "0", "--eps", "0.1", "--top", "3",
            "--samples", "100", "--random-samples", "2", "--save-vectors", "--trace",
            "--out", str(out)]  # fmt: skip
    plan = dry(args, capsys)
    assert not out.exists() and not plan["exact"] and len(plan["runs"]) == 2
    assert plan["passes_by_kind"]["hvp"] == 2 * 100 * (lanczos_estimate(3) + 3 + 100)
    # PGD (eps 0.1: 20 iterations) once at theta and once per random initialization
    assert plan["passes_by_kind"]["input_grad"] == 100 * 20 * 3
    code, out_text, err = run([*args, "--json"], capsys)
    assert code == 0, err
    actual = sum(r["n_hvp"] for r in json.loads(out_text).values())
    planned = plan["passes_by_kind"]["hvp"] / 100
    assert 0.5 < planned / actual < 2
    assert plan["result_bytes"] == sum(group_bytes(out, g) for g in plan["runs"])


def test_calibration_measures_each_kind(digits_run):
    from landscape.checkpoint import load_checkpoint
    from landscape.data import load_dataset
    from landscape.dryrun import Calibration

    model, _ = load_checkpoint(digits_run / "final.pt", "cpu")
    X, y = load_dataset("digits", "train", None, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cal = Calibration(model.train(), X, y, batch_size=64)
    passes = {"forward": 10, "forward_stacked": 10, "input_grad": 10, "weight_grad": 10, "hvp": 10}
    seconds = cal.seconds(passes, points=4)
    assert math.isfinite(seconds) and seconds > 0
    assert all(math.isfinite(v) and v > 0 for v in cal.per_example.values())
    assert len(cal.per_example) == 5 and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # A second estimate reuses the measurements: twice the passes, twice the time.
    assert cal.seconds({k: 2 * v for k, v in passes.items()}, points=4) == pytest.approx(
        2 * seconds
    )


def test_text_output(digits_run, tmp_path, capsys):
    code, out, err = run(["surface", str(digits_run / "final.pt"), "--range", "-1:1:3",
                          "--samples", "20", "--out", str(tmp_path / "x.h5"), "--dry-run"], capsys)  # fmt: skip
    assert code == 0, err
    assert "dry run: surface" in out and "forward_passes" in out and "estimated_time" in out
    assert not list(tmp_path.iterdir())


BAD = {
    "surface inverted range": ["surface", "CKPT", "--range", "1:-1:5"],
    "surface interp without --other": ["surface", "CKPT", "--dirs", "interp"],
    "surface foreign results file": ["surface", "CKPT", "--out", "FOREIGN"],
    "cosine eps abc": ["cosine", "CKPT", "--eps", "abc"],
    "cosine foreign hessian group": ["cosine", "CKPT", "--hessian-group", "FOREIGN:/hessian/x"],
    "hessian top 0": ["hessian", "CKPT", "--top", "0"],
    "hessian params typo": ["hessian", "CKPT", "--params", "nothing*"],
    "smoothness linf at eps 0": ["smoothness", "CKPT", "--norms", "linf"],
    "train unknown optimizer": ["train", "--optimizer", "nope"],
    "train unknown dataset": ["train", "--dataset", "imagenet"],
    "connect order 0": ["connect", "CKPT", "CKPT", "--order", "0"],
    "connect missing checkpoint": ["connect", "CKPT", "MISSING"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_under_dry_run_exits_2(case, tmp_path, digits_run, capsys):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1]
    names = {"CKPT": str(digits_run / "final.pt"), "FOREIGN": str(foreign),
             "MISSING": str(tmp_path / "none.pt")}  # fmt: skip
    args = [next((a.replace(k, v) for k, v in names.items() if k in a), a) for a in BAD[case]]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run([*args, "--dry-run"], capsys)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
