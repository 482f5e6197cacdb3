"""The bad-input table (issue #8): every command answers a bad input with exit 2, one
`Error:` line naming the problem, no traceback, and no partial output. Each case runs
in a folder holding every file it may touch (an earlier results file, a finished
training run); the folder must be byte-identical afterwards."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape import store
from landscape.checkpoint import build_from_spec, model_spec, read_checkpoint, save_checkpoint
from landscape.cli import main
from landscape.hessian import HessianResult, LossScale, TopEigenpairs, store_hessian

CLASH = '{"analysis": "another"}'

# (id, arguments, a distinctive piece of the one `Error:` line). Arguments name the
# workspace's files relative to it (the tests run inside it).
CASES: list[tuple[str, list[str], str]] = [
    # --- train: options
    ("train-eps-div-zero", ["train", "--eps", "8/0"], "divides by zero"),
    ("train-eps-negative", ["train", "--eps", "-1"], "finite number >= 0"),
    ("train-eps-text", ["train", "--eps", "abc"], "is not a number"),
    ("train-eps-nan", ["train", "--eps", "nan"], "finite number >= 0"),
    ("train-eps-inf", ["train", "--eps", "inf"], "finite number >= 0"),
    ("train-eps-max-text", ["train", "--eps", "0.1", "--eps-max", "x/255"], "is not a number"),
    ("train-unknown-dataset", ["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (
        "train-missing-dataset-files",
        ["train", "--dataset", "mnist", "--data-root", "emptydir"],
        "train-images-idx3-ubyte[.gz] not found",
    ),
    ("train-unknown-arch", ["train", "--arch", "alexnet"], "unknown architecture 'alexnet'"),
    ("train-unknown-activation", ["train", "--activation", "gelu2"], "gelu2"),
    ("train-zero-epochs", ["train", "--epochs", "0"], "--epochs"),
    ("train-unknown-optimizer", ["train", "--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
    ("train-bad-milestones", ["train", "--lr-schedule", "step", "--lr-milestones", "a,b"], "a,b"),
    ("train-exp-without-final", ["train", "--lr-schedule", "exponential"], "--lr-final"),
    ("train-unknown-eps-schedule", ["train", "--eps-schedule", "zigzag"], "zigzag"),
    (
        "train-save-epoch-beyond-end",
        ["train", "--epochs", "2", "--save-epochs", "5"],
        "--save-epochs",
    ),
    ("train-negative-weight-decay", ["train", "--weight-decay", "-1"], "--weight-decay"),
    ("train-bad-device", ["train", "--device", "tpu"], "'tpu'"),
    (
        "train-out-is-a-file",
        ["train", "--epochs", "1", "--out", "results.h5"],
        "results.h5",
    ),
    (
        "train-name-clash",
        ["train", "--arch", "lenet", "--width", "1", "--epochs", "3", "--out", "run"],
        "already holds a finished run with another config",
    ),
    (
        "train-junk-final-in-out",
        ["train", "--epochs", "1", "--out", "junkfinal"],
        "final.pt is not a checkpoint of this trainer",
    ),
    (
        "train-junk-resume-in-out",
        ["train", "--epochs", "1", "--out", "junkresume"],
        "resume.pt is not a resume file of this trainer",
    ),
    # --- eval: checkpoints
    ("eval-missing-checkpoint", ["eval", "nope.pt"], "nope.pt does not exist"),
    ("eval-empty-checkpoint", ["eval", "empty.pt"], "empty.pt is empty"),
    ("eval-truncated-checkpoint", ["eval", "truncated.pt"], "truncated.pt is truncated"),
    ("eval-text-checkpoint", ["eval", "text.pt"], "text.pt is truncated or not a torch checkpoint"),
    ("eval-list-checkpoint", ["eval", "list.pt"], "list.pt is not a landscape checkpoint"),
    (
        "eval-junk-dict-checkpoint",
        ["eval", "junk.pt", "--arch", "lenet", "--width", "1", "--dataset", "digits"],
        "junk.pt is not a landscape checkpoint and holds no state_dict",
    ),
    ("eval-mismatched-arch", ["eval", "final.pt", "--arch", "vgg"], "saved with arch='lenet'"),
    (
        "eval-foreign-state-dict-wrong-arch",
        ["eval", "bare.pt", "--arch", "mlp", "--width", "1", "--dataset", "digits"],
        "does not fit the architecture",
    ),
    (
        "eval-foreign-state-dict-wrong-width",
        ["eval", "bare.pt", "--arch", "lenet", "--width", "2", "--dataset", "digits"],
        "shape mismatches",
    ),
    (
        "eval-foreign-state-dict-no-arch",
        ["eval", "bare.pt"],
        "give --arch and --dataset (its keys fit --arch lenet --width 1 --normalize dataset)",
    ),
    ("eval-other-dataset", ["eval", "final.pt", "--dataset", "cifar10"], "saved with dataset"),
    ("eval-t-outside-curve", ["eval", "final.pt", "--t", "1.5"], "1.5"),
    ("eval-t-on-a-checkpoint", ["eval", "final.pt", "--t", "0.5"], "is not a landscape curve file"),
    ("eval-eps-nan", ["eval", "final.pt", "--eps", "nan"], "finite number >= 0"),
    # --- info, plot, report, figures: files
    ("info-missing", ["info", "nope.h5"], "nope.h5 does not exist"),
    ("info-foreign-results", ["info", "foreign.h5"], "HDF5 file of another tool"),
    ("info-text-file", ["info", "text.pt"], "text.pt is truncated or not a torch checkpoint"),
    ("info-junk-checkpoint", ["info", "list.pt"], "neither a landscape checkpoint"),
    ("plot-foreign-results", ["plot", "foreign.h5", "--out", "figs"], "HDF5 file of another tool"),
    ("plot-not-hdf5", ["plot", "final.pt", "--out", "figs"], "not a readable HDF5 file"),
    (
        "plot-bad-format",
        ["plot", "results.h5", "--format", "gif", "--out", "figs"],
        "unknown format 'gif'",
    ),
    (
        "plot-unknown-group",
        ["plot", "results.h5", "/nope", "--out", "figs"],
        "no complete group matching /nope",
    ),
    (
        "plot-nothing-to-draw",
        ["plot", "empty.h5", "--out", "figs"],
        "holds no group that a renderer knows",
    ),
    (
        "report-foreign-results",
        ["report", "foreign.h5", "--out", "r.html"],
        "HDF5 file of another tool",
    ),
    ("report-missing", ["report", "nope.h5", "--out", "r.html"], "nope.h5 does not exist"),
    ("report-not-hdf5", ["report", "final.pt", "--out", "r.html"], "not a readable HDF5 file"),
    (
        "info-truncated-results",
        ["info", "truncated.h5"],
        "truncated.h5 is not a readable HDF5 file",
    ),
    (
        "plot-truncated-results",
        ["plot", "truncated.h5", "--out", "figs"],
        "truncated.h5 is not a readable HDF5 file",
    ),
    (
        "figures-unknown-recipe",
        ["figures", "--only", "liu-fig99", "--runs", "runs", "--out", "figs"],
        "unknown recipe liu-fig99",
    ),
    # --- hessian
    ("hessian-top-zero", ["hessian", "final.pt", "--top", "0"], "--top"),
    ("hessian-top-too-large", ["hessian", "final.pt", "--top", "100000"], "100000"),
    ("hessian-no-param-matches", ["hessian", "final.pt", "--params", "nothing*"], "nothing*"),
    ("hessian-eps-inf", ["hessian", "final.pt", "--eps", "inf"], "finite number >= 0"),
    (
        "hessian-other-dataset",
        ["hessian", "final.pt", "--dataset", "imagenet"],
        "saved with dataset='digits'",
    ),
    (
        "hessian-unknown-dataset",
        ["hessian", "bare.pt", "--arch", "lenet", "--width", "1", "--dataset", "imagenet"],
        "unknown dataset 'imagenet'",
    ),
    (
        "hessian-missing-dataset-files",
        ["hessian", "mnist.pt", "--data-root", "emptydir"],
        "mnist: train-images",
    ),
    (
        "hessian-name-clash",
        ["hessian", "final.pt", "--name", "clash", "--out", "results.h5"],
        "exists with another config",
    ),
    (
        "hessian-foreign-out",
        ["hessian", "final.pt", "--out", "foreign.h5"],
        "HDF5 file of another tool (no landscape_format attribute); choose another --out",
    ),
    (
        "hessian-corrupt-out",
        ["hessian", "final.pt", "--out", "text.pt"],
        "not a readable HDF5 file",
    ),
    # --- cosine
    ("cosine-inverted-range", ["cosine", "final.pt", "--range", "1:0:5"], "is inverted"),
    ("cosine-zero-length-range", ["cosine", "final.pt", "--range", "0.5:0.5:5"], "has zero length"),
    ("cosine-zero-points", ["cosine", "final.pt", "--range", "0:1:0"], "asks for 0 points"),
    ("cosine-range-not-numbers", ["cosine", "final.pt", "--range", "a:b:c"], "must be two numbers"),
    ("cosine-range-nan", ["cosine", "final.pt", "--range", "nan:1:5"], "must have finite ends"),
    ("cosine-zero-repeats", ["cosine", "final.pt", "--repeats", "0"], "--repeats"),
    (
        "cosine-missing-hessian-group",
        ["cosine", "final.pt", "--hessian-group", "results.h5:/hessian/nope"],
        "no group '/hessian/nope'",
    ),
    (
        "cosine-name-clash",
        ["cosine", "final.pt", "--name", "clash", "--out", "results.h5"],
        "exists with another config",
    ),
    # --- surface
    ("surface-range-two-parts", ["surface", "final.pt", "--range", "-1:1"], "must be a:b:n"),
    (
        "surface-inverted-yrange",
        ["surface", "final.pt", "--dim", "2", "--yrange", "1:-1:5"],
        "--yrange '1:-1:5' is inverted",
    ),
    ("surface-yrange-1d", ["surface", "final.pt", "--yrange", "-1:1:5"], "--yrange needs --dim 2"),
    ("surface-dim-3", ["surface", "final.pt", "--dim", "3"], "--dim"),
    (
        "surface-eigen-group-without-vectors",
        ["surface", "final.pt", "--dirs", "eigen", "--hessian-group", "results.h5:/hessian/clash"],
        "holds no eigenvectors",
    ),
    (
        "surface-eigen-foreign-file",
        ["surface", "final.pt", "--dirs", "eigen", "--hessian-group", "foreign.h5:/hessian/x"],
        "HDF5 file of another tool",
    ),
    ("surface-interp-without-other", ["surface", "final.pt", "--dirs", "interp"], "--other"),
    (
        "surface-interp-other-arch",
        ["surface", "final.pt", "--dirs", "interp", "--other", "mlp.pt"],
        "mlp.pt",
    ),
    (
        "surface-pca-missing-trajectory",
        ["surface", "final.pt", "--dirs", "pca", "--trajectory", "nowhere"],
        "nowhere",
    ),
    (
        "surface-name-clash",
        ["surface", "final.pt", "--name", "clash", "--out", "results.h5"],
        "exists with another config",
    ),
    # --- smoothness
    ("smoothness-radii-from-zero", ["smoothness", "final.pt", "--radii", "0:1:5"], "needs a > 0"),
    ("smoothness-inverted-radii", ["smoothness", "final.pt", "--radii", "1:1e-3:5"], "is inverted"),
    ("smoothness-unknown-norm", ["smoothness", "final.pt", "--eps", "0.1", "--norms", "l3"], "l3"),
    (
        "smoothness-l2-eps-negative",
        ["smoothness", "final.pt", "--l2-eps", "-1"],
        "finite number >= 0",
    ),
    (
        "smoothness-name-clash",
        ["smoothness", "final.pt", "--name", "clash", "--out", "results.h5"],
        "exists with another config",
    ),
    # --- connect
    ("connect-order-zero", ["connect", "final.pt", "final.pt", "--order", "0"], "--order"),
    ("connect-one-point", ["connect", "final.pt", "final.pt", "--points", "1"], "--points"),
    (
        "connect-other-arch",
        ["connect", "final.pt", "mlp.pt"],
        "a curve joins two models of the same arch",
    ),
    ("connect-missing-end", ["connect", "final.pt", "nope.pt"], "nope.pt does not exist"),
    (
        "connect-bn-adv-at-eps-0",
        ["connect", "final.pt", "final.pt", "--bn-inputs", "adv"],
        "--bn-inputs adv needs --eps > 0",
    ),
    (
        "connect-curve-out-not-a-curve",
        [
            "connect",
            "final.pt",
            "final.pt",
            "--epochs",
            "1",
            "--points",
            "3",
            "--curve-out",
            "final.pt",
        ],
        "is not a landscape curve file",
    ),
    (
        "connect-name-clash",
        ["connect", "final.pt", "final.pt", "--name", "clash", "--out", "results.h5"],
        "exists with another config",
    ),
    # --- toy
    ("toy-unknown-figure", ["toy", "liu-fig99"], "liu-fig99"),
    ("toy-grid-too-small", ["toy", "kanai-fig2", "--grid", "2"], "--grid"),
    ("toy-eps-nan", ["toy", "kanai-fig2", "--eps", "nan"], "finite number >= 0"),
    (
        "toy-two-eps-for-kanai",
        ["toy", "kanai-fig2", "--eps", "0.1", "--eps", "0.2"],
        "takes one --eps",
    ),
    (
        "toy-foreign-out",
        ["toy", "liu-fig5", "--grid", "5", "--out", "foreign.h5"],
        "HDF5 file of another tool (no landscape_format attribute); choose another --out",
    ),
    (
        "toy-name-clash",
        ["toy", "liu-fig5", "--grid", "5", "--out", "results.h5"],
        "results.h5:/toy/liu-fig5 exists with another config",
    ),
    # --- anything
    ("unknown-command", ["frobnicate"], "frobnicate"),
    ("unknown-option", ["train", "--epoch", "3"], "--epoch"),
]


def _write_results(path: Path) -> None:
    """A results file of ours with one `clash` run per analysis, stored with another config
    (the Hessian run without eigenvectors)."""
    attrs = store.provenance(command="landscape test", config={"analysis": "another"})
    values = np.array([2.0, 1.0])
    run = HessianResult(
        matrix="hessian",
        loss=0.5,
        eigenpairs=TopEigenpairs(values, values, values * 0, None, "lanczos"),
        loss_scale=LossScale(np.ones(1), 1.0, "spec"),
        trace=None,
        density=None,
        n_hvp=10,
        wall_s=0.1,
        param_names=("fc2.weight",),
        param_shapes=((10, 64),),
    )
    store_hessian(path, "/hessian/clash", run, attrs)
    store.write_group(path, "/toy/liu-fig5", {"x": np.zeros(3)}, attrs)
    for analysis in ("cosine", "surface", "smoothness", "connect"):
        x = np.linspace(-1.0, 1.0, 3)
        store.write_group(
            path,
            f"/{analysis}/clash",
            {"x": x, "loss": x**2, "error": 0 * x, "done": np.ones(3, dtype=bool)},
            attrs,
        )


@pytest.fixture()
def workspace(tmp_path: Path, digits_run: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every file a case may name, in the current folder."""
    ckpt = digits_run / "final.pt"
    shutil.copy(ckpt, tmp_path / "final.pt")
    raw = ckpt.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"weights": "abc", "n": 3}, tmp_path / "junk.pt")
    torch.save(read_checkpoint(ckpt)["state_dict"], tmp_path / "bare.pt")
    spec = model_spec("mlp", "digits", width=1)
    save_checkpoint(tmp_path / "mlp.pt", build_from_spec(spec), spec)
    spec = model_spec("lenet", "mnist", width=1)
    save_checkpoint(tmp_path / "mnist.pt", build_from_spec(spec), spec)
    shutil.copytree(digits_run, tmp_path / "run")
    (tmp_path / "emptydir").mkdir()
    for folder, name in (("junkfinal", "final.pt"), ("junkresume", "resume.pt")):
        (tmp_path / folder).mkdir()
        torch.save([1, 2, 3], tmp_path / folder / name)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = [1]
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.attrs["landscape_format"] = store.FORMAT
    _write_results(tmp_path / "results.h5")
    results = (tmp_path / "results.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(results[: len(results) // 2])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` with the sha256 of its bytes (folders: empty)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else ""
        for p in sorted(folder.rglob("*"))
    }


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_bad_input(args: list[str], expect: str, capsys: pytest.CaptureFixture) -> str:
    """Exit 2, one `Error:` line holding `expect`, no traceback; returns the line."""
    code, _, err = run(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err and "internal error" not in err
    assert expect in lines[0], lines[0]
    return lines[0]


def test_table_is_large_and_distinct():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 40
    assert len({tuple(c[1]) for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("args", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(args: list[str], expect: str, workspace: Path, capsys: pytest.CaptureFixture):
    before = snapshot(workspace)
    assert_bad_input(args, expect, capsys)
    assert snapshot(workspace) == before  # no partial output, no earlier result lost
