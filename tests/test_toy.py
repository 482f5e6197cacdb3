"""Theory figures: closed forms against direct maximisation, PGD against brute force, -F against
scipy's nquad and exact Gaussians, kinks, the band, Theorem 1's collapse, and the CLI round trip."""

from __future__ import annotations

import importlib
import itertools
import json
import math

import h5py
import numpy as np
import pytest
from scipy.integrate import nquad
from scipy.special import expit

from landscape.cli import main
from landscape.store import read_group
from landscape.util import BadInput

T = importlib.import_module("landscape.toy")


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def per_sample_loss(theta, X, y, delta):
    """log(1 + exp(-y theta^T (x + delta))) for thetas (P, d), data (N, d), perturbations (..., N, d)."""
    return np.logaddexp(0.0, -np.einsum("pd,...nd->...pn", theta, X + delta) * y)


@pytest.mark.parametrize("d", [2, 3])
def test_linear_closed_form_is_the_max_over_the_ball(d):
    rng = np.random.default_rng(1)
    theta = rng.uniform(-2, 2, (20, d))
    X = rng.standard_normal((5, d))
    y = rng.choice([-1.0, 1.0], 5)
    eps = 0.6
    # L-inf: the loss grows with -y theta^T delta, so each example's maximum is a box vertex.
    vertices = eps * np.array(list(itertools.product((-1.0, 1.0), repeat=d)))
    losses = per_sample_loss(theta, X, y, vertices[:, None, :])  # (V, P, N)
    np.testing.assert_allclose(T.linear_loss(theta, X, y, eps, "linf"), losses.max(0).mean(-1))
    np.testing.assert_allclose(
        T.linear_loss(theta, X, y, eps, "linf", worst=False), losses.min(0).mean(-1)
    )
    # L2: the maximiser is delta = -y eps theta / ||theta||, one per (theta, example).
    aligned = -eps * theta[:, None, :] / np.linalg.norm(theta, axis=1)[:, None, None] * y[:, None]
    direct = np.logaddexp(0.0, -np.einsum("pd,pnd->pn", theta, X[None] + aligned) * y).mean(-1)
    np.testing.assert_allclose(T.linear_loss(theta, X, y, eps, "l2"), direct)
    if d == 2:  # and no point of the circle does better
        a = np.linspace(0, 2 * np.pi, 3601)
        circle = eps * np.stack([np.cos(a), np.sin(a)], 1)[:, None, :]
        sampled = per_sample_loss(theta, X, y, circle).max(0).mean(-1)
        assert np.all(sampled <= T.linear_loss(theta, X, y, eps, "l2") + 1e-12)
        np.testing.assert_allclose(sampled, T.linear_loss(theta, X, y, eps, "l2"), atol=1e-5)


def exact_swish_max(theta, x, y, eps, norm):
    """The swish loss depends on delta through u = theta^T (x + delta) only, over an interval of
    u; swish falls then rises (minimum at u*), so the maximum is at an end or at u* clipped."""
    u = np.linspace(-10, 10, 2_000_001)
    u_star = u[np.argmin(u * expit(u))]
    centre, reach = theta @ x, eps * T.dual_norm(theta, norm)
    candidates = np.array(
        [centre - reach, centre + reach, np.clip(u_star, centre - reach, centre + reach)]
    )
    return np.logaddexp(0.0, -y * candidates * expit(candidates)).max()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_swish_pgd_between_clean_and_the_ball_maximum(norm):
    thetas = np.array([[1.5, -1.5], [-1.0, 1.0], [0.3, 0.2], [-1.8, -0.4], [0.0, 0.0]])
    eps = 0.6
    cfg = T.swish_pgd_config(eps, norm)
    for X, y in (
        (np.array([[-1.0, 1.0]]), np.array([1.0])),
        (np.array([[-3.0, 5.0]]), np.array([-1.0])),
    ):
        pgd = T.swish_adv_loss(thetas, X, y, cfg, device="cpu", seed=0)
        clean = T.swish_loss(thetas, X, y)
        # Brute force over a fine sampling of the ball.
        if norm == "linf":
            g = np.linspace(-eps, eps, 241)
            ball = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        else:
            r, a = np.meshgrid(np.linspace(0, eps, 61), np.linspace(0, 2 * np.pi, 721))
            ball = np.stack([r * np.cos(a), r * np.sin(a)], -1).reshape(-1, 2)
        u = np.einsum("pd,bd->pb", thetas, X[0] + ball)
        brute = np.logaddexp(0.0, -y[0] * u * expit(u)).max(1)
        exact = np.array([exact_swish_max(t, X[0], y[0], eps, norm) for t in thetas])
        assert np.all(pgd >= clean - 1e-5)
        assert np.all(pgd <= brute + 1e-4) and np.all(brute <= exact + 1e-9)
        np.testing.assert_allclose(pgd, exact, atol=3e-4)  # the clamp to [0, 1] never binds


def test_smoothed_loss_against_nquad_and_exact_gaussians():
    gamma = 1.0
    # L = 0 and L = a/2 ||theta||^2 have closed-form -F.
    axis = np.array([-1.0, 0.0, 0.5])
    zero = T.entropy_smoothed(lambda t: np.zeros(t.shape[:-1]), axis, axis, gamma)
    np.testing.assert_allclose(zero, -math.log(2 * math.pi / gamma), rtol=1e-10)
    a = 0.7
    quad = T.entropy_smoothed(lambda t: 0.5 * a * (t**2).sum(-1), axis, axis, gamma)
    r2 = axis[:, None] ** 2 + axis[None, :] ** 2
    expected = -math.log(2 * math.pi / (a + gamma)) + a * gamma / (2 * (a + gamma)) * r2
    np.testing.assert_allclose(quad, expected, rtol=1e-9)
    # The adversarial losses, kinks included, against scipy's adaptive quadrature.
    X, y = T.gaussian_data(20, seed=3)
    points = [(0.0, 0.0), (0.4, -1.1)]
    for norm in ("l2", "linf"):

        def loss(t, norm=norm):
            return T.linear_loss(t, X, y, 0.6, norm)

        for p1, p2 in points:
            grid = T.entropy_smoothed(loss, np.array([p1]), np.array([p2]), gamma)[0, 0]

            def integrand(u, v, p1=p1, p2=p2, loss=loss):
                return math.exp(
                    -loss(np.array([u, v])) - gamma / 2 * ((u - p1) ** 2 + (v - p2) ** 2)
                )

            reach = 9 / math.sqrt(gamma)
            opts = {"points": [0.0], "epsabs": 1e-12, "epsrel": 1e-9, "limit": 100}
            value, _ = nquad(
                integrand, [[p1 - reach, p1 + reach], [p2 - reach, p2 + reach]], opts=[opts, opts]
            )
            assert grid == pytest.approx(-math.log(value), abs=3e-4)


def test_smoothing_removes_the_linf_kink():
    X, y = np.array([[-1.0, 1.0]]), np.array([1.0])

    def linf(t):
        return T.linear_loss(t, X, y, 0.6, "linf")

    second, jumps = {}, {}
    for h in (1e-2, 1e-3):
        across = h * np.array([-1.0, 0.0, 1.0])  # theta_1 across 0, theta_2 = 0.7
        for name, f in (
            ("linf", linf(np.stack([across, np.full(3, 0.7)], -1))),
            ("smoothed", T.entropy_smoothed(linf, across, np.array([0.7]), 1.0)[:, 0]),
        ):
            second[name, h] = abs(f[0] - 2 * f[1] + f[2]) / h**2
            jumps[name, h] = abs((f[2] - f[1]) / h - (f[1] - f[0]) / h)
    # L-inf: the slope jumps by 2 eps sigmoid(-0.7 + 0.42) at theta_1 = 0, so the second
    # difference grows like 1/h; -F's stays put and its slope is continuous.
    jump = 2 * 0.6 * expit(-0.7 + 0.6 * 0.7)
    assert jumps["linf", 1e-3] == pytest.approx(jump, rel=1e-2)
    assert second["linf", 1e-3] > 8 * second["linf", 1e-2]
    assert second["smoothed", 1e-3] == pytest.approx(second["smoothed", 1e-2], rel=1e-2)
    assert second["smoothed", 1e-3] < 5 and jumps["smoothed", 1e-3] < 1e-2


def test_liu_band_contains_g_and_its_kink_sharpens_with_eps():
    band = T.liu_band(401, [0.6, 1.2])
    theta = band.x
    delta = np.linspace(-1, 1, 401)
    for i, eps in enumerate(band.eps):
        assert np.all(band.lower[i] <= band.clean + 1e-12)
        assert np.all(band.clean <= band.adv[i] + 1e-12)
        # the band is exactly the range of g(1 + delta, theta) over |delta| <= eps
        values = np.logaddexp(0.0, theta[:, None] * (1 + eps * delta[None, :]))
        np.testing.assert_allclose(band.adv[i], values.max(1), atol=1e-12)
        np.testing.assert_allclose(band.lower[i], values.min(1), atol=1e-12)
    zero = int(np.argmin(np.abs(theta)))
    h = theta[1] - theta[0]
    kinks = [
        (band.adv[i, zero + 1] - band.adv[i, zero]) / h
        - (band.adv[i, zero] - band.adv[i, zero - 1]) / h
        for i in range(2)
    ]
    # one-sided slopes sigmoid(0) (1 +- eps): the gradient jump is eps at theta = 0
    np.testing.assert_allclose(kinks, band.eps, rtol=1e-2)


def test_collapse_threshold_is_the_chebyshev_radius_of_the_class_means():
    X, y = T.thm1_data(seed=0)
    means = np.stack([X[y == k].mean(0) for k in range(3)])
    linf = T.collapse_threshold(X, y, "linf")
    assert linf == pytest.approx((means.max(0) - means.min(0)).max() / 2)
    g = np.linspace(-0.5, 0.5, 801)
    z = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    radius = np.linalg.norm(z[:, None, :] - means[None], axis=-1).max(1).min()
    assert T.collapse_threshold(X, y, "l2") == pytest.approx(radius, abs=2e-3)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_theorem1_training_collapses_only_above_the_threshold(norm):
    threshold = T.collapse_threshold(*T.thm1_data(seed=0), norm)
    res = T.liu_collapse(threshold * np.array([0.8, 1.2]), norm, train_steps=500, seed=0)
    assert res.threshold == threshold
    below, above = res.weight_norm
    assert below > 0.3 and above < 1e-3
    assert res.adv_loss[1] == pytest.approx(math.log(3), abs=1e-3) and res.adv_loss[0] < math.log(3)
    assert res.robust_error[0] < 1 and res.clean_error[0] < 0.05
    assert res.weight_norm_trace.shape == (2, 500)


def test_options_reject_bad_input():
    for kwargs in (
        {"figure": "kanai-fig3"},
        {"figure": "kanai-fig2", "eps": [0.1, 0.2]},
        {"figure": "kanai-fig2", "gamma": 0.0},
        {"figure": "kanai-fig4-5", "grid": 2},
        {"figure": "liu-thm1", "norm": "l1"},
        {"figure": "liu-fig5", "eps": ["-1"]},
    ):
        with pytest.raises(BadInput):
            T.toy_options(kwargs.pop("figure"), **kwargs)
    assert T.toy_options("liu-fig5")["eps"] == [0.6, 1.2]
    assert T.toy_options("kanai-fig2")["pgd_step_size"] == pytest.approx(5 * 0.6 / 200)


def test_toy_runs_as_an_analysis_without_inputs(tmp_path):
    """`analysis.run` with `inputs=None`: provenance without a checkpoint on the analysis's
    device, the figure's options as the config, a cache hit that reads the record back."""
    from landscape import analysis

    out = tmp_path / "t.h5"
    job = T.Toy("liu-fig5", points=7, eps=(0.3,), device="cpu")
    first = analysis.run(job, None, out=out, name="liu-fig5")
    assert first.group == "/toy/liu-fig5" and not first.cached
    assert first.attrs["checkpoint"] == "" and first.attrs["device"] == "cpu"
    config = json.loads(first.attrs["config"])
    assert config == {"analysis": "toy", "figure": "liu-fig5", "grid": 7, "eps": [0.3]}
    again = analysis.run(job, None, out=out, name="liu-fig5")
    assert again.cached and isinstance(again.result, T.Band)
    np.testing.assert_array_equal(again.result.adv, T.liu_band(7, [0.3]).adv)
    assert again.result.x_label == first.result.x_label == "θ"
    with pytest.raises(BadInput, match="another config"):
        analysis.run(T.Toy("liu-fig5", points=9), None, out=out, name="liu-fig5")
    thm1 = analysis.run(T.Toy("liu-thm1", train_steps=20, eps=(0.1, 2.0)), None, out=out)
    cached = analysis.run(T.Toy("liu-thm1", train_steps=20, eps=(0.1, 2.0)), None, out=out)
    assert cached.cached and cached.result.threshold == thm1.result.threshold
    np.testing.assert_array_equal(cached.result.weight_norm_trace, thm1.result.weight_norm_trace)


def test_cli_stores_every_figure_and_plot_renders_them(tmp_path, capsys):
    out = tmp_path / "toy.h5"
    args = ["toy", "all", "--out", str(out), "--grid", "21", "--samples", "30"]
    args += ["--train-steps", "300", "--device", "cpu", "--json"]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    rows = json.loads(stdout)
    assert all(not rows[f"/toy/{f}"]["cached"] for f in T.FIGURES)
    with h5py.File(out, "r") as f:
        for figure in T.FIGURES:
            g = f[f"/toy/{figure}"]
            assert g.attrs["status"] == "complete" and g.attrs["checkpoint"] == ""
            assert json.loads(g.attrs["config"])["figure"] == figure
        surface = f["/toy/kanai-fig2/smoothed_linf"]
        assert surface.shape == (21, 21)
        assert [surface.dims[i][0].name.rsplit("/", 1)[-1] for i in range(2)] == ["x", "y"]
        assert f["/toy/liu-thm1/weight_norm_trace"].dims[1][0].name.endswith("/step")
    arrays, attrs = read_group(out, "/toy/liu-fig5")
    band = T.liu_band(21, [0.6, 1.2])
    np.testing.assert_array_equal(arrays["adv"], band.adv)
    assert attrs["x_label"] == "θ"
    # Rerun: cached. Another config under the same group: exit 2 and the file untouched.
    code, stdout, _ = run(args, capsys)
    assert code == 0 and json.loads(stdout)["/toy/liu-fig5"]["cached"]
    before = out.read_bytes()
    code, _, err = run(["toy", "kanai-fig2", "--out", str(out), "--gamma", "2"], capsys)
    assert code == 2 and err.startswith("Error:") and out.read_bytes() == before
    code, _, err = run(
        ["toy", "kanai-fig2", "--out", str(tmp_path / "no.h5"), "--eps", "0.1", "--eps", "0.2"],
        capsys,
    )
    assert code == 2 and "one --eps" in err and not (tmp_path / "no.h5").exists()
    figs = tmp_path / "figs"
    code, _, err = run(["plot", str(out), "--format", "png,html", "--out", str(figs)], capsys)
    assert code == 0, err
    for figure in T.FIGURES:
        for ext in ("png", "html"):
            assert (figs / f"toy_{figure}.{ext}").stat().st_size > 1000
