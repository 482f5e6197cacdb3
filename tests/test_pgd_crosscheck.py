"""This project's PGD against torchattacks' (installed with `pip install --no-deps
torchattacks`, which imports without torchvision): the same model, data, eps, steps, step
size and random start. bench/bench_attacks.py prints the same comparison with timings."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from landscape.attacks import pgd
from landscape.data import load_dataset
from landscape.models import build_model

torchattacks = pytest.importorskip("torchattacks")

EPS, STEPS, STEP_SIZE = 0.1, 10, 0.025


@pytest.fixture(scope="module")
def mlp():
    """An mlp fitted on digits (clean test error ~5%), with 200 test images."""
    torch.manual_seed(0)
    X_train, y_train = load_dataset("digits", "train")
    model = build_model(
        "mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.37,), width=2
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(X_train), y_train).backward()
        opt.step()
    X, y = load_dataset("digits", "test")
    return model.eval(), X[:200], y[:200]


def error(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) != y).double().mean().item()


def peer_pgd(model, X, y, seed, random_start=True):
    attack = torchattacks.PGD(
        model, eps=EPS, alpha=STEP_SIZE, steps=STEPS, random_start=random_start
    )
    torch.manual_seed(seed)  # torchattacks draws its start from the global RNG
    return attack(X, y)


def test_without_random_start_both_find_the_same_examples(mlp):
    model, X, y = mlp
    ours = pgd(model, X, y, eps=EPS, steps=STEPS, step_size=STEP_SIZE, random_start=False)
    theirs = peer_pgd(model, X, y, seed=0, random_start=False)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    assert error(model, ours, y) == error(model, theirs, y) > error(model, X, y) + 0.2


def test_with_random_start_the_robust_errors_agree_within_the_seed_spread(mlp):
    model, X, y = mlp
    # Disjoint seeds, so the two samples of robust errors are independent.
    ours = [
        error(model, pgd(model, X, y, eps=EPS, steps=STEPS, step_size=STEP_SIZE, seed=s), y)
        for s in range(5)
    ]
    theirs = [error(model, peer_pgd(model, X, y, seed=100 + s), y) for s in range(5)]
    assert statistics.pstdev(ours) > 0 and statistics.pstdev(theirs) > 0  # the starts matter
    std_error = math.sqrt((statistics.pvariance(ours) + statistics.pvariance(theirs)) / 5)
    assert abs(statistics.mean(ours) - statistics.mean(theirs)) <= 2 * std_error + 1 / len(y)


def test_l2_steps_agree_once_the_peer_divides_by_the_norm_alone(mlp):
    model, X, y = mlp
    ours = pgd(model, X, y, eps=0.5, norm="l2", steps=STEPS, step_size=0.125, random_start=False)
    # PGDL2 adds 1e-10 to the norm of the batch-mean loss's gradient; 1e-30 makes it exact.
    attack = torchattacks.PGDL2(
        model, eps=0.5, alpha=0.125, steps=STEPS, random_start=False, eps_for_division=1e-30
    )
    theirs = attack(X, y)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
