"""Checkpoints: plain tensors and python data only, written atomically, read with
`torch.load(..., weights_only=True)` so that loading never runs code."""

from __future__ import annotations

import hashlib
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import dataset_info
from .models import ARCHS, DEFAULT_WIDTH, build_model
from .util import BadInput, atomic_path

FORMAT = "landscape-checkpoint"
VERSION = 1


def model_spec(
    arch: str, dataset: str, *, width: int | None = None, activation: str = "relu"
) -> dict[str, Any]:
    """Everything needed to rebuild the network without the data: arch, kwargs, input shape, classes, normalization."""
    if arch not in ARCHS:
        raise BadInput(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    info = dataset_info(dataset)
    return {
        "arch": arch,
        "width": int(width if width is not None else DEFAULT_WIDTH[arch]),
        "activation": activation,
        "dataset": info.name,
        "input_shape": list(info.input_shape),
        "num_classes": info.num_classes,
        "mean": list(info.mean),
        "std": list(info.std),
    }


def build_from_spec(spec: Mapping[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    model = build_model(
        spec["arch"],
        input_shape=tuple(spec["input_shape"]),
        num_classes=int(spec["num_classes"]),
        mean=spec["mean"],
        std=spec["std"],
        width=int(spec["width"]),
        activation=spec.get("activation", "relu"),
    )
    return model.to(device)


def build_stored(spec: Any, source: str, device: str | torch.device = "cpu") -> nn.Module:
    """`build_from_spec` for a spec read from a file: any fault is BadInput naming `source`."""
    if not isinstance(spec, Mapping):
        raise BadInput(f"{source} holds no model spec; it was not written by landscape")
    try:
        dataset_info(spec.get("dataset"))
        return build_from_spec(spec, device)
    except BadInput as exc:
        raise BadInput(f"{source} has a bad model spec: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(
            f"{source} has a malformed model spec ({exc.__class__.__name__}: {exc}); it was not written by landscape"
        ) from exc


def check_stored(obj: Mapping[str, Any], source: str) -> nn.Module:
    """The model of a checkpoint that carries our format mark (weights not loaded), after
    checking its spec, state_dict and `train` entry; BadInput naming `source` otherwise."""
    model = build_stored(obj.get("spec"), source)
    state = obj.get("state_dict")
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise BadInput(f"{source} holds no state_dict of tensors; it was not written by landscape")
    if not isinstance(obj.get("train", {}), Mapping):
        raise BadInput(f"{source} has a malformed 'train' entry; it was not written by landscape")
    return model


def _plain_state(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def save_checkpoint(
    path: str | Path,
    model: nn.Module | Mapping[str, torch.Tensor],
    spec: Mapping[str, Any],
    *,
    train: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write a checkpoint atomically (temp file, then rename)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "spec": dict(spec),
        "state_dict": _plain_state(model),
        "train": dict(train or {}),
        **extra,
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict. Refuses missing, empty, truncated and unsafe files."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"checkpoint {p} does not exist")
    if p.stat().st_size == 0:
        raise BadInput(f"checkpoint {p} is empty")
    try:
        with warnings.catch_warnings():
            # A foreign pickle protocol only matters if the file is refused: say that alone.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BadInput(
            f"checkpoint {p} holds objects other than plain tensors and data; refused without loading them"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise BadInput(
            f"checkpoint {p} is truncated or not a torch checkpoint ({exc.__class__.__name__})"
        ) from exc
    return obj


def _foreign_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise BadInput(f"{path} is not a landscape checkpoint and holds no state_dict")
    # DistributedDataParallel and torch.compile prefix the names.
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a state_dict strictly, turning mismatches into one readable error."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatches (first {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
        raise BadInput(f"{source} does not fit the architecture: {'; '.join(parts)}")
    model.load_state_dict(state)


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    arch: str | None = None,
    width: int | None = None,
    dataset: str | None = None,
    activation: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Model (eval mode, on `device`) and its spec.

    Our own checkpoints carry their spec; `arch`/`width`/`dataset` given with one must
    agree with it. A foreign state_dict loads when `arch`, `width` and `dataset` are given.
    """
    p = Path(path)
    obj = read_checkpoint(p, map_location="cpu")
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        model = check_stored(obj, str(p))
        spec = dict(obj["spec"])
        given = {"arch": arch, "width": width, "dataset": dataset, "activation": activation}
        for key, value in given.items():
            if value is not None and spec.get(key) != value:
                raise BadInput(f"{p} was saved with {key}={spec.get(key)!r}, not {value!r}")
        state = obj["state_dict"]
    else:
        if arch is None or dataset is None:
            raise BadInput(
                f"{p} is not a landscape checkpoint; give --arch, --width and --dataset to load it as a state_dict"
            )
        spec = model_spec(arch, dataset, width=width, activation=activation or "relu")
        state = _foreign_state(obj, p)
        model = build_from_spec(spec, "cpu")
    load_state(model, state, str(p))
    model.to(device).eval()
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        spec["train"] = obj.get("train", {})
    return model, spec


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
