"""Mode connectivity: the Bezier curve's algebra, BN re-estimation, training, resuming,
refusals, the curve file, the CLI into HDF5 and the renderer."""

from __future__ import annotations

import importlib
import json
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape import store
from landscape.attacks import attack_config, evaluate
from landscape.checkpoint import build_from_spec, model_spec, save_checkpoint
from landscape.cli import main
from landscape.data import load_dataset
from landscape.params import functional_forward, named_params
from landscape.train import TrainConfig, train
from landscape.util import BadInput

mc = importlib.import_module("landscape.connect")

LENET = model_spec("lenet", "digits", width=1)


def random_params(spec, seed):
    torch.manual_seed(seed)
    return named_params(build_from_spec(spec))


def curve_for(spec, order, seeds=(0, 1), bend_noise=0.0):
    curve = mc.BezierCurve(
        build_from_spec(spec), random_params(spec, seeds[0]), random_params(spec, seeds[1]), order
    )
    if bend_noise:
        with torch.no_grad():
            g = torch.Generator().manual_seed(5)
            curve.bends.add_(bend_noise * torch.randn(curve.bends.shape, generator=g))
    return curve


def save_random(path, spec, seed):
    torch.manual_seed(seed)
    save_checkpoint(path, build_from_spec(spec), spec)
    return path


def run_cli(args):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


# ------------------------------------------------------------------------------ algebra


@pytest.mark.parametrize("order", [1, 2, 3, 4, 7])
def test_coefficients_are_bernstein_and_sum_to_one(order):
    for t in np.linspace(0, 1, 13):
        c = mc.bezier_coefficients(float(t), order).numpy()
        expected = [math.comb(order, i) * (1 - t) ** (order - i) * t**i for i in range(order + 1)]
        np.testing.assert_allclose(c, expected, rtol=1e-14, atol=1e-16)
        assert abs(c.sum() - 1.0) < 1e-14
    assert mc.bezier_coefficients(0.0, order).tolist() == [1.0] + [0.0] * order
    assert mc.bezier_coefficients(1.0, order).tolist() == [0.0] * order + [1.0]
    c32 = mc.bezier_coefficients(torch.tensor(0.3), order)
    assert c32.dtype == torch.float32 and abs(float(c32.sum()) - 1) < 1e-6


@pytest.mark.parametrize("order", [1, 2, 4])
def test_endpoints_are_exact(order):
    curve = curve_for(LENET, order, bend_noise=0.5)
    a, b = random_params(LENET, 0), random_params(LENET, 1)
    for t, ref in ((0.0, a), (1.0, b), (torch.tensor(0.0), a), (torch.tensor(1.0), b)):
        point = curve.params_at(t)
        assert point.keys() == ref.keys()
        for name in ref:
            assert torch.equal(point[name], ref[name]), name


def test_order_one_is_linear_interpolation_and_the_initial_curve_is_the_line():
    a, b = random_params(LENET, 0), random_params(LENET, 1)
    line = mc.BezierCurve(build_from_spec(LENET), a, b, 1)
    assert line.bends.shape[0] == 0
    quartic = curve_for(LENET, 4)  # bends initialised on the segment
    for t in (0.1, 0.37, 0.5, 0.9):
        p1, p4, pl = line.params_at(t), quartic.params_at(t), quartic.line_at(t)
        for name in a:
            expected = (1 - t) * a[name] + t * b[name]
            torch.testing.assert_close(p1[name], expected, rtol=0, atol=1e-6)
            assert torch.equal(p1[name], pl[name])
            # degree elevation: equally spaced collinear control points trace the line
            torch.testing.assert_close(p4[name], expected, rtol=0, atol=1e-5)


def test_quadratic_closed_form_and_control_points_round_trip():
    curve = curve_for(LENET, 2, bend_noise=0.3)
    points = curve.control_points()
    t = 0.3
    got = curve.params_at(t)
    for name, cp in points.items():
        expected = (1 - t) ** 2 * cp[0] + 2 * t * (1 - t) * cp[1] + t**2 * cp[2]
        torch.testing.assert_close(got[name], expected, rtol=0, atol=1e-6)
    again = mc.BezierCurve.from_control_points(build_from_spec(LENET), points, 2)
    assert torch.equal(again.bends, curve.bends)
    assert torch.equal(again.start, curve.start) and torch.equal(again.end, curve.end)


def test_gradient_reaches_the_bends_by_the_chain_rule():
    """d L(B(t)) / d theta_1 = C(n,1) (1-t)^(n-1) t * grad L at B(t), for each bend."""
    curve = curve_for(LENET, 3, bend_noise=0.1)
    X, y = load_dataset("digits", "train")
    x, y = X[:64], y[:64]
    t = 0.4
    loss = F.cross_entropy(functional_forward(curve.net, curve.params_at(t), x), y)
    loss.backward()
    point = {k: v.detach().clone().requires_grad_(True) for k, v in curve.params_at(t).items()}
    grads = torch.autograd.grad(
        F.cross_entropy(functional_forward(curve.net, point, x), y), list(point.values())
    )
    flat = torch.cat([g.reshape(-1) for g in grads])
    c = mc.bezier_coefficients(t, 3)
    for i in range(2):
        torch.testing.assert_close(
            curve.bends.grad[i], float(c[i + 1]) * flat, rtol=1e-5, atol=1e-7
        )


# ---------------------------------------------------------------------------- batchnorm

VGG = model_spec("vgg", "digits", width=1)


def test_bn_estimate_is_the_data_mean_and_leaves_the_network_alone():
    """The running mean is the mean over the whole data of each BN layer's input as the
    batched train-mode pass computes it, though the batches differ in size."""
    net = build_from_spec(VGG).eval()
    params = random_params(VGG, 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    X, _ = load_dataset("digits", "train")
    stats = mc.estimate_bn(net, params, X, batch_size=500)  # batches of 500, 500, 440
    assert not net.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    inputs: dict[str, list] = {}
    hooks = [
        m.register_forward_pre_hook(
            lambda mod, args, name=name: inputs.setdefault(name, []).append(args[0])
        )
        for name, m in net.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    net.train()
    with torch.no_grad():
        scratch = {k: v.clone() for k, v in stats.items()}
        for xb in X.split(500):
            functional_forward(net, params, xb, scratch)
    for h in hooks:
        h.remove()
    assert len(inputs) == 13
    for name, seen in inputs.items():
        data_mean = torch.cat(seen).double().mean(dim=(0, 2, 3)).float()
        torch.testing.assert_close(stats[f"{name}.running_mean"], data_mean, rtol=1e-5, atol=1e-6)
        assert int(stats[f"{name}.num_batches_tracked"]) == 3
    assert mc.estimate_bn(build_from_spec(LENET), random_params(LENET, 0), X) == {}


def test_bn_at_t0_reproduces_the_endpoint_with_bn_reestimated_the_standard_way(tmp_path):
    """B(0) is theta_0 bit for bit, so its statistics re-estimated on the training data equal
    those of the endpoint model re-estimated with torch's momentum=None cumulative average
    over the same equal batches, and so do the clean and robust metrics."""
    a, b = save_random(tmp_path / "a.pt", VGG, 0), save_random(tmp_path / "b.pt", VGG, 1)
    ends = mc.load_endpoints(a, b)
    curve = mc.BezierCurve(build_from_spec(VGG), ends.start, ends.end, 2)
    X, y = load_dataset("digits", "train")
    Xt, yt = load_dataset("digits", "test")
    Xt, yt = Xt[:120], yt[:120]
    attack = attack_config(0.05)
    res = mc.connect(
        curve, (X[:120], y[:120]), (Xt, yt), attack, points=2, bn_data=(X, y), batch_size=480
    )

    ref = build_from_spec(VGG)
    ref.load_state_dict(torch.load(a, weights_only=True)["state_dict"])
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    ref.train()
    with torch.no_grad():
        for xb in X.split(480):
            ref(xb)
    stats = mc.estimate_bn(curve.net, curve.params_at(0.0), X, batch_size=480)
    for k, v in stats.items():
        assert torch.equal(v, ref.state_dict()[k]), k
    for split, (Xs, ys) in (("train", (X[:120], y[:120])), ("test", (Xt, yt))):
        ev = evaluate(ref, Xs, ys, attack, batch_size=480)
        assert getattr(res, f"{split}_loss")[0] == pytest.approx(ev.clean_loss, abs=1e-6)
        assert getattr(res, f"{split}_error")[0] == ev.clean_error
        assert getattr(res, f"adv_{split}_loss")[0] == pytest.approx(ev.adv_loss, abs=1e-6)
        assert getattr(res, f"adv_{split}_error")[0] == ev.adv_error
    # the straight line starts at the same point
    assert res.line_train_loss[0] == res.train_loss[0]
    assert res.line_adv_test_error[-1] == res.adv_test_error[-1]
    # `landscape eval curve.pt --t 0` builds exactly that model: weights and statistics
    mc.save_curve(tmp_path / "c.pt", curve, ends.spec, endpoints={}, train={})
    net, spec = mc.point_model(tmp_path / "c.pt", 0.0, batch_size=480)
    assert not net.training and spec["arch"] == "vgg"
    own = net.state_dict()
    assert own.keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(own[k], v), k


def test_bn_inputs_adv_changes_the_statistics_and_needs_eps():
    net, params = build_from_spec(VGG), random_params(VGG, 0)
    X, y = load_dataset("digits", "train")
    X, y = X[:200], y[:200]
    clean = mc.point_buffers(net, params, X, y)
    adv = mc.point_buffers(net, params, X, y, bn_inputs="adv", attack=attack_config(0.1))
    assert clean.keys() == adv.keys()
    assert not torch.equal(
        clean["feature_extractor.1.running_mean"], adv["feature_extractor.1.running_mean"]
    )
    with pytest.raises(BadInput, match="eps > 0"):
        mc.check_evaluation(5, "adv", attack_config(0.0))
    with pytest.raises(BadInput, match="points"):
        mc.check_evaluation(1, "clean", attack_config(0.0))


def test_state_digest_covers_batchnorm_step_counts():
    """An in-memory curve's identity (`state_sha256`) reads 0-d buffers too."""
    from landscape.analysis import state_sha256

    net = build_from_spec(VGG)
    before = state_sha256(net)
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    bn.num_batches_tracked += 1
    assert state_sha256(net) != before


def test_connect_analysis_is_found_stored_before_training_and_cached(tmp_path):
    """The library path of `landscape connect`: `Connect` on `curve_inputs` through
    `analysis.run` stores what `connect` computes, with the curve file as its checkpoint;
    `stored_state` answers before any curve exists, a rerun is a cache hit with the same
    record, and another config under the same name is refused."""
    from landscape import analysis
    from landscape.analysis import Inputs
    from landscape.checkpoint import sha256_file

    a, b = save_random(tmp_path / "a.pt", LENET, 0), save_random(tmp_path / "b.pt", LENET, 1)
    ends = mc.load_endpoints(a, b)
    training = mc.CurveConfig(order=1)  # the straight line: a curve file, nothing to train
    inputs = mc.curve_inputs(ends, training, samples=30, bn_samples=40)
    assert inputs.checkpoint == "" and inputs.bn[0].shape[0] == 40
    attack = attack_config(0.05, steps=2)
    job = mc.Connect(attack, points=3)
    out = tmp_path / "r.h5"
    done, stored = analysis.stored_state(job, inputs, out=out, name="c")
    assert not stored and done.tolist() == [False] * 3 and not out.exists()

    trained = mc.train_curve(ends, training, tmp_path / "c.curve.pt")
    inputs = inputs.with_curve(trained)
    first = analysis.run(job, inputs, out=out, name="c")
    assert first.group == "/connect/c" and not first.cached
    assert first.attrs["checkpoint"] == str(tmp_path / "c.curve.pt")
    assert first.attrs["checkpoint_sha256"] == sha256_file(tmp_path / "c.curve.pt")
    assert first.attrs["order"] == 1 and first.attrs["start_sha256"] == ends.start_sha256
    X, y = load_dataset("digits", "train")
    Xt, yt = load_dataset("digits", "test")
    direct = mc.connect(
        trained.curve, (X[:30], y[:30]), (Xt[:30], yt[:30]), attack, points=3, bn_data=(X, y)
    )
    again = analysis.run(job, inputs, out=out, name="c")
    assert again.cached and again.elapsed_s == first.elapsed_s
    for name, value in direct.arrays().items():
        np.testing.assert_array_equal(getattr(first.result, name), value, err_msg=name)
        np.testing.assert_array_equal(getattr(again.result, name), value, err_msg=name)
    assert analysis.stored_state(job, inputs, out=out, name="c")[1]
    with pytest.raises(BadInput, match="another config"):
        analysis.stored_state(mc.Connect(attack, points=4), inputs, out=out, name="c")
    longer = mc.CurveConfig(order=1, epochs=3)  # another curve is another config
    with pytest.raises(BadInput, match="another config"):
        analysis.run(
            job, mc.curve_inputs(ends, longer, samples=30, bn_samples=40), out=out, name="c"
        )
    with pytest.raises(BadInput, match="curve"):
        job.check(Inputs(build_from_spec(LENET), X[:5], y[:5]))


def test_reduced_precision_evaluation_is_close_to_fp32():
    """bf16 along a VGG curve, BN re-estimated on PGD examples: the statistics come back in
    bf16 within 2% (plus 0.02) of fp32, and no metric equals fp32's. Tolerances: clean
    losses 1%, adversarial losses 5%, errors 0.08 absolute (measured 0.4%, 3% and 0.04):
    an untrained VGG's logits are near ties and its input gradients nearly random, so
    argmax and PGD's sign steps amplify rounding more than on a trained network."""
    curve = curve_for(VGG, 2, bend_noise=0.01)
    X, y = load_dataset("digits", "train")
    Xt, yt = load_dataset("digits", "test")
    attack = attack_config(0.05, steps=3)
    params = curve.params_at(0.5)
    stats = mc.point_buffers(curve.net, params, X[:200], y[:200], bn_inputs="adv", attack=attack)
    low = mc.point_buffers(
        curve.net, params, X[:200], y[:200], bn_inputs="adv", attack=attack, dtype=torch.bfloat16
    )
    assert low.keys() == stats.keys()
    for k, v in stats.items():
        if v.is_floating_point():
            assert low[k].dtype == torch.bfloat16
            torch.testing.assert_close(low[k].float(), v, rtol=2e-2, atol=2e-2)
    data = dict(
        train_data=(X[:100], y[:100]), test_data=(Xt[:100], yt[:100]), attack=attack, points=3
    )
    full = mc.connect(curve, bn_inputs="adv", bn_data=(X[:200], y[:200]), **data)
    half = mc.connect(curve, bn_inputs="adv", bn_data=(X[:200], y[:200]), precision="bf16", **data)
    for name, values in full.arrays().items():
        if name.endswith("loss"):
            rtol = 5e-2 if "adv_" in name else 1e-2
            np.testing.assert_allclose(getattr(half, name), values, rtol=rtol)
            assert not np.array_equal(getattr(half, name), values)
        elif name.endswith("error"):
            np.testing.assert_allclose(getattr(half, name), values, rtol=0, atol=0.08)


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "other",
    [
        model_spec("mlp", "digits", width=1),
        model_spec("lenet", "digits", width=2),
        model_spec("lenet", "digits", width=1, activation="tanh"),
        model_spec("lenet", "mnist", width=1),
    ],
    ids=["arch", "width", "activation", "dataset"],
)
def test_mismatched_checkpoints_are_refused_before_any_output(tmp_path, other):
    a = save_random(tmp_path / "a.pt", LENET, 0)
    b = save_random(tmp_path / "b.pt", other, 1)
    key = next(k for k in mc.SPEC_KEYS if LENET[k] != other[k])
    with pytest.raises(BadInput, match=key):
        mc.load_endpoints(a, b)
    out = tmp_path / "r.h5"
    assert run_cli(["connect", str(a), str(b), "--out", str(out), "--device", "cpu"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]


def test_bad_options_are_refused_before_any_output(tmp_path):
    a, b = save_random(tmp_path / "a.pt", LENET, 0), save_random(tmp_path / "b.pt", LENET, 1)
    base = ["connect", str(a), str(b), "--out", str(tmp_path / "r.h5"), "--device", "cpu"]
    assert run_cli([*base, "--bn-inputs", "adv"]) == 2  # eps 0
    assert run_cli([*base, "--lr", "-1"]) == 2
    assert run_cli([*base, "--lr-schedule", "cyclic"]) == 2
    assert run_cli([*base, "--points", "1"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]
    with pytest.raises(BadInput, match="not a landscape curve"):
        mc.load_curve(a)
    assert not mc.is_curve(a) and not mc.is_curve(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two LeNet w=1 digits models trained from different seeds (vanilla, 4 epochs)."""
    root = tmp_path_factory.mktemp("pair")
    for seed in (0, 1):
        train(TrainConfig(arch="lenet", width=1, epochs=4, lr=0.01, seed=seed), root / f"m{seed}")
    return root / "m0" / "final.pt", root / "m1" / "final.pt"


@pytest.mark.slow
def test_training_the_curve_lowers_the_path_loss_below_the_line(pair, tmp_path):
    ends = mc.load_endpoints(*pair)
    config = mc.CurveConfig(order=2, epochs=3, lr=0.01)
    trained = mc.train_curve(ends, config, tmp_path / "curve.pt")
    assert trained.complete and not trained.reused and trained.epochs == 3
    assert trained.loss[-1] < trained.loss[0]
    X, y = load_dataset("digits", "train")
    Xt, yt = load_dataset("digits", "test")
    res = mc.connect(trained.curve, (X[:400], y[:400]), (Xt, yt), attack_config(0.0), points=9)
    assert res.complete and res.adv_train_loss is None
    assert res.train_loss.mean() < 0.7 * res.line_train_loss.mean()
    assert mc.barrier(res.train_loss, res.t) < mc.barrier(res.line_train_loss, res.t)
    np.testing.assert_array_equal(res.train_loss[[0, -1]], res.line_train_loss[[0, -1]])
    # the file round-trips, loads with weights_only, and a rerun reuses it
    raw = torch.load(tmp_path / "curve.pt", weights_only=True)
    assert raw["format"] == "landscape-curve" and raw["order"] == 2
    assert raw["endpoints"]["start_sha256"] == ends.start_sha256
    assert all(v.shape[0] == 3 for v in raw["control_points"].values())
    again = mc.train_curve(ends, config, tmp_path / "curve.pt")
    assert again.reused and torch.equal(again.curve.bends, trained.curve.bends)
    with pytest.raises(BadInput, match="another config"):
        mc.train_curve(ends, mc.CurveConfig(order=2, epochs=2, lr=0.01), tmp_path / "curve.pt")


@pytest.mark.slow
def test_interrupted_training_resumes_bit_identically(pair, tmp_path):
    ends = mc.load_endpoints(*pair)
    config = mc.CurveConfig(
        order=3, epochs=3, lr=0.01, eps=0.03, optimizer="sgd", weight_decay=1e-3
    )
    whole = mc.train_curve(ends, config, tmp_path / "whole.pt")
    part = mc.train_curve(ends, config, tmp_path / "part.pt", stop_after_epochs=1)
    assert not part.complete and (tmp_path / "part.resume.pt").exists()
    rest = mc.train_curve(ends, config, tmp_path / "part.pt")
    assert rest.resumed_from_epoch == 1 and rest.complete
    assert not (tmp_path / "part.resume.pt").exists()
    assert torch.equal(rest.curve.bends, whole.curve.bends)
    assert rest.loss == whole.loss and rest.steps == whole.steps
    # the endpoints never moved
    assert torch.equal(rest.curve.start, whole.curve.start)
    assert torch.equal(rest.curve.params_at(1.0)["fc2.weight"], ends.end["fc2.weight"])


@pytest.mark.slow
def test_interrupted_evaluation_resumes_to_identical_arrays(pair, tmp_path):
    ends = mc.load_endpoints(*pair)
    curve = mc.BezierCurve(build_from_spec(ends.spec), ends.start, ends.end, 2)
    with torch.no_grad():
        curve.bends.add_(0.05)
    X, y = load_dataset("digits", "train")
    Xt, yt = load_dataset("digits", "test")
    data = dict(train_data=(X[:100], y[:100]), test_data=(Xt[:100], yt[:100]))
    attack = attack_config(0.05)
    whole = mc.connect(curve, attack=attack, points=5, **data)

    def grid():
        return store.Grid(tmp_path / "r.h5", "/connect/x", {"a": 1}, (5,), mc.fields(True))

    part = mc.connect(curve, attack=attack, points=5, grid=grid(), stop_after_points=2, **data)
    assert part.done.sum() == 2 and not part.complete
    g = grid()
    assert len(g.pending()) == 3
    rest = mc.connect(curve, attack=attack, points=5, grid=g, **data)
    assert rest.complete
    for name, value in whole.arrays().items():
        np.testing.assert_array_equal(getattr(rest, name), value, err_msg=name)


# ---------------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_end_to_end_into_hdf5_eval_at_t_and_plot(pair, tmp_path):
    a, b = map(str, pair)
    out = tmp_path / "r.h5"
    args = ["connect", a, b, "--epochs", "1", "--lr", "0.01", "--points", "3", "--samples", "100"]
    args += ["--eps", "0.03", "--out", str(out), "--device", "cpu", "--json"]
    assert run_cli(args) == 0
    group = "/connect/m0-m1_order2_eps0.03"
    arrays, attrs = store.read_group(out, group)
    assert set(mc.fields(True)) <= set(arrays) and "t" in arrays
    np.testing.assert_array_equal(arrays["t"], [0.0, 0.5, 1.0])
    assert attrs["status"] == "complete" and attrs["order"] == 2
    assert all(k in attrs for k in store.PROVENANCE_KEYS)
    with h5py.File(out) as f:
        assert f[group]["adv_train_loss"].dims[0][0].name == f"{group}/t"
    curve_file = tmp_path / "m0-m1_order2_eps0.03.curve.pt"
    assert mc.is_curve(curve_file)
    assert attrs["checkpoint"] == str(curve_file)
    assert run_cli(args) == 0  # a cache hit
    assert sorted(p.name for p in tmp_path.iterdir()) == [curve_file.name, "r.h5"]

    # eval --t 0 on the curve is the first endpoint itself (LeNet has no BN)
    ev = ["eval", "--samples", "50", "--eps", "0.03", "--device", "cpu", "--json"]
    assert run_cli([*ev, str(curve_file), "--t", "0"]) == 0
    assert run_cli([*ev, a]) == 0
    assert run_cli([*ev, str(curve_file)]) == 2  # a curve needs --t
    assert run_cli([*ev, a, "--t", "0.5"]) == 2  # --t needs a curve

    assert run_cli(["plot", str(out), "--format", "png,html", "--out", str(tmp_path / "fig")]) == 0
    names = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert names == ["connect.html", "connect.png", "connect_clean.html", "connect_clean.png"]
    assert (tmp_path / "fig" / "connect.png").stat().st_size > 10_000


def test_eval_at_t0_matches_the_endpoint(tmp_path, capsys):
    a, b = save_random(tmp_path / "a.pt", LENET, 0), save_random(tmp_path / "b.pt", LENET, 1)
    ends = mc.load_endpoints(a, b)
    curve = mc.BezierCurve(build_from_spec(LENET), ends.start, ends.end, 2)
    mc.save_curve(
        tmp_path / "c.pt", curve, ends.spec, endpoints={}, train={"config": {"eps": 0.05}}
    )
    ev = ["eval", "--samples", "60", "--device", "cpu", "--json"]
    outputs = []
    for extra in (["--t", "0", str(tmp_path / "c.pt")], ["--eps", "0.05", str(a)]):
        capsys.readouterr()
        assert run_cli([*ev, *extra]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    for key in ("clean_loss", "clean_error", "adv_loss", "adv_error"):
        assert outputs[0][key] == outputs[1][key]
    assert outputs[0]["t"] == 0.0


def test_renderer_draws_one_colour_per_eps_with_dashed_lines():
    from landscape.plots import Group, renderers

    render = renderers()["connect"]
    t = np.linspace(0, 1, 5)
    groups = []
    for eps in (0.0, 0.1):
        arrays = {"t": t, **{f: np.linspace(1, 2, 5) for f in mc.fields(eps > 0)}}
        config = store.canonical_config({"eps": eps})
        groups.append(Group(f"/connect/e{eps}", arrays, {"config": config, "order": 2}))
    figures = render(groups)
    assert [f.name for f in figures] == ["connect", "connect_clean"]
    ax = figures[0].matplotlib.axes[0]
    styles = [(line.get_color(), line.get_linestyle()) for line in ax.get_lines()]
    assert len(styles) == 4 and len({c for c, _ in styles}) == 2
    assert sorted(s for _, s in styles) == ["-", "-", "--", "--"]
    assert len(figures[0].plotly.data) == 8
    assert render(groups[:1])[0].name == "connect" and len(render(groups[:1])) == 1
