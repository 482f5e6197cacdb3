"""Tests for landscape.models: shapes, hand-derived parameter counts, activations, errors, torch.func."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from landscape.models import (
    ACTIVATIONS,
    ARCHS,
    DEFAULT_WIDTH,
    MaxPool2x2,
    Normalize,
    activation_module,
    build_model,
)
from landscape.util import BadInput

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def make(arch, shape=(3, 32, 32), k=10, **kw):
    c = shape[0]
    mean = [0.1 * (i + 1) for i in range(c)]
    std = [0.2 + 0.1 * i for i in range(c)]
    return build_model(arch, input_shape=shape, num_classes=k, mean=mean, std=std, **kw)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# Parameter counts of single layers.
def conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def fc(n_in, n_out):
    return n_in * n_out + n_out


def expected_params(arch, shape, k, w):
    c, h, wd = shape
    if arch == "linear":
        return fc(c * h * wd, k)
    if arch == "mlp":
        return fc(c * h * wd, 16 * w) + fc(16 * w, 16 * w) + fc(16 * w, k)
    if arch == "lenet":
        return (
            conv(c, 2 * w, 5)
            + conv(2 * w, 4 * w, 5)
            + fc(4 * w * (h // 4) * (wd // 4), 64 * w)
            + fc(64 * w, k)
        )
    if arch == "vgg":
        # Table 2: Conv(4w)x2, Conv(8w)x2, Conv(16w)x3, Conv(32w)x3, Conv(32w)x3; each Conv + BN.
        widths = [4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32]
        total, cin = 0, c
        for m in widths:
            total += conv(cin, m * w, 3) + bn(m * w)
            cin = m * w
        return total + fc(32 * w, k)
    if arch == "resnet18":

        def block(cin, cout):
            main = conv(cin, cout, 3, bias=False) + bn(cout) + conv(cout, cout, 3, bias=False)
            short = conv(cin, cout, 1, bias=False) + bn(cout) if cin != cout else 0
            return main + bn(cout) + short

        stem = conv(c, 4 * w, 3, bias=False) + bn(4 * w)
        stages = 0
        cin = 4 * w
        for m in (4, 8, 16, 32):
            stages += block(cin, m * w) + block(m * w, m * w)
            cin = m * w
        return stem + stages + fc(32 * w, k)
    raise AssertionError(arch)


@pytest.mark.parametrize("arch,shape", list(itertools.product(ARCHS, SHAPES)))
def test_output_shape(arch, shape):
    model = make(arch, shape, k=7, width=2)
    assert model(torch.rand(3, *shape)).shape == (3, 7)


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("lenet", (1, 30, 30)),
        ("vgg", (3, 13, 17)),
        ("resnet18", (3, 13, 17)),
        ("lenet", (3, 13, 17)),
    ],
)
def test_other_input_sizes(arch, shape):
    model = make(arch, shape, k=4, width=1)
    assert model(torch.rand(2, *shape)).shape == (2, 4)
    assert n_params(model) == expected_params(arch, shape, 4, 1)


@pytest.mark.parametrize(
    "arch,width,shape",
    list(itertools.product(ARCHS, (1, 3), [(1, 28, 28), (3, 32, 32)])),
)
def test_param_count(arch, width, shape):
    assert n_params(make(arch, shape, k=10, width=width)) == expected_params(arch, shape, 10, width)


def test_param_count_anchors():
    # Worked by hand for MNIST LeNet at w=16: conv1 = 1*32*25 + 32, conv2 = 32*64*25 + 64,
    # fc1 = 196*16*1024 + 1024, fc2 = 1024*10 + 10.
    lenet = (1 * 32 * 25 + 32) + (32 * 64 * 25 + 64) + (196 * 16 * 1024 + 1024) + (1024 * 10 + 10)
    assert n_params(make("lenet", (1, 28, 28), width=16)) == lenet == 3_274_634
    # ResNet-18 at w=16 is the standard 64-channel CIFAR network (11,173,962 parameters).
    assert n_params(make("resnet18", (3, 32, 32), width=16)) == 11_173_962


@pytest.mark.parametrize("arch", ARCHS)
def test_default_width(arch):
    default = make(arch, (1, 28, 28))
    explicit = make(arch, (1, 28, 28), width=DEFAULT_WIDTH[arch])
    assert {k: v.shape for k, v in default.state_dict().items()} == {
        k: v.shape for k, v in explicit.state_dict().items()
    }


def test_linear_ignores_width():
    assert n_params(make("linear", width=1)) == n_params(make("linear", width=9))


@pytest.mark.parametrize("arch", ARCHS)
def test_first_is_normalize_last_is_linear(arch):
    model = make(arch, width=1)
    name, first = next(iter(model.named_children()))
    assert name == "normalize" and isinstance(first, Normalize)
    assert isinstance(model[-1], nn.Linear) and model[-1].out_features == 10


def test_normalize_values_and_state_dict():
    norm = Normalize([0.5, 0.25, 0.0], [0.5, 2.0, 4.0])
    x = torch.rand(2, 3, 4, 4)
    mean = torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 2.0, 4.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), (x - mean) / std)
    assert len(norm.state_dict()) == 0
    assert norm.double().mean.dtype == torch.float64
    model = make("lenet", width=1)
    assert not any(key.startswith("normalize") for key in model.state_dict())
    assert {n for n, _ in model.named_buffers()} == {"normalize.mean", "normalize.std"}


@pytest.mark.parametrize("arch", ARCHS)
def test_batchnorm_presence(arch):
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in make(arch, width=1).modules())
    assert has_bn == (arch in ("vgg", "resnet18"))


def test_activation_module_types():
    expected = {"relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "tanh": nn.Tanh}
    expected["swish"] = nn.SiLU
    for name in ACTIVATIONS:
        assert type(activation_module(name)) is expected[name]


@pytest.mark.parametrize("arch", ["mlp", "lenet", "vgg", "resnet18"])
def test_activations_differ(arch):
    x = torch.rand(4, 3, 8, 8)
    outputs = {}
    for act in ACTIVATIONS:
        torch.manual_seed(0)
        outputs[act] = make(arch, (3, 8, 8), width=1, activation=act).eval()(x)
    for a, b in itertools.combinations(ACTIVATIONS, 2):
        assert not torch.allclose(outputs[a], outputs[b]), (a, b)


@pytest.mark.parametrize("arch,count", [("mlp", 2), ("lenet", 3), ("vgg", 13), ("resnet18", 17)])
def test_activation_used_everywhere(arch, count):
    model = make(arch, (3, 8, 8), width=1, activation="tanh")
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    calls = []
    for m in model.modules():
        if isinstance(m, nn.Tanh):
            m.register_forward_hook(lambda *_: calls.append(1))
    model(torch.rand(2, 3, 8, 8))
    assert len(calls) == count


@pytest.mark.parametrize("arch", ARCHS)
def test_no_inplace_modules(arch):
    for act in ACTIVATIONS:
        for m in make(arch, (1, 8, 8), width=1, activation=act).modules():
            assert not getattr(m, "inplace", False), m


def test_names_follow_reference_code():
    keys = list(make("lenet", (1, 28, 28), width=1).state_dict())
    assert keys == [
        f"{layer}.{p}" for layer in ("conv1", "conv2", "fc1", "fc2") for p in ("weight", "bias")
    ]
    resnet = make("resnet18", width=1).state_dict()
    for key in (
        "conv1.weight",
        "bn1.running_var",
        "layer2.0.shortcut.0.weight",
        "layer4.1.bn2.bias",
        "classifier.weight",
    ):
        assert key in resnet
    assert "conv1.bias" not in resnet and "layer1.0.conv1.bias" not in resnet
    assert "feature_extractor.0.weight" in make("vgg", width=1).state_dict()


def test_vgg_names_do_not_depend_on_input_size():
    small, large = make("vgg", (3, 8, 8), width=1), make("vgg", (3, 32, 32), width=1)
    assert list(small.state_dict()) == list(large.state_dict())
    pools = [type(m) for m in small.feature_extractor if isinstance(m, (nn.MaxPool2d, nn.Identity))]
    assert pools == [MaxPool2x2] * 3 + [nn.Identity] * 2


@pytest.mark.parametrize("arch", ARCHS)
def test_deterministic_under_seed(arch):
    def build(seed):
        torch.manual_seed(seed)
        return make(arch, (1, 8, 8), width=1).state_dict()

    a, b, c = build(3), build(3), build(4)
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize(
    "call,match",
    [
        (dict(arch="alexnet"), r"'alexnet'.*linear, mlp, lenet, vgg, resnet18"),
        (dict(activation="gelu"), r"'gelu'.*relu, elu, softplus, tanh, swish"),
        (dict(width=0), r"width 0"),
        (dict(width=-2), r"width -2"),
        (dict(width=2.5), r"width 2.5"),
        (dict(num_classes=0), r"num_classes 0"),
        (dict(input_shape=(28, 28)), r"\(28, 28\)"),
        (dict(arch="lenet", input_shape=(1, 3, 3), mean=[0.0], std=[1.0]), r"3x3"),
        (dict(mean=[0.0]), r"3 channels"),
        (dict(std=[1.0, 0.0, 1.0]), r"std"),
    ],
)
def test_bad_input(call, match):
    kwargs = dict(
        arch="mlp",
        input_shape=(3, 32, 32),
        num_classes=10,
        mean=[0.0] * 3,
        std=[1.0] * 3,
    )
    kwargs.update(call)
    arch = kwargs.pop("arch")
    with pytest.raises(BadInput, match=match):
        build_model(arch, **kwargs)


@pytest.mark.parametrize("arch", ARCHS)
def test_width_zero_rejected_everywhere(arch):
    with pytest.raises(BadInput, match="width 0"):
        make(arch, width=0)


def test_unknown_activation_function():
    with pytest.raises(BadInput, match="'mish'"):
        activation_module("mish")


@pytest.mark.parametrize("arch", ARCHS)
def test_functional_call_matches(arch):
    model = make(arch, (1, 8, 8), width=1, activation="softplus").eval()
    x = torch.rand(5, 1, 8, 8)
    params = dict(model.named_parameters())
    torch.testing.assert_close(functional_call(model, params, (x,)), model(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_vmap_per_sample_grads(arch):
    model = make(arch, (1, 8, 8), width=1, activation="elu").eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([1, 4, 9])

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(3):
        single = grad(loss)(params, x[i], y[i])
        for k in params:
            torch.testing.assert_close(per_sample[k][i], single[k], rtol=1e-4, atol=1e-6)


# torch.func.jvp scripts its decompositions on first use, which torch itself now deprecates.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("arch", ["lenet", "resnet18"])
def test_forward_over_reverse_hvp(arch):
    torch.manual_seed(0)
    model = make(arch, (1, 8, 8), width=1, activation="swish").eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    v = {k: torch.randn_like(p) for k, p in params.items()}
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))

    def loss(p):
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    _, hvp = jvp(grad(loss), (params,), (v,))

    # Reference: reverse-over-reverse with plain autograd.
    leaves = {k: p.clone().requires_grad_(True) for k, p in params.items()}
    g = torch.autograd.grad(loss(leaves), list(leaves.values()), create_graph=True)
    dot = sum((gi * v[k]).sum() for gi, k in zip(g, leaves, strict=True))
    ref = torch.autograd.grad(dot, list(leaves.values()))
    for k, r in zip(leaves, ref, strict=True):
        torch.testing.assert_close(hvp[k], r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 9), (5, 1, 2, 3)])
def test_fast_max_pool_matches_max_pool2d_and_keeps_its_gradient(shape):
    """Without autograd the 2x2 pool takes its strided path: the values of max_pool2d
    (floor mode, NaN and inf kept). With autograd the standard kernel runs, so even tied
    maxima get PyTorch's gradient."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = float("nan"), float("inf")
    with torch.no_grad():
        fast = MaxPool2x2()(x)
    reference = torch.nn.functional.max_pool2d(x, 2)
    assert torch.equal(fast.isnan(), reference.isnan())
    assert torch.equal(fast.nan_to_num(), reference.nan_to_num())
    tied = torch.ones(shape, requires_grad=True)
    (MaxPool2x2()(tied) * 3).sum().backward()
    expected = torch.ones(shape, requires_grad=True)
    (torch.nn.functional.max_pool2d(expected, 2) * 3).sum().backward()
    assert torch.equal(tied.grad, expected.grad)
