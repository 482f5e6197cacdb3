import math

import numpy as np
import pytest
import torch

from landscape.cli import main
from landscape.data import load_dataset
from landscape.directions import random_direction
from landscape.models import build_model
from landscape.params import global_norm, named_params
from landscape.smoothness import matched_l2_eps, smoothness
from landscape.store import read_group
from landscape.util import BadInput


def run_cli(*args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


def test_matched_l2_budgets():
    d, eps = 64, 0.1
    r = matched_l2_eps(eps, d, "volume")
    log_l2_ball = (d / 2) * math.log(math.pi) - math.lgamma(d / 2 + 1) + d * math.log(r)
    assert log_l2_ball == pytest.approx(d * math.log(2 * eps), rel=1e-12)  # same volume
    assert r == pytest.approx(eps * math.sqrt(2 * d / (math.pi * math.e)), rel=0.05)
    assert matched_l2_eps(eps, d, "sqrt-d") == pytest.approx(0.8)
    assert matched_l2_eps(eps, d, "same") == eps
    with pytest.raises(BadInput, match="rule 'area' is not valid"):
        matched_l2_eps(eps, d, "area")


def smooth_mlp():
    torch.manual_seed(0)
    model = build_model(
        "mlp",
        input_shape=(1, 8, 8),
        num_classes=10,
        mean=[0.3],
        std=[0.4],
        width=1,
        activation="tanh",
    )
    X, y = load_dataset("digits", "train")
    return model.eval(), X[:100], y[:100]


def test_clean_profile_converges_to_the_hessian_vector_product():
    from landscape.curvature import hvp

    model, X, y = smooth_mlp()
    u = random_direction(named_params(model), torch.Generator().manual_seed(1))
    want = float(global_norm(hvp(model, X, y, u)))
    radii = [1e-1, 1e-2, 1e-3]
    s = smoothness(model, X, y, eps=0.0, radius=radii, directions=[u])
    got = s.lipschitz["lipschitz_clean_mean"]
    errors = np.abs(got - want)
    assert errors[-1] < 2e-3 * want
    assert errors[0] > errors[1] > errors[2]  # first-order convergence as r shrinks
    assert s.lipschitz["lipschitz_clean_std"].tolist() == [0.0] * 3
    assert set(s.arrays()) == {
        "radius",
        "lipschitz_clean_mean",
        "lipschitz_clean_std",
        "done",
        "nonfinite",
    }


def test_adversarial_profiles_and_options():
    model, X, y = smooth_mlp()
    X, y = X[:40], y[:40]
    s = smoothness(model, X, y, eps=0.05, radius=[1e-2, 1e-1], count=2, seed=1)
    assert set(s.eps) == {"clean", "linf", "l2"}
    assert s.eps["l2"] == pytest.approx(matched_l2_eps(0.05, 64))
    for norm in ("clean", "linf", "l2"):
        assert np.all(np.isfinite(s.lipschitz[f"lipschitz_{norm}_mean"]))
        assert np.all(s.lipschitz[f"lipschitz_{norm}_std"] >= 0)
    assert s.attrs() == {
        "eps_clean": 0.0,
        "eps_linf": 0.05,
        "eps_l2": s.eps["l2"],
        "directions": 2,  # the sample size behind each mean and std, for the verdicts
    }
    with pytest.raises(BadInput, match="eps > 0"):
        smoothness(model, X, y, eps=0.0, norms=["linf"])
    with pytest.raises(BadInput, match="norms"):
        smoothness(model, X, y, eps=0.1, norms=["l3"])
    with pytest.raises(BadInput, match="radii"):
        smoothness(model, X, y, eps=0.1, radius=[0.0, 1.0])
    with pytest.raises(BadInput, match="directions 'filter' is not valid"):
        smoothness(model, X, y, eps=0.1, directions="filter")


def test_cli_smoothness_end_to_end(digits_run, tmp_path):
    out, ckpt = tmp_path / "r.h5", digits_run / "final.pt"
    args = [
        "--samples",
        30,
        "--radii",
        "1e-2:1:2",
        "--directions",
        2,
        "--out",
        out,
        "--device",
        "cpu",
    ]
    assert (
        run_cli("smoothness", ckpt, "--eps", 0.05, "--norms", "clean,l2", "--l2-eps", 0.3, *args)
        == 0
    )
    arrays, attrs = read_group(out, "/smoothness/final_dirsrandom_eps0.05")
    assert set(arrays) == {
        "radius",
        "done",
        "nonfinite",
        *(f"lipschitz_{n}_{s}" for n in ("clean", "l2") for s in ("mean", "std")),
    }
    assert attrs["eps_l2"] == pytest.approx(0.3) and attrs["status"] == "complete"
    assert attrs["directions"] == 2
    figs = tmp_path / "figs"
    assert run_cli("plot", out, "--format", "png,html", "--out", figs) == 0
    assert {"smoothness.png", "smoothness.html"} <= {p.name for p in figs.iterdir()}


@pytest.mark.parametrize(
    "args",
    [
        ["--radii", "0:1:3"],
        ["--radii", "1:0.1:3"],
        ["--norms", "linf,l5", "--eps", "0.1"],
        ["--norms", "l2"],
    ],
)
def test_cli_smoothness_bad_input_exits_2_and_writes_nothing(digits_run, tmp_path, args):
    out = tmp_path / "r.h5"
    assert run_cli("smoothness", digits_run / "final.pt", "--samples", 10, "--out", out, *args) == 2
    assert list(tmp_path.iterdir()) == []
