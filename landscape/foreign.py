"""Models trained elsewhere: what a bare state_dict holds, the normalization in front of it,
and user-defined model classes named on the command line.

A state_dict is recognized from its key names and tensor shapes alone (`recognize`); the
normalization is always stated (`--normalize`), never guessed. User code is imported only
through `import_factory`, which runs when the user names the factory (`--model`); a spec
read from a file can name a factory but never imports it (`registered_factory`).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import PREACT_ARCHS, parse_arch
from .util import BadInput

__all__ = [
    "Recognized",
    "call_factory",
    "default_normalize",
    "forget_factories",
    "import_factory",
    "named_factories",
    "normalization",
    "parse_model_kwargs",
    "parse_normalize",
    "recognize",
    "registered_factory",
]

# Where the reference training code feeds [0, 1] pixels (TRADES, MART, AWP, RobustBench;
# DeepMind's WideResNet standardizes inside), `none`; Liu et al.'s code and pytorch-cifar
# standardize in the data pipeline, `dataset`. A user's model gets `none`.
_NONE_FAMILIES = ("wrn", "dm-wrn", *PREACT_ARCHS)


def default_normalize(arch: str | None) -> str:
    """The `--normalize` default of an architecture (None: a user model): none or dataset."""
    if arch is None:
        return "none"
    return "none" if parse_arch(arch).family in _NONE_FAMILIES else "dataset"


def parse_normalize(text: object) -> str | tuple[tuple[float, ...], tuple[float, ...]]:
    """`dataset`, `none`, or `MEAN/STD` with comma-separated (or scalar) mean and std, like
    `0.4914,0.4822,0.4465/0.2471,0.2435,0.2616` or `0.5/0.25`; the latter as two tuples."""
    raw = str(text).strip()
    if raw.lower() in ("dataset", "none"):
        return raw.lower()
    parts = raw.split("/")
    bad = (
        f"--normalize {raw!r} must be dataset, none or MEAN/STD "
        "(like 0.4914,0.4822,0.4465/0.2471,0.2435,0.2616 or 0.5/0.25)"
    )
    if len(parts) != 2:
        raise BadInput(bad)
    try:
        mean, std = (tuple(float(v) for v in p.split(",")) for p in parts)
    except ValueError:
        raise BadInput(bad) from None
    if not all(math.isfinite(v) for v in mean + std):
        raise BadInput(f"--normalize {raw!r}: mean and std must be finite numbers")
    if any(s <= 0 for s in std):
        raise BadInput(f"--normalize {raw!r}: std must be > 0 in every channel")
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise BadInput(f"--normalize {raw!r}: mean has {len(mean)} values but std {len(std)}")
    return mean, std


def normalization(
    mode: str | tuple[tuple[float, ...], tuple[float, ...]],
    channels: int,
    dataset_mean: tuple[float, ...],
    dataset_std: tuple[float, ...],
) -> tuple[list[float], list[float], str]:
    """Mean, std (one per channel) and a label (`dataset`, `none`, `M/S`) of a parsed mode."""
    if mode == "dataset":
        return list(dataset_mean), list(dataset_std), "dataset"
    if mode == "none":
        return [0.0] * channels, [1.0] * channels, "none"
    mean, std = mode
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise BadInput(
                f"--normalize has {len(values)} {name} values for {channels}-channel inputs"
            )
    mean = mean * channels if len(mean) == 1 else mean
    std = std * channels if len(std) == 1 else std
    label = ",".join(f"{v:g}" for v in mean) + "/" + ",".join(f"{v:g}" for v in std)
    return list(mean), list(std), label


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[+-]?\d+")


def _kwarg_value(text: str) -> Any:
    """int, float, bool or None when the text spells one, else the text: never evaluated."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def parse_model_kwargs(text: str | None) -> dict[str, Any]:
    """`depth=28,widen=10,act=swish` as keyword arguments (values: int, float, bool, None or
    str; nothing is evaluated)."""
    out: dict[str, Any] = {}
    if text is None or not str(text).strip():
        return out
    for item in str(text).split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise BadInput(
                f"--model-kwargs {text!r}: {item.strip()!r} is not NAME=VALUE "
                "(write depth=28,widen=10)"
            )
        if key in out:
            raise BadInput(f"--model-kwargs {text!r} gives {key!r} twice")
        out[key] = _kwarg_value(value.strip())
    return out


def _one_line(exc: BaseException) -> str:
    """An exception of user code as `Type: message` on one line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


# Factories the user named in this process (`import_factory`), by their --model text.
_FACTORIES: dict[str, Callable[..., Any]] = {}


def _split_ref(ref: str) -> tuple[str, str]:
    where, sep, name = str(ref).strip().rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise BadInput(
            f"--model {ref!r} must be MODULE:FACTORY or path/to/file.py:FACTORY "
            "(like mypkg.nets:make_net or nets.py:make_net)"
        )
    return where, name


def _import_file(path: Path, ref: str) -> Any:
    """Execute `path` as a fresh module; its folder is on sys.path while it runs, so it can
    import its neighbours."""
    if not path.is_file():
        raise BadInput(f"--model {ref!r}: {path} does not exist")
    name = f"landscape_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BadInput(f"--model {ref!r}: {path} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's module failed: say how, as bad input
        raise BadInput(f"--model {ref!r}: running {path} raised {_one_line(exc)}") from exc
    finally:
        sys.path.remove(folder)
    return module


def import_factory(ref: str) -> Callable[..., Any]:
    """Import the factory the user named with `--model MODULE:FACTORY` or
    `--model file.py:FACTORY` and remember it for this process (`registered_factory`); a second call reuses it."""
    if str(ref).strip() in _FACTORIES:
        return _FACTORIES[str(ref).strip()]
    where, name = _split_ref(ref)
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where).expanduser(), ref)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise BadInput(f"--model {ref!r}: cannot import {where!r} ({_one_line(exc)})") from exc
        except Exception as exc:  # the user's module failed while importing
            raise BadInput(f"--model {ref!r}: importing {where!r} raised {_one_line(exc)}") from exc
    factory = getattr(module, name, None)
    if factory is None:
        raise BadInput(f"--model {ref!r}: {where} has no {name!r}")
    if not callable(factory):
        raise BadInput(f"--model {ref!r}: {where}.{name} is not callable")
    _FACTORIES[str(ref).strip()] = factory
    return factory


def forget_factories() -> None:
    """Forget every named factory: a new command starts with none (the CLI's `main`)."""
    _FACTORIES.clear()


def named_factories() -> frozenset[str]:
    """The --model references named in this process."""
    return frozenset(_FACTORIES)


def registered_factory(ref: str) -> Callable[..., Any]:
    """The factory `ref` if the user named it in this process; BadInput otherwise (a file
    that names user code never gets it imported)."""
    factory = _FACTORIES.get(str(ref).strip())
    if factory is None:
        raise BadInput(
            f"the model was built by user code {ref!r}, which is imported only when named: "
            f"add --model {ref}"
        )
    return factory


def call_factory(ref: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """`factory(**kwargs)` of a named factory, checked to be an nn.Module."""
    factory = registered_factory(ref)
    try:
        module = factory(**kwargs)
    except TypeError as exc:
        raise BadInput(
            f"--model {ref} with --model-kwargs {dict(kwargs)}: {_one_line(exc)}"
        ) from exc
    except Exception as exc:  # the user's factory failed: report it as bad input
        raise BadInput(f"--model {ref}: the factory raised {_one_line(exc)}") from exc
    if not isinstance(module, nn.Module):
        raise BadInput(
            f"--model {ref}: the factory returned a {type(module).__name__}, not an nn.Module"
        )
    return module


@dataclass(frozen=True)
class Recognized:
    """What a state_dict's keys and shapes say about the network that wrote it.

    `arch` and `width` are the flags that rebuild it (`width` None where the name carries
    it or the network has none); `alternatives` are architectures with the same keys and
    shapes but another forward pass, which no state_dict can tell apart; `input_size`
    is H*W*C where the shapes fix it (fully connected inputs)."""

    arch: str
    width: int | None
    convention: str
    in_channels: int | None
    num_classes: int
    input_size: int | None = None
    alternatives: tuple[str, ...] = ()

    def flags(self) -> str:
        width = f" --width {self.width}" if self.width is not None else ""
        return f"--arch {self.arch}{width} --normalize {default_normalize(self.arch)}"


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many consecutive `prefix{i}.` blocks the keys hold."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in state):
        n += 1
    return n


def _dim(state: Mapping[str, torch.Tensor], key: str, axis: int) -> int | None:
    t = state.get(key)
    return int(t.shape[axis]) if t is not None and t.dim() > axis else None


def _wrn(state: Mapping[str, torch.Tensor]) -> Recognized | None:
    if not {"conv1.weight", "block1.layer.0.conv1.weight", "fc.weight"} <= state.keys():
        return None
    n, out = _count(state, "block1.layer."), _dim(state, "block1.layer.0.conv1.weight", 0)
    if out is None or out % 16:
        return None
    sub = (
        " (its unused sub_block1 is dropped)"
        if any(k.startswith("sub_block1.") for k in state)
        else ""
    )
    return Recognized(
        f"wrn-{6 * n + 4}-{out // 16}",
        None,
        "TRADES/MART/AWP WideResNet" + sub,
        _dim(state, "conv1.weight", 1),
        _dim(state, "fc.weight", 0),
    )


def _dm_wrn(state: Mapping[str, torch.Tensor]) -> Recognized | None:
    if not {"init_conv.weight", "layer.0.block.0.conv_0.weight", "logits.weight"} <= state.keys():
        return None
    n, out = _count(state, "layer.0.block."), _dim(state, "layer.0.block.0.conv_0.weight", 0)
    if out is None or out % 16:
        return None
    return Recognized(
        f"dm-wrn-{6 * n + 4}-{out // 16}",
        None,
        "DeepMind WideResNet (RobustBench dm_wide_resnet; swish unless trained with relu)",
        _dim(state, "init_conv.weight", 1),
        _dim(state, "logits.weight", 0),
    )


def _resnet18_stages(state: Mapping[str, torch.Tensor]) -> bool:
    """Four stages of two blocks, as ResNet-18 has."""
    return all(_count(state, f"layer{s}.") == 2 for s in range(1, 5))


def _resnet18(state: Mapping[str, torch.Tensor]) -> Recognized | None:
    if not {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight"} <= state.keys():
        return None
    if "layer1.0.bn1.weight" not in state or not _resnet18_stages(state):
        return None
    out = _dim(state, "conv1.weight", 0)
    if out is None or out % 4:
        return None
    if "linear.weight" in state:
        convention, last = "ResNet-18 of pytorch-cifar (last layer `linear`)", "linear.weight"
    elif "classifier.weight" in state:
        convention, last = (
            "ResNet-18 of landscape / Liu et al. (last layer `classifier`)",
            "classifier.weight",
        )
    else:
        return None
    return Recognized(
        "resnet18", out // 4, convention, _dim(state, "conv1.weight", 1), _dim(state, last, 0)
    )


def _preact(state: Mapping[str, torch.Tensor]) -> Recognized | None:
    if not {"conv1.weight", "layer1.0.bn1.weight", "linear.weight"} <= state.keys():
        return None
    if "bn1.weight" in state or not _resnet18_stages(state):
        return None
    out = _dim(state, "conv1.weight", 0)
    if out is None or out % 4:
        return None
    bn = "-bn" if "bn.weight" in state else ""
    return Recognized(
        f"preact-resnet18{bn}",
        None if out == 64 else out // 4,
        "pre-activation ResNet-18"
        + (" with BN before the classifier (Rice et al.)" if bn else "")
        + "; the keys cannot tell where the shortcut taps: -v2 for pytorch-cifar and Rice et al.",
        _dim(state, "conv1.weight", 1),
        _dim(state, "linear.weight", 0),
        alternatives=(f"preact-resnet18-v2{bn}",),
    )


def _vgg(state: Mapping[str, torch.Tensor]) -> Recognized | None:
    if not {"feature_extractor.0.weight", "classifier.weight"} <= state.keys():
        return None
    out = _dim(state, "feature_extractor.0.weight", 0)
    if out is None or out % 4:
        return None
    return Recognized(
        "vgg",
        out // 4,
        "VGG of Liu et al.",
        _dim(state, "feature_extractor.0.weight", 1),
        _dim(state, "classifier.weight", 0),
    )


def _lenet(state: Mapping[str, torch.Tensor]) -> Recognized | None:
    if set(state) != {
        f"{n}.{p}" for n in ("conv1", "conv2", "fc1", "fc2") for p in ("weight", "bias")
    }:
        return None
    out = _dim(state, "conv1.weight", 0)
    if out is None or out % 2 or _dim(state, "conv1.weight", 2) != 5:
        return None
    return Recognized(
        "lenet",
        out // 2,
        "LeNet of Liu et al.",
        _dim(state, "conv1.weight", 1),
        _dim(state, "fc2.weight", 0),
    )


def _mlp(state: Mapping[str, torch.Tensor]) -> Recognized | None:
    if set(state) != {f"fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}:
        return None
    out = _dim(state, "fc1.weight", 0)
    if out is None or out % 16:
        return None
    return Recognized(
        "mlp",
        out // 16,
        "landscape MLP",
        None,
        _dim(state, "fc3.weight", 0),
        input_size=_dim(state, "fc1.weight", 1),
    )


def _linear(state: Mapping[str, torch.Tensor]) -> Recognized | None:
    if set(state) != {"fc.weight", "fc.bias"}:
        return None
    return Recognized(
        "linear",
        None,
        "landscape linear model",
        None,
        _dim(state, "fc.weight", 0),
        input_size=_dim(state, "fc.weight", 1),
    )


_RECOGNIZERS = (_wrn, _dm_wrn, _resnet18, _preact, _vgg, _lenet, _mlp, _linear)


def recognize(state: Mapping[str, torch.Tensor]) -> Recognized | None:
    """The architecture whose keys and shapes `state` has (prefixes already stripped), or None."""
    for recognizer in _RECOGNIZERS:
        found = recognizer(state)
        if found is not None and found.num_classes is not None:
            return found
    return None
