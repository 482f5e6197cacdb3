"""landscape: loss-landscape analysis of adversarial training (Liu et al. 2020; Kanai et al.)."""

__version__ = "0.1.0"

# The analysis functions share their modules' names (DESIGN.md: `ls.hessian(...)`), so
# `landscape.hessian` is the function; import the module's other names with
# `from landscape.hessian import ...`, which always reaches the module.
from .attacks import Ensemble, attack_config, evaluate, fgsm, pgd  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .connect import connect  # noqa: E402
from .cosine import cosine  # noqa: E402
from .data import load_dataset  # noqa: E402
from .hessian import hessian  # noqa: E402
from .models import build_model  # noqa: E402
from .smoothness import smoothness  # noqa: E402
from .surface import surface  # noqa: E402
from .toy import toy  # noqa: E402
from .train import TrainConfig, train  # noqa: E402
from .util import BadInput  # noqa: E402

__all__ = [
    "BadInput",
    "Ensemble",
    "TrainConfig",
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
