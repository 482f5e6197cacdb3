"""Datasets read back from tiny files in their real on-disk formats; augmentation; batching."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from landscape.data import (
    DATASETS,
    DatasetInfo,
    augment,
    batches,
    dataset_info,
    load_dataset,
)
from landscape.util import BadInput

RNG = np.random.default_rng(0)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, as on yann.lecun.com."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int = 5, n_test: int = 3, gz: bool = False) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": RNG.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": RNG.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        if gz:
            with gzip.open(folder / f"{stem}.gz", "wb") as fh:
                fh.write(idx_bytes(array))
        else:
            (folder / stem).write_bytes(idx_bytes(array))
    return arrays


def assert_pixels(X: torch.Tensor, expected_uint8: np.ndarray, scale: float = 255.0) -> None:
    assert X.dtype == torch.float32
    assert X.min() >= 0 and X.max() <= 1
    torch.testing.assert_close(X, torch.from_numpy(expected_uint8).float() / scale, rtol=0, atol=0)


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 str and numpy globals under `numpy.core`, like the real
    CIFAR batches, which were pickled by Python 2."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str
    dispatch[type] = save_global


def cifar_batch(n: int, label_key: bytes, classes: int) -> dict:
    return {
        b"batch_label": b"training batch",
        label_key: [int(v) for v in RNG.integers(0, classes, n)],
        b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar10(folder: Path, sizes=(2, 3, 1, 2, 2), n_test: int = 3, py2: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for fname, n in zip(names, [*sizes, n_test], strict=True):
        batch = cifar_batch(n, b"labels", 10)
        with open(folder / fname, "wb") as fh:
            if py2:
                Py2Pickler(fh, protocol=2).dump(batch)
            else:
                pickle.dump(batch, fh, protocol=2)
        written[fname] = batch
    return written


def cifar_expected(batches_: list[dict], key: bytes) -> tuple[np.ndarray, np.ndarray]:
    X = np.concatenate([b[b"data"] for b in batches_]).reshape(-1, 3, 32, 32)
    return X, np.concatenate([b[key] for b in batches_])


# --- digits ---------------------------------------------------------------------------------


def test_digits_splits_range_and_determinism():
    from sklearn.datasets import load_digits

    Xtr, ytr = load_dataset("digits", "train")
    Xte, yte = load_dataset("digits", "test")
    assert Xtr.shape == (1440, 1, 8, 8) and ytr.shape == (1440,)
    assert Xte.shape == (357, 1, 8, 8) and yte.shape == (357,)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert Xtr.min() == 0 and Xtr.max() == 1
    bunch = load_digits()
    torch.testing.assert_close(Xte[:, 0].double(), torch.from_numpy(bunch.images[1440:] / 16))
    assert torch.equal(ytr, torch.from_numpy(bunch.target[:1440]))
    X2, y2 = load_dataset("digits", "train")
    assert torch.equal(Xtr, X2) and torch.equal(ytr, y2)


def test_digits_returns_fresh_tensors():
    X, y = load_dataset("digits", "test")
    X.zero_()
    y.zero_()
    X2, y2 = load_dataset("digits", "test")
    assert X2.max() == 1 and y2.max() == 9


def test_digits_constants_match_data():
    X, _ = load_dataset("digits", "train")
    info = dataset_info("digits")
    assert abs(X.double().mean().item() - info.mean[0]) < 1e-4
    assert abs(X.double().std(unbiased=False).item() - info.std[0]) < 1e-4


# --- dataset_info / argument errors ---------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_info_all(name):
    info = dataset_info(name)
    assert isinstance(info, DatasetInfo) and info.name == name
    c = info.input_shape[0]
    assert len(info.mean) == c and len(info.std) == c
    assert info.family == ("mnist-like" if c == 1 else "cifar-like")
    assert info.num_classes == (100 if name == "cifar100" else 10)
    assert info.input_shape[1:] == {"digits": (8, 8)}.get(
        name, (28, 28) if "mnist" in name else (32, 32)
    )


def test_unknown_name_lists_valid_ones(tmp_path):
    with pytest.raises(BadInput, match="unknown dataset 'imagenet'.*cifar10.*svhn"):
        dataset_info("imagenet")
    with pytest.raises(BadInput, match="unknown dataset"):
        load_dataset("imagenet", root=tmp_path)


def test_bad_split():
    with pytest.raises(BadInput, match="split 'val'"):
        load_dataset("digits", "val")


# --- MNIST / Fashion-MNIST ------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["torchvision", "flat"])
def test_mnist_idx(tmp_path, gz, layout):
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision" else tmp_path
    arrays = write_idx_set(folder, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        X, y = load_dataset("mnist", split, root=tmp_path)
        assert X.shape == (len(arrays[f"{prefix}-labels-idx1-ubyte"]), 1, 28, 28)
        assert_pixels(X, arrays[f"{prefix}-images-idx3-ubyte"][:, None])
        assert y.dtype == torch.int64
        assert y.tolist() == arrays[f"{prefix}-labels-idx1-ubyte"].tolist()


def test_fashion_mnist_idx(tmp_path):
    arrays = write_idx_set(tmp_path / "FashionMNIST" / "raw", gz=True)
    X, y = load_dataset("fashion-mnist", "test", root=str(tmp_path))
    assert_pixels(X, arrays["t10k-images-idx3-ubyte"][:, None])
    assert y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    # MNIST's folder is not Fashion's.
    with pytest.raises(BadInput, match="FashionMNIST"):
        load_dataset("fashion-mnist", "train", root=tmp_path / "elsewhere")


def test_mnist_missing_file_names_file_and_folders(tmp_path):
    with pytest.raises(BadInput) as err:
        load_dataset("mnist", "train", root=tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg and str(tmp_path) in msg
    assert "yann.lecun.com" in msg and "\n" not in msg


def test_mnist_truncated_idx(tmp_path):
    arrays = write_idx_set(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(arrays["train-images-idx3-ubyte"])[:-10])
    with pytest.raises(BadInput, match=f"{path}.*truncated"):
        load_dataset("mnist", "train", root=tmp_path)


def test_mnist_truncated_gzip(tmp_path):
    write_idx_set(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(BadInput, match=str(path)):
        load_dataset("mnist", "train", root=tmp_path)


def test_mnist_wrong_magic(tmp_path):
    write_idx_set(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0D  # float32 dtype code
    path.write_bytes(bytes(raw))
    with pytest.raises(BadInput, match=f"{path} is not a valid IDX file: magic 0x00000d01"):
        load_dataset("mnist", "test", root=tmp_path)


def test_mnist_count_mismatch(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(BadInput, match="3 images but .* 2 labels"):
        load_dataset("mnist", "test", root=tmp_path)


# --- CIFAR ----------------------------------------------------------------------------------


@pytest.mark.parametrize("py2", [False, True])
def test_cifar10_batches(tmp_path, py2):
    written = write_cifar10(tmp_path / "cifar-10-batches-py", py2=py2)
    X, y = load_dataset("cifar10", "train", root=tmp_path)
    ex, ey = cifar_expected([written[f"data_batch_{i}"] for i in range(1, 6)], b"labels")
    assert X.shape == (10, 3, 32, 32)
    assert_pixels(X, ex)
    assert y.tolist() == ey.tolist()
    X, y = load_dataset("cifar10", "test", root=tmp_path / "cifar-10-batches-py")
    ex, ey = cifar_expected([written["test_batch"]], b"labels")
    assert_pixels(X, ex)
    assert y.tolist() == ey.tolist()


def test_cifar_chw_order(tmp_path):
    written = write_cifar10(tmp_path, sizes=(1, 1, 1, 1, 1))
    X, _ = load_dataset("cifar10", "train", root=tmp_path)
    row = written["data_batch_1"][b"data"][0]
    # First 1024 bytes are the red plane, row-major.
    pixels = (X * 255).round().to(torch.uint8)
    assert pixels[0, 0, 0, 1] == row[1]
    assert pixels[0, 1, 2, 3] == row[1024 + 2 * 32 + 3]


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    written = {}
    for split, n in (("train", 4), ("test", 2)):
        batch = cifar_batch(n, b"fine_labels", 100)
        batch[b"coarse_labels"] = [0] * n
        batch[b"fine_labels"][0] = 99
        with open(folder / split, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        written[split] = batch
    for split in ("train", "test"):
        X, y = load_dataset("cifar100", split, root=tmp_path)
        ex, ey = cifar_expected([written[split]], b"fine_labels")
        assert_pixels(X, ex)
        assert y.tolist() == ey.tolist() and y[0] == 99


def test_cifar_str_keys(tmp_path):
    batch = {"data": RNG.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [3, 4]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    X, y = load_dataset("cifar10", "test", root=tmp_path)
    assert_pixels(X, batch["data"].reshape(-1, 3, 32, 32))
    assert y.tolist() == [3, 4]


def test_cifar_missing_file(tmp_path):
    with pytest.raises(BadInput) as err:
        load_dataset("cifar10", "train", root=tmp_path)
    msg = str(err.value)
    assert msg.startswith("cifar10: data_batch_1 not found (looked in ")
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg
    with pytest.raises(BadInput, match=r"cifar100: train not found.*cifar-100-python"):
        load_dataset("cifar100", "train", root=tmp_path)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    batch = {b"data": _Exploit(marker), b"labels": [0]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(BadInput, match="test_batch.*system"):
        load_dataset("cifar10", "test", root=tmp_path)
    assert not marker.exists()


def test_cifar_refuses_other_codecs(tmp_path):
    payload = b"\x80\x02c_codecs\nencode\nX\x04\x00\x00\x00eA==X\x06\x00\x00\x00base64\x86R."
    (tmp_path / "test_batch").write_bytes(payload)
    with pytest.raises(BadInput, match="not a readable CIFAR pickle"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_cifar_garbage_file(tmp_path):
    (tmp_path / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(BadInput, match=str(tmp_path / "test_batch")):
        load_dataset("cifar10", "test", root=tmp_path)


def test_cifar_wrong_shape(tmp_path):
    batch = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(BadInput, match=r"\(N, 3072\)"):
        load_dataset("cifar10", "test", root=tmp_path)


# --- SVHN -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["", "SVHN"])
def test_svhn_mat(tmp_path, sub):
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    n = 4
    X = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = np.array([[10], [1], [9], [10]], dtype=np.uint8)
    scipy.io.savemat(folder / "test_32x32.mat", {"X": X, "y": y})
    Xt, yt = load_dataset("svhn", "test", root=tmp_path)
    assert Xt.shape == (n, 3, 32, 32)
    assert_pixels(Xt, X.transpose(3, 2, 0, 1))
    assert (Xt[2, 1, 5, 7] * 255).round() == X[5, 7, 1, 2]
    assert yt.tolist() == [0, 1, 9, 0]


def test_svhn_missing_and_broken(tmp_path):
    with pytest.raises(BadInput, match=r"svhn: train_32x32.mat not found.*housenumbers"):
        load_dataset("svhn", "train", root=tmp_path)
    (tmp_path / "train_32x32.mat").write_bytes(b"\x00" * 50)
    with pytest.raises(BadInput, match="not a readable MATLAB file"):
        load_dataset("svhn", "train", root=tmp_path)


# --- augment --------------------------------------------------------------------------------


def cifar_like_batch(n: int = 64) -> torch.Tensor:
    # Strictly positive pixels so zero padding is told apart from the image.
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.1


def find_crop(padded: torch.Tensor, out: torch.Tensor) -> tuple[int, int, bool] | None:
    """The (top, left, flipped) whose crop of `padded` equals `out`, if any."""
    h, w = out.shape[-2:]
    for top in range(9):
        for left in range(9):
            crop = padded[:, top : top + h, left : left + w]
            if torch.equal(crop, out):
                return top, left, False
            if torch.equal(crop.flip(-1), out):
                return top, left, True
    return None


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion-mnist"])
def test_augment_identity_for_mnist_like(name):
    x = torch.rand(5, 1, 8, 8)
    assert augment(name, x, torch.Generator().manual_seed(0)) is x


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_augment_is_crop_and_flip(name):
    x = cifar_like_batch()
    out = augment(name, x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    found = [find_crop(padded[i], out[i]) for i in range(len(x))]
    assert all(f is not None for f in found)
    flipped = sum(f[2] for f in found)
    shifted = sum((f[0], f[1]) != (4, 4) for f in found)
    assert shifted > len(x) // 2
    if name == "svhn":
        assert flipped == 0
    else:
        assert 0 < flipped < len(x)


def test_augment_reproducible():
    x = cifar_like_batch()
    a = augment("cifar10", x, torch.Generator().manual_seed(3))
    b = augment("cifar10", x, torch.Generator().manual_seed(3))
    c = augment("cifar10", x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_unknown_name():
    with pytest.raises(BadInput, match="unknown dataset"):
        augment("imagenet", torch.zeros(1, 3, 32, 32), torch.Generator())


# --- batches --------------------------------------------------------------------------------


def test_batches_shuffled_cover_each_index_once():
    X = torch.arange(103, dtype=torch.float32)[:, None]
    y = torch.arange(103)
    seen = []
    for xb, yb in batches(X, y, 10, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(xb[:, 0].long(), yb) and len(yb) <= 10
        seen += yb.tolist()
    assert sorted(seen) == list(range(103)) and seen != list(range(103))


def test_batches_order_drop_last_and_reproducible():
    X, y = torch.zeros(25, 2), torch.arange(25)
    plain = [yb.tolist() for _, yb in batches(X, y, 10, shuffle=False)]
    assert plain == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    dropped = list(batches(X, y, 10, shuffle=False, drop_last=True))
    assert [len(yb) for _, yb in dropped] == [10, 10]

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return [yb.tolist() for _, yb in batches(X, y, 7, shuffle=True, generator=g)]

    assert run(5) == run(5)
    with pytest.raises(BadInput):
        batches(X, y, 0, shuffle=False)
    with pytest.raises(BadInput, match="25 samples but y has 3"):
        batches(X, y[:3], 5, shuffle=True)
