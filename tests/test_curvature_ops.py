"""Hessian, GGN and empirical Fisher operators against dense float64 matrices built with
torch.func on a tiny conv net, and the block eigensolver against numpy.linalg.eigh."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import nn

from landscape.curvature import (
    MATRICES,
    CurvatureOperator,
    FisherOperator,
    GGNOperator,
    HessianOperator,
    hutchinson_trace,
    make_operator,
    top_eigenpairs,
)
from landscape.data import load_dataset
from landscape.params import flatten, functional_forward, named_params, unflatten
from landscape.util import BadInput

N = 60
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    """A conv net (Conv3x3(1, 2), tanh, max-pool, BatchNorm, Linear(32, 10): 354 parameters),
    float64, randomly initialized with seed 0, and 60 digits images."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).double()
    with torch.no_grad():  # non-trivial running statistics, used in eval mode
        model[3].running_mean.uniform_(-0.5, 0.5)
        model[3].running_var.uniform_(0.5, 2.0)
        model[5].weight.mul_(3)  # sharper logits: a less uniform softmax
    X, y = load_dataset("digits", "train", None, "cpu")
    return model.eval(), X[:N].double(), y[:N]


@pytest.fixture(scope="module")
def dense(tiny):
    """kind -> the dense float64 matrix of the mean cross-entropy, from torch.func."""
    model, X, y = tiny
    base = named_params(model)

    def logits(flat):
        return functional_forward(model, unflatten(flat, base), X)

    theta = flatten(base)
    hessian = torch.func.hessian(lambda flat: F.cross_entropy(logits(flat), y))(theta)
    J = torch.func.jacrev(logits)(theta).reshape(N * 10, -1)  # (N C, P)
    z = logits(theta).detach()
    H_L = torch.func.hessian(lambda out: F.cross_entropy(out, y))(z).reshape(N * 10, N * 10)
    ggn = J.T @ H_L @ J

    def example_losses(flat):
        return F.cross_entropy(logits(flat), y, reduction="none")

    G = torch.func.jacrev(example_losses)(theta)  # (N, P): per-example gradients
    fisher = G.T @ G / N
    return {"hessian": hessian, "ggn": ggn, "fisher": fisher}


def random_matrix(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(
        rows, cols, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("cache", [False, True], ids=["fresh", "cached"])
def test_products_match_dense(tiny, dense, matrix, cache):
    """matvec, matmat (blocks of 3, a width-1 remainder) and @ equal the dense matrix; batches
    of 25, 25, 10 are weighted exactly."""
    model, X, y = tiny
    A = dense[matrix]
    op = make_operator(matrix, model, X, y, batch_size=25, block=3, cache=cache)
    assert isinstance(op, CurvatureOperator) and op.kind == matrix and op.dim == A.shape[0]
    V = random_matrix(op.dim, 7)
    scale = float(A.abs().max())
    assert torch.allclose(op.matvec(V[:, 0]), A @ V[:, 0], rtol=0, atol=1e-12 * scale)
    assert torch.allclose(op.matmat(V), A @ V, rtol=0, atol=1e-12 * scale)
    assert torch.allclose(op @ V[:, 1], A @ V[:, 1], rtol=0, atol=1e-12 * scale)
    assert torch.allclose(op @ V[:, :2], A @ V[:, :2], rtol=0, atol=1e-12 * scale)
    assert op.n_hvp == 1 + 7 + 1 + 2
    # The same matrix from one batch.
    whole = make_operator(matrix, model, X, y, batch_size=N)
    assert torch.allclose(whole.matmat(V), A @ V, rtol=0, atol=1e-12 * scale)


def test_hessian_products_forward_and_reverse_agree(tiny, dense):
    model, X, y = tiny
    V = random_matrix(dense["hessian"].shape[0], 4, seed=2)
    for product in ("forward", "reverse"):
        op = HessianOperator(model, X, y, batch_size=25, product=product)
        assert op.product == product
        assert torch.allclose(op.matmat(V), dense["hessian"] @ V, rtol=0, atol=1e-12)
    assert HessianOperator(model, X, y, cache=True).product == "reverse"
    with pytest.raises(BadInput) as exc:
        HessianOperator(model, X, y, product="sideways")
    assert exc.value.argument == "product"


def test_ggn_and_fisher_are_positive_semidefinite(dense):
    """Cross-entropy is convex in the logits, so J^T H_L J >= 0; the Fisher is a Gram matrix.
    The Hessian here is indefinite, so the check can fail."""
    for matrix in ("ggn", "fisher"):
        values = torch.linalg.eigvalsh(dense[matrix])
        assert values.min() >= -1e-12 * values.max()
    assert torch.linalg.eigvalsh(dense["hessian"]).min() < -1e-3
    # The Fisher's rank is at most N (one outer product per example).
    assert torch.linalg.matrix_rank(dense["fisher"], rtol=1e-10) <= N


def test_operators_share_loss_and_gradient(tiny, dense):
    model, X, y = tiny
    loss = F.cross_entropy(model(X), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for cls in (HessianOperator, GGNOperator, FisherOperator):
        op = cls(model, X, y, batch_size=25)
        assert op.loss() == pytest.approx(loss.item(), rel=1e-12)
        assert torch.allclose(op.gradient(), torch.cat([g.reshape(-1) for g in grads]), atol=1e-13)


@pytest.mark.parametrize("matrix", MATRICES)
def test_block_solver_matches_eigh(tiny, dense, matrix):
    model, X, y = tiny
    expected = np.linalg.eigh(dense[matrix].numpy())[0][::-1][:8]
    op = make_operator(matrix, model, X, y, batch_size=25)
    pairs = top_eigenpairs(op, 8, "block", tol=1e-8)
    assert pairs.method == "block" and pairs.n_hvp == op.n_hvp
    assert np.abs(pairs.eigenvalues - expected).max() <= 1e-10 * expected[0]
    assert np.all(np.diff(pairs.eigenvalues) <= 0)
    # The reported residuals are the true ones, and within the stated test.
    V = pairs.eigenvectors
    true = torch.linalg.vector_norm(
        dense[matrix] @ V.T - V.T * torch.from_numpy(pairs.eigenvalues), dim=0
    )
    assert np.allclose(pairs.residuals, true.numpy(), rtol=1e-4, atol=1e-13 * expected[0])
    assert np.all(pairs.residuals <= 1e-8 * np.abs(pairs.eigenvalues))
    assert torch.allclose(V @ V.T, torch.eye(8, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("matrix", MATRICES)
def test_block_solver_in_float32(tiny, dense, matrix):
    model, X, y = tiny
    expected = np.linalg.eigh(dense[matrix].numpy())[0][::-1][:5]
    op = make_operator(matrix, copy.deepcopy(model).float(), X.float(), y)
    pairs = top_eigenpairs(op, 5, "block")
    assert pairs.eigenvectors.dtype == torch.float32
    assert (np.abs(pairs.eigenvalues - expected) / np.abs(expected)).max() < 1e-5


def test_block_solver_converges_past_the_rank(tiny, dense):
    """12 examples give a Fisher of rank <= 12: its top 15 end in zeros, which converge
    against the floor eps^(2/3) max|theta| rather than never."""
    model, X, y = tiny
    op = FisherOperator(model, X[:12], y[:12])
    pairs = top_eigenpairs(op, 15, "block", block=4)
    assert np.all(pairs.eigenvalues[:12] > 1e-8)
    assert np.abs(pairs.eigenvalues[12:]).max() < 1e-10 * pairs.eigenvalues[0]


def test_block_solver_restarts_and_small_blocks(tiny, dense):
    """Blocks of 1 and 2 for the top 6: the basis passes 4k + 2b vectors and restarts."""
    model, X, y = tiny
    expected = np.linalg.eigh(dense["hessian"].numpy())[0][::-1][:6]
    for block in (1, 2):
        op = HessianOperator(model, X, y)
        pairs = top_eigenpairs(op, 6, "block", block=block, tol=1e-9)
        assert pairs.n_hvp > 4 * 6 + 2 * block  # it did restart
        assert np.abs(pairs.eigenvalues - expected).max() <= 1e-9 * expected[0]


def test_block_solver_same_for_any_seed_and_deterministic(tiny):
    model, X, y = tiny
    op = GGNOperator(model, X, y)
    one = top_eigenpairs(op, 4, "block", seed=0, tol=1e-9)
    again = top_eigenpairs(op, 4, "block", seed=0, tol=1e-9)
    other = top_eigenpairs(op, 4, "block", seed=5, tol=1e-9)
    np.testing.assert_array_equal(one.eigenvalues, again.eigenvalues)
    np.testing.assert_allclose(other.eigenvalues, one.eigenvalues, rtol=1e-12)


def test_block_solver_limits(tiny):
    model, X, y = tiny
    op = HessianOperator(model, X, y)
    with pytest.raises(RuntimeError, match="converged .* of 5"):
        top_eigenpairs(op, 5, "block", max_iter=2)
    with pytest.raises(BadInput) as exc:
        top_eigenpairs(op, 5, "block", block=0)
    assert exc.value.argument == "block"


@pytest.mark.parametrize("matrix", ["ggn", "fisher"])
def test_power_refuses_other_matrices(tiny, matrix):
    model, X, y = tiny
    with pytest.raises(BadInput, match="Hessians only") as exc:
        top_eigenpairs(make_operator(matrix, model, X, y), 3, "power")
    assert exc.value.argument == "method"
    assert exc.value.render("--method").startswith("--method power")


def test_scipy_eigsh_on_the_linear_operator(tiny, dense):
    model, X, y = tiny
    op = GGNOperator(model, X, y, batch_size=25)
    expected = np.linalg.eigh(dense["ggn"].numpy())[0][::-1][:3]
    values = scipy.sparse.linalg.eigsh(op.as_linear_operator(), k=3, which="LA", tol=1e-10)[0]
    assert np.allclose(np.sort(values)[::-1], expected, rtol=1e-8)
    pairs = top_eigenpairs(op, 3, "lanczos", tol=1e-10)
    assert np.allclose(pairs.eigenvalues, expected, rtol=1e-8)


def test_hutchinson_trace_of_the_fisher(tiny, dense):
    model, X, y = tiny
    exact = float(torch.trace(dense["fisher"]))
    mean, stderr = hutchinson_trace(FisherOperator(model, X, y), n_probes=48, seed=1)
    assert 0 < stderr < exact and abs(mean - exact) < 4 * stderr


def test_parameter_subset_by_name(tiny, dense):
    """The GGN over the linear layer is the dense GGN's sub-block at those names' offsets."""
    model, X, y = tiny
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    offsets = dict(zip(names, np.cumsum([0, *sizes])))
    index = np.arange(offsets["5.weight"], offsets["5.weight"] + 330)
    op = make_operator("ggn", model, X, y, params=["5.*"])
    assert op.names == ["5.weight", "5.bias"]
    V = random_matrix(op.dim, 3)
    block = dense["ggn"][np.ix_(index, index)]
    assert torch.allclose(op.matmat(V), block @ V, rtol=0, atol=1e-12)


def test_unknown_matrix_is_bad_input(tiny):
    model, X, y = tiny
    with pytest.raises(BadInput) as exc:
        make_operator("laplacian", model, X, y)
    assert exc.value.argument == "matrix"
    assert exc.value.render("--matrix") == "--matrix 'laplacian' is not one of hessian, ggn, fisher"


SHARDED = """
import json, sys
import torch
from landscape import distributed
from landscape.checkpoint import build_from_spec, model_spec
from landscape.curvature import MATRICES, make_operator, top_eigenpairs
from landscape.data import load_dataset

distributed.init("cpu")
torch.manual_seed(0)
model = build_from_spec(model_spec("mlp", "digits", width=1), "cpu").double()
X, y = load_dataset("digits", "train", None, "cpu")
out = {}
for matrix in MATRICES:
    op = make_operator(matrix, model, X[:120].double(), y[:120], batch_size=40)
    pairs = top_eigenpairs(op, 4, "block", tol=1e-8)
    out[matrix] = [pairs.eigenvalues.tolist(), pairs.n_hvp, len(op.batches)]
if distributed.world().is_main:
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
distributed.shutdown(wait=True)  # no rank tears gloo down while the other still uses it
"""


@pytest.mark.slow
def test_block_solver_under_torchrun_matches_one_process(tmp_path):
    """Two ranks (batches 2 + 1 of 3) run the same block iteration as one process, for each
    matrix: the same number of products and the same eigenvalues to rounding."""
    from test_distributed import assert_ok, torchrun

    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one.json")],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_ok(single)
    assert_ok(torchrun(str(script), "two.json", cwd=tmp_path, module=False))
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    for matrix in MATRICES:
        assert one[matrix][2] == 3 and two[matrix][2] == 2  # rank 0's share of the batches
        assert two[matrix][1] == one[matrix][1]
        np.testing.assert_allclose(two[matrix][0], one[matrix][0], rtol=1e-10)
