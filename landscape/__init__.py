"""landscape: loss-landscape analysis of adversarial training (Liu et al. 2020; Kanai et al.).

The public names load on first use (PEP 562), so `import landscape` and the `landscape`
command's help cost no torch import; `landscape.hessian(...)` imports what it needs.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._version import __version__

# Public name -> the module defining it.
_EXPORTS = {
    "BadInput": "util",
    "Connect": "connect",
    "Cosine": "cosine",
    "Hessian": "hessian",
    "Inputs": "analysis",
    "Smoothness": "smoothness",
    "Surface": "surface",
    "Toy": "toy",
    "analyses": "analysis",
    "autoattack_error": "attacks",
    "load_inputs": "analysis",
    "plan": "analysis",
    "run": "analysis",
    "Ensemble": "attacks",
    "TrainConfig": "train",
    "attack_config": "attacks",
    "build_model": "models",
    "connect": "connect",
    "cosine": "cosine",
    "evaluate": "attacks",
    "fgsm": "attacks",
    "hessian": "hessian",
    "load_checkpoint": "checkpoint",
    "load_dataset": "data",
    "pgd": "attacks",
    "save_checkpoint": "checkpoint",
    "smoothness": "smoothness",
    "surface": "surface",
    "toy": "toy",
    "train": "train",
}
# The analysis functions share their modules' names (DESIGN.md: `ls.hessian(...)`), so
# `landscape.hessian` is the function; import the module's other names with
# `from landscape.hessian import ...`, which always reaches the module.
_SHADOWED = frozenset(name for name, module in _EXPORTS.items() if name == module)

__all__ = [  # the names of _EXPORTS (tests/test_cli.py checks they agree)
    "BadInput",
    "Connect",
    "Cosine",
    "Hessian",
    "Inputs",
    "Smoothness",
    "Surface",
    "Toy",
    "analyses",
    "autoattack_error",
    "load_inputs",
    "plan",
    "run",
    "Ensemble",
    "TrainConfig",
    "__version__",
    "attack_config",
    "build_model",
    "connect",
    "cosine",
    "evaluate",
    "fgsm",
    "hessian",
    "load_checkpoint",
    "load_dataset",
    "pgd",
    "save_checkpoint",
    "smoothness",
    "surface",
    "toy",
    "train",
]

if TYPE_CHECKING:
    from .analysis import Inputs, analyses, load_inputs, plan, run
    from .attacks import Ensemble, attack_config, autoattack_error, evaluate, fgsm, pgd
    from .checkpoint import load_checkpoint, save_checkpoint
    from .connect import Connect, connect
    from .cosine import Cosine, cosine
    from .data import load_dataset
    from .hessian import Hessian, hessian
    from .models import build_model
    from .smoothness import Smoothness, smoothness
    from .surface import Surface, surface
    from .toy import Toy, toy
    from .train import TrainConfig, train
    from .util import BadInput


def __getattr__(name: str) -> Any:
    """Import a public name's module, or a submodule (`landscape.distributed`), on first access."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)  # binds itself on the package
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(ModuleType):
    """Importing `landscape.hessian` (the module) binds it on the package; keep the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
