import importlib
import json

import h5py
import numpy as np
import pytest
import torch
from torch.func import vmap

from landscape.attacks import attack_config, evaluate, perturb, perturb_points
from landscape.checkpoint import load_checkpoint
from landscape.cli import main
from landscape.data import load_dataset
from landscape.directions import Directions, random_direction
from landscape.models import build_model
from landscape.params import estimate_bn, forward_at, functional_forward, named_params
from landscape.store import Grid, read_group
from landscape.surface import parse_range, surface
from landscape.util import BadInput, make_generator

surface_module = importlib.import_module("landscape.surface")


@pytest.fixture(scope="module")
def digits(digits_run):
    model, spec = load_checkpoint(digits_run / "final.pt")
    X, y = load_dataset("digits", "train")
    return model, X[:120], y[:120]


def run_cli(*args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


@pytest.mark.parametrize(
    "text, match",
    [
        ("1:-1:5", "inverted"),
        ("1:1:5", "zero length"),
        ("-1:1:0", "count must be >= 1"),
        ("a:1:5", "two numbers"),
        ("-1:1:2.5", "two numbers"),
        ("-1:1", "a:b:n"),
        ("-1:inf:3", "finite"),
    ],
)
def test_parse_range_is_strict(text, match):
    with pytest.raises(BadInput, match=match):
        parse_range(text)


def test_parse_range_values():
    np.testing.assert_allclose(parse_range("-1:1:5"), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(parse_range("1e-2:1:3", log=True), [1e-2, 1e-1, 1])
    assert parse_range("0:2:1").tolist() == [0.0]
    with pytest.raises(BadInput, match="radii '0:1:3' is log-spaced and needs a > 0"):
        parse_range("0:1:3", "radii", log=True)


def test_origin_is_the_checkpoints_own_loss(digits):
    model, X, y = digits
    ev = evaluate(model, X, y, attack_config(0.05), seed=3)
    for ppb in (1, 4):
        s = surface(
            model, X, y, "filter", xrange=(-1.0, 1.0, 3), eps=0.05, seed=3, points_per_batch=ppb
        )
        assert s.loss[1] == pytest.approx(ev.clean_loss, rel=1e-5)
        assert s.error[1] == pytest.approx(ev.clean_error)
        # The same seed gives the same PGD start as `evaluate`: the same adversarial loss.
        assert s.adv_loss[1] == pytest.approx(ev.adv_loss, rel=1e-5)
        assert s.done.all() and np.all(s.adv_loss >= s.loss - 1e-6)


def test_vmapped_points_agree_and_grids_may_be_non_square(digits):
    model, X, y = digits
    a = surface(
        model,
        X,
        y,
        "random",
        dim=2,
        xrange=(-1.0, 1.0, 3),
        yrange=[-0.5, 0.0, 0.5, 1.0],
        points_per_batch=1,
    )
    b = surface(
        model,
        X,
        y,
        "random",
        dim=2,
        xrange=(-1.0, 1.0, 3),
        yrange=[-0.5, 0.0, 0.5, 1.0],
        points_per_batch=5,
    )
    assert (
        a.loss.shape == (3, 4)
        and a.adv_loss is None
        and set(a.arrays()) == {"x", "y", "loss", "error", "done", "nonfinite"}
    )
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)
    np.testing.assert_array_equal(a.error, b.error)
    assert a.loss[1, 1] == pytest.approx(
        evaluate(model, X, y, attack_config(0.0)).clean_loss, rel=1e-5
    )


def test_vmapped_points_agree_on_batchnorm_models():
    torch.manual_seed(0)
    model = build_model(
        "vgg", input_shape=(1, 8, 8), num_classes=10, mean=[0.3], std=[0.4], width=1
    )
    X, y = load_dataset("digits", "train")
    X, y = X[:48], y[:48]
    a = surface(model.eval(), X, y, "filter", xrange=(-1.0, 1.0, 4), points_per_batch=1)
    b = surface(model, X, y, "filter", xrange=(-1.0, 1.0, 4), points_per_batch=4)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)


def binary_linear(seed=0):
    torch.manual_seed(seed)
    model = build_model("linear", input_shape=(1, 4, 4), num_classes=2, mean=[0.0], std=[1.0])
    g = torch.Generator().manual_seed(seed)
    X = 0.3 + 0.4 * torch.rand(64, 1, 4, 4, generator=g)  # the [0, 1] clamp never binds
    y = torch.randint(0, 2, (64,), generator=g)
    return model, X, y


def closed_form(model, X, y, direction, alphas, eps, q):
    """log(1 + exp(-s (w.x + b) + eps ||w||_q)) with w = W1 - W0, s = +-1 (Kanai et al. sec. 3)."""
    p = named_params(model)
    out = []
    for a in alphas:
        W = p["fc.weight"] + a * direction["fc.weight"]
        b = p["fc.bias"] + a * direction["fc.bias"]
        w, c = (W[1] - W[0]).double(), float(b[1] - b[0])
        s = 2.0 * y.double() - 1
        margin = -s * (X.flatten(1).double() @ w + c) + eps * torch.linalg.vector_norm(w, ord=q)
        out.append(float(torch.nn.functional.softplus(margin).mean()))
    return np.array(out)


@pytest.mark.parametrize("norm, q, steps, step", [("linf", 1, 40, 0.01), ("l2", 2, 100, 0.01)])
def test_binary_linear_surface_matches_the_closed_form(norm, q, steps, step):
    model, X, y = binary_linear()
    d = random_direction(named_params(model), torch.Generator().manual_seed(1))
    alphas = np.linspace(-1, 1, 5)
    s = surface(model, X, y, [d], xrange=alphas, eps=0.1, norm=norm, steps=steps, step_size=step)
    np.testing.assert_allclose(s.adv_loss, closed_form(model, X, y, d, alphas, 0.1, q), rtol=2e-5)
    np.testing.assert_allclose(s.loss, closed_form(model, X, y, d, alphas, 0.0, q), rtol=1e-5)


def test_batchnorm_recomputed_at_the_origin_uses_the_datas_statistics():
    torch.manual_seed(0)
    model = build_model(
        "vgg", input_shape=(1, 8, 8), num_classes=10, mean=[0.3], std=[0.4], width=1
    )
    X, y = load_dataset("digits", "train")
    X, y = X[:64], y[:64]
    buffers = estimate_bn(model, named_params(model), X, batch_size=32)
    reference = build_model(
        "vgg", input_shape=(1, 8, 8), num_classes=10, mean=[0.3], std=[0.4], width=1
    )
    reference.load_state_dict(model.state_dict())
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    reference.train()
    with torch.no_grad():
        reference(X[:32])
        reference(X[32:])
    reference.eval()
    state = reference.state_dict()
    for k, v in buffers.items():
        torch.testing.assert_close(v, state[k])
    s = surface(model, X, y, "filter", xrange=[0.0], bn="recompute", batch_size=32)
    want = evaluate(reference, X, y, attack_config(0.0)).clean_loss
    assert s.loss[0] == pytest.approx(want, rel=1e-5)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_an_interrupted_grid_resumes_to_the_uninterrupted_arrays(digits, tmp_path):
    model, X, y = digits
    X, y = X[:60], y[:60]
    dirs = Directions(
        [random_direction(named_params(model), torch.Generator().manual_seed(k)) for k in (1, 2)]
    )
    kwargs = dict(dim=2, xrange=(-1.0, 1.0, 3), yrange=(-1.0, 1.0, 2), eps=0.05, points_per_batch=2)
    fields = ("loss", "error", "adv_loss", "adv_error")
    config = {"test": 1}

    full = Grid(tmp_path / "full.h5", "/surface/r", config, (3, 2), fields)
    want = surface(model, X, y, dirs, grid=full, **kwargs)
    full.finish(want.coords(), {"status": "complete", "config": "{}"}, dims=want.dims())

    class Stop(Exception):
        pass

    def stop_after_3(done, total):
        if done == 3:
            raise Stop

    path = tmp_path / "resumed.h5"
    with pytest.raises(Stop):
        surface(
            model,
            X,
            y,
            dirs,
            grid=Grid(path, "/surface/r", config, (3, 2), fields),
            progress=stop_after_3,
            **kwargs,
        )
    grid = Grid(path, "/surface/r", config, (3, 2), fields)
    assert grid.sidecar.exists() and int(grid.done.sum()) == 3
    seen = []
    got = surface(model, X, y, dirs, grid=grid, progress=lambda d, t: seen.append(d), **kwargs)
    assert seen == [4, 5, 6]
    for f in fields:
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f))
    grid.finish(got.coords(), {"status": "complete", "config": "{}"}, dims=got.dims())
    arrays, _ = read_group(path, "/surface/r")
    assert not grid.sidecar.exists() and arrays["done"].all()
    np.testing.assert_array_equal(arrays["adv_loss"], want.adv_loss)
    with pytest.raises(BadInput, match="expected"):
        surface(
            model,
            X,
            y,
            dirs,
            grid=Grid(tmp_path / "x.h5", "/s/r", config, (2, 2), fields),
            **kwargs,
        )


def test_cli_surface_end_to_end_and_plots(digits_run, tmp_path):
    out, ckpt = tmp_path / "r.h5", digits_run / "final.pt"
    common = ["--samples", 60, "--out", out, "--device", "cpu"]
    assert (
        run_cli("surface", ckpt, "--range", "-1:1:5", "--eps", "0", "--eps", "0.05", *common) == 0
    )
    assert (
        run_cli("surface", ckpt, "--dim", 2, "--range", "-1:1:3", "--yrange", "-0.5:0.5:2", *common)
        == 0
    )
    assert (
        run_cli(
            "surface",
            ckpt,
            "--dirs",
            "pca",
            "--trajectory",
            digits_run,
            "--dim",
            2,
            "--range",
            "-1:1:3",
            *common,
        )
        == 0
    )
    assert (
        run_cli(
            "surface",
            ckpt,
            "--dirs",
            "eigen",
            "--dim",
            2,
            "--range",
            "-0.5:0.5:3",
            "--orthogonalize",
            *common,
        )
        == 0
    )
    with h5py.File(out) as f:
        names = sorted(f["surface"])
        assert names == [
            "final_dirseigen_dim2d_eps0",
            "final_dirsfilter_dim1d_eps0",
            "final_dirsfilter_dim1d_eps0.05",
            "final_dirsfilter_dim2d_eps0",
            "final_dirspca_dim2d_eps0",
        ]
        g = f["surface/final_dirsfilter_dim1d_eps0.05"]
        assert {"x", "loss", "error", "adv_loss", "adv_error", "done"} <= set(g)
        assert g.attrs["status"] == "complete" and g["loss"].dims[0][0].name.endswith("/x")
        assert f["surface/final_dirsfilter_dim2d_eps0/loss"].shape == (3, 2)
        assert f["surface/final_dirspca_dim2d_eps0/trajectory"].shape == (3, 2)
    # A rerun is a cache hit; another config under the same name is refused.
    assert run_cli("surface", ckpt, "--range", "-1:1:5", "--eps", "0", *common) == 0
    assert (
        run_cli(
            "surface",
            ckpt,
            "--range",
            "-1:1:5",
            "--eps",
            "0",
            "--bias-bn",
            "filter",
            "--name",
            "final_dirsfilter_dim1d_eps0",
            *common,
        )
        == 2
    )
    figs = tmp_path / "figs"
    assert run_cli("plot", out, "--format", "png,html", "--out", figs) == 0
    written = {p.name for p in figs.iterdir()}
    for stem in ("surface_1d", "surface_3d", "surface_final_dirsfilter_dim2d_eps0_contour"):
        assert {f"{stem}.png", f"{stem}.html"} <= written


@pytest.mark.parametrize(
    "args",
    [
        ["--range", "1:-1:5"],
        ["--range", "-1:1:x"],
        ["--dim", "2", "--yrange", "0:0:3"],
        ["--yrange", "-1:1:3"],
        ["--dim", "3"],
        ["--dirs", "interp"],
        ["--dirs", "pca", "--dim", "2"],
        ["--dirs", "eigen", "--hessian-group", "/hessian/missing"],
        ["--bias-bn", "sometimes"],
    ],
)
def test_cli_surface_bad_input_exits_2_and_writes_nothing(digits_run, tmp_path, args):
    out = tmp_path / "r.h5"
    assert run_cli("surface", digits_run / "final.pt", "--samples", 20, "--out", out, *args) == 2
    assert list(tmp_path.iterdir()) == []


def stacked_points(model, coeffs):
    """Parameter sets theta + a d1 + b d2 for each (a, b), one by one and stacked."""
    base = named_params(model)
    d = [random_direction(base, torch.Generator().manual_seed(k)) for k in (1, 2)]
    points = [{n: base[n] + a * d[0][n] + b * d[1][n] for n in base} for a, b in coeffs]
    return points, {n: torch.stack([p[n] for p in points]) for n in base}


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_stacked_pgd_equals_pgd_one_point_at_a_time(digits, norm, eps):
    """perturb_points at 3 parameter points gives what perturb gives at each point from an
    equally seeded generator, and leaves its generator where one perturb call does: the
    per-point random start does not depend on the batching. L-inf sign steps give the same
    examples bit for bit; L2 steps divide by a gradient norm, so they agree to float
    rounding of the vmapped forward (measured 3e-7)."""
    model, X, y = digits
    points, stacked = stacked_points(model, [(0.0, 0.0), (0.5, -0.25), (-1.0, 1.0)])
    cfg = attack_config(eps, norm=norm, steps=10)

    def forward(z):
        per_point = z.view(len(points), *X.shape)
        logits = vmap(lambda p, xb: functional_forward(model, p, xb))(stacked, per_point)
        return logits.flatten(0, 1)

    gen = make_generator(7, X.device)
    together = perturb_points(forward, X, y, cfg, len(points), generator=gen)
    together = together.view(len(points), *X.shape)
    for k, params in enumerate(points):
        own = make_generator(7, X.device)
        alone = perturb(forward_at(model, params), X, y, cfg, generator=own)
        if norm == "linf":
            assert torch.equal(together[k], alone)
        else:
            torch.testing.assert_close(together[k], alone, rtol=0, atol=1e-6)
        assert torch.equal(gen.get_state(), own.get_state())
    assert not torch.equal(together[0], together[2])  # the points do attack differently


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_stacked_adversarial_surface_points_equal_single_points(digits, norm, eps):
    """Blocks of 4 and 2 points attacked together against every point alone (all of a
    block's points share one PGD call here): the same adversarial losses to float rounding
    (rtol 1e-6) and the same adversarial errors."""
    model, X, y = digits
    kwargs = dict(dim=2, xrange=(-1.0, 1.0, 3), yrange=[-0.5, 0.5], eps=eps, norm=norm, seed=3)
    alone = surface(model, X, y, "random", points_per_batch=1, **kwargs)
    together = surface(model, X, y, "random", points_per_batch=4, **kwargs)
    np.testing.assert_allclose(together.adv_loss, alone.adv_loss, rtol=1e-6)
    np.testing.assert_array_equal(together.adv_error, alone.adv_error)
    np.testing.assert_allclose(together.loss, alone.loss, rtol=1e-6)
    assert np.all(alone.adv_loss > alone.loss)


def test_stacked_attacks_split_to_fit_the_memory_budget(digits, monkeypatch):
    """A budget for two points' saved activations makes chunks of 2 within blocks of 4 (a
    budget below one point's still attacks one at a time); the numbers stay those of
    single points."""
    model, X, y = digits
    per_example = surface_module._activation_bytes(model, X)
    assert per_example > X[0].numel() * 4  # at least the input and more activations
    batch = 50
    monkeypatch.setattr(
        surface_module, "stacked_pgd_budget", lambda device: 2 * per_example * batch + 1
    )
    assert surface_module.adversarial_points_per_call(model, X, batch, 4) == 2
    assert surface_module.adversarial_points_per_call(model, X, batch, 1) == 1
    monkeypatch.setattr(surface_module, "stacked_pgd_budget", lambda device: 1)
    assert surface_module.adversarial_points_per_call(model, X, batch, 4) == 1
    monkeypatch.setattr(
        surface_module, "stacked_pgd_budget", lambda device: 2 * per_example * batch + 1
    )
    kwargs = dict(xrange=(-1.0, 1.0, 4), eps=0.1, seed=1, batch_size=batch)
    split = surface(model, X, y, "random", points_per_batch=4, **kwargs)
    alone = surface(model, X, y, "random", points_per_batch=1, **kwargs)
    np.testing.assert_allclose(split.adv_loss, alone.adv_loss, rtol=1e-6)
    np.testing.assert_array_equal(split.adv_error, alone.adv_error)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_surfaces_are_close_to_fp32(digits, precision):
    """bf16 and fp16 surfaces (stacked and single points, PGD included) within the stated
    tolerance of fp32: losses 2% relative, errors 0.05 absolute (6 of 120 examples); and
    not equal to them, so the network did run in the lower precision."""
    model, X, y = digits
    kwargs = dict(dim=2, xrange=(-1.0, 1.0, 3), yrange=[-0.5, 0.5], eps=0.1, seed=3)
    full = surface(model, X, y, "filter", **kwargs)
    for ppb in (1, 4):
        low = surface(model, X, y, "filter", precision=precision, points_per_batch=ppb, **kwargs)
        for f in ("loss", "adv_loss"):
            np.testing.assert_allclose(getattr(low, f), getattr(full, f), rtol=2e-2)
            assert not np.array_equal(getattr(low, f), getattr(full, f))
        for f in ("error", "adv_error"):
            np.testing.assert_allclose(getattr(low, f), getattr(full, f), rtol=0, atol=0.05)
    with pytest.raises(BadInput, match="precision 'fp8' is not valid"):
        surface(model, X, y, "filter", precision="fp8")


def test_cli_precision_is_part_of_the_run_and_its_config(digits_run, tmp_path):
    out, ckpt = tmp_path / "r.h5", digits_run / "final.pt"
    args = ["--range", "-1:1:3", "--eps", "0.05", "--samples", 40, "--out", out, "--device", "cpu"]
    assert run_cli("surface", ckpt, *args) == 0
    assert run_cli("surface", ckpt, *args, "--precision", "bf16") == 0
    full, full_attrs = read_group(out, "/surface/final_dirsfilter_dim1d_eps0.05")
    low, low_attrs = read_group(out, "/surface/final_dirsfilter_dim1d_precisionbf16_eps0.05")
    assert "precision" not in json.loads(full_attrs["config"])
    assert json.loads(low_attrs["config"])["precision"] == "bf16"
    assert not np.array_equal(low["adv_loss"], full["adv_loss"])  # computed, not reused
    np.testing.assert_allclose(low["adv_loss"], full["adv_loss"], rtol=2e-2)
    # Under an fp32 run's name a bf16 run is another config: refused, nothing lost.
    name = ["--name", "final_dirsfilter_dim1d_eps0.05"]
    assert run_cli("surface", ckpt, *args, "--precision", "bf16", *name) == 2
    assert np.array_equal(read_group(out, "/surface/" + name[1])[0]["loss"], full["loss"])
    assert run_cli("surface", ckpt, *args, "--precision", "fp8") == 2
