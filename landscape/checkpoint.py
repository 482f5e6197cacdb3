"""Checkpoints: plain tensors and python data only, written atomically, read with
`torch.load(..., weights_only=True)` so that loading never runs code."""

from __future__ import annotations

import hashlib
import math
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import dataset_info, is_npz
from .foreign import (
    call_factory,
    default_normalize,
    import_factory,
    named_factories,
    normalization,
    parse_normalize,
    recognize,
    registered_factory,
)
from .models import (
    DM_CIFAR10_MEAN,
    DM_CIFAR10_STD,
    DM_CIFAR100_MEAN,
    DM_CIFAR100_STD,
    Normalize,
    arch_width,
    build_model,
    default_activation,
    parse_arch,
)
from .util import BadInput, atomic_path

FORMAT = "landscape-checkpoint"
VERSION = 1

# DeepMind's WideResNet standardizes inside with RobustBench's constants for CIFAR-10/100,
# and with the dataset's own mean and std elsewhere.
_DM_INNER = {
    "cifar10": (DM_CIFAR10_MEAN, DM_CIFAR10_STD),
    "cifar100": (DM_CIFAR100_MEAN, DM_CIFAR100_STD),
}


def model_spec(
    arch: str,
    dataset: str,
    *,
    width: int | None = None,
    activation: str | None = None,
    normalize: Any = None,
) -> dict[str, Any]:
    """Everything needed to rebuild the network without the data: arch, kwargs, input shape,
    classes and the normalization in front (`normalize`: dataset, none or (mean, std);
    default: the architecture's, `foreign.default_normalize`)."""
    parsed = parse_arch(arch)
    if not parsed.complete:
        raise BadInput(
            f"architecture {arch!r} needs its depth and widen factor, like {parsed.family}-34-10"
        )
    info = dataset_info(dataset)
    mode = parse_normalize(default_normalize(arch) if normalize is None else normalize)
    mean, std, label = normalization(mode, info.input_shape[0], info.mean, info.std)
    spec = {
        "arch": parsed.name,
        "width": arch_width(arch, width),
        "activation": activation or default_activation(arch),
        "dataset": info.name,
        "input_shape": list(info.input_shape),
        "num_classes": info.num_classes,
        "mean": mean,
        "std": std,
        "normalize": label,
    }
    if parsed.family == "dm-wrn":
        inner = _DM_INNER.get(info.name, (info.mean, info.std))
        spec["inner_mean"], spec["inner_std"] = list(inner[0]), list(inner[1])
    return spec


def user_spec(
    model: str, model_kwargs: Mapping[str, Any], dataset: str, normalize: Any = None
) -> dict[str, Any]:
    """The spec of a user's model (`--model`): its factory reference and keyword arguments,
    the data's shape and classes, and the normalization in front (default none)."""
    info = dataset_info(dataset)
    mode = parse_normalize("none" if normalize is None else normalize)
    mean, std, label = normalization(mode, info.input_shape[0], info.mean, info.std)
    return {
        "arch": "user",
        "width": None,
        "activation": None,
        "model": str(model).strip(),
        "model_kwargs": dict(model_kwargs),
        "dataset": info.name,
        "input_shape": list(info.input_shape),
        "num_classes": info.num_classes,
        "mean": mean,
        "std": std,
        "normalize": label,
    }


def build_from_spec(spec: Mapping[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """The network of `spec` (fresh initialization), on `device`. A user model's factory
    must have been named in this process (`foreign.import_factory`)."""
    if spec.get("model") is not None:
        net = call_factory(spec["model"], spec.get("model_kwargs") or {})
        model = nn.Sequential(
            OrderedDict([("normalize", Normalize(spec["mean"], spec["std"])), ("net", net)])
        )
        return model.to(device)
    model = build_model(
        spec["arch"],
        input_shape=tuple(spec["input_shape"]),
        num_classes=int(spec["num_classes"]),
        mean=spec["mean"],
        std=spec["std"],
        width=int(spec["width"]),
        activation=spec.get("activation", "relu"),
        inner_mean=spec.get("inner_mean"),
        inner_std=spec.get("inner_std"),
    )
    return model.to(device)


def build_stored(spec: Any, source: str, device: str | torch.device = "cpu") -> nn.Module:
    """`build_from_spec` for a spec read from a file: any fault is BadInput naming `source`."""
    if not isinstance(spec, Mapping):
        raise BadInput(f"{source} holds no model spec; it was not written by landscape")
    if spec.get("model") is not None:
        registered_factory(spec["model"])  # user code runs only when named in this command
    try:
        if not is_npz(spec.get("dataset")):  # an .npz need not be where it was trained
            dataset_info(spec.get("dataset"))
        return build_from_spec(spec, device)
    except BadInput as exc:
        raise BadInput(f"{source} has a bad model spec: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(
            f"{source} has a malformed model spec ({exc.__class__.__name__}: {exc}); it was not written by landscape"
        ) from exc


def check_stored(obj: Mapping[str, Any], source: str) -> nn.Module | None:
    """The model of a checkpoint that carries our format mark (weights not loaded), after
    checking its spec, state_dict and `train` entry; BadInput naming `source` otherwise.
    A user model's spec is not built here unless its factory was named in this process
    (None then: describing a file never imports the code it names)."""
    spec = obj.get("spec")
    user = isinstance(spec, Mapping) and spec.get("model") is not None
    named = user and str(spec["model"]).strip() in named_factories()
    model = None if user and not named else build_stored(spec, source)
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
    # DataParallel, DistributedDataParallel and torch.compile prefix the names.
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def foreign_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a file that is not a landscape checkpoint: a state_dict, bare or under
    `state_dict`/`model`/`model_state_dict`/`net`, its `module.` prefixes stripped."""
    p = Path(path)
    return _foreign_state(read_checkpoint(p), p)


def _as_reference(family: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` under this project's names for `family`: TRADES' unused `sub_block1` dropped,
    pytorch-cifar's ResNet-18 `linear` read as `classifier`."""
    out = dict(state)
    if family == "wrn":
        out = {k: v for k, v in out.items() if not k.startswith("sub_block1.")}
    if family == "resnet18" and "linear.weight" in out and "classifier.weight" not in out:
        out = {("classifier" + k[6:] if k.startswith("linear.") else k): v for k, v in out.items()}
    return out


def _hint(state: Mapping[str, torch.Tensor], tried: str) -> str:
    """What the keys of a state_dict that did not fit look like: the flags of the
    architecture they fit, or their first names."""
    found = recognize(state)
    if found is not None and found.arch != tried:
        return f"; its keys fit {found.flags()} ({found.convention})"
    return f"; its first keys: {', '.join(list(state)[:5])}"


def load_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, *, hint: str = ""
) -> None:
    """Load a state_dict strictly, turning mismatches into one readable error (`hint` is
    appended). BatchNorm's `num_batches_tracked`, absent from checkpoints of PyTorch < 0.4.1
    and unused in eval mode, may be missing."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
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
        raise BadInput(f"{source} does not fit the architecture: {'; '.join(parts)}{hint}")
    model.load_state_dict({**own, **state})


def _same_normalization(spec: Mapping[str, Any], normalize: Any) -> bool:
    info = dataset_info(spec["dataset"])
    mean, std, _ = normalization(
        parse_normalize(normalize), int(spec["input_shape"][0]), info.mean, info.std
    )
    return all(
        math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        for a, b in zip(mean + std, list(spec["mean"]) + list(spec["std"]))
    )


def _check_given(spec: Mapping[str, Any], given: Mapping[str, Any], path: Path) -> None:
    """Options given with a landscape checkpoint must agree with its spec."""
    for key, value in given.items():
        if value is None:
            continue
        stored = spec.get(key)
        if key == "arch":
            parsed = parse_arch(value)
            agree = parsed.name == stored or (
                not parsed.complete and parse_arch(stored).family == parsed.family
            )
        elif key == "dataset" and is_npz(value) and is_npz(stored):
            # The file may have moved: the same image shape and classes will do.
            info = dataset_info(value)
            agree = list(info.input_shape) == list(spec["input_shape"]) and (
                info.num_classes == spec["num_classes"]
            )
        elif key == "dataset":
            agree = value == stored
        elif key == "normalize":
            agree = _same_normalization(spec, value)
            stored = spec.get("normalize", f"{spec.get('mean')}/{spec.get('std')}")
        elif key == "model_kwargs":
            agree = dict(value) == dict(stored or {})
        else:
            agree = stored == value
        if not agree:
            raise BadInput(f"{path} was saved with {key}={stored!r}, not {value!r}")


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    arch: str | None = None,
    width: int | None = None,
    dataset: str | None = None,
    activation: str | None = None,
    model: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    normalize: Any = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Model (eval mode, on `device`) and its spec.

    Our own checkpoints carry their spec; options given with one must agree with it. A
    foreign state_dict loads with `arch` (or a user `model` factory, `model_kwargs`) and
    `dataset`; `width` (and a bare `wrn`'s depth) is read off its shapes when omitted;
    `normalize` (dataset, none, or mean/std) defaults to the architecture's
    (`foreign.default_normalize`). Naming `model` imports it (`foreign.import_factory`).
    Foreign specs carry `foreign: True`.
    """
    p = Path(path)
    if model is not None:
        if arch is not None or width is not None:
            raise BadInput("--model builds the network itself; drop --arch and --width")
        import_factory(model)
    obj = read_checkpoint(p, map_location="cpu")
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        stored_model = obj["spec"].get("model") if isinstance(obj.get("spec"), Mapping) else None
        if model is not None and stored_model != str(model).strip():
            # Before building: a factory other than the saved one is never called.
            raise BadInput(f"{p} was saved with model={stored_model!r}, not {model!r}")
        net = check_stored(obj, str(p))
        spec = dict(obj["spec"])
        if net is None:
            registered_factory(spec["model"])  # says: add --model
        given = {
            "arch": arch,
            "width": width,
            "dataset": dataset,
            "activation": activation,
            "model": None if model is None else str(model).strip(),
            "model_kwargs": model_kwargs if model is not None else None,
            "normalize": normalize,
        }
        _check_given(spec, given, p)
        load_state(net, obj["state_dict"], str(p))
        spec["train"] = obj.get("train", {})
    else:
        state = _foreign_state(obj, p)
        if (arch is None and model is None) or dataset is None:
            found = recognize(state)
            fits = "" if found is None else f" (its keys fit {found.flags()})"
            raise BadInput(
                f"{p} is not a landscape checkpoint; give --arch and --dataset{fits}, or "
                "--model and --dataset, to load it as a state_dict"
            )
        if model is not None:
            spec = user_spec(model, model_kwargs or {}, dataset, normalize)
            net = build_from_spec(spec)
            load_state(net.net, state, str(p))
        else:
            spec = _foreign_spec(state, arch, width, dataset, activation, normalize)
            net = build_from_spec(spec)
            family = parse_arch(spec["arch"]).family
            load_state(net, _as_reference(family, state), str(p), hint=_hint(state, spec["arch"]))
        spec["foreign"] = True
    net.to(device).eval()
    return net, spec


def _foreign_spec(
    state: Mapping[str, torch.Tensor],
    arch: str,
    width: int | None,
    dataset: str,
    activation: str | None,
    normalize: Any,
) -> dict[str, Any]:
    """The spec for a foreign state_dict of `arch`: a width (or a bare wrn's depth and
    width) left out is read off the tensors' shapes."""
    parsed = parse_arch(arch)
    found = recognize(state)
    same = found is not None and parse_arch(found.arch).family == parsed.family
    if not parsed.complete:
        if not same:
            raise BadInput(
                f"the keys do not show the depth and widen factor of {parsed.family}: "
                f"give them, like --arch {parsed.family}-34-10{_hint(state, parsed.family)}"
            )
        arch = found.arch
    if width is None and same and found.width is not None:
        width = found.width
    return model_spec(arch, dataset, width=width, activation=activation, normalize=normalize)


def load_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The `load_checkpoint` options that load another checkpoint as `spec`'s network."""
    if spec.get("model") is not None:
        return {
            "model": spec["model"],
            "model_kwargs": spec.get("model_kwargs") or {},
            "dataset": spec.get("dataset"),
            "normalize": spec.get("normalize"),
        }
    return {
        "arch": spec.get("arch"),
        "width": spec.get("width"),
        "dataset": spec.get("dataset"),
        "activation": spec.get("activation"),
        "normalize": spec.get("normalize"),
    }


def _accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(X).argmax(dim=1) == y).float().mean())


def check_normalization(
    model: nn.Module,
    spec: Mapping[str, Any],
    X: torch.Tensor,
    y: torch.Tensor,
    source: str,
    *,
    batch: int = 256,
) -> None:
    """Refuse a foreign model (`spec["foreign"]`) whose clean accuracy on the first `batch`
    examples is at chance while the other normalization (none <-> dataset) is not.

    At chance means at most 1/K plus three binomial standard deviations of the batch."""
    classes, n = int(spec["num_classes"]), min(batch, len(X))
    if not spec.get("foreign") or classes < 2 or n == 0:
        return
    xb, yb = X[:n], y[:n]
    chance = 1.0 / classes
    bar = chance + 3.0 * math.sqrt(chance * (1.0 - chance) / n)
    accuracy = _accuracy(model, xb, yb)
    if accuracy > bar:
        return
    current = spec.get("normalize", "dataset")
    other = "none" if current != "none" else "dataset"
    info = dataset_info(spec["dataset"])
    channels = int(spec["input_shape"][0])
    mean, std, _ = normalization(parse_normalize(other), channels, info.mean, info.std)
    layer = model.normalize
    kept = layer.mean.clone(), layer.std.clone()
    layer.mean.copy_(torch.tensor(mean).view_as(layer.mean))
    layer.std.copy_(torch.tensor(std).view_as(layer.std))
    try:
        other_accuracy = _accuracy(model, xb, yb)
    finally:
        layer.mean.copy_(kept[0])
        layer.std.copy_(kept[1])
    if other_accuracy > bar:
        raise BadInput(
            f"{source}: clean accuracy {accuracy:.1%} on the first {n} examples is at chance "
            f"(1/{classes}) with --normalize {current}, but {other_accuracy:.1%} with "
            f"--normalize {other}: load it with --normalize {other}"
        )


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
