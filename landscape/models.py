"""The networks of Liu et al. (2020), appendix C.1 / Table 2, two small baselines, and the
zoo of adversarial-robustness checkpoints: the TRADES/MART/AWP WideResNet, DeepMind's
WideResNet of RobustBench and the pre-activation ResNet-18.

Every model is an `nn.Sequential` whose first submodule, `normalize`, maps inputs in
[0, 1] to the network's input (per-channel standardization, or the identity); its last
submodule is the final `nn.Linear` producing logits. Submodule names follow the
reference code, so its state_dicts load unchanged: the authors' code for LeNet, VGG and
ResNet-18 (liuchen11/AdversaryLossLandscape, `util/models.py`), TRADES' `wideresnet.py`
for `wrn-D-K`, RobustBench's `dm_wide_resnet.py` for `dm-wrn-D-K` and its `resnet.py`
for `preact-resnet18`. No activation is in-place, so `torch.func` transforms
(functional_call, vmap, jvp over grad) apply to every model.
"""

from __future__ import annotations

import functools
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from landscape.util import BadInput

__all__ = [
    "ACTIVATIONS",
    "ARCHS",
    "ARCH_NAMES",
    "DEFAULT_WIDTH",
    "ArchName",
    "BasicBlock",
    "MaxPool2x2",
    "Normalize",
    "activation_module",
    "arch_width",
    "build_model",
    "default_activation",
    "parse_arch",
]

# Liu et al.'s networks and the two baselines; ARCH_NAMES adds the zoo, whose WideResNets
# are named by depth D and widen factor K (wrn-34-10).
ARCHS = ("linear", "mlp", "lenet", "vgg", "resnet18")
PREACT_ARCHS = (
    "preact-resnet18",
    "preact-resnet18-bn",
    "preact-resnet18-v2",
    "preact-resnet18-v2-bn",
)
ARCH_NAMES = (*ARCHS, *PREACT_ARCHS, "wrn-D-K", "dm-wrn-D-K")
ACTIVATIONS = ("relu", "elu", "softplus", "tanh", "swish")
# Paper defaults (appendix C.1): LeNet w=16 on MNIST, VGG and ResNet-18 w=8 on CIFAR-10.
DEFAULT_WIDTH = {"linear": 1, "mlp": 4, "lenet": 16, "vgg": 8, "resnet18": 8}
# The pre-activation ResNet-18 of the robustness codes has 64..512 channels: w=16.
DEFAULT_WIDTH.update(dict.fromkeys(PREACT_ARCHS, 16))

# The constants RobustBench's dm_wide_resnet.py standardizes with, inside the model.
DM_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
DM_CIFAR10_STD = (0.2471, 0.2435, 0.2616)
DM_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
DM_CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# Table 2, VGG row: output channels in units of w; "M" is a 2x2 max-pool.
_VGG_LAYOUT = (4, 4, "M", 8, 8, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M")


class Normalize(nn.Module):
    """Per-channel `(x - mean) / std`.

    mean and std are non-persistent buffers: they follow `.to()` but stay out of the
    state_dict, which then holds only learned weights and BatchNorm statistics.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        means, stds = [float(m) for m in mean], [float(s) for s in std]
        if len(means) != len(stds):
            raise BadInput(f"mean has {len(means)} values but std has {len(stds)}")
        if not all(math.isfinite(s) and s > 0 for s in stds):
            raise BadInput(f"std {list(std)} must be finite and > 0 in every channel")
        # Checked as Python floats, so that models also build on the meta device.
        mean_t = torch.as_tensor(means, dtype=torch.float32)
        std_t = torch.as_tensor(stds, dtype=torch.float32)
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


class PreActBlock(nn.Module):
    """The pre-activation basic block of He et al. (2016) as pytorch-cifar names it: bn1,
    conv1, bn2, conv2 and a 1x1 `shortcut` convolution where the shape changes.

    `tap_activated` says what the shortcut convolution reads: the block input x
    (RobustBench's `PreActBlock`, Wong et al. 2020) or relu(bn1(x)) (pytorch-cifar,
    Rice et al. 2020, RobustBench's `PreActBlockV2`). Both have the same keys.
    """

    def __init__(
        self, in_planes: int, planes: int, stride: int, activation: str, tap_activated: bool
    ) -> None:
        super().__init__()
        self.tap_activated = tap_activated
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = activation_module(activation)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = activation_module(activation)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))
            if stride != 1 or in_planes != planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out if self.tap_activated else x)
        out = self.conv2(self.act2(self.bn2(self.conv1(out))))
        return out + skip


class WideBlock(nn.Module):
    """The WideResNet basic block of Zagoruyko & Komodakis as TRADES writes it: bn1, relu1,
    conv1, bn2, relu2, conv2 and `convShortcut` (1x1) when the channel count changes; the
    activated input feeds both paths then."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = activation_module(activation)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = activation_module(activation)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        skip = x if self.convShortcut is None else self.convShortcut(activated)
        return skip + out


class WideGroup(nn.Module):
    """TRADES' `NetworkBlock`: its blocks in `layer`."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int, act: str) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, act
                )
                for i in range(blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class DMBlock(nn.Module):
    """The block of DeepMind's WideResNet (RobustBench `dm_wide_resnet._Block`): like
    `WideBlock`, but its first convolution pads explicitly, TensorFlow's SAME: one pixel
    on every side at stride 1, one on the right and bottom only at stride 2."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = activation_module(activation)
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = activation_module(activation)
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            None
            if in_planes == out_planes
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )
        self.pad = (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu_0(self.batchnorm_0(x))
        out = self.conv_0(F.pad(activated, self.pad))
        out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
        skip = x if self.shortcut is None else self.shortcut(activated)
        return skip + out


class DMGroup(nn.Module):
    """RobustBench's `_BlockGroup`: its blocks in `block`."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int, act: str) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *(
                DMBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, act
                )
                for i in range(blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _wrn_blocks(depth: int) -> int:
    if depth < 10 or (depth - 4) % 6:
        raise BadInput(
            f"WideResNet depth {depth} must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...)"
        )
    return (depth - 4) // 6


def _init_like_trades(modules: list[tuple[str, nn.Module]]) -> None:
    """TRADES' WideResNet initialization: He-normal convolutions (fan-out), BatchNorm 1/0,
    zero Linear biases; Linear weights keep PyTorch's default."""
    for _, top in modules:
        for m in top.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)


def _wrn(
    c: int, h: int, w: int, k: int, width: int, act: str, *, depth: int
) -> list[tuple[str, nn.Module]]:
    blocks = _wrn_blocks(depth)
    channels = (16, 16 * width, 32 * width, 64 * width)
    modules: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(c, channels[0], 3, stride=1, padding=1, bias=False)),
        ("block1", WideGroup(blocks, channels[0], channels[1], 1, act)),
        ("block2", WideGroup(blocks, channels[1], channels[2], 2, act)),
        ("block3", WideGroup(blocks, channels[2], channels[3], 2, act)),
        ("bn1", nn.BatchNorm2d(channels[3])),
        ("relu", activation_module(act)),
        # The reference's avg_pool2d(8) on the 8x8 map of a 32x32 input; global on any size.
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(channels[3], k)),
    ]
    _init_like_trades(modules)
    return modules


def _dm_wrn(
    c: int,
    h: int,
    w: int,
    k: int,
    width: int,
    act: str,
    *,
    depth: int,
    inner_mean: Sequence[float],
    inner_std: Sequence[float],
) -> list[tuple[str, nn.Module]]:
    blocks = _wrn_blocks(depth)
    channels = (16, 16 * width, 32 * width, 64 * width)
    groups = [
        DMGroup(blocks, channels[i], channels[i + 1], 1 if i == 0 else 2, act) for i in range(3)
    ]
    return [
        # The reference standardizes inside the model, with constants outside its state_dict.
        ("standardize", Normalize(inner_mean, inner_std)),
        ("init_conv", nn.Conv2d(c, channels[0], 3, stride=1, padding=1, bias=False)),
        ("layer", nn.Sequential(*groups)),
        ("batchnorm", nn.BatchNorm2d(channels[3])),
        ("relu", activation_module(act)),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("logits", nn.Linear(channels[3], k)),
    ]


def _preact_resnet18(
    c: int, h: int, w: int, k: int, width: int, act: str, *, tap_activated: bool, final_bn: bool
) -> list[tuple[str, nn.Module]]:
    modules: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(c, 4 * width, 3, stride=1, padding=1, bias=False))
    ]
    in_planes = 4 * width
    for stage, (mult, stride) in enumerate(((4, 1), (8, 2), (16, 2), (32, 2)), start=1):
        planes = mult * width
        blocks = [
            PreActBlock(in_planes, planes, stride, act, tap_activated),
            PreActBlock(planes, planes, 1, act, tap_activated),
        ]
        modules.append((f"layer{stage}", nn.Sequential(*blocks)))
        in_planes = planes
    if final_bn:  # Rice et al.'s `bn_before_fc`
        modules += [("bn", nn.BatchNorm2d(in_planes)), ("act", activation_module(act))]
    return modules + [
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("linear", nn.Linear(in_planes, k)),
    ]


_BUILDERS: dict[str, Callable[..., list[tuple[str, nn.Module]]]] = {
    "linear": _linear,
    "mlp": _mlp,
    "lenet": _lenet,
    "vgg": _vgg,
    "resnet18": _resnet18,
    **{
        name: functools.partial(
            _preact_resnet18, tap_activated="-v2" in name, final_bn=name.endswith("-bn")
        )
        for name in PREACT_ARCHS
    },
}


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{what} {value!r} must be an integer >= 1")
    return value


_WRN_NAME = re.compile(r"(dm-)?wrn(?:-(\d+)-(\d+))?")


@dataclass(frozen=True)
class ArchName:
    """An architecture name taken apart: `family` is a fixed name (lenet, preact-resnet18,
    ...) or `wrn`/`dm-wrn`, whose `depth` and `width` (K) come from the name when given."""

    family: str
    depth: int | None = None
    width: int | None = None

    @property
    def name(self) -> str:
        """The canonical name: the family, or `wrn-D-K` when depth and width are known."""
        if self.depth is None or self.width is None:
            return self.family
        return f"{self.family}-{self.depth}-{self.width}"

    @property
    def complete(self) -> bool:
        return self.family not in ("wrn", "dm-wrn") or self.depth is not None


def parse_arch(arch: object) -> ArchName:
    """`arch` as an ArchName (case and surrounding blanks ignored); BadInput for an unknown one.

    A bare `wrn` or `dm-wrn` (depth and width left to be read off a state_dict) parses, but
    only `wrn-D-K` / `dm-wrn-D-K` builds."""
    key = str(arch).strip().lower()
    if key in _BUILDERS:
        return ArchName(key)
    match = _WRN_NAME.fullmatch(key)
    if match is None:
        raise BadInput(f"unknown architecture {arch!r}; choose one of {', '.join(ARCH_NAMES)}")
    family = "dm-wrn" if match.group(1) else "wrn"
    if match.group(2) is None:
        return ArchName(family)
    depth, width = int(match.group(2)), int(match.group(3))
    _wrn_blocks(depth)
    return ArchName(family, depth, _positive_int(width, f"{family} widen factor"))


def default_activation(arch: str) -> str:
    """swish for DeepMind's WideResNet (as its RobustBench entries), relu for the others."""
    return "swish" if parse_arch(arch).family == "dm-wrn" else "relu"


def arch_width(arch: str, width: int | None) -> int:
    """The width factor of `arch`: the K of wrn-D-K (a given `width` must agree), else
    `width` or the architecture's default."""
    parsed = parse_arch(arch)
    if parsed.family in ("wrn", "dm-wrn"):
        if not parsed.complete:
            raise BadInput(
                f"architecture {arch!r} needs its depth and widen factor, like {parsed.family}-34-10"
            )
        if width is not None and width != parsed.width:
            raise BadInput(
                f"width {width} disagrees with {parsed.name} (widen factor {parsed.width})"
            )
        return parsed.width
    return DEFAULT_WIDTH[parsed.family] if width is None else _positive_int(width, "width")


def build_model(
    arch: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    width: int | None = None,
    activation: str | None = None,
    inner_mean: Sequence[float] | None = None,
    inner_std: Sequence[float] | None = None,
) -> nn.Sequential:
    """Build `arch` for inputs of shape (C, H, W); the result maps images to logits (N, K).

    `mean`/`std` are the `normalize` layer in front (zeros/ones: the identity). Architectures
    (w = width, K = num_classes; Liu et al. 2020, Table 2):

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
      Its last layer is `classifier`; pytorch-cifar's `linear` is renamed on loading.
    - preact-resnet18[-v2][-bn]: the pre-activation ResNet-18 (stage widths as resnet18,
      default w=16) of RobustBench's `resnet.py`; `-v2` taps the shortcut after the
      first BN+activation (pytorch-cifar, Rice et al.), `-bn` adds BN+activation before
      the pool (Rice et al.'s `bn_before_fc`).
    - wrn-D-K: the WideResNet of TRADES/MART/AWP, depth D = 6n+4, widen factor K (the
      width; `width` must agree), channels 16, 16K, 32K, 64K; TRADES' initialization.
    - dm-wrn-D-K: DeepMind's WideResNet (RobustBench), default activation swish, with its
      own standardization by `inner_mean`/`inner_std` inside (default: RobustBench's
      CIFAR-10 constants) after `normalize`.

    Every network ends in a global average pool, which equals the references' fixed
    pools on 32x32 inputs and lets 8x8 and 28x28 inputs through. Other layers keep
    PyTorch's default initialization; LeNet, VGG and all Linear layers have biases,
    ResNet and WideResNet convolutions do not (see `BasicBlock`).
    """
    parsed = parse_arch(arch)
    width = arch_width(arch, width)
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
    activation = activation or default_activation(arch)
    activation_module(activation)  # fail on a bad name before building anything
    if parsed.family == "wrn":
        builder = functools.partial(_wrn, depth=parsed.depth)
    elif parsed.family == "dm-wrn":
        inner_mean = DM_CIFAR10_MEAN if inner_mean is None and c == 3 else inner_mean
        inner_std = DM_CIFAR10_STD if inner_std is None and c == 3 else inner_std
        if inner_mean is None or inner_std is None or len(inner_mean) != c or len(inner_std) != c:
            raise BadInput(f"{parsed.name} needs its inner mean and std for {c} channels")
        builder = functools.partial(
            _dm_wrn, depth=parsed.depth, inner_mean=inner_mean, inner_std=inner_std
        )
    else:
        builder = _BUILDERS[parsed.family]
    layers = builder(c, h, w, num_classes, width, activation)
    return nn.Sequential(OrderedDict([("normalize", Normalize(mean, std)), *layers]))
