"""landscape: loss-landscape analysis of adversarial training (Liu et al. 2020; Kanai et al.)."""

__version__ = "0.1.0"

from .attacks import Ensemble, attack_config, evaluate, fgsm, pgd  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .data import load_dataset  # noqa: E402
from .models import build_model  # noqa: E402
from .train import TrainConfig, train  # noqa: E402
from .util import BadInput  # noqa: E402

__all__ = [
    "BadInput",
    "Ensemble",
    "TrainConfig",
    "attack_config",
    "build_model",
    "evaluate",
    "fgsm",
    "load_checkpoint",
    "load_dataset",
    "pgd",
    "save_checkpoint",
    "train",
]
