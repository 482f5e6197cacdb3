import json

import h5py
import numpy as np
import pytest
import torch

from landscape.checkpoint import load_checkpoint
from landscape.cli import main
from landscape.cosine import FIELDS, cosine, perturbation_cosine
from landscape.data import load_dataset
from landscape.directions import random_direction
from landscape.models import build_model
from landscape.params import named_params
from landscape.store import Grid, read_group
from landscape.util import BadInput


def run_cli(*args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


def test_cosine_of_identical_perturbations_is_one_and_zeros_are_counted():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(5, 1, 4, 4, generator=g)
    cos, zero, same = perturbation_cosine(d, d.clone())
    torch.testing.assert_close(cos, torch.ones(5))
    assert not zero.any() and same.all()
    torch.testing.assert_close(perturbation_cosine(d, -d)[0], -torch.ones(5))
    e = d.clone()
    e[1] = 0
    e[3] = 0
    cos, zero, same = perturbation_cosine(d, e)
    assert zero.tolist() == [False, True, False, True, False]
    assert torch.isfinite(cos).all() and cos[1] == 0 and cos[3] == 0
    a, b = torch.zeros(2, 3), torch.zeros(2, 3)
    a[0, 0], b[0, 1] = 1.0, 1.0
    assert perturbation_cosine(a, b)[0][0] == 0.0  # orthogonal


def binary_linear():
    torch.manual_seed(0)
    model = build_model("linear", input_shape=(1, 4, 4), num_classes=2, mean=[0.0], std=[1.0])
    g = torch.Generator().manual_seed(0)
    X = 0.3 + 0.4 * torch.rand(40, 1, 4, 4, generator=g)
    y = torch.randint(0, 2, (40,), generator=g)
    return model, X, y


def test_linear_model_perturbations_stay_identical_and_eps0_counts_every_example():
    model, X, y = binary_linear()
    p = named_params(model)
    dirs = {
        k: random_direction(p, torch.Generator().manual_seed(s))
        for k, s in (("top", 1), ("random", 2))
    }
    # For a linear model PGD reaches the corner eps sign(-s w), which does not move while
    # w keeps its signs: the cosine is exactly 1 along any small step.
    c = cosine(model, X, y, eps=0.1, steps=40, alpha=[0.0, 1e-3], directions=dirs, repeats=2)
    np.testing.assert_allclose(c.cosine_top_mean, 1.0, atol=1e-6)
    np.testing.assert_allclose(c.cosine_random_std, 0.0, atol=1e-6)
    assert c.zero_perturbations_top.tolist() == [0, 0]
    np.testing.assert_array_equal(c.robust_error_top_plus[0], c.robust_error_top_minus[0])
    z = cosine(model, X, y, eps=0.0, alpha=[0.0, 0.5], directions=dirs, repeats=3)
    assert z.zero_perturbations_top.tolist() == [120, 120]  # 40 examples x 3 repeats
    assert np.all(np.isfinite(z.cosine_top_mean)) and np.all(z.cosine_top_mean == 1.0)
    assert z.attrs() == {"examples": 40, "repeats": 3}


def test_cosine_at_zero_is_one_and_grid_round_trips(digits_run, tmp_path):
    model, _ = load_checkpoint(digits_run / "final.pt")
    X, y = load_dataset("digits", "train")
    X, y = X[:50], y[:50]
    p = named_params(model)
    dirs = {
        k: random_direction(p, torch.Generator().manual_seed(s))
        for k, s in (("top", 1), ("random", 2))
    }
    grid = Grid(tmp_path / "r.h5", "/cosine/run", {"k": 1}, (3,), FIELDS)
    c = cosine(model, X, y, eps=0.05, alpha=[0.0, 0.5, 1.0], directions=dirs, repeats=2, grid=grid)
    assert c.cosine_top_mean[0] == pytest.approx(1.0, abs=1e-6)
    assert c.cosine_random_mean[0] == pytest.approx(1.0, abs=1e-6)
    assert np.all(c.cosine_top_mean[1:] < 1.0) and np.all(c.cosine_top_mean > 0)
    grid.finish({}, {"status": "complete", "config": "{}"}, extra=c.arrays(), dims=c.dims())
    arrays, _ = read_group(tmp_path / "r.h5", "/cosine/run")
    assert arrays["zero_perturbations_top"].dtype.kind == "i"
    for f in FIELDS:
        np.testing.assert_array_equal(arrays[f], getattr(c, f))
    with h5py.File(tmp_path / "r.h5") as f:
        assert f["/cosine/run/cosine_top_mean"].dims[0][0].name == "/cosine/run/alpha"
    with pytest.raises(BadInput, match="repeats"):
        cosine(model, X, y, eps=0.05, directions=dirs, repeats=0)
    with pytest.raises(BadInput, match="unknown direction kind"):
        cosine(model, X, y, eps=0.05, directions={"side": dirs["top"]})


def test_cli_cosine_end_to_end_with_eigen_directions(digits_run, tmp_path):
    out, ckpt = tmp_path / "r.h5", digits_run / "final.pt"
    args = ["--samples", 40, "--range", "0:0.5:3", "--repeats", 2, "--out", out, "--device", "cpu"]
    assert run_cli("cosine", ckpt, "--eps", 0.05, *args) == 0
    arrays, attrs = read_group(out, "/cosine/final_normlinf_eps0.05")
    assert set(FIELDS) <= set(arrays) and arrays["done"].all()
    assert arrays["cosine_top_mean"][0] == pytest.approx(1.0, abs=1e-6)
    assert attrs["status"] == "complete" and attrs["examples"] == 40
    figs = tmp_path / "figs"
    assert run_cli("plot", out, "--format", "png,html", "--out", figs) == 0
    assert {"cosine.png", "cosine.html"} <= {p.name for p in figs.iterdir()}


@pytest.mark.parametrize(
    "args",
    [
        ["--range", "1:0:3"],
        ["--repeats", "0"],
        ["--hessian-group", "nofile.h5:/hessian/run"],
        ["--eps", "-1"],
    ],
)
def test_cli_cosine_bad_input_exits_2_and_writes_nothing(digits_run, tmp_path, args):
    out = tmp_path / "r.h5"
    assert run_cli("cosine", digits_run / "final.pt", "--samples", 10, "--out", out, *args) == 2
    assert list(tmp_path.iterdir()) == []


def test_reduced_precision_cosine_is_close_to_fp32_and_recorded(digits_run, tmp_path):
    """bf16 attacks and evaluations: cosines within 0.01 and robust errors within 0.05 of
    fp32 (measured 0.002 and 0.006 on a trained LeNet, 500 examples); the CLI stores the
    precision in the run's config and name."""
    model, _ = load_checkpoint(digits_run / "final.pt")
    X, y = load_dataset("digits", "train")
    X, y = X[:60], y[:60]
    p = named_params(model)
    dirs = {
        k: random_direction(p, torch.Generator().manual_seed(s))
        for k, s in (("top", 1), ("random", 2))
    }
    kwargs = dict(eps=0.1, alpha=[0.0, 0.5, 1.0], directions=dirs, repeats=2)
    full = cosine(model, X, y, **kwargs)
    low = cosine(model, X, y, precision="bf16", **kwargs)
    for f in FIELDS:
        if f.startswith("cosine"):
            np.testing.assert_allclose(getattr(low, f), getattr(full, f), rtol=0, atol=1e-2)
        elif f.startswith("robust"):
            np.testing.assert_allclose(getattr(low, f), getattr(full, f), rtol=0, atol=0.05)
    assert low.cosine_top_mean[0] == pytest.approx(1.0, abs=1e-6)
    assert not np.array_equal(low.cosine_top_mean, full.cosine_top_mean)

    out = tmp_path / "r.h5"
    args = ["--samples", 20, "--range", "0:0.5:2", "--repeats", 1, "--out", out, "--device", "cpu"]
    h = tmp_path / "h.h5"
    assert run_cli("hessian", digits_run / "final.pt", "--eps", 0.05, "--top", 1, "--samples",
                   20, "--random-samples", 0, "--save-vectors", "--name", "h", "--out", h,
                   "--device", "cpu") == 0  # fmt: skip
    common = [*args, "--eps", 0.05, "--hessian-group", f"{h}:/hessian/h"]
    assert run_cli("cosine", digits_run / "final.pt", *common, "--precision", "bf16") == 0
    _, attrs = read_group(out, "/cosine/final_normlinf_precisionbf16_eps0.05")
    assert json.loads(attrs["config"])["precision"] == "bf16"
