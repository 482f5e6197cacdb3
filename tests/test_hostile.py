"""Hostile files (issue #8): pickles that would run code, and files that carry our format
marks but hold unexpected types or shapes. Each is refused with one `Error:` line (exit 2),
nothing it carries is executed, and nothing is written."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape import store
from landscape.checkpoint import build_from_spec, model_spec, read_checkpoint, save_checkpoint
from landscape.cli import main
from landscape.connect import CURVE_FORMAT
from landscape.data import load_dataset
from landscape.util import BadInput

ROOT = Path(__file__).resolve().parents[1]


class Exploit:
    """Pickles as a call to os.system that would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class ExecExploit(Exploit):
    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else ""
        for p in sorted(folder.rglob("*"))
    }


def refused(args: list[str], expect: str, folder: Path, capsys: pytest.CaptureFixture) -> str:
    """Run the CLI in `folder`: exit 2, one `Error:` line holding `expect`, nothing written."""
    before = snapshot(folder)
    with pytest.raises(SystemExit) as exc:
        main(args)
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err, err
    assert expect in lines[0], lines[0]
    assert snapshot(folder) == before
    return lines[0]


@pytest.fixture()
def here(tmp_path: Path, digits_run: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(digits_run / "final.pt", tmp_path / "final.pt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------ pickles that run code

PAYLOADS = {
    "torch-zip-os-system": lambda m, p: torch.save({"state_dict": Exploit(m)}, p),
    "torch-zip-exec": lambda m, p: torch.save([ExecExploit(m)], p),
    "raw-pickle-os-system": lambda m, p: p.write_bytes(
        pickle.dumps({"model": Exploit(m)}, protocol=2)
    ),
    "raw-pickle-exec-v5": lambda m, p: p.write_bytes(pickle.dumps(ExecExploit(m), protocol=5)),
}

READERS = {
    "eval": (
        ["eval", "evil.pt", "--arch", "lenet", "--width", "1", "--dataset", "digits"],
        "refused",
    ),
    "eval-curve": (["eval", "evil.pt", "--t", "0.5"], "refused"),
    "info": (["info", "evil.pt"], "refused"),
    "hessian": (["hessian", "evil.pt", "--out", "r.h5"], "refused"),
    "connect-end": (["connect", "final.pt", "evil.pt", "--out", "r.h5"], "refused"),
    "surface-other": (
        ["surface", "final.pt", "--dirs", "interp", "--other", "evil.pt", "--out", "r.h5"],
        "refused",
    ),
}


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_checkpoint_pickle_is_not_run(payload, here, capsys):
    marker = here / "pwned"
    PAYLOADS[payload](marker, here / "evil.pt")
    for args, expect in READERS.values():
        refused(args, expect, here, capsys)
    assert not marker.exists()


def test_every_reader_refuses_a_code_pickle(here, capsys):
    marker = here / "pwned"
    torch.save({"state_dict": Exploit(marker)}, here / "evil.pt")
    for name, (args, expect) in READERS.items():
        line = refused(args, expect, here, capsys)
        assert "evil.pt" in line, name
    assert not marker.exists()


def test_one_error_line_from_a_real_process(here):
    """Out of process too (warnings reach stderr there): exactly one line, and no marker."""
    marker = here / "pwned"
    PAYLOADS["raw-pickle-exec-v5"](marker, here / "evil.pt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "landscape", "info", "evil.pt"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "Error: checkpoint evil.pt holds objects other than plain tensors and data; refused without loading them"
    ]
    assert not marker.exists()


def _cifar_root(root: Path, marker: Path, payload: str) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {b"data": Exploit(marker), b"labels": [0]}
    blob = {
        "os-system-v2": pickle.dumps(batch, protocol=2),
        "exec-v4": pickle.dumps({b"data": ExecExploit(marker)}, protocol=4),
        # GLOBAL posix.system, REDUCE: no class involved at all.
        "raw-opcodes": b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.",
    }[payload]
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(blob)


@pytest.mark.parametrize("payload", ["os-system-v2", "exec-v4", "raw-opcodes"])
def test_cifar_batch_pickle_is_not_run(payload, here, capsys):
    marker = here / "pwned"
    _cifar_root(here / "evil-data", marker, payload)
    with pytest.raises(BadInput, match="refusing to load it"):
        load_dataset("cifar10", "test", here / "evil-data")
    spec = model_spec("lenet", "cifar10", width=1)
    save_checkpoint(here / "cifar.pt", build_from_spec(spec), spec)
    refused(["eval", "cifar.pt", "--data-root", "evil-data"], "refusing to load it", here, capsys)
    refused(
        [
            "train",
            "--dataset",
            "cifar10",
            "--data-root",
            "evil-data",
            "--arch",
            "lenet",
            "--width",
            "1",
            "--epochs",
            "1",
            "--out",
            "run",
        ],
        "refusing to load it",
        here,
        capsys,
    )
    assert not marker.exists()


# ------------------------------------------------- checkpoints and curves with our format mark


def _ours(here: Path) -> dict:
    return read_checkpoint(here / "final.pt")


CHECKPOINT_MUTATIONS = {
    "no-spec": lambda c: c.pop("spec"),
    "spec-not-a-dict": lambda c: c.update(spec=[1, 2]),
    "spec-unknown-arch": lambda c: c["spec"].update(arch="alexnet"),
    "spec-width-text": lambda c: c["spec"].update(width="wide"),
    "spec-missing-input-shape": lambda c: c["spec"].pop("input_shape"),
    "spec-negative-classes": lambda c: c["spec"].update(num_classes=-3),
    "state-dict-a-list": lambda c: c.update(state_dict=[1, 2]),
    "state-dict-text-values": lambda c: c.update(state_dict={k: "x" for k in c["state_dict"]}),
    "train-a-list": lambda c: c.update(train=[1]),
}


@pytest.mark.parametrize("mutation", list(CHECKPOINT_MUTATIONS))
def test_checkpoint_with_our_mark_but_bad_contents(mutation, here, capsys):
    obj = _ours(here)
    CHECKPOINT_MUTATIONS[mutation](obj)
    torch.save(obj, here / "odd.pt")
    refused(["eval", "odd.pt"], "odd.pt", here, capsys)
    refused(["info", "odd.pt"], "odd.pt", here, capsys)
    refused(["hessian", "odd.pt", "--out", "r.h5"], "odd.pt", here, capsys)


def _curve(here: Path) -> dict:
    """A valid order-2 curve file's contents: the checkpoint at all three control points."""
    ckpt = _ours(here)
    state = ckpt["state_dict"]
    model = build_from_spec(ckpt["spec"])
    names = [n for n, _ in model.named_parameters()]
    return {
        "format": CURVE_FORMAT,
        "version": 1,
        "spec": ckpt["spec"],
        "order": 2,
        "control_points": {n: torch.stack([state[n]] * 3) for n in names},
        "endpoints": {},
        "train": {"config": {"eps": 0.0}, "epoch": 1, "step": 1},
    }


CURVE_MUTATIONS = {
    "points-not-a-dict": lambda c: c.update(control_points=[1, 2, 3]),
    "points-text": lambda c: c.update(control_points={k: "x" for k in c["control_points"]}),
    "point-misshapen": lambda c: c["control_points"].update({"conv1.weight": torch.zeros(3, 5, 5)}),
    "point-missing": lambda c: c["control_points"].pop("conv1.weight"),
    "order-text": lambda c: c.update(order="two"),
    "order-zero": lambda c: c.update(order=0),
    "no-spec": lambda c: c.pop("spec"),
}


def test_valid_curve_file_evaluates(here, capsys):
    torch.save(_curve(here), here / "curve.pt")
    with pytest.raises(SystemExit) as exc:
        main(["eval", "curve.pt", "--t", "0.5", "--samples", "20", "--eps", "0"])
    assert exc.value.code == 0, capsys.readouterr().err


@pytest.mark.parametrize("mutation", list(CURVE_MUTATIONS))
def test_curve_file_with_bad_contents(mutation, here, capsys):
    curve = _curve(here)
    CURVE_MUTATIONS[mutation](curve)
    torch.save(curve, here / "curve.pt")
    refused(["eval", "curve.pt", "--t", "0.5"], "curve.pt", here, capsys)


def test_connect_refuses_odd_curve_files(here, capsys):
    """A --curve-out to reuse or resume that `landscape connect` did not write."""
    args = ["connect", "final.pt", "final.pt", "--epochs", "1", "--points", "3"]
    args += ["--samples", "20", "--curve-out", "curve.pt", "--out", "r.h5"]
    for change in CURVE_MUTATIONS.values():
        curve = _curve(here)
        change(curve)
        torch.save(curve, here / "curve.pt")
        refused(args, "curve.pt", here, capsys)
    curve = _curve(here)
    curve.pop("endpoints")
    torch.save(curve, here / "curve.pt")
    refused(args, "curve.pt holds a curve with another config", here, capsys)
    (here / "curve.pt").unlink()
    torch.save([1, 2], here / "curve.resume.pt")
    refused(args, "curve.resume.pt holds an unfinished curve", here, capsys)


# -------------------------------------------------------------- HDF5 files with odd contents


@pytest.fixture(scope="module")
def stored(digits_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results file made by the commands: 1D and 2D surfaces and a Hessian run with vectors."""
    folder = tmp_path_factory.mktemp("stored")
    ckpt, out = str(digits_run / "final.pt"), str(folder / "base.h5")
    small = ["--samples", "40", "--device", "cpu", "--out", out]
    for args in (
        ["surface", ckpt, "--range", "-1:1:3", "--name", "line", *small],
        ["surface", ckpt, "--dim", "2", "--range", "-1:1:3", "--name", "plane", *small],
        [
            "hessian",
            ckpt,
            "--top",
            "2",
            "--random-samples",
            "0",
            "--save-vectors",
            "--name",
            "h",
            *small,
        ],
    ):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 0
    return folder / "base.h5"


def _replace(g: h5py.Group, name: str, value) -> None:
    del g[name]
    g[name] = value


H5_MUTATIONS = {
    # (group, what to do to it, what the error names)
    "strings-for-floats": (
        "/surface/line",
        lambda g: _replace(g, "loss", np.array([b"a", b"b", b"c"])),
        "loss",
    ),
    "x-2d": ("/surface/line", lambda g: _replace(g, "x", np.zeros((3, 2))), "x"),
    "missing-x": ("/surface/line", lambda g: g.__delitem__("x"), "x"),
    "plane-misshapen": (
        "/surface/plane",
        lambda g: _replace(g, "loss", np.zeros((2, 5))),
        "/surface/plane",
    ),
    "compound-dtype": (
        "/surface/line",
        lambda g: _replace(g, "error", np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])),
        "error",
    ),
    "hessian-strings": (
        "/hessian/h",
        lambda g: _replace(g, "eigenvalues", np.array([b"big", b"small"])),
        "eigenvalues",
    ),
    "hessian-missing-normalized": (
        "/hessian/h",
        lambda g: g.__delitem__("eigenvalues_normalized"),
        "eigenvalues_normalized",
    ),
}


def _mutated(stored: Path, here: Path, mutation: str) -> tuple[str, str]:
    group, change, names = H5_MUTATIONS[mutation]
    shutil.copy(stored, here / "r.h5")
    with h5py.File(here / "r.h5", "a") as f:
        change(f[group])
    return group, names


@pytest.mark.parametrize("mutation", list(H5_MUTATIONS))
def test_plot_and_report_refuse_odd_groups(mutation, stored, here, capsys):
    group, names = _mutated(stored, here, mutation)
    for args in (["plot", "r.h5", "--out", "figs"], ["report", "r.h5", "--out", "r.html"]):
        line = refused(args, names, here, capsys)
        assert group in line


def test_unmutated_file_plots(stored, here, capsys):
    shutil.copy(stored, here / "r.h5")
    with pytest.raises(SystemExit) as exc:
        main(["plot", "r.h5", "--out", "figs"])
    assert exc.value.code == 0, capsys.readouterr().err
    assert len(list((here / "figs").glob("*.png"))) >= 3


EIGEN_MUTATIONS = {
    "no-param-names": (lambda g: g.attrs.__delitem__("param_names"), "param_names"),
    "param-names-not-json": (
        lambda g: g.attrs.__setitem__("param_names", "conv1.weight"),
        "param_names",
    ),
    "vectors-too-short": (
        lambda g: _replace(g, "eigenvectors", g["eigenvectors"][:, :-1]),
        "eigenvectors",
    ),
    "vectors-strings": (
        lambda g: _replace(g, "eigenvectors", np.array([[b"a"], [b"b"]])),
        "eigenvectors",
    ),
    "vectors-1d": (lambda g: _replace(g, "eigenvectors", g["eigenvectors"][0]), "eigenvectors"),
    "loss-scale-text": (lambda g: g.attrs.__setitem__("loss_scale", "big"), "loss_scale"),
}


@pytest.mark.parametrize("mutation", list(EIGEN_MUTATIONS))
def test_eigen_directions_refuse_odd_hessian_runs(mutation, stored, here, capsys):
    change, names = EIGEN_MUTATIONS[mutation]
    shutil.copy(stored, here / "r.h5")
    with h5py.File(here / "r.h5", "a") as f:
        change(f["/hessian/h"])
    line = refused(
        [
            "surface",
            "final.pt",
            "--dirs",
            "eigen",
            "--hessian-group",
            "r.h5:/hessian/h",
            "--out",
            "s.h5",
            "--samples",
            "20",
        ],
        names,
        here,
        capsys,
    )
    assert "/hessian/h" in line


def test_dataset_where_a_group_belongs(stored, here, capsys):
    with h5py.File(here / "r.h5", "w") as f:
        f.attrs["landscape_format"] = store.FORMAT
        f["hessian"] = np.zeros(3)
        f["toy"] = np.zeros(3)
        f["surface/line"] = np.zeros(3)
        f["surface/line"].attrs["status"] = "complete"
    refused(
        [
            "surface",
            "final.pt",
            "--dirs",
            "eigen",
            "--hessian-group",
            "r.h5:/hessian/h",
            "--out",
            "s.h5",
        ],
        "no group '/hessian/h'",
        here,
        capsys,
    )
    refused(["plot", "r.h5", "--out", "figs"], "holds no group that a renderer knows", here, capsys)
    refused(
        ["plot", "r.h5", "/surface/line", "--out", "figs"],
        "no complete group matching",
        here,
        capsys,
    )
    # Writing a run where a dataset sits: refused before any work, the file kept.
    args = [
        "surface",
        "final.pt",
        "--range",
        "-1:1:3",
        "--samples",
        "20",
        "--name",
        "line",
        "--out",
        "r.h5",
    ]
    refused(args, "/surface/line is a dataset where a group belongs", here, capsys)
    refused(
        [*args, "--overwrite"], "/surface/line is a dataset where a group belongs", here, capsys
    )
    refused(
        ["toy", "liu-fig5", "--grid", "5", "--out", "r.h5"],
        "/toy is a dataset where a group belongs",
        here,
        capsys,
    )


SIDECAR_MUTATIONS = {
    "field-strings": lambda f: _replace(f, "loss", np.array([b"a", b"b", b"c"])),
    "field-misshapen": lambda f: _replace(f, "error", np.zeros((3, 3))),
    "done-strings": lambda f: _replace(f, "done", np.array([b"yes", b"no", b"no"])),
    "done-missing": lambda f: f.__delitem__("done"),
    "field-missing": lambda f: f.__delitem__("loss"),
}


@pytest.mark.parametrize("mutation", list(SIDECAR_MUTATIONS))
def test_resuming_an_odd_sidecar(mutation, stored, here, capsys):
    """A sidecar with the run's own config but odd contents is refused, and kept."""
    with h5py.File(stored, "r") as f:
        config = f["/surface/line"].attrs["config"]
    sidecar = here / "r.h5.surface.line.partial.h5"
    with h5py.File(sidecar, "w") as f:
        f.attrs["config"] = config
        f.attrs["status"] = "running"
        f["done"] = np.array([True, False, False])
        f["loss"] = np.array([1.0, np.nan, np.nan])
        f["error"] = np.array([0.5, np.nan, np.nan])
        SIDECAR_MUTATIONS[mutation](f)
    args = [
        "surface",
        "final.pt",
        "--range",
        "-1:1:3",
        "--name",
        "line",
        "--samples",
        "40",
        "--out",
        "r.h5",
    ]
    refused(args, "partial.h5", here, capsys)
    # --overwrite discards it and computes the run.
    with pytest.raises(SystemExit) as exc:
        main([*args, "--overwrite"])
    assert exc.value.code == 0 and not sidecar.exists()
    assert store.read_group(here / "r.h5", "/surface/line")[0]["done"].all()


def test_attributes_of_odd_types(here, capsys):
    """status and config that are not text: such a group is never taken as complete."""
    with h5py.File(here / "r.h5", "w") as f:
        f.attrs["landscape_format"] = store.FORMAT
        odd = f.create_group("surface/odd")
        odd.attrs["status"] = np.array([1, 2])
        odd["x"] = np.zeros((2, 2))
        good = f.create_group("surface/good")
        good.attrs["status"] = "complete"
        good.attrs["config"] = np.array([1.0, 2.0])
        for name, value in (
            ("x", np.linspace(-1, 1, 3)),
            ("loss", np.ones(3)),
            ("error", np.zeros(3)),
        ):
            good[name] = value
    assert dict(store.list_groups(here / "r.h5"))["/surface/odd"]["status"] is None
    with pytest.raises(SystemExit) as exc:
        main(["plot", "r.h5", "--out", "figs"])
    assert exc.value.code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (here / "figs").iterdir()) == ["surface_1d.png"]
    assert not store.find_complete(here / "r.h5", "/surface/good", {}, overwrite=True)
    with pytest.raises(BadInput, match="exists with another config"):
        store.find_complete(here / "r.h5", "/surface/good", {})


def test_a_refused_plot_leaves_no_figure_open(stored, here, capsys):
    import matplotlib.pyplot as plt

    _mutated(stored, here, "plane-misshapen")
    before = set(plt.get_fignums())
    refused(["plot", "r.h5", "--out", "figs"], "/surface/plane", here, capsys)
    assert set(plt.get_fignums()) == before
