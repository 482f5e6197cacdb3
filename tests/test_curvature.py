"""The HVP engine and eigensolvers against dense float64 Hessians of a trained digits MLP."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.attacks import pgd
from landscape.checkpoint import load_checkpoint
from landscape.curvature import (
    HessianOperator,
    hutchinson_trace,
    hvp,
    select_params,
    slq_density,
    top_eigenpairs,
)
from landscape.data import load_dataset
from landscape.params import flatten, functional_forward, named_params, unflatten
from landscape.train import TrainConfig, train
from landscape.util import BadInput

N = 128


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """An MLP w=1 (1482 parameters) adversarially trained on digits, in float64, and 128 images."""
    out = tmp_path_factory.mktemp("mlp")
    train(TrainConfig(arch="mlp", width=1, epochs=3, eps=0.1), out, device="cpu")
    model, _ = load_checkpoint(out / "final.pt")
    X, y = load_dataset("digits", "train", None, "cpu")
    return model.double(), X[:N].double(), y[:N]


def dense_hessian(model, X, y) -> torch.Tensor:
    """torch.func.hessian of the mean loss as a function of the flat parameter vector."""
    base = named_params(model)

    def loss(flat):
        return F.cross_entropy(functional_forward(model, unflatten(flat, base), X), y)

    return torch.func.hessian(loss)(flatten(base))


@pytest.fixture(scope="module")
def spectra(mlp):
    """eps -> fixed examples (PGD once at theta, seed 0), their dense Hessian and its
    eigenpairs (descending), computed once per eps."""
    model, X, y = mlp
    cache = {}

    def get(eps: float):
        if eps not in cache:
            X_fixed = X if eps == 0 else pgd(model, X, y, eps, seed=0)
            H = dense_hessian(model, X_fixed, y)
            values, vectors = torch.linalg.eigh(H)
            cache[eps] = (model, X_fixed, y, H, values.flip(0).numpy(), vectors.flip(1))
        return cache[eps]

    return get


@pytest.fixture(params=[0.0, 0.1], ids=["clean", "eps0.1"])
def case(request, spectra):
    return spectra(request.param)


@pytest.fixture
def adv_case(spectra):
    return spectra(0.1)


def test_lanczos_top20_matches_dense(case):
    model, X, y, H, values, vectors = case
    op = HessianOperator(model, X, y, batch_size=50)
    pairs = top_eigenpairs(op, 20)
    rel = np.abs(pairs.eigenvalues - values[:20]) / np.abs(values[:20])
    assert rel.max() < 1e-4
    assert np.all(np.diff(pairs.eigenvalues) <= 0)
    assert pairs.residuals.max() < 1e-6 * values[0]
    assert torch.allclose(pairs.eigenvectors.norm(dim=1), torch.ones(20, dtype=torch.float64))
    # The top eigenvector is unique up to sign (the gap to the second is large).
    assert abs(float(pairs.eigenvectors[0] @ vectors[:, 0])) > 1 - 1e-8
    assert pairs.n_hvp == op.n_hvp and pairs.method == "lanczos"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_block_top20_matches_dense(case, dtype):
    """The block solver at its default tolerance: the top 20 to 1e-5 in fp64 and fp32,
    with no residual check beyond its own products."""
    model, X, y, H, values, vectors = case
    op = HessianOperator(copy.deepcopy(model).to(dtype), X.to(dtype), y, batch_size=50)
    pairs = top_eigenpairs(op, 20, "block")
    rel = np.abs(pairs.eigenvalues - values[:20]) / np.abs(values[:20])
    assert rel.max() < 1e-5
    assert pairs.eigenvectors.dtype == dtype and pairs.n_hvp == op.n_hvp
    assert np.all(pairs.residuals <= 1e-3 * np.abs(pairs.eigenvalues))
    assert abs(float(pairs.eigenvectors[0].double() @ vectors[:, 0])) > 1 - 1e-5


def test_lanczos_in_float32_matches_dense(adv_case):
    model, X, y, _, values, _ = adv_case
    op = HessianOperator(model.float(), X.float(), y)
    try:
        pairs = top_eigenpairs(op, 20)
    finally:
        model.double()
    assert pairs.eigenvectors.dtype == torch.float32
    assert (np.abs(pairs.eigenvalues - values[:20]) / np.abs(values[:20])).max() < 1e-4


def test_power_iteration_matches_dense_within_its_tolerance(adv_case):
    """PyHessian's power iteration at tol 1e-6: the top 3 (largest |lambda| here) to 1e-4."""
    model, X, y, _, values, _ = adv_case
    by_magnitude = values[np.argsort(-np.abs(values))][:3]
    assert np.all(by_magnitude > 0)
    op = HessianOperator(model, X, y, batch_size=50)
    pairs = top_eigenpairs(op, 3, "power", tol=1e-6, max_iter=1000)
    assert (np.abs(pairs.eigenvalues - np.sort(by_magnitude)[::-1]) / by_magnitude).max() < 1e-4
    assert pairs.n_hvp > 3 * 10 and pairs.method == "power"
    assert torch.allclose(pairs.eigenvectors.norm(dim=1), torch.ones(3, dtype=torch.float64))
    # PyHessian's side effects are undone: gradients cleared, every parameter trainable.
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_parameter_subset_is_the_dense_sub_block(adv_case):
    model, X, y, H, _, _ = adv_case
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    offsets = np.cumsum([0, *sizes])
    chosen = [i for i, n in enumerate(names) if n.startswith("fc3.") or n == "fc1.bias"]
    index = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in chosen])
    block = H[np.ix_(index, index)]
    expected = torch.linalg.eigvalsh(block).flip(0).numpy()[:10]
    op = HessianOperator(model, X, y, params=["fc3.*", "fc1.bias"])
    assert op.names == ["fc1.bias", "fc3.weight", "fc3.bias"] and op.dim == len(index)
    pairs = top_eigenpairs(op, 10)
    assert (np.abs(pairs.eigenvalues - expected) / np.abs(expected)).max() < 1e-4
    assert set(op.to_dict(pairs.eigenvectors[0])) == set(op.names)


def test_unknown_glob_is_bad_input(mlp):
    model, _, _ = mlp
    with pytest.raises(BadInput, match="'conv\\*' matches no parameter") as exc:
        select_params(model, ["fc*", "conv*"])
    assert exc.value.argument == "params"
    assert select_params(model, None) == [n for n, _ in model.named_parameters()]


def test_batches_average_exactly(spectra):
    """A batch size that does not divide N gives the same product as one batch and as dense."""
    model, X, y, H, _, _ = spectra(0.0)
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    one = HessianOperator(model, X, y, batch_size=N).matvec(v)
    many = HessianOperator(model, X, y, batch_size=37).matvec(v)
    assert torch.allclose(one, many, rtol=0, atol=1e-12)
    assert torch.allclose(many, H @ v, rtol=0, atol=1e-12)


def test_products_blocks_and_counter(mlp):
    model, X, y = mlp
    op = HessianOperator(model, X, y, batch_size=50, block=3)
    V = torch.randn(op.dim, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    looped = torch.stack([op.matvec(V[:, i]) for i in range(7)], dim=1)
    assert op.n_hvp == 7
    assert torch.allclose(op.matmat(V), looped, rtol=0, atol=1e-12)
    assert op.n_hvp == 14
    lin = op.as_linear_operator()
    x = V[:, 0].numpy()
    assert np.allclose(lin.matvec(x), looped[:, 0].numpy(), rtol=0, atol=1e-12)
    assert np.allclose(lin @ V[:, :2].numpy(), looped[:, :2].numpy(), rtol=0, atol=1e-12)
    assert op.n_hvp == 17
    with pytest.raises(ValueError):
        op.matvec(torch.zeros(op.dim + 1))


def test_gradient_loss_and_name_keyed_hvp(spectra):
    model, X, y, H, _, _ = spectra(0.0)
    op = HessianOperator(model, X, y, batch_size=50)
    loss = F.cross_entropy(model(X), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert op.loss() == pytest.approx(loss.item(), rel=1e-12)
    assert torch.allclose(op.gradient(), torch.cat([g.reshape(-1) for g in grads]), atol=1e-12)
    direction = {"fc2.weight": torch.ones(16, 16, dtype=torch.float64)}
    out = hvp(model, X, y, direction, batch_size=50)
    assert list(out) == op.names and out["fc1.weight"].shape == (16, 64)
    assert torch.allclose(flatten(out), H @ op.from_dict(direction), atol=1e-12)
    with pytest.raises(BadInput, match="not among"):
        op.from_dict({"conv1.weight": torch.zeros(1)})


def test_hutchinson_trace_within_its_standard_error(spectra):
    model, X, y, _, values, _ = spectra(0.0)
    exact = float(values.sum())
    mean, stderr = hutchinson_trace(HessianOperator(model, X, y), n_probes=64, seed=3)
    assert 0 < stderr < abs(exact)
    assert abs(mean - exact) < 4 * stderr


def test_slq_density_is_a_probability_density(spectra):
    model, X, y, _, values, _ = spectra(0.0)
    op = HessianOperator(model, X, y)
    grid, density = slq_density(op, n_probes=3, n_steps=40, seed=0)
    assert op.n_hvp == 3 * 40
    assert np.all(density >= 0)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)
    assert grid[0] < values.min() and grid[-1] > values.max()
    # Gaussian quadrature is exact for x: the mean is that of the probes' Rayleigh quotients,
    # an unbiased estimate of tr(H) / P.
    mean = np.trapezoid(grid * density, grid)
    assert mean == pytest.approx(values.mean(), abs=0.2 * np.abs(values).max())


def test_solver_bad_inputs(mlp):
    model, X, y = mlp
    op = HessianOperator(model, X, y)
    for k in (0, op.dim):
        with pytest.raises(BadInput, match=f"top {k} must be an integer") as exc:
            top_eigenpairs(op, k)
        assert exc.value.render("--top").startswith(f"--top {k} ")
    with pytest.raises(BadInput, match="'bogus' is unknown") as exc:
        top_eigenpairs(op, 2, "bogus")
    assert exc.value.argument == "method"
    with pytest.raises(BadInput, match="labels"):
        HessianOperator(model, X, y[:-1])
