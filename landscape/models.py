"""The networks of Liu et al. (2020), appendix C.1 / Table 2, plus two small baselines.

Every model is an `nn.Sequential` whose first submodule, `normalize`, maps inputs in
[0, 1] to standardized ones, so attacks and landscapes work in pixel space; its last
submodule is the final `nn.Linear` producing logits. Submodule names follow the
authors' code (liuchen11/AdversaryLossLandscape, `util/models.py`), so its LeNet, VGG
and ResNet-18 state_dicts load unchanged. No activation is in-place, so `torch.func`
transforms (functional_call, vmap, jvp over grad) apply to every model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from landscape.util import BadInput

__all__ = [
    "ACTIVATIONS",
    "ARCHS",
    "DEFAULT_WIDTH",
    "BasicBlock",
    "MaxPool2x2",
    "Normalize",
    "activation_module",
    "build_model",
]

ARCHS = ("linear", "mlp", "lenet", "vgg", "resnet18")
ACTIVATIONS = ("relu", "elu", "softplus", "tanh", "swish")
# Paper defaults (appendix C.1): LeNet w=16 on MNIST, VGG and ResNet-18 w=8 on CIFAR-10.
DEFAULT_WIDTH = {"linear": 1, "mlp": 4, "lenet": 16, "vgg": 8, "resnet18": 8}

# Table 2, VGG row: output channels in units of w; "M" is a 2x2 max-pool.
_VGG_LAYOUT = (4, 4, "M", 8, 8, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M")


class Normalize(nn.Module):
    """Per-channel `(x - mean) / std`.

    mean and std are non-persistent buffers: they follow `.to()` but stay out of the
    state_dict, which then holds only learned weights and BatchNorm statistics.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor([float(m) for m in mean], dtype=torch.float32)
        std_t = torch.as_tensor([float(s) for s in std], dtype=torch.float32)
        if mean_t.numel() != std_t.numel():
            raise BadInput(f"mean has {mean_t.numel()} values but std has {std_t.numel()}")
        if not bool(torch.all(std_t > 0)) or not bool(torch.all(torch.isfinite(std_t))):
            raise BadInput(f"std {list(std)} must be finite and > 0 in every channel")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def activation_module(name: str) -> nn.Module:
    """A fresh activation module: relu, elu, softplus, tanh or swish (= SiLU)."""
    factories = {
        "relu": nn.ReLU,
        "elu": nn.ELU,
        "softplus": nn.Softplus,
        "tanh": nn.Tanh,
        "swish": nn.SiLU,
    }
    key = str(name).strip().lower()
    if key not in factories:
        raise BadInput(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return factories[key]()


class BasicBlock(nn.Module):
    """The ResNet basic block of He et al.: two 3x3 conv + BN, identity or 1x1 shortcut.

    The convolutions have no bias, as in He et al., kuangliu/pytorch-cifar and the
    authors' code: each is followed by BatchNorm, which would cancel it.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = activation_module(activation)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = activation_module(activation)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def _linear(c: int, h: int, w: int, k: int, width: int, act: str) -> list[tuple[str, nn.Module]]:
    return [("flatten", nn.Flatten()), ("fc", nn.Linear(c * h * w, k))]


def _mlp(c: int, h: int, w: int, k: int, width: int, act: str) -> list[tuple[str, nn.Module]]:
    hidden = 16 * width
    return [
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(c * h * w, hidden)),
        ("act1", activation_module(act)),
        ("fc2", nn.Linear(hidden, hidden)),
        ("act2", activation_module(act)),
        ("fc3", nn.Linear(hidden, k)),
    ]


class MaxPool2x2(nn.MaxPool2d):
    """`nn.MaxPool2d(2)` (floor mode) with a fast path when autograd is off.

    The path takes the maximum of the window's four strided views: the same values as
    max_pool2d (NaN propagates), several times faster on a CPU, where max_pool2d always
    computes argmax indices, and cheap under vmap, which makes batched surface points
    about 1.5x faster on LeNet. With autograd on, the standard kernel runs, so gradients,
    and their choice among tied maxima, are PyTorch's own.
    """

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        h, w = x.shape[-2:]
        if h % 2 or w % 2:  # floor mode drops the last row or column
            x = x[..., : h // 2 * 2, : w // 2 * 2]
        top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
        return torch.maximum(top, torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def _lenet(c: int, h: int, w: int, k: int, width: int, act: str) -> list[tuple[str, nn.Module]]:
    if h < 4 or w < 4:
        raise BadInput(f"lenet needs inputs of at least 4x4 (two 2x2 max-pools); got {h}x{w}")
    # 5x5 convs with padding 2 keep the size; each floor-mode pool halves it.
    flat = 4 * width * (h // 4) * (w // 4)
    return [
        ("conv1", nn.Conv2d(c, 2 * width, 5, padding=2)),
        ("act1", activation_module(act)),
        ("pool1", MaxPool2x2()),
        ("conv2", nn.Conv2d(2 * width, 4 * width, 5, padding=2)),
        ("act2", activation_module(act)),
        ("pool2", MaxPool2x2()),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(flat, 64 * width)),
        ("act3", activation_module(act)),
        ("fc2", nn.Linear(64 * width, k)),
    ]


def _vgg(c: int, h: int, w: int, k: int, width: int, act: str) -> list[tuple[str, nn.Module]]:
    layers: list[nn.Module] = []
    channels = c
    for item in _VGG_LAYOUT:
        if item == "M":
            # Once the map is 1 pixel wide a pool would fail; an Identity in its slot keeps
            # the feature_extractor indices, hence parameter names, the same for every size.
            if min(h, w) >= 2:
                layers.append(MaxPool2x2())
                h, w = h // 2, w // 2
            else:
                layers.append(nn.Identity())
        else:
            out = int(item) * width
            layers += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.BatchNorm2d(out),
                activation_module(act),
            ]
            channels = out
    layers.append(nn.AdaptiveAvgPool2d(1))
    return [
        ("feature_extractor", nn.Sequential(*layers)),
        ("flatten", nn.Flatten()),
        ("classifier", nn.Linear(32 * width, k)),
    ]


def _resnet18(c: int, h: int, w: int, k: int, width: int, act: str) -> list[tuple[str, nn.Module]]:
    modules: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(c, 4 * width, 3, stride=1, padding=1, bias=False)),
        ("bn1", nn.BatchNorm2d(4 * width)),
        ("act1", activation_module(act)),
    ]
    in_planes = 4 * width
    for stage, (mult, stride) in enumerate(((4, 1), (8, 2), (16, 2), (32, 2)), start=1):
        planes = mult * width
        blocks = [
            BasicBlock(in_planes, planes, stride, act),
            BasicBlock(planes, planes, 1, act),
        ]
        modules.append((f"layer{stage}", nn.Sequential(*blocks)))
        in_planes = planes
    return modules + [
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("classifier", nn.Linear(32 * width, k)),
    ]


_BUILDERS = {
    "linear": _linear,
    "mlp": _mlp,
    "lenet": _lenet,
    "vgg": _vgg,
    "resnet18": _resnet18,
}


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{what} {value!r} must be an integer >= 1")
    return value


def build_model(
    arch: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    width: int | None = None,
    activation: str = "relu",
) -> nn.Sequential:
    """Build `arch` for inputs of shape (C, H, W); the result maps images to logits (N, K).

    Architectures (w = width, K = num_classes; Liu et al. 2020, Table 2):

    - linear: Flatten, Linear(C*H*W, K). `width` is accepted and ignored.
    - mlp: Linear(d, 16w), act, Linear(16w, 16w), act, Linear(16w, K). Not in the
      papers: a cheap smooth model for tests and quick experiments.
    - lenet: Conv5x5(2w), act, M, Conv5x5(4w), act, M, FC(4w*(H/4)*(W/4), 64w), act,
      FC(64w, K); 28x28 gives the paper's FC(196w, 64w).
    - vgg: Table 2's 13 Conv3x3+BN+act layers with max-pools, global average pool,
      FC(32w, K). A max-pool meeting a 1-pixel map is replaced by an Identity, so
      8x8 and 28x28 inputs work.
    - resnet18: the CIFAR ResNet-18 of He et al. with stage widths 4w, 8w, 16w, 32w
      (w=16 is the standard 64-channel network), global average pool, FC(32w, K).

    Conv and Linear layers keep PyTorch's default initialization; LeNet, VGG and all
    Linear layers have biases, ResNet convolutions do not (see `BasicBlock`).
    """
    key = str(arch).strip().lower()
    if key not in _BUILDERS:
        raise BadInput(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    width = DEFAULT_WIDTH[key] if width is None else _positive_int(width, "width")
    num_classes = _positive_int(num_classes, "num_classes")
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise BadInput(f"input shape {shape!r} must be three positive integers (C, H, W)")
    c, h, w = shape
    if len(mean) != c or len(std) != c:
        raise BadInput(
            f"mean {list(mean)} and std {list(std)} need one value per channel ({c} channels)"
        )
    activation_module(activation)  # fail on a bad name before building anything
    layers = _BUILDERS[key](c, h, w, num_classes, width, activation)
    return nn.Sequential(OrderedDict([("normalize", Normalize(mean, std)), *layers]))
