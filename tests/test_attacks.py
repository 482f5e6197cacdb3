import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.attacks import (
    Ensemble,
    attack_config,
    evaluate,
    fgsm,
    frozen_batchnorm_stats,
    perturb,
    pgd,
)
from landscape.data import load_dataset
from landscape.models import build_model
from landscape.util import BadInput, make_generator, parse_eps


@pytest.fixture(scope="module")
def trained():
    """An mlp fitted for a few hundred steps on digits: accurate enough for attacks to matter."""
    torch.manual_seed(0)
    X, y = load_dataset("digits", "train")
    model = build_model(
        "mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.37,), width=2
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return model.eval(), X[:300], y[:300]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_ball_and_box(trained, norm):
    model, X, y = trained
    eps = 0.1 if norm == "linf" else 1.0
    x_adv = pgd(model, X, y, eps=eps, norm=norm, steps=10, step_size=eps / 4, seed=1)
    delta = (x_adv - X).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= eps * (1 + 1e-5)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_raises_error_and_loss(trained, norm):
    model, X, y = trained
    eps = 0.1 if norm == "linf" else 1.0
    cfg = attack_config(eps, norm=norm, steps=20, step_size=eps / 8)
    ev = evaluate(model, X, y, cfg)
    assert ev.adv_error > ev.clean_error + 0.2
    assert ev.adv_loss > ev.clean_loss
    # More steps do not make a weaker attack on average.
    weak = evaluate(model, X, y, attack_config(eps, norm=norm, steps=1, step_size=eps / 8))
    assert ev.adv_error >= weak.adv_error


def test_fgsm_is_one_full_step(trained):
    model, X, y = trained
    x_adv = fgsm(model, X, y, 0.05)
    X_req = X.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(X_req), y, reduction="sum"), X_req)
    expected = (X + 0.05 * g.sign()).clamp(0, 1)
    assert torch.equal(x_adv, expected)


def test_pgd_is_reproducible_with_seed(trained):
    model, X, y = trained
    a = pgd(model, X, y, eps=0.1, seed=3)
    b = pgd(model, X, y, eps=0.1, seed=3)
    c = pgd(model, X, y, eps=0.1, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eps_zero_returns_inputs(trained):
    model, X, y = trained
    assert torch.equal(pgd(model, X, y, eps=0.0), X)


def test_paper_defaults():
    mnist = attack_config(0.3, family="mnist-like")
    assert (mnist.steps, mnist.step_size) == (40, 0.01)
    cifar = attack_config(8 / 255, family="cifar-like")
    assert cifar.steps == 10 and math.isclose(cifar.step_size, 2 / 255)
    l2 = attack_config(0.5, family="cifar-like", norm="l2")
    assert math.isclose(l2.step_size, 2.5 * 0.5 / 10)
    with pytest.raises(BadInput):
        attack_config(0.1, norm="l3")


@pytest.mark.parametrize(
    "text,value", [("8/255", 8 / 255), ("0.031", 0.031), ("0", 0.0), (" 1/4 ", 0.25)]
)
def test_parse_eps(text, value):
    assert math.isclose(parse_eps(text), value)


@pytest.mark.parametrize("text", ["8/0", "-1", "abc", "nan", "inf", "1/x", ""])
def test_parse_eps_rejects(text):
    with pytest.raises(BadInput):
        parse_eps(text)


def test_ensemble_is_mean_softmax(trained):
    model, X, y = trained
    torch.manual_seed(5)
    other = build_model(
        "mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.37,), width=2
    ).eval()
    ens = Ensemble([model, other])
    probs = (F.softmax(model(X), 1) + F.softmax(other(X), 1)) / 2
    assert torch.allclose(ens(X).exp(), probs, atol=1e-6)
    # Evaluating a list attacks the ensemble as one model.
    cfg = attack_config(0.1, steps=5, step_size=0.03)
    a = evaluate([model, other], X, y, cfg, seed=2)
    b = evaluate(ens, X, y, cfg, seed=2)
    assert a == b


def test_frozen_batchnorm_keeps_running_stats():
    torch.manual_seed(0)
    model = build_model(
        "vgg", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.37,), width=1
    ).train()
    X, y = load_dataset("digits", "train")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen_batchnorm_stats(model):
        perturb(
            model,
            X[:32],
            y[:32],
            attack_config(0.1, steps=3),
            generator=make_generator(0, X.device),
        )
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.momentum == 0.1
