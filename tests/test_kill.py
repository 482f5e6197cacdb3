"""Fault tolerance: the real CLI is killed with SIGKILL at several moments of training, of a
surface grid and of a connect run (curve training and evaluation), then rerun; the final
results must equal an uninterrupted run bit for bit, and every results file and checkpoint
in the output folder must be readable at every moment we look, before and after each kill.

Moments are chosen from the filesystem (kill as soon as a checkpoint, resume file, sidecar
or results file appears or changes) plus a few fixed delays after such an event. A kill
that comes too late (the process already finished) is allowed for the late moments only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape.checkpoint import build_from_spec, model_spec, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
LENET = model_spec("lenet", "digits", width=1)
# Files that are removed on purpose once their work is done (atomic temporaries aside).
TRANSIENT = ("resume.pt", ".partial.h5")
# Entries that record when, how long or under which path, not what was computed (a curve
# file's hash covers its training wall time).
TIMING = {"created", "elapsed_s", "wall_time", "checkpoint_sha256", "command", "checkpoint"}
POLL_S = 0.005  # how often a kill trigger is tested
CHECK_S = 0.05  # how often every file is read back (reading competes with the run for CPU)
TIMEOUT_S = 300


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT)
    e["OMP_NUM_THREADS"] = "1"
    return e


def is_temporary(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp")


def read_fully(p: Path) -> None:
    """Open a results file or checkpoint the way a user would and read all of it."""
    if p.suffix == ".h5":
        with h5py.File(p, "r") as f:
            datasets: list[h5py.Dataset] = []
            f.visititems(
                lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None
            )
            for ds in datasets:
                ds[()]
            dict(f.attrs)
    elif p.suffix == ".pt":
        torch.load(p, map_location="cpu", weights_only=True)


def settled(p: Path) -> bool:
    """A transient file that failed to open: gone now, or whole when read again."""
    time.sleep(0.05)
    try:
        read_fully(p)
    except FileNotFoundError:
        return True
    except Exception:  # noqa: BLE001 - unreadable twice: damaged, unless it is gone
        return not p.exists()
    return True


class Watcher:
    """Checks a folder: every file readable, and no finished file ever vanishes."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.seen: set[Path] = set()
        self.checks = 0

    def check(self) -> None:
        self.checks += 1
        for p in sorted(self.folder.rglob("*")):
            if not p.is_file() or is_temporary(p):
                continue
            try:
                read_fully(p)
            except FileNotFoundError:
                if not p.name.endswith(TRANSIENT):
                    pytest.fail(f"{p.name} vanished while the run was going")
                continue
            except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
                if p.name.endswith(TRANSIENT) and settled(p):
                    continue  # replaced or removed while being opened (h5py says OSError)
                pytest.fail(f"{p.name} unreadable at check {self.checks}: {exc!r}")
            if not p.name.endswith(TRANSIENT):
                self.seen.add(p)
        gone = [p.name for p in self.seen if not p.exists()]
        assert not gone, f"{gone} disappeared"


def run(
    args: list[str],
    watcher: Watcher,
    trigger: Callable[[], bool] | None = None,
    delay: float = 0.0,
) -> bool:
    """Run `landscape ARGS`, checking the folder throughout; SIGKILL it `delay` seconds after
    `trigger()` first holds. Returns whether it was killed (False: it finished, exit 0)."""
    log = watcher.folder / ".stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "landscape", *map(str, args)],
            env=env(),
            cwd=watcher.folder,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        start, fired, checked = time.monotonic(), None, 0.0
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if fired is None and trigger is not None and trigger():
                    fired = now
                if fired is not None and now - fired >= delay:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    break
                if now - checked >= CHECK_S:
                    watcher.check()
                    checked = time.monotonic()
                assert now - start < TIMEOUT_S, f"landscape {args[0]} ran past {TIMEOUT_S} s"
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    watcher.check()
    killed = proc.returncode == -signal.SIGKILL
    assert killed or proc.returncode == 0, log.read_text()
    return killed


def appears(path: Path) -> Callable[[], bool]:
    return path.exists


def changes(path: Path) -> Callable[[], bool]:
    """True once `path` is replaced (a new inode or mtime) after this call, or first appears."""

    def stamp() -> tuple[int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    before = stamp()
    return lambda: (s := stamp()) is not None and s != before


def equal_values(a, b, where: str = "") -> None:
    """Recursive bit-exact comparison of loaded checkpoints, skipping timing entries."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b) or (
            a.is_floating_point()
            and torch.equal(a.isnan(), b.isnan())
            and torch.equal(a.nan_to_num(), b.nan_to_num())
        ), where
    elif isinstance(a, dict):
        keys = set(a) - TIMING
        assert keys == set(b) - TIMING, f"{where}: {sorted(keys ^ (set(b) - TIMING))}"
        for k in keys:
            equal_values(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            equal_values(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def same_checkpoint(a: Path, b: Path) -> None:
    equal_values(torch.load(a, weights_only=True), torch.load(b, weights_only=True), a.name)


def same_h5(a: Path, b: Path, skip: tuple[str, ...] = ()) -> None:
    """Same groups, datasets (bit-exact, NaN where NaN) and attributes, timing aside."""

    def contents(path: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        with h5py.File(path, "r") as f:

            def visit(name: str, obj) -> None:
                if isinstance(obj, h5py.Dataset) and obj.name.rsplit("/", 1)[-1] not in skip:
                    out[name] = obj[()]
                for k, v in obj.attrs.items():
                    if k not in TIMING and k not in ("DIMENSION_LIST", "REFERENCE_LIST"):
                        out[f"{name}@{k}"] = v

            f.visititems(visit)
        return out

    ca, cb = contents(a), contents(b)
    assert set(ca) == set(cb), sorted(set(ca) ^ set(cb))
    for key, va in ca.items():
        vb = cb[key]
        if isinstance(va, np.ndarray) and va.dtype.kind == "f":
            np.testing.assert_array_equal(va, vb, err_msg=key)  # NaN == NaN here
        elif isinstance(va, np.ndarray):
            assert np.array_equal(va, vb), key
        else:
            assert va == vb, key


def compare_train(ref: Path, out: Path) -> None:
    names = sorted(p.name for p in ref.iterdir() if p.suffix in (".pt", ".h5"))
    assert names == sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".h5"))
    assert "final.pt" in names and "resume.pt" not in names
    for name in names:
        if name.endswith(".pt"):
            same_checkpoint(ref / name, out / name)
    same_h5(ref / "trace.h5", out / "trace.h5", skip=("wall_time",))


@pytest.mark.slow
def test_train_killed_at_checkpoint_writes_resumes_identically(tmp_path):
    args = [
        "train",
        "--dataset",
        "digits",
        "--arch",
        "lenet",
        "--width",
        1,
        "--eps",
        0.1,
        "--pgd-steps",
        5,
        "--epochs",
        3,
        "--save-epochs",
        "1,2",
        "--eval-every",
        1,
        "--eval-samples",
        100,
        # best.pt and the training-subset columns of /eval must survive kills too
        "--early-stop",
        "--eval-train-samples",
        50,
        "--out",
    ]
    ref = tmp_path / "ref"
    ref.mkdir()
    assert not run([*args, ref], Watcher(ref))

    out = tmp_path / "killed"
    out.mkdir()
    w = Watcher(out)
    # Mid-epoch 1: only init.pt exists; nothing to resume from.
    assert run([*args, out], w, appears(out / "init.pt"))
    assert not (out / "resume.pt").exists() and not (out / "final.pt").exists()
    # Right after epoch_001.pt is written, while trace.h5 and resume.pt follow.
    assert run([*args, out], w, appears(out / "epoch_001.pt"))
    # Right after a resume.pt write (the end of an epoch) ...
    killed = [run([*args, out], w, changes(out / "resume.pt"))]
    # ... a fixed delay into the next epoch, and as final.pt lands (resume.pt still there).
    killed.append(run([*args, out], w, changes(out / "resume.pt"), delay=0.2))
    killed.append(run([*args, out], w, appears(out / "final.pt")))
    assert killed[0], "the end-of-epoch kill must hit a running trainer"
    assert not run([*args, out], w)
    compare_train(ref, out)

    # A finished run is not retrained: rerunning changes nothing.
    def stamps() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")}

    before = stamps()
    assert not run([*args, out], w)
    assert stamps() == before


def random_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, build_from_spec(LENET), LENET)
    return path


@pytest.mark.slow
def test_surface_killed_while_recording_and_flushing_resumes_identically(tmp_path):
    ckpt = random_checkpoint(tmp_path / "model.pt", 0)
    args = [
        "surface",
        ckpt,
        "--dirs",
        "random",
        "--dim",
        2,
        "--range",
        "-1:1:15",
        "--eps",
        0.1,
        "--pgd-steps",
        5,
        "--samples",
        256,
        "--name",
        "s",
        "--out",
    ]
    ref = tmp_path / "ref"
    ref.mkdir()
    assert not run([*args, ref / "r.h5"], Watcher(ref))

    out = tmp_path / "killed"
    out.mkdir()
    w = Watcher(out)
    results, sidecar = out / "r.h5", out / "r.h5.surface.s.partial.h5"
    # As soon as the first sidecar flush lands (flush_seconds = 2: points recorded since).
    assert run([*args, results], w, appears(sidecar))
    with h5py.File(sidecar, "r") as f:
        first = int(f["done"][()].sum())
    # Mid-grid on this machine (about 5 s of points); a much faster one may finish the grid
    # before the first flush, and then this kill lands between the last flush and the merge.
    assert 0 < first <= 225 and not results.exists()
    # Between flushes of the resumed run: points recorded but not yet flushed are redone.
    run([*args, results], w, changes(sidecar), delay=0.5)
    # Just as the next flush replaces the sidecar, and when the results file appears
    # (the sidecar is removed right after).
    run([*args, results], w, changes(sidecar))
    run([*args, results], w, appears(results))
    assert not run([*args, results], w)
    assert not sidecar.exists()
    same_h5(ref / "r.h5", results)
    with h5py.File(results, "r") as f:
        g = f["/surface/s"]
        assert g["done"][()].all() and not g["nonfinite"][()].any()
        assert np.isfinite(g["adv_loss"][()]).all()


@pytest.mark.slow
def test_connect_killed_in_curve_training_and_evaluation_resumes_identically(tmp_path):
    a = random_checkpoint(tmp_path / "a.pt", 0)
    b = random_checkpoint(tmp_path / "b.pt", 1)
    args = [
        "connect",
        a,
        b,
        "--order",
        2,
        "--epochs",
        3,
        "--eps",
        0.1,
        "--pgd-steps",
        3,
        "--points",
        21,
        "--samples",
        256,
        "--name",
        "c",
        "--out",
    ]
    ref = tmp_path / "ref"
    ref.mkdir()
    assert not run([*args, ref / "r.h5"], Watcher(ref))

    out = tmp_path / "killed"
    out.mkdir()
    w = Watcher(out)
    results = out / "r.h5"
    curve, resume = out / "c.curve.pt", out / "c.curve.resume.pt"
    sidecar = out / "r.h5.connect.c.partial.h5"
    # Curve training: after its first epoch's resume file, then a little into the next.
    assert run([*args, results], w, appears(resume))
    assert not curve.exists()
    run([*args, results], w, changes(resume), delay=0.1)
    # Evaluation: as the curve file lands, at the first sidecar flush, at the results file.
    run([*args, results], w, appears(curve))
    run([*args, results], w, appears(sidecar))
    run([*args, results], w, appears(results))
    assert not run([*args, results], w)
    assert not sidecar.exists() and not resume.exists()
    same_checkpoint(ref / "c.curve.pt", curve)
    same_h5(ref / "r.h5", results)


def test_a_finished_grid_drops_the_sidecar_a_kill_left_behind(tmp_path):
    """A kill between the final results write and the sidecar's removal: the rerun is a
    cache hit and removes the leftover (only when it is this run's)."""
    import shutil

    from landscape import store

    path = tmp_path / "r.h5"
    grid = store.Grid(path, "/surface/g", {"a": 1}, (2,), ["loss"], flush_seconds=0)
    grid.record((0,), {"loss": 1.0})
    grid.record((1,), {"loss": 2.0})
    kept = tmp_path / "copy.h5"
    shutil.copyfile(grid.sidecar, kept)
    grid.finish(
        {"x": np.arange(2.0)}, {"config": store.canonical_config({"a": 1}), "status": "complete"}
    )
    shutil.copyfile(kept, grid.sidecar)
    assert store.find_complete(path, "/surface/g", {"a": 1})
    assert not grid.sidecar.exists()
    shutil.copyfile(kept, grid.sidecar)  # another run's partial work survives a hit
    with h5py.File(grid.sidecar, "r+") as f:
        f.attrs["config"] = "other"
    assert store.find_complete(path, "/surface/g", {"a": 1}) and grid.sidecar.exists()


def test_a_finished_training_drops_the_resume_file_a_kill_left_behind(tmp_path):
    from landscape.train import TrainConfig, train

    config = TrainConfig(arch="linear", epochs=1, eps=0.0, batch_size=256)
    train(config, tmp_path, device="cpu")
    assert not (tmp_path / "resume.pt").exists()
    (tmp_path / "resume.pt").write_bytes(b"left by a kill")
    again = train(config, tmp_path, device="cpu")
    assert again.final == tmp_path / "final.pt" and not (tmp_path / "resume.pt").exists()
