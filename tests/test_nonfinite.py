"""NaN and divergence in the analyses: a point whose loss is NaN or infinite is stored as NaN,
flagged in `nonfinite` at exactly that point, and named in one warning line; exit 0."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landscape import store
from landscape.checkpoint import build_from_spec, model_spec, save_checkpoint
from landscape.cli import main
from landscape.cosine import cosine
from landscape.data import load_dataset
from landscape.hessian import hessian, load_eigenvectors, load_hessian
from landscape.params import named_params
from landscape.smoothness import smoothness
from landscape.surface import surface
from landscape.util import BadInput

MLP = model_spec("mlp", "digits", width=1)
HUGE = 1e20  # every weight this large: logits overflow to inf at theta + 0.5 d and beyond


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    model = build_from_spec(MLP).eval()
    X, y = load_dataset("digits", "train")
    return model, X[:64], y[:64]


def huge_like(params):
    return {k: torch.full_like(v, HUGE) for k, v in params.items()}


def run_cli(args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


def warning_lines(err):
    return [line for line in err.splitlines() if line.startswith("Warning:")]


def test_grid_flags_a_nonfinite_point_as_nan_and_resumes_the_flag(tmp_path):
    path = tmp_path / "r.h5"
    grid = store.Grid(path, "/s/g", {"a": 1}, (2, 2), ["loss", "error"], flush_seconds=0)
    grid.record((0, 0), {"loss": 1.0, "error": 0.5})
    grid.record((0, 1), {"loss": math.inf, "error": 0.25})  # error is finite-looking garbage
    grid.record((1, 0), {"loss": math.nan, "error": 0.0})
    assert grid.nonfinite.tolist() == [[False, True], [True, False]]
    assert np.isnan(grid.arrays["error"][0, 1]) and np.isnan(grid.arrays["loss"][0, 1])
    again = store.Grid(path, "/s/g", {"a": 1}, (2, 2), ["loss", "error"], flush_seconds=0)
    assert again.nonfinite.tolist() == [[False, True], [True, False]]
    assert again.pending() == [(1, 1)]
    again.record((1, 1), {"loss": 2.0, "error": 0.0})
    again.finish(
        {"x": np.arange(2.0), "y": np.arange(2.0)},
        {"config": "c", "status": "complete"},
        dims={"loss": ("x", "y"), "error": ("x", "y"), "done": ("x", "y")},
    )
    arrays, _ = store.read_group(path, "/s/g")
    assert arrays["nonfinite"].tolist() == [[False, True], [True, False]]
    assert arrays["loss"][1, 1] == 2.0 and arrays["loss"][0, 0] == 1.0
    coords = {"x": np.array([0.5, 1.0]), "y": np.array([-1.0, 2.0])}
    assert store.nonfinite_where(arrays["nonfinite"], coords) == "x=0.5, y=2; x=1, y=-1"
    assert store.nonfinite_where(arrays["nonfinite"], coords, limit=1) == "x=0.5, y=2 (and 1 more)"


@pytest.mark.parametrize("ppb", [1, 8])
def test_surface_flags_exactly_the_overflowing_points(mlp, ppb):
    model, X, y = mlp
    base = named_params(model)
    small = {k: 1e-3 * torch.ones_like(v) for k, v in base.items()}
    xs = [-1.0, -0.5, 0.0, 0.5, 1.0]
    s = surface(
        model,
        X,
        y,
        [huge_like(base), small],
        dim=2,
        xrange=xs,
        yrange=[-1, 0, 1],
        eps=0.05,
        points_per_batch=ppb,
    )
    expected = np.zeros((5, 3), dtype=bool)
    expected[3:] = True  # +0.5e20 and beyond: inf logits; the negative side stays finite
    np.testing.assert_array_equal(s.nonfinite, expected)
    for field in (s.loss, s.error, s.adv_loss, s.adv_error):
        assert np.isnan(field[expected]).all() and np.isfinite(field[~expected]).all()
    assert s.done.all()
    assert "nonfinite" in s.arrays() and s.dims()["nonfinite"] == ("x", "y")


def test_cosine_flags_the_diverging_alpha(mlp):
    model, X, y = mlp
    base = named_params(model)
    # Unit directions: a = 1e22 puts every weight near 3e20, where the logits overflow.
    ones = {k: torch.ones_like(v) for k, v in base.items()}
    c = cosine(
        model,
        X,
        y,
        eps=0.05,
        alpha=[0.0, 1.0, 1e22],
        repeats=2,
        directions={"top": ones, "random": ones},
    )
    assert c.nonfinite.tolist() == [False, False, True]
    assert np.isnan(c.cosine_top_mean[2]) and np.isnan(c.robust_error_top_plus[2])
    assert c.cosine_top_mean[0] == pytest.approx(1.0)
    assert np.isfinite(c.cosine_random_mean[:2]).all()


def test_smoothness_flags_the_diverging_radius(mlp):
    model, X, y = mlp
    sm = smoothness(model, X, y, eps=0.05, radius=[1e-3, 1.0, 1e25], count=2, steps=2)
    assert sm.nonfinite.tolist() == [False, False, True]
    for values in sm.lipschitz.values():
        assert np.isfinite(values[:2]).all() and np.isnan(values[2])


def test_hessian_of_a_diverging_model_is_nan_and_flagged(mlp, tmp_path):
    model, X, y = mlp
    broken = build_from_spec(MLP).eval()
    broken.load_state_dict({k: v * HUGE for k, v in model.state_dict().items()})
    res = hessian(broken, X, y, 0.0, top=3, random_samples=0, save_vectors=True, trace=True)
    assert res.nonfinite and not math.isfinite(res.loss)
    values = res.eigenpairs.eigenvalues
    assert np.isnan(values).all() and values.shape == (3,)
    assert np.isnan(res.eigenpairs.residuals).all() and res.trace is None
    assert res.n_hvp == 0
    ok = hessian(model, X, y, 0.0, top=3, random_samples=0)
    assert not ok.nonfinite and np.isfinite(ok.eigenpairs.eigenvalues).all()
    from landscape.hessian import store_hessian

    out = tmp_path / "h.h5"
    store_hessian(out, "/hessian/broken", res, {"config": "c", "status": "complete"})
    back = load_hessian(out, "/hessian/broken")
    assert back.nonfinite and np.isnan(back.eigenpairs.eigenvalues).all()
    with pytest.raises(BadInput, match="nonfinite"):
        load_eigenvectors(out, "/hessian/broken")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, mlp):
    """A random MLP checkpoint and one with every weight 1e20 (its loss overflows)."""
    model, _, _ = mlp
    folder = tmp_path_factory.mktemp("nonfinite")
    good, huge = folder / "good.pt", folder / "huge.pt"
    save_checkpoint(good, model, MLP)
    broken = build_from_spec(MLP).eval()
    broken.load_state_dict({k: torch.full_like(v, HUGE) for k, v in model.state_dict().items()})
    save_checkpoint(huge, broken, MLP)
    return good, huge


def test_cli_surface_warns_where_and_exits_0(checkpoints, tmp_path, capsys):
    good, huge = checkpoints
    out = tmp_path / "r.h5"
    args = [
        "surface",
        good,
        "--dirs",
        "interp",
        "--other",
        huge,
        "--range",
        "-1:1:5",
        "--samples",
        64,
        "--out",
        out,
        "--name",
        "s",
        "--json",
    ]
    assert run_cli(args) == 0
    captured = capsys.readouterr()
    (line,) = warning_lines(captured.err)
    assert "/surface/s" in line and "2 of 5 points" in line and "x=0.5; x=1" in line
    assert '"nonfinite_points": 2' in captured.out
    arrays, _ = store.read_group(out, "/surface/s")
    assert arrays["nonfinite"].tolist() == [False, False, False, True, True]
    assert np.isnan(arrays["loss"][3:]).all() and np.isfinite(arrays["loss"][:3]).all()
    assert run_cli(args) == 0  # cached: the stored flags are reported again
    assert len(warning_lines(capsys.readouterr().err)) == 1


def test_cli_connect_names_the_t(checkpoints, tmp_path, capsys):
    good, huge = checkpoints
    out = tmp_path / "c.h5"
    args = [
        "connect",
        good,
        huge,
        "--order",
        "1",
        "--points",
        5,
        "--samples",
        32,
        "--bn-samples",
        32,
        "--out",
        out,
        "--name",
        "c",
        "--json",
    ]
    assert run_cli(args) == 0
    captured = capsys.readouterr()
    (line,) = warning_lines(captured.err)
    assert "/connect/c" in line and "4 of 5 points" in line and "t=0.25; t=0.5" in line
    arrays, _ = store.read_group(out, "/connect/c")
    assert arrays["nonfinite"].tolist() == [False, True, True, True, True]
    assert np.isnan(arrays["train_loss"][1:]).all() and np.isfinite(arrays["train_loss"][0])
    assert np.isnan(arrays["line_test_error"][1:]).all()


def test_cli_hessian_flags_and_exits_0(checkpoints, tmp_path, capsys):
    good, huge = checkpoints
    out = tmp_path / "h.h5"
    args = [
        "hessian",
        huge,
        "--top",
        2,
        "--random-samples",
        0,
        "--samples",
        32,
        "--out",
        out,
        "--name",
        "h",
    ]
    assert run_cli(args) == 0
    (line,) = warning_lines(capsys.readouterr().err)
    assert "/hessian/h" in line and "non-finite" in line and "eps 0" in line
    res = load_hessian(out, "/hessian/h")
    assert res.nonfinite and np.isnan(res.eigenpairs.eigenvalues).all()
