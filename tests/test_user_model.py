"""User-defined models (`--model file.py:factory`, `--model-kwargs`): every analysis command,
the loss scale without a spec, user code imported only when named, and the normalization
check on a model loaded with the wrong `--normalize`."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import landscape as ls
from landscape.cli import main
from landscape.data import load_dataset
from landscape.foreign import parse_model_kwargs, parse_normalize
from landscape.hessian import reinitialized
from landscape.util import BadInput

NET = """
import pathlib

import torch
from torch import nn

# Each import leaves a line here, so tests see whether the file was imported.
pathlib.Path(__file__).with_suffix(".imports").open("a").write("imported\\n")


class Net(nn.Module):
    def __init__(self, hidden, classes, act):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden), act, nn.Linear(hidden, classes)
        )

    def forward(self, x):
        return self.body(x)


def make(hidden=16, classes=10, smooth=True):
    return Net(hidden, classes, nn.Tanh() if smooth else nn.ReLU())


def broken():
    raise RuntimeError("no weights\\nhere")


def not_a_module():
    return 3


value = 5
"""


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def imports(folder):
    log = folder / "net.imports"
    return len(log.read_text().splitlines()) if log.exists() else 0


def user_net(hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """net.py, and two state_dicts of its make(hidden=8) trained on digits' [0, 1] pixels."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "net.py").write_text(NET)
    X, y = load_dataset("digits")
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = user_net()
        opt = torch.optim.Adam(net.parameters(), lr=0.02)
        for _ in range(150):
            opt.zero_grad()
            F.cross_entropy(net(X), y).backward()
            opt.step()
        state = {f"body.{k}": v for k, v in net.state_dict().items()}
        torch.save(state, folder / f"net{seed}.pt")
    return folder


MODEL = ["--model", "net.py:make", "--model-kwargs", "hidden=8,smooth=true", "--dataset", "digits"]


def test_parse_model_kwargs():
    assert parse_model_kwargs("depth=28,widen=10,rate=0.3,act=swish,bn=False,x=none") == {
        "depth": 28,
        "widen": 10,
        "rate": 0.3,
        "act": "swish",
        "bn": False,
        "x": None,
    }
    assert parse_model_kwargs("") == {} and parse_model_kwargs(None) == {}
    assert parse_model_kwargs("a=-3, b = 1e-3,c=__import__('os')") == {
        "a": -3,
        "b": 1e-3,
        "c": "__import__('os')",
    }
    for bad in ("depth", "=3", "1a=2", "a=1,a=2", "a=1,,b=2"):
        with pytest.raises(BadInput, match="--model-kwargs"):
            parse_model_kwargs(bad)


def test_parse_normalize():
    assert parse_normalize("none") == "none" and parse_normalize("Dataset") == "dataset"
    assert parse_normalize("0.5/0.25") == ((0.5,), (0.25,))
    assert parse_normalize("0.4914,0.4822,0.4465/0.2471,0.2435,0.2616")[1] == (
        0.2471,
        0.2435,
        0.2616,
    )
    for bad in ("imagenet", "0.5", "0.5/0", "a/b", "0.1,0.2/0.1,0.2,0.3", "nan/1"):
        with pytest.raises(BadInput, match="--normalize"):
            parse_normalize(bad)


def test_hessian_on_a_user_module_needs_no_spec():
    """`ls.hessian(model, X, y)` on any nn.Module: the loss scale re-initializes copies
    through reset_parameters(), seeded 0..R-1, and says so."""
    torch.manual_seed(0)
    model = user_net().eval()
    X, y = load_dataset("digits")
    X, y = X[:64], y[:64]
    res = ls.hessian(model, X, y, top=3, random_samples=3)
    assert res.loss_scale.init == "reset_parameters"
    assert np.all(np.abs(res.loss_scale.random_losses - math.log(10)) < 0.5)
    # Each random loss is that of a copy re-initialized under its seed.
    fresh = reinitialized(model, 1)
    loss = F.cross_entropy(fresh(X), y).item()
    assert res.loss_scale.random_losses[1] == pytest.approx(loss, rel=1e-5)
    assert not torch.equal(fresh[1].weight, model[1].weight)
    assert torch.equal(reinitialized(model, 1)[1].weight, fresh[1].weight)
    # The eigenvalues are the dense Hessian's (in float64).

    def loss_of(flat):
        chunks = torch.split(flat, [p.numel() for p in params.values()])
        named = {k: c.view_as(p) for (k, p), c in zip(params.items(), chunks)}
        return F.cross_entropy(torch.func.functional_call(model64, named, (X,)), y)

    model64, X = model.double(), X.double()
    params = dict(model64.named_parameters())
    flat = torch.cat([p.detach().flatten() for p in params.values()])
    dense = torch.autograd.functional.hessian(loss_of, flat)
    top = torch.linalg.eigvalsh(dense).flip(0)[:3].numpy()
    np.testing.assert_allclose(res.eigenpairs.eigenvalues, top, rtol=1e-4)


def test_a_parameter_no_reset_parameters_covers_is_refused():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)
            self.temperature = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return self.fc(x.flatten(1)) * self.temperature

    X, y = load_dataset("digits")
    with pytest.raises(BadInput, match="temperature"):
        ls.hessian(Scaled(), X[:8], y[:8], top=2, random_samples=2)
    assert ls.hessian(
        Scaled(), X[:8], y[:8], top=2, random_samples=0
    ).eigenpairs.eigenvalues.shape == (2,)


@pytest.mark.slow
def test_user_model_through_every_analysis(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    common = [*MODEL, "--device", "cpu", "--json"]
    code, out, err = run(["eval", "net0.pt", *common], capsys)
    assert code == 0, err
    assert json.loads(out)["clean_error"] < 0.15

    args = ["hessian", "net0.pt", *common, "--top", "3", "--samples", "64", "--out", "r.h5"]
    code, out, err = run([*args, "--random-samples", "2"], capsys)
    assert code == 0, err
    (row,) = json.loads(out).values()
    with h5py.File("r.h5") as f:
        (group,) = f["hessian"].values()
        assert group.attrs["loss_scale_init"] == "reset_parameters"
        config = json.loads(group.attrs["config"])
        assert config["foreign_model"]["model"] == "net.py:make"
        assert config["foreign_model"]["model_kwargs"] == {"hidden": 8, "smooth": True}
    # The same numbers as the Python API on the same module.
    torch.manual_seed(0)
    net = user_net()
    net.load_state_dict({k[5:]: v for k, v in torch.load("net0.pt").items()})
    X, y = load_dataset("digits")
    direct = ls.hessian(net.eval(), X[:64], y[:64], top=3, random_samples=0)
    np.testing.assert_allclose(row["top3"], direct.eigenpairs.eigenvalues, rtol=1e-3)

    code, out, err = run(
        ["surface", "net0.pt", *common, "--range", "-1:1:5", "--samples", "64"], capsys
    )
    assert code == 0, err
    code, out, err = run(
        ["cosine", "net0.pt", *common, "--range", "0:0.2:3", "--samples", "32"], capsys
    )
    assert code == 0, err
    curve = workspace / "curve.pt"
    args = ["connect", "net0.pt", "net1.pt", *common, "--epochs", "1", "--points", "3"]
    code, out, err = run([*args, "--samples", "64", "--curve-out", str(curve)], capsys)
    assert code == 0, err
    with h5py.File("results.h5") as f:
        assert {"surface", "cosine", "connect"} <= set(f)

    # A curve file names the user's factory; it is imported only when named again.
    before = imports(workspace)
    code, _, err = run(["eval", str(curve), "--t", "0.5", "--device", "cpu"], capsys)
    assert code == 2 and "add --model net.py:make" in err
    assert err.count("Error:") == 1 and imports(workspace) == before
    code, out, err = run(["eval", str(curve), "--t", "0.5", *common], capsys)
    assert code == 0, err
    assert json.loads(out)["clean_error"] < 0.5


def test_user_code_is_not_imported_unless_named(workspace, capsys, monkeypatch):
    """A landscape checkpoint whose spec names net.py:make loads only with --model."""
    from landscape.checkpoint import save_checkpoint, user_spec
    from landscape.foreign import import_factory

    monkeypatch.chdir(workspace)
    import_factory("net.py:make")
    spec = user_spec("net.py:make", {"hidden": 8}, "digits")
    save_checkpoint(
        "own.pt",
        ls.load_checkpoint(
            "net0.pt", model="net.py:make", model_kwargs={"hidden": 8}, dataset="digits"
        )[0],
        spec,
    )
    before = imports(workspace)
    code, out, err = run(["info", "own.pt", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["spec"]["model"] == "net.py:make"
    code, _, err = run(["hessian", "own.pt", "--top", "2"], capsys)
    assert code == 2 and "imported only when named: add --model net.py:make" in err
    assert imports(workspace) == before
    code, out, err = run(["eval", "own.pt", "--model", "net.py:make", "--json"], capsys)
    assert code == 0, err
    assert imports(workspace) == before + 1


def test_wrong_normalization_is_caught(tmp_path, capsys, monkeypatch):
    """An MLP trained behind the dataset's standardization on faint images (pixels in
    [0, 0.01]) predicts one class without it: loading it with --normalize none is refused."""
    monkeypatch.chdir(tmp_path)
    X, y = load_dataset("digits")
    images = (X[:, 0] * 0.01).numpy()
    np.savez(
        "faint.npz", x_train=images, y_train=y.numpy(), x_test=images[:300], y_test=y[:300].numpy()
    )
    spec = ls.checkpoint.model_spec("mlp", "faint.npz", width=1)
    torch.manual_seed(0)
    model = ls.checkpoint.build_from_spec(spec)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    Xf = X * 0.01
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(Xf), y).backward()
        opt.step()
    torch.save(model.state_dict(), "mlp.pt")
    args = ["eval", "mlp.pt", "--arch", "mlp", "--width", "1", "--dataset", "faint.npz"]
    code, out, err = run([*args, "--json", "--device", "cpu"], capsys)
    assert code == 0, err  # mlp's default is the dataset's normalization
    assert json.loads(out)["clean_error"] < 0.2
    code, _, err = run([*args, "--normalize", "none"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    assert "is at chance (1/10) with --normalize none" in lines[0]
    assert lines[0].endswith("load it with --normalize dataset")
