"""Hessian-vector products and eigensolvers: the curvature engine every analysis uses.

`HessianOperator` is the Hessian of the mean loss over fixed examples (Liu et al.
4.2: adversarial examples generated once at theta), with respect to all trainable
parameters or a name-glob subset, evaluated at the model's current parameters. Each
product is forward-over-reverse (`torch.func.jvp` of `torch.func.grad`) over fixed
batches, weighted by batch size / N, so the result does not depend on `batch_size`;
blocks of vectors share one pass over the data through `vmap`. The model is used in
eval mode and computed in its own dtype (fp32 for checkpoints).

Eigensolvers: Lanczos (scipy's ARPACK `eigsh` on a LinearOperator) and PyHessian's
deflated power iteration (Yao et al. 2018; the method of Liu et al.), run through the
`pyhessian` package itself; Hutchinson's trace estimator and stochastic Lanczos
quadrature for the spectral density (Ghorbani et al. 2019).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from . import distributed
from .params import ParamDict, flatten, functional_forward, unflatten
from .util import BadInput, make_generator

METHODS = ("lanczos", "power")
MATRICES = ("hessian",)
# Lanczos stops when every Ritz residual is below tol * |lambda|; fp32 products are
# good to ~1e-7 relative, so tighter asks only buy restarts.
LANCZOS_TOL = 1e-6
# PyHessian's own default: relative change of consecutive Rayleigh quotients.
POWER_TOL = 1e-3
POWER_MAX_ITER = 100

LossFn = Callable[[Tensor, Tensor], Tensor]


class NonFiniteProduct(ArithmeticError):
    """A Hessian-vector product came out NaN or infinite (the loss diverges at theta)."""


def _mean_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


def select_params(model: nn.Module, globs: Sequence[str] | None = None) -> list[str]:
    """Trainable parameter names matching any of the fnmatch `globs` (all when None), in model order.

    A glob that matches nothing is a BadInput, so a typo never silently shrinks the subset.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise BadInput("the model has no trainable parameters to take a Hessian over")
    if not globs:
        return names
    for pattern in globs:
        if not any(fnmatchcase(n, pattern) for n in names):
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise BadInput(f"--params {pattern!r} matches no parameter of the model ({shown})")
    return [n for n in names if any(fnmatchcase(n, pattern) for pattern in globs)]


class HessianOperator:
    """The Hessian H of the mean loss over (X, y) w.r.t. the parameters `params` (names or globs).

    Vectors are flat, in the order of `names`; parameters outside the subset are held
    fixed. `loss_fn(logits, y)` must be the batch mean (default cross-entropy); each
    batch is weighted by its size / N, so H is exactly the Hessian of the mean over all
    N examples. `n_hvp` counts products (a block of k vectors counts k). `block` is the
    most vectors vmapped through one pass over the data (memory grows with it).

    Under torchrun each rank takes every size-th batch (`distributed.shard`), keeps the
    global weights size / N, and the weighted sums of products, gradients and losses are
    all-reduced; every rank then holds the same operator, so an eigensolver run on every
    rank takes the same steps. (X, y) must be the full data on every rank, though only
    this rank's batches are read.
    """

    def __init__(
        self,
        model: nn.Module,
        X: Tensor,
        y: Tensor,
        *,
        params: Sequence[str] | None = None,
        batch_size: int = 256,
        loss_fn: LossFn | None = None,
        block: int = 16,
    ) -> None:
        if batch_size < 1 or block < 1:
            raise BadInput(f"batch size {batch_size} and block {block} must be >= 1")
        if X.shape[0] == 0 or X.shape[0] != y.shape[0]:
            raise BadInput(
                f"need as many labels as examples, >= 1 (got {X.shape[0]} and {y.shape[0]})"
            )
        self.model = model.eval()
        self.names = select_params(model, params)
        named = dict(model.named_parameters())
        first = named[self.names[0]]
        self.device, self.dtype = first.device, first.dtype
        self.shapes = {n: tuple(named[n].shape) for n in self.names}
        self.dim = sum(named[n].numel() for n in self.names)
        self.loss_fn = loss_fn or _mean_cross_entropy
        self.block = block
        self.n_hvp = 0
        self._params: ParamDict = {n: named[n].detach() for n in self.names}
        # Detached, so autograd never records the fixed parameters.
        self._fixed: ParamDict = {n: p.detach() for n, p in named.items() if n not in self._params}
        X = X.to(self.device, self.dtype)
        y = y.to(self.device)
        n = X.shape[0]
        self.n = n
        batches = [
            (X[i : i + batch_size], y[i : i + batch_size], min(batch_size, n - i) / n)
            for i in range(0, n, batch_size)
        ]
        self.batches = [batches[i] for i in distributed.shard(len(batches))]
        self._grad = grad(self._batch_loss)

    def _batch_loss(self, params: ParamDict, x: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(functional_forward(self.model, {**self._fixed, **params}, x), y)

    def _hvp_dict(self, x: Tensor, y: Tensor, tangent: ParamDict) -> ParamDict:
        return jvp(lambda p: self._grad(p, x, y), (self._params,), (tangent,))[1]

    def _check(self, v: Tensor, ndim: int) -> Tensor:
        if v.dim() != ndim or v.shape[0] != self.dim:
            raise ValueError(
                f"expected a tensor with {self.dim} rows and {ndim} dims, got {tuple(v.shape)}"
            )
        return v.to(self.device, self.dtype).contiguous()

    def _split_columns(self, cols: Tensor) -> ParamDict:
        """(dim, k) columns as {name: (k, *shape)}, the layout vmap maps over."""
        out: ParamDict = {}
        offset = 0
        for n in self.names:
            size = self._params[n].numel()
            out[n] = cols[offset : offset + size].T.reshape(cols.shape[1], *self.shapes[n])
            offset += size
        return out

    def matvec(self, v: Tensor) -> Tensor:
        """H v for a flat vector v of length `dim`."""
        tangent = unflatten(self._check(v, 1), self._params)
        out = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        for x, y, weight in self.batches:
            out.add_(flatten(self._hvp_dict(x, y, tangent), self.names), alpha=weight)
        self.n_hvp += 1
        return distributed.all_reduce_sum(out)

    def matmat(self, V: Tensor) -> Tensor:
        """H V for V of shape (dim, k): blocks of up to `block` columns share one data pass."""
        V = self._check(V, 2)
        out = torch.zeros_like(V)
        for start in range(0, V.shape[1], self.block):
            cols = V[:, start : start + self.block]
            if cols.shape[1] == 1:
                out[:, start] = self.matvec(cols[:, 0])
                continue
            self.n_hvp += cols.shape[1]
            tangents = self._split_columns(cols)
            part = torch.zeros_like(cols)
            for x, y, weight in self.batches:
                hv = vmap(lambda t, x=x, y=y: self._hvp_dict(x, y, t))(tangents)
                flat = torch.cat([hv[n].reshape(cols.shape[1], -1) for n in self.names], dim=1)
                part.add_(flat.T, alpha=weight)
            out[:, start : start + cols.shape[1]] = distributed.all_reduce_sum(part)
        return out

    def gradient(self) -> Tensor:
        """The gradient of the mean loss, flat, in the order of `names`."""
        out = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        for x, y, weight in self.batches:
            out.add_(flatten(self._grad(self._params, x, y), self.names), alpha=weight)
        return distributed.all_reduce_sum(out)

    def loss(self) -> float:
        """The mean loss over all N examples."""
        with torch.no_grad():
            total = sum(
                float(self._batch_loss(self._params, x, y)) * weight
                for x, y, weight in self.batches
            )
        if not distributed.world().distributed:
            return float(total)
        summed = torch.tensor([float(total)], dtype=torch.float64, device=self.device)
        return float(distributed.all_reduce_sum(summed))

    def to_dict(self, v: Tensor) -> ParamDict:
        """A flat vector as {name: tensor} (views of v)."""
        return unflatten(self._check(v, 1), self._params)

    def from_dict(self, d: Mapping[str, Tensor]) -> Tensor:
        """A name-keyed direction as a flat vector; names it lacks count as zero."""
        unknown = [k for k in d if k not in self._params]
        if unknown:
            raise BadInput(
                f"direction names {unknown[:3]} are not among the operator's parameters ({len(self.names)} names)"
            )
        return torch.cat(
            [
                d[n].reshape(-1).to(self.device, self.dtype)
                if n in d
                else torch.zeros(self._params[n].numel(), device=self.device, dtype=self.dtype)
                for n in self.names
            ]
        )

    def as_linear_operator(self) -> scipy.sparse.linalg.LinearOperator:
        """H as a scipy LinearOperator: float64 numpy outside, products in the model's dtype on its device.

        A non-finite product raises `NonFiniteProduct` rather than feeding NaN to ARPACK.
        """

        def finite(out: np.ndarray) -> np.ndarray:
            if not np.isfinite(out).all():
                raise NonFiniteProduct(
                    f"a Hessian-vector product is non-finite (loss {self.loss()})"
                )
            return out

        def matvec(x: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
            return finite(self.matvec(v).double().cpu().numpy())

        def matmat(X: np.ndarray) -> np.ndarray:
            return finite(
                self.matmat(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64)))
                .double()
                .cpu()
                .numpy()
            )

        return scipy.sparse.linalg.LinearOperator(
            (self.dim, self.dim), matvec=matvec, rmatvec=matvec, matmat=matmat, dtype=np.float64
        )


def make_operator(
    matrix: str,
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    params: Sequence[str] | None = None,
    batch_size: int = 256,
    loss_fn: LossFn | None = None,
) -> HessianOperator:
    """The curvature operator `matrix` of the mean loss over (X, y)."""
    if matrix not in MATRICES:
        raise BadInput(
            f"{{arg}} {matrix!r} is not valid; use one of {', '.join(MATRICES)}", argument="matrix"
        )
    return HessianOperator(model, X, y, params=params, batch_size=batch_size, loss_fn=loss_fn)


def hvp(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    direction: Mapping[str, Tensor],
    *,
    params: Sequence[str] | None = None,
    batch_size: int = 256,
    loss_fn: LossFn | None = None,
) -> ParamDict:
    """H v as {name: tensor} for a name-keyed direction v (missing names count as zero).

    H is the Hessian of the mean loss over (X, y) w.r.t. `params` (default: all
    trainable parameters); the result has every one of those names.
    """
    op = HessianOperator(model, X, y, params=params, batch_size=batch_size, loss_fn=loss_fn)
    return {k: t.clone() for k, t in op.to_dict(op.matvec(op.from_dict(direction))).items()}


@dataclass(frozen=True)
class Eigenpairs:
    """Top eigenpairs, eigenvalues descending; residuals are ||H v - lambda v|| per pair.

    `n_hvp` counts every Hessian-vector product spent, the k of the residual check included.
    """

    eigenvalues: np.ndarray
    eigenvectors: Tensor  # (k, dim), unit rows, in the operator's dtype and device
    residuals: np.ndarray
    n_hvp: int
    wall_s: float
    method: str


def check_top(k: int, dim: int) -> None:
    """The number of eigenpairs must be in [1, dim - 1] (ARPACK's bound)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < dim:
        raise BadInput(
            f"--top {k!r} must be an integer in 1..{dim - 1} (the parameters number {dim})"
        )


def top_eigenpairs(
    op: HessianOperator,
    k: int,
    method: str = "lanczos",
    *,
    tol: float | None = None,
    seed: int = 0,
    max_iter: int | None = None,
) -> Eigenpairs:
    """The k algebraically largest eigenpairs of H (Liu et al. 4.2 uses k = 20).

    `lanczos`: implicitly restarted Lanczos (ARPACK `eigsh`, which="LA") from a start
    vector drawn with `seed` (ARPACK's default ncv); `tol` bounds each Ritz residual
    relative to |lambda| (default 1e-6), `max_iter` the restarts. `power`: PyHessian's
    deflated power iteration, which finds the largest-|lambda| eigenvalues one at a
    time (they are the top ones when the negative part of the spectrum is smaller);
    `tol` is its bound on the relative change between iterations (default 1e-3,
    PyHessian's), `max_iter` its iterations per eigenvalue (default 100). That rule
    stops on slow progress, not on accuracy: with tol 1e-6 the top 5 of a digits MLP
    agree with the dense result to ~1e-5, with 1e-3 the top 20 are off by percents.
    """
    if method not in METHODS:
        raise BadInput(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    check_top(k, op.dim)
    if tol is not None and not (math.isfinite(tol) and tol >= 0):
        raise BadInput(f"tolerance {tol!r} must be a finite number >= 0")
    start_hvp = op.n_hvp
    start = time.perf_counter()
    if method == "lanczos":
        values, vectors, extra = _lanczos(op, k, tol, seed, max_iter)
    else:
        values, vectors, extra = _power(op, k, tol, seed, max_iter)
    order = np.argsort(-values, kind="stable")
    values, vectors = values[order], vectors[torch.as_tensor(order, device=vectors.device)]
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    HV = op.matmat(vectors.T).T
    lam = torch.as_tensor(values, device=op.device, dtype=op.dtype)
    residuals = torch.linalg.vector_norm(HV - lam[:, None] * vectors, dim=1)
    return Eigenpairs(
        eigenvalues=values,
        eigenvectors=vectors,
        residuals=residuals.double().cpu().numpy(),
        n_hvp=op.n_hvp - start_hvp + extra,
        wall_s=time.perf_counter() - start,
        method=method,
    )


def _lanczos(
    op: HessianOperator, k: int, tol: float | None, seed: int, max_iter: int | None
) -> tuple[np.ndarray, Tensor, int]:
    v0 = np.random.default_rng(seed).standard_normal(op.dim)
    # ARPACK's default ncv = max(2k+1, 20): wider Krylov spaces saved no products on the
    # digits LeNet (97 products at ncv 41 and 52, 81 at 80, for k = 20).
    try:
        values, vectors = scipy.sparse.linalg.eigsh(
            op.as_linear_operator(),
            k=k,
            which="LA",
            v0=v0,
            tol=LANCZOS_TOL if tol is None else tol,
            maxiter=max_iter,
        )
    except scipy.sparse.linalg.ArpackNoConvergence as exc:
        raise RuntimeError(
            f"Lanczos found {len(exc.eigenvalues)} of {k} eigenpairs within its restarts; "
            "raise max_iter or tol"
        ) from exc
    return values, torch.from_numpy(vectors.T.copy()).to(op.device, op.dtype), 0


@contextlib.contextmanager
def _pyhessian_setup(op: HessianOperator, counter: list[int]) -> Iterator[None]:
    """Make the model look the way PyHessian expects, count its products, and undo it all.

    PyHessian differentiates every parameter with requires_grad, draws its vectors with
    torch's global RNG in the default dtype, and leaves graphs in `.grad`.
    """
    module = sys.modules["pyhessian.hessian"]
    original = module.hessian_vector_product

    def counted(*args: object) -> tuple[Tensor, ...]:
        counter[0] += 1
        return original(*args)

    subset = set(op.names)
    params = list(op.model.named_parameters())
    flags = [p.requires_grad for _, p in params]
    default_dtype = torch.get_default_dtype()
    cuda = op.device.type == "cuda"
    device_ctx = torch.cuda.device(op.device) if cuda else contextlib.nullcontext()
    try:
        for name, p in params:
            p.requires_grad_(name in subset)
        module.hessian_vector_product = counted
        torch.set_default_dtype(op.dtype)
        with (
            warnings.catch_warnings(),
            device_ctx,
            torch.random.fork_rng(devices=[op.device] if cuda else []),
        ):
            # PyHessian's backward(create_graph=True) warns of the cycle we break below.
            warnings.filterwarnings("ignore", message="Using backward")
            yield
    finally:
        module.hessian_vector_product = original
        torch.set_default_dtype(default_dtype)
        for (_, p), flag in zip(params, flags):
            p.requires_grad_(flag)
            p.grad = None


def _power(
    op: HessianOperator, k: int, tol: float | None, seed: int, max_iter: int | None
) -> tuple[np.ndarray, Tensor, int]:
    from pyhessian import hessian as PyHessian

    if op.device.type not in ("cpu", "cuda"):
        raise BadInput(f"--method power (PyHessian) runs on cpu or cuda, not {op.device.type}")
    if distributed.world().distributed:
        raise BadInput("--method power (PyHessian) runs in one process; use lanczos under torchrun")
    counter = [0]
    data = [(x, y) for x, y, _ in op.batches]
    with _pyhessian_setup(op, counter):
        torch.manual_seed(seed)
        cuda = op.device.type == "cuda"
        if len(data) == 1:
            solver = PyHessian(op.model, op.loss_fn, data=data[0], cuda=cuda)
        else:
            # One product over the whole "dataloader" counts as one (it averages the batches).
            solver = PyHessian(op.model, op.loss_fn, dataloader=data, cuda=cuda)
            per_pass = solver.dataloader_hv_product

            def counted_pass(v: list[Tensor]) -> tuple[float, list[Tensor]]:
                counter[0] += 1
                return per_pass(v)

            solver.dataloader_hv_product = counted_pass
        values, vectors = solver.eigenvalues(
            maxIter=POWER_MAX_ITER if max_iter is None else max_iter,
            tol=POWER_TOL if tol is None else tol,
            top_n=k,
        )
        names = [n for n, p in op.model.named_parameters() if p.requires_grad]
    flat = torch.stack([op.from_dict(dict(zip(names, v))) for v in vectors])
    return np.asarray(values, dtype=np.float64), flat, counter[0]


def hutchinson_trace(
    op: HessianOperator, n_probes: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Hutchinson's estimate of tr(H): the mean of v^T H v over Rademacher v, and its standard error."""
    if n_probes < 2:
        raise BadInput(f"the trace needs >= 2 probes for a standard error, got {n_probes}")
    gen = make_generator(seed, op.device)
    samples = []
    for start in range(0, n_probes, op.block):
        count = min(op.block, n_probes - start)
        V = (
            torch.randint(0, 2, (op.dim, count), generator=gen, device=op.device).to(op.dtype) * 2
            - 1
        )
        samples.append((V * op.matmat(V)).sum(0).double().cpu())
    values = torch.cat(samples).numpy()
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(n_probes))


def slq_density(
    op: HessianOperator,
    n_probes: int = 4,
    n_steps: int = 80,
    grid: int | np.ndarray = 1000,
    *,
    sigma: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Spectral density of H by stochastic Lanczos quadrature (Ghorbani et al. 2019, sec. 2).

    Each Rademacher probe runs `n_steps` of Lanczos with full reorthogonalization (all
    probes advance together, one block product per step); the Ritz values of its
    tridiagonal matrix, weighted by the squared first components of their vectors, are
    a quadrature of the spectral measure. Gaussian broadening of width `sigma` (default
    1% of the Ritz-value range) turns them into a density on `grid` (a number of points
    spanning the Ritz values with 5 sigma to spare, or the points themselves), averaged
    over probes; it integrates to 1 over a grid that covers the spectrum.
    """
    if n_probes < 1 or n_steps < 1:
        raise BadInput(f"SLQ needs >= 1 probe and >= 1 step, got {n_probes} and {n_steps}")
    steps = min(n_steps, op.dim)
    gen = make_generator(seed, op.device)
    basis = torch.zeros(steps, op.dim, n_probes, device=op.device, dtype=op.dtype)
    probe = torch.randint(0, 2, (op.dim, n_probes), generator=gen, device=op.device)
    basis[0] = (probe.to(op.dtype) * 2 - 1) / math.sqrt(op.dim)
    alphas = np.zeros((steps, n_probes))
    betas = np.zeros((steps, n_probes))
    length = np.full(n_probes, steps)
    for j in range(steps):
        live = np.flatnonzero(length > j)
        if live.size == 0:
            break
        cols = torch.as_tensor(live, device=op.device)
        q = basis[j][:, cols]
        W = op.matmat(q)
        alphas[j, live] = (W * q).sum(0).double().cpu().numpy()
        # Full reorthogonalization against every earlier vector, twice ("twice is enough").
        previous = basis[: j + 1][:, :, cols]
        for _ in range(2):
            W = W - torch.einsum("jdp,jp->dp", previous, torch.einsum("jdp,dp->jp", previous, W))
        beta = torch.linalg.vector_norm(W, dim=0)
        betas[j, live] = beta.double().cpu().numpy()
        if j + 1 == steps:
            break
        # A (numerically) zero beta: the Krylov space is invariant, that probe is done.
        done = betas[j, live] <= 1e-6 * np.maximum(np.abs(alphas[: j + 1, live]).max(0), 1e-30)
        length[live[done]] = j + 1
        basis[j + 1][:, cols] = W / beta.clamp_min(1e-30)
    nodes, weights = [], []
    for p in range(n_probes):
        m = int(length[p])
        theta, S = scipy.linalg.eigh_tridiagonal(alphas[:m, p], betas[: m - 1, p])
        nodes.append(theta)
        weights.append(S[0] ** 2)
    all_nodes = np.concatenate(nodes)
    lo, hi = float(all_nodes.min()), float(all_nodes.max())
    width = sigma if sigma is not None else 0.01 * max(hi - lo, 1e-12 * max(abs(hi), 1.0))
    if isinstance(grid, int):
        grid = np.linspace(lo - 5 * width, hi + 5 * width, grid)
    grid = np.asarray(grid, dtype=np.float64)
    density = np.zeros_like(grid)
    for theta, w in zip(nodes, weights):
        gauss = np.exp(-0.5 * ((grid[:, None] - theta[None, :]) / width) ** 2)
        density += gauss @ w / (width * math.sqrt(2 * math.pi))
    return grid, density / n_probes
