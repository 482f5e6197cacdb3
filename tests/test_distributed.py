"""torchrun: two CPU processes on gloo give the single-process arrays (exactly for grids,
within float tolerance for reductions), rank 0 alone writes, and errors end every rank."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape import distributed
from landscape.cli import main
from landscape.util import BadInput

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def torchrun(*args: str, cwd: Path, module: bool = True) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2` of `python -m landscape ARGS` (or of a script) on the CPU."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    target = ["-m", "landscape", *args] if module else list(args)
    return subprocess.run(
        [*launcher, *target], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300
    )


def single(*args: str) -> None:
    """The same command in this process (one process, no process group)."""
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--device", "cpu"])
    assert exit_info.value.code == 0


def datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return out


def assert_ok(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stderr[-3000:]


# ----------------------------------------------------------------- one process, no group


def test_run_queue_in_one_process_is_a_plain_loop():
    seen = []
    distributed.run_queue([3, 1, 2], lambda t: {"sq": t * t}, lambda t, r: seen.append((t, r)))
    assert seen == [(3, {"sq": 9}), (1, {"sq": 1}), (2, {"sq": 4})]
    distributed.run_queue([], lambda t: 1 / 0, lambda t, r: seen.append(t))
    assert len(seen) == 3


def test_helpers_are_identities_in_one_process():
    w = distributed.world()
    assert (w.rank, w.size, w.is_main, w.distributed) == (0, 1, True, False)
    assert distributed.shard(5) == range(5)
    assert distributed.share(7) == slice(0, 7)
    assert distributed.on_main(lambda: [1, 2]) == [1, 2]
    with pytest.raises(BadInput, match="nope"):
        distributed.on_main(lambda: (_ for _ in ()).throw(BadInput("nope")))
    done = np.array([[True, False], [False, True]])
    distributed.sync_done(done)
    assert done.tolist() == [[True, False], [False, True]]
    t = torch.tensor([1.5, 2.0])
    assert distributed.all_reduce_sum(t).tolist() == [1.5, 2.0]
    assert distributed.broadcast_json({"a": [1, None]}) == {"a": [1, None]}


QUEUE_SCRIPT = """
import json, math, sys, time
from landscape import distributed
from landscape.util import BadInput
distributed.init("cpu")
w = distributed.world()
got = []
def work(t):
    time.sleep(0.05)
    return {"t": t, "rank": w.rank, "sq": t * t, "nan": math.nan}
distributed.run_queue(list(range(20)), work, lambda t, r: got.append([t, r]))
parts = [distributed.share(10), distributed.share(3)]
try:
    distributed.on_main(lambda: (_ for _ in ()).throw(BadInput("rank 0 refuses")))
    refused = None
except BadInput as exc:
    refused = str(exc)
shared = distributed.broadcast_json({"from": w.rank})
out = {"got": got, "refused": refused, "shared": shared,
       "parts": [[p.start, p.stop] for p in parts], "shard": list(distributed.shard(5))}
with open(sys.argv[1] + f".{w.rank}", "w") as f:
    json.dump(out, f)
distributed.shutdown(wait=True)
"""


@pytest.mark.slow
def test_run_queue_two_processes(tmp_path):
    script = tmp_path / "queue_check.py"
    script.write_text(QUEUE_SCRIPT)
    assert_ok(torchrun(str(script), str(tmp_path / "out"), cwd=tmp_path, module=False))
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in (0, 1)]
    got = ranks[0]["got"]
    # Every task once, on rank 0 only, with its own result; NaN survives the JSON trip.
    assert sorted(t for t, _ in got) == list(range(20))
    assert all(r["t"] == t and r["sq"] == t * t and math.isnan(r["nan"]) for t, r in got)
    assert {r["rank"] for _, r in got} == {0, 1}
    assert ranks[1]["got"] == []
    for out in ranks:
        assert out["refused"] == "rank 0 refuses"
        assert out["shared"] == {"from": 0}
    assert ranks[0]["parts"] == [[0, 5], [0, 1]] and ranks[1]["parts"] == [[5, 10], [1, 3]]
    assert ranks[0]["shard"] == [0, 2, 4] and ranks[1]["shard"] == [1, 3]


# ------------------------------------------------------------------ commands, 2 vs 1


@pytest.mark.slow
def test_surface_grid_two_processes_equals_one_exactly(digits_run, tmp_path):
    ckpt = str(digits_run / "final.pt")
    # 16 points in blocks of 3: blocks straddle rows, and the queue deals 6 of them.
    args = ["surface", ckpt, "--dim", "2", "--range", "-1:1:4", "--eps", "0", "--eps", "0.1"]
    args += ["--samples", "48", "--points-per-batch", "3", "--json"]
    single(*args, "--out", str(tmp_path / "one.h5"))
    run = torchrun(*args, "--out", "two.h5", cwd=tmp_path)
    assert_ok(run)
    json.loads(run.stdout)  # one summary: rank 0's
    one, two = datasets(tmp_path / "one.h5"), datasets(tmp_path / "two.h5")
    assert set(one) == set(two) and any(k.endswith("adv_loss") for k in two)
    for key in one:
        np.testing.assert_array_equal(two[key], one[key], err_msg=key)
    assert list(tmp_path.glob("*.partial.h5")) == []


@pytest.mark.slow
def test_cosine_two_processes_equals_one_exactly(digits_run, tmp_path):
    args = ["cosine", str(digits_run / "final.pt"), "--eps", "0.1", "--range", "0:1:3"]
    args += ["--repeats", "2", "--samples", "16", "--json"]
    single(*args, "--out", str(tmp_path / "one.h5"))
    assert_ok(torchrun(*args, "--out", "two.h5", cwd=tmp_path))
    one, two = datasets(tmp_path / "one.h5"), datasets(tmp_path / "two.h5")
    assert set(one) == set(two)
    for key in one:
        np.testing.assert_array_equal(two[key], one[key], err_msg=key)


@pytest.mark.slow
def test_hessian_two_processes_matches_one(digits_run, tmp_path):
    # 3 batches of 40: rank 0 attacks and differentiates 2 of them, rank 1 one.
    args = ["hessian", str(digits_run / "final.pt"), "--eps", "0.1", "--top", "3"]
    args += ["--samples", "120", "--batch-size", "40", "--random-samples", "2", "--json"]
    single(*args, "--out", str(tmp_path / "one.h5"))
    assert_ok(torchrun(*args, "--out", "two.h5", cwd=tmp_path))
    one, two = datasets(tmp_path / "one.h5"), datasets(tmp_path / "two.h5")
    (group,) = {k.rsplit("/", 1)[0] for k in one}
    np.testing.assert_allclose(two[f"{group}/eigenvalues"], one[f"{group}/eigenvalues"], rtol=1e-5)
    assert one[f"{group}/eigenvalues"][0] > 0
    # The loss scale's random initializations are dealt whole to ranks: exact.
    np.testing.assert_array_equal(two[f"{group}/random_losses"], one[f"{group}/random_losses"])
    with h5py.File(tmp_path / "one.h5") as a, h5py.File(tmp_path / "two.h5") as b:
        assert math.isclose(b[group].attrs["loss"], a[group].attrs["loss"], rel_tol=1e-6)


@pytest.mark.slow
def test_train_two_processes_matches_one(tmp_path):
    # 1440 / 100 -> 15 batches, the last of 40: uneven shares are weighted exactly.
    args = ["train", "--arch", "lenet", "--width", "1", "--epochs", "1", "--eps", "0.1"]
    args += ["--batch-size", "100", "--optimizer", "sgd", "--lr", "0.05", "--json"]
    single(*args, "--out", str(tmp_path / "one"))
    run = torchrun(*args, "--out", "two", cwd=tmp_path)
    assert_ok(run)
    assert json.loads(run.stdout)["steps"] == 15
    one, two = datasets(tmp_path / "one/trace.h5"), datasets(tmp_path / "two/trace.h5")
    for key in ("trace/loss", "trace/robust_error", "trace/grad_norm", "trace/distance_from_init"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
    a = torch.load(tmp_path / "one/final.pt", weights_only=True)
    b = torch.load(tmp_path / "two/final.pt", weights_only=True)
    assert b["train"]["step"] == a["train"]["step"] == 15
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-4, atol=1e-5)
    assert not (tmp_path / "two/resume.pt").exists()


CONNECT = ["--epochs", "1", "--batch-size", "128", "--points", "4", "--samples", "48"]
CONNECT += ["--eps", "0.1", "--pgd-steps", "3", "--json"]


@pytest.mark.slow
def test_connect_evaluation_two_processes_equals_one_exactly(digits_run, tmp_path):
    ends = [str(digits_run / "epoch_001.pt"), str(digits_run / "final.pt")]
    single("connect", *ends, *CONNECT, "--out", str(tmp_path / "one.h5"))
    (curve,) = tmp_path.glob("*.curve.pt")
    shutil.copy(curve, tmp_path / "same.curve.pt")  # the same curve: only evaluation runs
    run = torchrun(
        "connect", *ends, *CONNECT, "--out", "two.h5", "--curve-out", "same.curve.pt", cwd=tmp_path
    )
    assert_ok(run)
    assert json.loads(run.stdout)["curve_status"] == "reused"
    one, two = datasets(tmp_path / "one.h5"), datasets(tmp_path / "two.h5")
    assert set(one) == set(two) and any("adv_test_loss" in k for k in one)
    for key in one:
        np.testing.assert_array_equal(two[key], one[key], err_msg=key)


@pytest.mark.slow
def test_curve_training_two_processes_matches_one(digits_run, tmp_path):
    ends = [str(digits_run / "epoch_001.pt"), str(digits_run / "final.pt")]
    single("connect", *ends, *CONNECT, "--out", str(tmp_path / "one.h5"))
    (curve,) = tmp_path.glob("*.curve.pt")
    run = torchrun(
        "connect", *ends, *CONNECT, "--out", "two.h5", "--curve-out", "two.curve.pt", cwd=tmp_path
    )
    assert_ok(run)
    assert json.loads(run.stdout)["curve_status"] == "trained"
    a = torch.load(curve, weights_only=True)
    b = torch.load(tmp_path / "two.curve.pt", weights_only=True)
    for name, value in a["control_points"].items():
        torch.testing.assert_close(b["control_points"][name], value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        b["train"]["history"]["loss"], a["train"]["history"]["loss"], rtol=1e-5
    )
    one, two = datasets(tmp_path / "one.h5"), datasets(tmp_path / "two.h5")
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-3, atol=1e-3, err_msg=key)


@pytest.mark.slow
def test_bad_input_ends_every_rank_with_exit_2(digits_run, tmp_path):
    # Only rank 0 reads the results file; its refusal must reach rank 1 too (no hang).
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    before = foreign.read_bytes()
    run = torchrun(
        "surface", str(digits_run / "final.pt"), "--range", "-1:1:3", "--samples", "16",
        "--out", str(foreign), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert errors and all("another tool" in line for line in errors)
    assert "exitcode  : 2" in run.stderr
    assert foreign.read_bytes() == before
    assert list(tmp_path.glob("*.partial.h5")) == []
