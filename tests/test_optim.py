"""EntropySGD (first and second order), AWP and TRADES against hand-written formulas,
plus resume, CLI and digits runs of every method."""

import copy
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.attacks import attack_config
from landscape.checkpoint import build_from_spec, model_spec, read_checkpoint
from landscape.cli import main
from landscape.data import load_dataset
from landscape.optim import (
    NEWTON_FLOOR,
    RULES,
    BatchLoss,
    EntropySGD,
    EntropySGD2,
    StepContext,
    UpdateRule,
    awp_perturbation,
    trades_kl,
)
from landscape.train import TRACE_COLUMNS, TrainConfig, train
from landscape.util import BadInput, make_generator


class LeastSquares:
    """A stand-in objective with a closed-form gradient: 0.5 mean ||W x + b - t||^2, no attack."""

    def attack(self, model, x, y, part=None):
        return x

    def loss(self, forward, x, x_adv, y):
        return 0.5 * ((forward(x_adv) - y) ** 2).sum(1).mean(), torch.zeros(())


def least_squares_grad(W, b, x, t):
    r = x @ W.T + b - t
    return r.T @ x / len(x), r.mean(0)


def linear_problem(n_batches, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 3, generator=g))
        model.bias.copy_(torch.randn(2, generator=g))
    data = [
        (torch.randn(8, 3, generator=g), torch.randn(8, 2, generator=g)) for _ in range(n_batches)
    ]
    return model, data


def drawer(data):
    it = iter(data)
    return lambda: next(it, None)


def langevin_reference(rule, data, theta, cfg):
    """Kanai et al. Alg. 1 lines 2-14 in float64, written out: the iterates theta'_l,
    mu (line 12) and xi = E[theta' * theta'] (line 13), with the rule's seeded noise. With
    an inner momentum m the gradient goes through the buffer b <- m b + g first (Nesterov:
    g + m b), as in Chaudhari et al.'s code; m = 0 is Alg. 1 as printed."""
    gen = torch.Generator().manual_seed(0)
    gen.set_state(rule.generator.get_state())
    W, b = (t.double() for t in theta)
    Wp, bp = W.clone(), b.clone()
    mu, xi = [W.clone(), b.clone()], [W * W, b * b]
    a, lr_in = cfg.mean_alpha, cfg.inner_lr
    mom = cfg.momentum if cfg.inner_momentum is None else cfg.inner_momentum
    buf = [torch.zeros_like(W), torch.zeros_like(b)]
    for x, t in data[: cfg.langevin_steps]:
        g = least_squares_grad(Wp, bp, x.double(), t.double())
        buf = [mom * u + v for u, v in zip(buf, g)]
        gW, gb = [v + mom * u for u, v in zip(buf, g)] if cfg.nesterov else buf
        noise = torch.randn(8, generator=gen).double()
        c = math.sqrt(lr_in) * cfg.entropy_noise
        Wp = Wp - lr_in * (gW + cfg.entropy_gamma * (Wp - W)) + c * noise[:6].view(2, 3)
        bp = bp - lr_in * (gb + cfg.entropy_gamma * (bp - b)) + c * noise[6:]
        mu = [(1 - a) * m + a * p for m, p in zip(mu, (Wp, bp))]
        xi = [(1 - a) * s + a * p * p for s, p in zip(xi, (Wp, bp))]
    return (W, b), mu, xi


ENSGD = dict(
    entropy_gamma=0.5,
    entropy_noise=0.3,
    inner_lr=0.2,
    inner_momentum=0.0,
    langevin_steps=4,
    mean_alpha=0.75,
)


@pytest.mark.parametrize(
    "inner",
    [dict(), dict(inner_momentum=None), dict(inner_momentum=0.5, nesterov=True)],
    ids=["alg1", "inner-momentum", "inner-nesterov"],
)
def test_entropy_sgd_outer_steps_match_formula(inner):
    """Two outer steps: theta <- theta - eta buf, buf = m buf + (theta - mu) + wd theta, with
    --lr as eta (Alg. 1 line 18 at h = 1/gamma); the Langevin steps with and without momentum."""
    cfg = TrainConfig(
        optimizer="entropy-sgd", lr=0.3, momentum=0.9, weight_decay=0.01, **{**ENSGD, **inner}
    )
    model, data = linear_problem(8)
    rule = RULES["entropy-sgd"](model, cfg)
    assert isinstance(rule, EntropySGD) and not isinstance(rule, EntropySGD2)
    ctx = StepContext(cfg.lr, 0.0, LeastSquares())
    draw = drawer(data)
    buf = None
    for k in range(2):
        theta = [model.weight.detach().clone(), model.bias.detach().clone()]
        chunk = data[4 * k : 4 * k + 4]
        (W, b), mu, _ = langevin_reference(rule, chunk, theta, cfg)
        stats = rule.step(draw, ctx)
        assert len(stats) == 4  # one trace row per mini-batch consumed
        d = [(p - m) + cfg.weight_decay * p for p, m in zip((W, b), mu)]
        buf = d if buf is None else [cfg.momentum * u + v for u, v in zip(buf, d)]
        step = [v + cfg.momentum * u for u, v in zip(buf, d)] if cfg.nesterov else buf
        expected = [p - cfg.lr * u for p, u in zip((W, b), step)]
        assert torch.allclose(model.weight.double(), expected[0], rtol=1e-5, atol=1e-6)
        assert torch.allclose(model.bias.double(), expected[1], rtol=1e-5, atol=1e-6)


def test_entropy_sgd2_step_matches_newton_formula():
    """Alg. 1 line 18 with momentum 0, no decay: theta - eta gamma h * (theta - mu),
    h = 1 / (gamma - gamma^2 (xi - mu^2)), the moments as the paper writes them."""
    # Strong noise so that the variance changes h by up to ~20% against 1 / gamma.
    settings = {**ENSGD, "entropy_gamma": 2.0, "entropy_noise": 1.0}
    cfg = TrainConfig(optimizer="entropy-sgd2", lr=0.3, momentum=0.0, **settings)
    model, data = linear_problem(4, seed=1)
    rule = RULES["entropy-sgd2"](model, cfg)
    theta = [model.weight.detach().clone(), model.bias.detach().clone()]
    (W, b), mu, xi = langevin_reference(rule, data, theta, cfg)
    rule.step(drawer(data), StepContext(cfg.lr, 0.0, LeastSquares()))
    g = cfg.entropy_gamma
    spread = torch.cat([(g * (s - m * m)).flatten() for m, s in zip(mu, xi)])
    assert spread.max() > 0.15 and spread.max() < 1 - NEWTON_FLOOR  # h matters; no clamping
    for p, m, s, got in zip((W, b), mu, xi, (model.weight, model.bias)):
        var = s - m * m
        expected = p - cfg.lr * g / (g - g * g * var) * (p - m)
        assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-5)
    # It differs from the first-order step by the preconditioner h != 1 / gamma.
    first = RULES["entropy-sgd"](copy.deepcopy(model), cfg)
    assert not torch.allclose(first.outer_gradient()[0], rule.outer_gradient()[0])


def test_entropy_sgd2_guard_clamps_the_denominator():
    cfg = TrainConfig(optimizer="entropy-sgd2", entropy_gamma=2.0)
    rule = EntropySGD2(nn.Linear(2, 1, bias=False), cfg)
    rule.mean[0].copy_(torch.tensor([[0.1, 0.1]]))
    # var = 0.01 (denominator 2 - 4 * 0.01 > 0) and var = 1.01 (2 - 4.04 < 0: concave).
    rule.square[0].copy_(torch.tensor([[0.02, 1.02]]))
    got = rule.outer_gradient()[0]
    expected = torch.tensor([[-2 * 0.1 / (2 - 4 * 0.01), -2 * 0.1 / (2 * NEWTON_FLOOR)]])
    assert torch.allclose(got, expected)


def digits_model(width=1, seed=0):
    torch.manual_seed(seed)
    return build_from_spec(model_spec("lenet", "digits", width=width), "cpu").train()


@pytest.fixture(scope="module")
def digits():
    X, y = load_dataset("digits", "train")
    return X[:256], y[:256]


def at_loss(eps=0.1, seed=0, kind="ce"):
    cfg = attack_config(eps, steps=3) if eps > 0 else None
    return BatchLoss(cfg, make_generator(seed, torch.device("cpu")), kind)


def test_one_langevin_step_with_unit_coupling_is_sgd(digits):
    """The degenerate case: L = 1, alpha = 1, eps_E = 0 and gamma eta' = 1 make
    theta' = theta - grad, mu = theta', and the outer gradient gamma (theta - mu) = grad
    (up to the rounding of theta - (theta - grad)); momentum and decay act alike."""
    X, y = digits
    common = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sgd_cfg = TrainConfig(optimizer="sgd", **common)
    ens_cfg = TrainConfig(
        optimizer="entropy-sgd",
        entropy_gamma=1.0,
        inner_lr=1.0,
        inner_momentum=0.0,
        langevin_steps=1,
        mean_alpha=1.0,
        entropy_noise=0.0,
        **common,
    )
    a = digits_model()
    b = copy.deepcopy(a)
    sgd, ens = UpdateRule(a, sgd_cfg), RULES["entropy-sgd"](b, ens_cfg)
    batches = [(X[i : i + 64], y[i : i + 64]) for i in range(0, 192, 64)]
    draw_a, draw_b = drawer(batches), drawer(batches)
    ctx_a, ctx_b = StepContext(0.05, 0.1, at_loss(seed=3)), StepContext(0.05, 0.1, at_loss(seed=3))
    for _ in batches:
        sa, sb = sgd.step(draw_a, ctx_a), ens.step(draw_b, ctx_b)
        assert torch.isclose(sa[0].loss, sb[0].loss, rtol=1e-5)
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.allclose(p, q, rtol=1e-5, atol=1e-7)
    assert not any(torch.equal(p, q) for p, q in zip(a.parameters(), digits_model().parameters()))


def test_awp_perturbation_size_and_exact_restore(digits):
    X, y = digits
    x, t = X[:64], y[:64]
    model = digits_model(width=2)
    bl = at_loss()
    x_adv = bl.attack(model, x, t)
    gamma = 0.01
    v = awp_perturbation(model, lambda f: bl.loss(f, x, x_adv, t)[0], gamma)
    params = dict(model.named_parameters())
    assert set(v) == {n for n, p in params.items() if p.dim() >= 2} and len(v) == 4
    assert all(params[n].dim() == 1 for n in params if n not in v) and len(params) > len(v)
    for n, d in v.items():
        assert torch.isclose(d.norm(), gamma * params[n].detach().norm(), rtol=1e-5)
    # It is an ascent direction: the loss at theta + v exceeds the loss at theta.
    with torch.no_grad():
        moved = copy.deepcopy(model)
        for n, p in moved.named_parameters():
            if n in v:
                p.add_(v[n])
        assert bl.loss(moved, x, x_adv, t)[0] > bl.loss(model, x, x_adv, t)[0]

    # One AWP gradient: the model's tensors come back bit-identical, the gradient is the
    # one at theta + v (checked on a perturbed copy, same examples), 1-D parameters too.
    cfg = TrainConfig(optimizer="sgd", awp_gamma=gamma, awp_warmup=0)
    rule = UpdateRule(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fixed = BatchLoss(None, bl.generator)  # eps 0 in the batch loss: x_adv given below
    ctx = StepContext(0.01, 0.1, _Fixed(fixed, x_adv))
    rule.gradient(x, t, ctx)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    loss = bl.loss(moved, x, x_adv, t)[0]
    loss.backward()
    for (n, p), q in zip(model.named_parameters(), moved.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), n


class _Fixed:
    """A batch loss whose attack returns given examples."""

    def __init__(self, inner, x_adv):
        self.inner, self.x_adv = inner, x_adv

    def attack(self, model, x, y, part=None):
        return self.x_adv

    def loss(self, forward, x, x_adv, y):
        return self.inner.loss(forward, x, x_adv, y)


def test_awp_warmup_means_plain_gradient(digits):
    X, y = digits
    model = digits_model()
    grads = []
    for awp, epoch in ((0.0, 0.0), (0.01, 0.5), (0.01, 1.0)):
        rule = UpdateRule(model, TrainConfig(optimizer="sgd", awp_gamma=awp, awp_warmup=1))
        rule.gradient(X[:64], y[:64], StepContext(0.01, 0.1, at_loss(seed=1), epoch))
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(grads[0], grads[1]))
    assert not all(torch.equal(a, b) for a, b in zip(grads[0], grads[2]))


def test_trades_kl_closed_form_and_zero_when_predictions_agree(digits):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    p, q = a.softmax(1).double(), b.softmax(1).double()
    assert torch.isclose(trades_kl(a, b).double(), (p * (p / q).log()).sum() / 5, rtol=1e-5)
    assert trades_kl(a, a.clone()) == 0
    # eps 0: x' = x, so TRADES is exactly the clean cross-entropy.
    X, y = digits
    model = digits_model()
    loss, wrong = at_loss(0.0, kind="trades")(model, X[:64], y[:64])
    logits = model(X[:64])
    assert torch.equal(loss, F.cross_entropy(logits, y[:64]))
    assert wrong == (logits.argmax(1) != y[:64]).float().mean()
    # eps > 0: PGD on the KL moves the predictions, within the ball; the KL term is positive.
    bl = at_loss(0.1, kind="trades")
    x_adv = bl.attack(model, X[:64], y[:64])
    assert (x_adv - X[:64]).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        kl = trades_kl(model(X[:64]), model(x_adv))
    assert kl > 0
    loss, _ = bl.loss(model, X[:64], x_adv, y[:64])
    assert torch.isclose(loss, F.cross_entropy(logits, y[:64]) + 6.0 * kl, rtol=1e-5)


def trace(path):
    with h5py.File(path / "trace.h5") as f:
        return {k: f["trace"][k][()] for k in f["trace"]}


@pytest.mark.parametrize(
    "extra",
    [
        dict(optimizer="entropy-sgd"),
        # AWP from the resumed epoch on
        dict(optimizer="entropy-sgd2", awp_gamma=0.01, awp_warmup=1, loss="trades"),
    ],
    ids=["entropy-sgd", "entropy-sgd2-awp-trades"],
)
def test_entropy_sgd_resume_is_exact(tmp_path, extra):
    cfg = TrainConfig(
        arch="lenet",
        width=1,
        epochs=2,
        eps=0.1,
        pgd_steps=2,
        batch_size=128,
        lr=1.0,
        entropy_gamma=1.0,
        langevin_steps=5,
        **extra,
    )
    train(cfg, tmp_path / "whole", device="cpu")
    train(cfg, tmp_path / "part", device="cpu", stop_after_epochs=1)
    resumed = train(cfg, tmp_path / "part", device="cpu")
    assert resumed.resumed_from_epoch == 1
    a = read_checkpoint(tmp_path / "whole" / "final.pt")
    b = read_checkpoint(tmp_path / "part" / "final.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    ra, rb = trace(tmp_path / "whole"), trace(tmp_path / "part")
    for k in TRACE_COLUMNS:
        assert np.array_equal(ra[k], rb[k]), k
    # One row per mini-batch: 12 batches of 128 per epoch, i.e. 3 outer steps (5 + 5 + 2).
    assert len(ra["step"]) == 24 and np.all(np.diff(ra["epoch"]) > 0)
    assert np.allclose(ra["epoch"][:12], np.arange(12) / 12)
    # distance_from_init is taken at the outer weights, so it is constant within an outer step.
    dist = ra["distance_from_init"]
    assert np.all(dist[:5] == 0) and dist[5] > 0 and np.all(dist[5:10] == dist[5])
    config = a["train"]["config"]
    assert config["optimizer"] == extra["optimizer"] and config["langevin_steps"] == 5
    assert {
        "entropy_gamma",
        "entropy_noise",
        "inner_lr",
        "mean_alpha",
        "awp_gamma",
        "awp_warmup",
        "loss",
        "trades_beta",
    } <= set(config)


def test_entropy_window_outside_is_sgd_at_the_papers_rate(tmp_path):
    """Before --entropy-start the rule takes plain steps at --lr (Kanai et al. E.1: SGD and
    EntropySGD both at 0.1): bit for bit the SGD run at that rate. After --entropy-stop the
    steps are plain again: one trace row and one update per mini-batch."""
    common = dict(arch="lenet", width=1, eps=0.1, pgd_steps=2, batch_size=128, momentum=0.9)
    for name in ("entropy-sgd", "entropy-sgd2"):
        held = TrainConfig(
            epochs=1, optimizer=name, lr=0.3, entropy_gamma=0.5, entropy_start=1, **common
        )
        train(held, tmp_path / name, device="cpu")
        sgd = TrainConfig(epochs=1, optimizer="sgd", lr=0.3, **common)
        train(sgd, tmp_path / f"sgd-{name}", device="cpu")
        a = read_checkpoint(tmp_path / name / "final.pt")["state_dict"]
        b = read_checkpoint(tmp_path / f"sgd-{name}" / "final.pt")["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    window = dict(optimizer="entropy-sgd", lr=1.0, entropy_gamma=1.0, langevin_steps=5, **common)
    train(
        TrainConfig(epochs=2, entropy_stop=1, save_epochs=(1,), **window),
        tmp_path / "stop",
        device="cpu",
    )
    train(TrainConfig(epochs=1, **window), tmp_path / "ensgd", device="cpu")
    a = read_checkpoint(tmp_path / "stop" / "epoch_001.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "ensgd" / "final.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    dist = trace(tmp_path / "stop")["distance_from_init"]
    # 12 batches an epoch: outer steps of 5 + 5 + 2 rows in epoch 1 (the distance is taken at
    # the outer weights), then a new distance at every plain step of epoch 2.
    assert len(dist) == 24 and np.all(dist[5:10] == dist[5])
    assert len(np.unique(dist[12:])) == 12


@pytest.mark.parametrize(
    "bad",
    [
        dict(optimizer="entropy"),
        dict(optimizer="entropy-sgd", entropy_start=-1),
        dict(optimizer="entropy-sgd", entropy_start=3, entropy_stop=3),
        dict(optimizer="sgd", entropy_stop=10),
        dict(langevin_steps=0),
        dict(mean_alpha=0.0),
        dict(mean_alpha=1.5),
        dict(entropy_gamma=0.0),
        dict(inner_lr=-1.0),
        dict(optimizer="entropy-sgd", inner_momentum=1.0),
        dict(momentum=-0.1),
        dict(entropy_noise=-1e-4),
        dict(awp_gamma=-0.1),
        dict(awp_warmup=-1),
        dict(loss="mart"),
        dict(trades_beta=float("nan")),
    ],
)
def test_bad_optimizer_settings_write_nothing(tmp_path, bad):
    with pytest.raises(BadInput):
        train(TrainConfig(arch="lenet", width=1, epochs=1, **bad), tmp_path / "x", device="cpu")
    assert not (tmp_path / "x").exists()


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr()


def test_cli_trains_entropy_sgd_with_awp_and_trades(tmp_path, capsys):
    out = tmp_path / "e"
    code, io = run_cli(
        [
            "train",
            "--arch",
            "lenet",
            "--width",
            "1",
            "--epochs",
            "1",
            "--eps",
            "0.05",
            "--pgd-steps",
            "1",
            "--batch-size",
            "256",
            "--optimizer",
            "entropy-sgd",
            "--lr",
            "1",
            "--gamma",
            "1",
            "--noise",
            "0.001",
            "--inner-lr",
            "0.05",
            "--langevin-steps",
            "3",
            "--mean-alpha",
            "0.5",
            "--awp",
            "0.005",
            "--awp-warmup",
            "0",
            "--loss",
            "trades",
            "--beta",
            "3",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--json",
        ],
        capsys,
    )
    assert code == 0, io.err
    config = read_checkpoint(out / "final.pt")["train"]["config"]
    assert {
        k: config[k]
        for k in (
            "optimizer",
            "entropy_gamma",
            "entropy_noise",
            "inner_lr",
            "langevin_steps",
            "mean_alpha",
            "awp_gamma",
            "loss",
            "trades_beta",
        )
    } == {
        "optimizer": "entropy-sgd",
        "entropy_gamma": 1.0,
        "entropy_noise": 0.001,
        "inner_lr": 0.05,
        "langevin_steps": 3,
        "mean_alpha": 0.5,
        "awp_gamma": 0.005,
        "loss": "trades",
        "trades_beta": 3.0,
    }
    code, io = run_cli(["train", "--mean-alpha", "0", "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and io.err.strip() == "Error: --mean-alpha must lie in (0, 1], got 0.0"
    assert not (tmp_path / "bad").exists()
    code, io = run_cli(["train", "--loss", "mart", "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "mart" in io.err and not (tmp_path / "bad").exists()


# Each method with its defaults (no --lr: the paper's rate), as a user runs it. AWP is off
# for the first 5 epochs by default (Kanai et al. E.3), so its run has one AWP epoch more.
DEFAULTS = {
    "entropy-sgd": (dict(optimizer="entropy-sgd"), 4),
    "entropy-sgd2": (dict(optimizer="entropy-sgd2"), 4),
    "awp": (dict(awp_gamma=0.01), 6),
    "trades": (dict(loss="trades"), 4),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(DEFAULTS))
def test_each_methods_defaults_beat_the_constant_classifier(tmp_path, method):
    """Digits, LeNet w=4 at eps 0.1, no option but the method's: the robust test error is
    clearly below the constant classifier's 0.896 (measured 0.42-0.55; Adam alone is the
    20-epoch acceptance test of test_train). At eps 0.2 for 8 epochs (the issue's command)
    the same defaults measured 0.69-0.80."""
    options, epochs = DEFAULTS[method]
    r = train(
        TrainConfig(arch="lenet", width=4, epochs=epochs, eps=0.1, **options),
        tmp_path,
        device="cpu",
    )
    assert r.test_robust_error < 0.75 and r.test_clean_error < 0.6 and not r.warnings
