"""The zoo architectures: key names and parameter counts of their reference code, logits of
RobustBench's own architecture files, and each one through the CLI (info, eval, hessian)."""

from __future__ import annotations

import importlib.util
import json
import os
import zipfile
from pathlib import Path

import h5py
import pytest
import torch
from torch import nn

from landscape.checkpoint import load_checkpoint
from landscape.cli import main
from landscape.models import build_model
from landscape.util import BadInput

# The RobustBench release whose architecture files the logits test reads (.ci/run fetches it).
ROBUSTBENCH = "1.1.1"
WHEEL_ENV = "LANDSCAPE_ROBUSTBENCH_WHEEL"


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def make(arch, shape=(3, 32, 32), k=10, **kw):
    c = shape[0]
    return build_model(arch, input_shape=shape, num_classes=k, mean=[0.0] * c, std=[1.0] * c, **kw)


def bn(prefix):
    return [f"{prefix}.{p}" for p in ("weight", "bias", "running_mean", "running_var")] + [
        f"{prefix}.num_batches_tracked"
    ]


# --- key names, in the reference's order ----------------------------------------------------

WRN_10_1_KEYS = [
    "conv1.weight",
    *bn("block1.layer.0.bn1"),
    "block1.layer.0.conv1.weight",
    *bn("block1.layer.0.bn2"),
    "block1.layer.0.conv2.weight",
    *bn("block2.layer.0.bn1"),
    "block2.layer.0.conv1.weight",
    *bn("block2.layer.0.bn2"),
    "block2.layer.0.conv2.weight",
    "block2.layer.0.convShortcut.weight",
    *bn("block3.layer.0.bn1"),
    "block3.layer.0.conv1.weight",
    *bn("block3.layer.0.bn2"),
    "block3.layer.0.conv2.weight",
    "block3.layer.0.convShortcut.weight",
    *bn("bn1"),
    "fc.weight",
    "fc.bias",
]

DM_WRN_10_1_KEYS = [
    "init_conv.weight",
    *bn("layer.0.block.0.batchnorm_0"),
    "layer.0.block.0.conv_0.weight",
    *bn("layer.0.block.0.batchnorm_1"),
    "layer.0.block.0.conv_1.weight",
    *bn("layer.1.block.0.batchnorm_0"),
    "layer.1.block.0.conv_0.weight",
    *bn("layer.1.block.0.batchnorm_1"),
    "layer.1.block.0.conv_1.weight",
    "layer.1.block.0.shortcut.weight",
    *bn("layer.2.block.0.batchnorm_0"),
    "layer.2.block.0.conv_0.weight",
    *bn("layer.2.block.0.batchnorm_1"),
    "layer.2.block.0.conv_1.weight",
    "layer.2.block.0.shortcut.weight",
    *bn("batchnorm"),
    "logits.weight",
    "logits.bias",
]


def preact_keys(final_bn):
    """RobustBench resnet.py's PreActResNet(PreActBlock, [2, 2, 2, 2]) keys."""
    keys = ["conv1.weight"]
    for stage in range(1, 5):
        for block in range(2):
            p = f"layer{stage}.{block}"
            keys += [*bn(f"{p}.bn1"), f"{p}.conv1.weight", *bn(f"{p}.bn2"), f"{p}.conv2.weight"]
            if stage > 1 and block == 0:
                keys.append(f"{p}.shortcut.0.weight")
    return keys + (bn("bn") if final_bn else []) + ["linear.weight", "linear.bias"]


def pytorch_cifar_resnet18_keys():
    """pytorch-cifar's (and RobustBench resnet.py's) ResNet18() keys."""
    keys = ["conv1.weight", *bn("bn1")]
    for stage in range(1, 5):
        for block in range(2):
            p = f"layer{stage}.{block}"
            keys += [f"{p}.conv1.weight", *bn(f"{p}.bn1"), f"{p}.conv2.weight", *bn(f"{p}.bn2")]
            if stage > 1 and block == 0:
                keys += [f"{p}.shortcut.0.weight", *bn(f"{p}.shortcut.1")]
    return keys + ["linear.weight", "linear.bias"]


def reference_state(arch, model):
    """The model's state_dict under the reference code's names (pytorch-cifar's `linear`)."""
    state = model.state_dict()
    if arch.startswith("resnet18"):
        state = {k.replace("classifier.", "linear."): v for k, v in state.items()}
    return state


@pytest.mark.parametrize(
    "arch,kw,keys",
    [
        ("wrn-10-1", {}, WRN_10_1_KEYS),
        ("dm-wrn-10-1", {}, DM_WRN_10_1_KEYS),
        ("preact-resnet18", {}, preact_keys(False)),
        ("preact-resnet18-v2", {}, preact_keys(False)),
        ("preact-resnet18-bn", {}, preact_keys(True)),
        ("resnet18", {"width": 16}, pytorch_cifar_resnet18_keys()),
    ],
)
def test_reference_key_names(arch, kw, keys):
    assert list(reference_state(arch, make(arch, **kw))) == keys


# Parameter counts of the references (RobustBench 1.1.1 files, 3x32x32 inputs, 10 classes
# unless said): WideResNet / DMWideResNet, ResNet18(), PreActResNet18().
@pytest.mark.parametrize(
    "arch,k,count",
    [
        ("wrn-34-10", 10, 46_160_474),
        ("wrn-34-10", 100, 46_218_164),
        ("wrn-28-10", 10, 36_479_194),
        ("wrn-34-20", 10, 184_531_674),
        ("wrn-70-16", 10, 266_796_506),
        ("wrn-10-1", 10, 77_850),
        ("dm-wrn-28-10", 10, 36_479_194),
        ("dm-wrn-70-16", 10, 266_796_506),
        ("preact-resnet18", 10, 11_171_146),
        ("preact-resnet18-bn", 10, 11_172_170),
    ],
)
def test_parameter_counts(arch, k, count):
    with torch.device("meta"):
        model = make(arch, k=k)
    assert sum(p.numel() for p in model.parameters()) == count


def test_resnet18_at_width_16_is_the_standard_network():
    with torch.device("meta"):
        model = make("resnet18", width=16)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


def test_arch_names():
    model = make("WRN-16-2 ")
    assert model.conv1.out_channels == 16 and model.fc.in_features == 128
    for bad, match in (
        ("wrn-12-1", "6n\\+4"),
        ("wrn-34-0", "widen factor 0"),
        ("wrn-34", "unknown architecture"),
        ("dm-wrn", "needs its depth"),
    ):
        with pytest.raises(BadInput, match=match):
            make(bad)
    with pytest.raises(BadInput, match="disagrees with wrn-16-2"):
        make("wrn-16-2", width=4)


def test_dm_wrn_standardizes_inside_and_defaults_to_swish():
    model = make("dm-wrn-10-1")
    assert torch.allclose(model.standardize.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    assert isinstance(model.relu, nn.SiLU) and "standardize.mean" not in model.state_dict()
    assert isinstance(make("dm-wrn-10-1", activation="relu").relu, nn.ReLU)


def test_preact_variants_differ_only_in_the_forward_pass():
    torch.manual_seed(0)
    v1 = make("preact-resnet18", width=1).eval()
    v2 = make("preact-resnet18-v2", width=1).eval()
    v2.load_state_dict(v1.state_dict())
    x = torch.rand(2, 3, 32, 32)
    assert not torch.allclose(v1(x), v2(x))


@pytest.mark.parametrize("arch", ["wrn-10-1", "dm-wrn-10-1", "preact-resnet18-v2-bn"])
def test_small_inputs_work(arch):
    inner = {"inner_mean": [0.3], "inner_std": [0.4]} if arch.startswith("dm") else {}
    for shape in ((1, 8, 8), (1, 28, 28)):
        model = make(arch, shape, k=7, width=None if "wrn" in arch else 1, **inner)
        assert model(torch.rand(2, *shape)).shape == (2, 7)


# --- RobustBench's own architecture files ---------------------------------------------------


def _robustbench_wheel() -> Path | None:
    where = os.environ.get(WHEEL_ENV)
    if not where:
        return None
    path = Path(where)
    if path.is_dir():
        path = next(iter(sorted(path.glob(f"robustbench-{ROBUSTBENCH}-*.whl"))), None)
    return path if path is not None and path.is_file() else None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """RobustBench's wide_resnet.py, dm_wide_resnet.py and resnet.py, read from its wheel and
    loaded as standalone modules (they import only torch; the package is never imported)."""
    wheel = _robustbench_wheel()
    if wheel is None:
        pytest.skip(
            f"RobustBench's wheel is not here: `pip download robustbench=={ROBUSTBENCH} --no-deps "
            f"-d DIR` and set {WHEEL_ENV}=DIR (.ci/run does)"
        )
    folder = tmp_path_factory.mktemp("robustbench")
    modules = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in ("wide_resnet", "dm_wide_resnet", "resnet"):
            path = folder / f"{name}.py"
            path.write_bytes(archive.read(f"robustbench/model_zoo/architectures/{name}.py"))
            spec = importlib.util.spec_from_file_location(f"robustbench_reference_{name}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            modules[name] = module
    return modules


REFERENCE_CASES = {
    "wrn-16-2": lambda m: m["wide_resnet"].WideResNet(depth=16, widen_factor=2),
    "wrn-10-2": lambda m: m["wide_resnet"].WideResNet(depth=10, widen_factor=2, sub_block1=True),
    "dm-wrn-16-2": lambda m: m["dm_wide_resnet"].DMWideResNet(
        depth=16, width=2, activation_fn=m["dm_wide_resnet"].Swish
    ),
    "resnet18": lambda m: m["resnet"].ResNet18(),
    "preact-resnet18": lambda m: m["resnet"].PreActResNet18(),
    "preact-resnet18-v2-bn": lambda m: m["resnet"].PreActResNet(
        m["resnet"].PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True
    ),
}


@pytest.mark.parametrize("arch", list(REFERENCE_CASES))
def test_reference_logits(arch, reference, tmp_path):
    torch.manual_seed(0)
    ref = REFERENCE_CASES[arch](reference)
    # Non-trivial BatchNorm statistics and affines, so that eval mode uses them.
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    ref.eval()
    path = tmp_path / "ref.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    # The arch as the CLI takes it; wrn and resnet18 leave depth/width to the shapes.
    given = "wrn" if arch.startswith("wrn") else arch
    model, spec = load_checkpoint(path, arch=given, dataset="cifar10", normalize="none")
    assert spec["arch"] == arch and spec["normalize"] == "none"
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert expected.abs().max() > 0.05
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# --- every zoo architecture through the CLI -------------------------------------------------

CLI_ARCHS = [
    ("wrn-10-1", []),
    ("dm-wrn-10-1", []),
    ("preact-resnet18", ["--width", "1"]),
    ("preact-resnet18-v2-bn", ["--width", "1"]),
    ("resnet18", []),
]


@pytest.mark.slow
@pytest.mark.parametrize("arch,flags", CLI_ARCHS, ids=[a for a, _ in CLI_ARCHS])
def test_zoo_checkpoints_through_the_cli(arch, flags, tmp_path, capsys, monkeypatch):
    """Save under the reference names (bare, with `module.`, under `state_dict`), recognize
    with `info`, evaluate with `eval` (the clean error of the model itself), and run
    `hessian --top 3 --samples 32` on digits."""
    from landscape.attacks import attack_config, evaluate
    from landscape.data import dataset_info, load_dataset

    monkeypatch.chdir(tmp_path)
    width = 1 if arch != "wrn-10-1" and arch != "dm-wrn-10-1" else None
    digits = dataset_info("digits")
    # DeepMind's WideResNet standardizes inside with the dataset's own constants off CIFAR.
    inner = {"inner_mean": digits.mean, "inner_std": digits.std} if arch.startswith("dm") else {}
    torch.manual_seed(0)
    model = make(arch, (1, 8, 8), width=width, **inner).eval()
    state = reference_state(arch, model)
    torch.save(state, "bare.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, "prefixed.pt")
    torch.save({"state_dict": state, "epoch": 3}, "wrapped.pt")

    code, out, err = run(["info", "wrapped.pt", "--json"], capsys)
    assert code == 0, err
    described = json.loads(out)
    # A -v2 pre-activation network has the keys of the other: info names both.
    assert arch in (described["architecture"], described.get("same keys, other forward", "")[7:])
    assert "digits" in described["datasets it fits"]
    assert described["load with"].startswith(f"--arch {described['architecture']}")

    X, y = load_dataset("digits", "test")
    expected = evaluate(model, X[:64], y[:64], attack_config(0.0)).clean_error
    for name in ("bare.pt", "prefixed.pt", "wrapped.pt"):
        args = ["eval", name, "--arch", arch, *flags, "--dataset", "digits", "--normalize", "none"]
        code, out, err = run([*args, "--samples", "64", "--device", "cpu", "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["clean_error"] == pytest.approx(expected)

    args = ["hessian", "prefixed.pt", "--arch", arch, *flags, "--dataset", "digits"]
    args += ["--normalize", "none", "--top", "3", "--samples", "32", "--device", "cpu"]
    code, out, err = run([*args, "--random-samples", "1", "--tol", "1e-2", "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(out).values()
    assert len(row["top3"]) == 3 and row["top3"][0] >= row["top3"][1] >= row["top3"][2]
    with h5py.File("results.h5") as f:
        (group,) = f["hessian"].values()
        assert group.attrs["loss_scale_init"] == "spec"
        assert json.loads(group.attrs["config"])["foreign_model"]["arch"] == arch


def test_width_and_depth_are_read_off_the_shapes(tmp_path):
    torch.manual_seed(0)
    cifar = make("resnet18", width=16)
    torch.save(reference_state("resnet18", cifar), tmp_path / "r18.pt")
    model, spec = load_checkpoint(tmp_path / "r18.pt", arch="resnet18", dataset="cifar10")
    assert spec["width"] == 16 and spec["normalize"] == "dataset"
    torch.save(make("wrn-16-2").state_dict(), tmp_path / "wrn.pt")
    _, spec = load_checkpoint(tmp_path / "wrn.pt", arch="wrn", dataset="cifar10")
    assert spec["arch"] == "wrn-16-2" and spec["width"] == 2 and spec["normalize"] == "none"
    with pytest.raises(BadInput, match="its keys fit --arch wrn-16-2"):
        load_checkpoint(tmp_path / "wrn.pt", arch="dm-wrn", dataset="cifar10")


def test_a_mismatch_names_the_architecture_that_fits(tmp_path):
    torch.save(make("preact-resnet18-bn", width=1).state_dict(), tmp_path / "rice.pt")
    with pytest.raises(BadInput, match=r"unexpected.*keys fit --arch preact-resnet18-bn --width 1"):
        load_checkpoint(tmp_path / "rice.pt", arch="preact-resnet18", width=1, dataset="cifar10")


def test_trades_checkpoints_with_sub_block1_load(tmp_path):
    torch.manual_seed(0)
    model = make("wrn-10-1").eval()
    state = dict(model.state_dict())
    extra = make("wrn-10-1").block1.state_dict()
    state.update({f"sub_block1.{k}": v for k, v in extra.items()})
    # PyTorch < 0.4.1 saved no num_batches_tracked; eval mode does not need it.
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "trades.pt")
    loaded, _ = load_checkpoint(tmp_path / "trades.pt", arch="wrn-10-1", dataset="cifar10")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


def test_unknown_state_dict_lists_its_first_keys(tmp_path, capsys):
    torch.save(
        {"encoder.weight": torch.zeros(3, 4), "head.bias": torch.zeros(3)}, tmp_path / "x.pt"
    )
    code, out, err = run(["info", str(tmp_path / "x.pt"), "--json"], capsys)
    assert code == 0, err
    described = json.loads(out)
    assert described["architecture"].startswith("none known")
    assert described["first keys"] == ["encoder.weight (3, 4)", "head.bias (3,)"]


@pytest.mark.slow
def test_train_wrn_and_dm_wrn(tmp_path, capsys):
    """The zoo trains: one epoch of wrn-10-1 and dm-wrn-10-1 on digits, then `eval`."""
    for arch in ("wrn-10-1", "dm-wrn-10-1"):
        out_dir = tmp_path / arch
        args = ["train", "--arch", arch, "--epochs", "1", "--device", "cpu", "--json"]
        code, out, err = run([*args, "--out", str(out_dir), "--eval-samples", "100"], capsys)
        assert code == 0, err
        assert json.loads(out)["test_clean_error"] < 0.9
        _, spec = load_checkpoint(out_dir / "final.pt")
        assert spec["arch"] == arch and spec["normalize"] == "none"
        assert spec["activation"] == ("swish" if arch.startswith("dm") else "relu")
        code, out, err = run(
            ["eval", str(out_dir / "final.pt"), "--json", "--samples", "50"], capsys
        )
        assert code == 0, err
