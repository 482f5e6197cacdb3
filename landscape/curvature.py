"""Curvature operators and eigensolvers: the curvature engine every analysis uses.

A `CurvatureOperator` is a symmetric matrix over the trainable parameters (or a
name-glob subset), evaluated at the model's current parameters on fixed examples
(Liu et al. 4.2: adversarial examples generated once at theta), seen only through its
products: `matvec`, `matmat`, `@` and scipy's `LinearOperator`. Three kinds share one
batch loop, one torchrun sharding and one all-reduce:

- `HessianOperator`: the Hessian of the mean loss;
- `GGNOperator`: the generalized Gauss-Newton matrix J^T H_L J (Schraudolph 2002);
- `FisherOperator`: the empirical Fisher (1/N) sum_n g_n g_n^T.

Eigensolvers take any operator: a block Lanczos that runs on the operator's device
(`method="block"`), ARPACK's implicitly restarted Lanczos (`"lanczos"`, the reference)
and PyHessian's deflated power iteration (`"power"`, Yao et al. 2018, Hessians only);
Hutchinson's trace estimator and stochastic Lanczos quadrature for the spectral
density (Ghorbani et al. 2019).
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
from typing import ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, jvp, vjp, vmap

from . import distributed
from .params import ParamDict, flatten, functional_forward, unflatten
from .util import BadInput, make_generator

MATRICES = ("hessian", "ggn", "fisher")
METHODS = ("lanczos", "power", "block")
PRODUCTS = ("forward", "reverse")
# Lanczos stops when every Ritz residual is below tol * |lambda|; fp32 products are
# good to ~1e-7 relative, so tighter asks only buy restarts.
LANCZOS_TOL = 1e-6
# The block solver tests true residuals ||A x - theta x|| (ARPACK tests an estimate from
# its recurrence), which fp32 products cannot push much below 1e-6 |lambda_1|. A Ritz
# value's error is about residual^2 / gap (and never more than the residual): on the
# digits LeNet's top 20, whose lambda_20 and lambda_21 differ by 0.6%, 1e-3 gave errors
# <= 9e-7 in fp32 and fp64, 1e-4 cost 10-15% more products for errors <= 5e-7.
BLOCK_TOL = 1e-3
BLOCK_MAX_ITER = 200
# PyHessian's own default: relative change of consecutive Rayleigh quotients.
POWER_TOL = 1e-3
POWER_MAX_ITER = 100

LossFn = Callable[[Tensor, Tensor], Tensor]
ProductFn = Callable[[ParamDict], ParamDict]


class NonFiniteProduct(ArithmeticError):
    """A curvature-vector product came out NaN or infinite (the loss diverges at theta)."""


def _mean_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


def select_params(model: nn.Module, globs: Sequence[str] | None = None) -> list[str]:
    """Trainable parameter names matching any of the fnmatch `globs` (all when None), in model order.

    A glob that matches nothing is a BadInput, so a typo never silently shrinks the subset.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise BadInput("the model has no trainable parameters to take a curvature over")
    if not globs:
        return names
    for pattern in globs:
        if not any(fnmatchcase(n, pattern) for n in names):
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise BadInput(
                f"{{arg}} {pattern!r} matches no parameter of the model ({shown})",
                argument="params",
            )
    return [n for n in names if any(fnmatchcase(n, pattern) for pattern in globs)]


class CurvatureOperator:
    """A symmetric curvature matrix A of the mean loss over (X, y), w.r.t. `params` (names or globs).

    Vectors are flat, in the order of `names` (`to_dict`/`from_dict` map them by name);
    parameters outside the subset are held fixed. `loss_fn(logits, y)` must be the batch
    mean (default cross-entropy); each batch's product is weighted by its size / N, so A
    is exactly that of the mean over all N examples whatever `batch_size` is. `matmat`
    vmaps up to `block` vectors through one pass over the data (memory grows with it).
    `n_hvp` counts products of any kind, one per vector (a block of k counts k). The
    model is used in eval mode and computed in its own dtype on its own device.

    Under torchrun each rank takes every size-th batch (`distributed.shard`), keeps the
    global weights size / N, and the weighted sums of products, gradients and losses are
    all-reduced; every rank then holds the same operator, so an eigensolver run on every
    rank takes the same steps. (X, y) must be the full data on every rank, though only
    this rank's batches are read.

    `cache` keeps each batch's linearization (the graphs its products differentiate
    through) for the operator's lifetime, so a product no longer repeats the batch's
    forward and backward pass: faster (about 1.4x on the digits LeNet's top 20), at the
    memory of those graphs for all N examples. The operator then holds the parameters as
    they were at its first product.

    Subclasses set `kind` and define `_linearize(x, y)`: the map tangent -> A_batch
    tangent for one batch of the mean loss, built once per batch and vmapped for blocks.
    """

    kind: ClassVar[str] = ""

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
        cache: bool = False,
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
        self.cache = cache
        self._linearized: dict[int, ProductFn] = {}
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, n={self.n}, {self.dtype}, {self.device})"

    # ------------------------------------------------------------------ the batch loop

    def _forward(self, params: ParamDict, x: Tensor) -> Tensor:
        return functional_forward(self.model, {**self._fixed, **params}, x)

    def _batch_loss(self, params: ParamDict, x: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(self._forward(params, x), y)

    def _linearize(self, x: Tensor, y: Tensor) -> ProductFn:
        raise NotImplementedError

    def _product_fn(self, x: Tensor, y: Tensor) -> ProductFn:
        """The batch's tangent -> product map, kept across products when `cache` is set."""
        if not self.cache:
            return self._linearize(x, y)
        if id(x) not in self._linearized:
            self._linearized[id(x)] = self._linearize(x, y)
        return self._linearized[id(x)]

    def _sum_over_batches(
        self, per_batch: Callable[[Tensor, Tensor], Tensor], like: Tensor
    ) -> Tensor:
        """sum over batches of weight * per_batch(x, y), summed over ranks: the one data loop."""
        out = torch.zeros_like(like)
        for x, y, weight in self.batches:
            out.add_(per_batch(x, y), alpha=weight)
        return distributed.all_reduce_sum(out)

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
        """A v for a flat vector v of length `dim`."""
        tangent = unflatten(self._check(v, 1), self._params)
        out = self._sum_over_batches(
            lambda x, y: flatten(self._product_fn(x, y)(tangent), self.names), v
        )
        self.n_hvp += 1
        return out

    def matmat(self, V: Tensor) -> Tensor:
        """A V for V of shape (dim, k): blocks of up to `block` columns share one data pass."""
        V = self._check(V, 2)
        out = torch.empty_like(V)
        for start in range(0, V.shape[1], self.block):
            cols = V[:, start : start + self.block]
            width = cols.shape[1]
            if width == 1:
                out[:, start] = self.matvec(cols[:, 0])
                continue
            tangents = self._split_columns(cols)
            out[:, start : start + width] = self._sum_over_batches(
                lambda x, y, t=tangents: self._block_product(x, y, t), cols
            )
            self.n_hvp += width
        return out

    def _block_product(self, x: Tensor, y: Tensor, tangents: ParamDict) -> Tensor:
        """The batch's products with k tangents {name: (k, *shape)}, as (dim, k) columns."""
        images = vmap(self._product_fn(x, y))(tangents)
        width = next(iter(tangents.values())).shape[0]
        return torch.cat([images[n].reshape(width, -1) for n in self.names], dim=1).T

    def __matmul__(self, other: Tensor) -> Tensor:
        """`A @ v` (a vector) or `A @ V` (a matrix of columns)."""
        return self.matvec(other) if other.dim() == 1 else self.matmat(other)

    def gradient(self) -> Tensor:
        """The gradient of the mean loss, flat, in the order of `names`."""
        like = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        return self._sum_over_batches(
            lambda x, y: flatten(self._grad(self._params, x, y), self.names), like
        )

    def loss(self) -> float:
        """The mean loss over all N examples."""
        like = torch.zeros((), device=self.device, dtype=self.dtype)
        with torch.no_grad():
            total = self._sum_over_batches(lambda x, y: self._batch_loss(self._params, x, y), like)
        return float(total)

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
        """A as a scipy LinearOperator: float64 numpy outside, products in the model's dtype on its device.

        A non-finite product raises `NonFiniteProduct` rather than feeding NaN to ARPACK.
        """

        def to_numpy(x: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
            return _finite(self, self @ v).double().cpu().numpy()

        def vector(x: np.ndarray) -> np.ndarray:
            return to_numpy(np.asarray(x).reshape(-1))  # scipy may pass (dim, 1)

        return scipy.sparse.linalg.LinearOperator(
            (self.dim, self.dim),
            matvec=vector,
            rmatvec=vector,
            matmat=to_numpy,
            dtype=np.float64,
        )


class HessianOperator(CurvatureOperator):
    """The Hessian H of the mean loss (see `CurvatureOperator` for the conventions).

    `product` picks how H v is differentiated: "forward" is forward-over-reverse (`jvp`
    of `grad`), "reverse" is reverse-over-reverse (the `vjp` of `grad`, PyHessian's and
    hessian-eigenthings' double backward); both are exact. The default is reverse when
    `cache` is set, else forward, as measured by `bench/bench_hessian.py` on the digits
    LeNet w=1 (1,440 examples in batches of 240, one thread of a shared CPU), in ms per
    vector, single / in a block of 10: forward 65 / 15, reverse 58 / 13, reverse cached
    31 / 10 (on a ResNet-18: 212 / 50, 119 / 43, 50 / 29). Uncached, the two cost about
    the same in blocks, where the solvers spend their
    products; only reverse mode can keep its linearization (the gradient's graph),
    while forward mode reruns its primal pass for every product.
    """

    kind = "hessian"

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
        cache: bool = False,
        product: str | None = None,
    ) -> None:
        product = product or ("reverse" if cache else "forward")
        if product not in PRODUCTS:
            raise BadInput(
                f"{{arg}} {product!r} is not one of {', '.join(PRODUCTS)}", argument="product"
            )
        self.product = product
        super().__init__(
            model,
            X,
            y,
            params=params,
            batch_size=batch_size,
            loss_fn=loss_fn,
            block=block,
            cache=cache,
        )

    def _linearize(self, x: Tensor, y: Tensor) -> ProductFn:
        def gradient(p: ParamDict) -> ParamDict:
            return self._grad(p, x, y)

        if self.product == "reverse":
            pullback = vjp(gradient, self._params)[1]
            return lambda t: pullback(t)[0]
        return lambda t: jvp(gradient, (self._params,), (t,))[1]


class GGNOperator(CurvatureOperator):
    """The generalized Gauss-Newton matrix G = J^T H_L J of the mean loss (Schraudolph 2002).

    J is the Jacobian of the logits w.r.t. the parameters and H_L the Hessian of the
    mean loss w.r.t. the logits, so G = (1/N) sum_n J_n^T H_n J_n with H_n the per-example
    loss Hessian in the logits. It is positive semi-definite when the loss is convex in
    the logits (cross-entropy is), and equals the Hessian less the term weighted by the
    loss's logit gradient. A product is a `jvp` (J v), a `jvp` of the logit gradient
    (H_L J v) and a `vjp` (J^T), the forward pass shared by a block of vectors.
    """

    kind = "ggn"

    def _linearize(self, x: Tensor, y: Tensor) -> ProductFn:
        def logits_of(p: ParamDict) -> Tensor:
            return self._forward(p, x)

        def logit_gradient(z: Tensor) -> Tensor:
            return grad(self.loss_fn)(z, y)

        logits, pullback = vjp(logits_of, self._params)

        def product(t: ParamDict) -> ParamDict:
            jv = jvp(logits_of, (self._params,), (t,))[1]
            return pullback(jvp(logit_gradient, (logits,), (jv,))[1])[0]

        return product


class FisherOperator(CurvatureOperator):
    """The empirical Fisher F = (1/N) sum_n g_n g_n^T, g_n the gradient of example n's loss.

    The 1/N matches the mean-loss convention of the other operators (F is the mean of
    the per-example outer products, and the batch weights size / N make it exact over
    batches). Example n's loss is `loss_fn` on that example alone (a batch of one). F v
    needs no per-example gradients: s_n = g_n . v is a `jvp` of the per-example losses,
    and sum_n s_n g_n the `vjp` of those losses with cotangent s.
    """

    kind = "fisher"

    def _linearize(self, x: Tensor, y: Tensor) -> ProductFn:
        def example_losses(p: ParamDict) -> Tensor:
            one = lambda z, t: self.loss_fn(z[None], t[None])  # noqa: E731
            return vmap(one)(self._forward(p, x), y)

        pullback = vjp(example_losses, self._params)[1]
        size = x.shape[0]

        def product(t: ParamDict) -> ParamDict:
            directional = jvp(example_losses, (self._params,), (t,))[1]
            return pullback(directional / size)[0]

        return product


_OPERATORS: dict[str, type[CurvatureOperator]] = {
    "hessian": HessianOperator,
    "ggn": GGNOperator,
    "fisher": FisherOperator,
}


def make_operator(
    matrix: str,
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    params: Sequence[str] | None = None,
    batch_size: int = 256,
    loss_fn: LossFn | None = None,
    block: int = 16,
    cache: bool = False,
) -> CurvatureOperator:
    """The `matrix` ("hessian", "ggn" or "fisher") of the mean loss over (X, y) as an operator."""
    if matrix not in _OPERATORS:
        raise BadInput(f"{{arg}} {matrix!r} is not one of {', '.join(MATRICES)}", argument="matrix")
    return _OPERATORS[matrix](
        model, X, y, params=params, batch_size=batch_size, loss_fn=loss_fn, block=block, cache=cache
    )


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


def _finite(op: CurvatureOperator, out: Tensor) -> Tensor:
    if not torch.isfinite(out).all():
        raise NonFiniteProduct(f"a {op.kind} product is non-finite (loss {op.loss()})")
    return out


@dataclass(frozen=True)
class Eigenpairs:
    """Top eigenpairs, eigenvalues descending; residuals are ||A v - lambda v|| per pair.

    `n_hvp` counts every product spent (for lanczos and power the k of the residual check
    included; the block solver's residuals come from products it already made).
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
            f"{{arg}} {k!r} must be an integer in 1..{dim - 1} (the parameters number {dim})",
            argument="top",
        )


def top_eigenpairs(
    op: CurvatureOperator,
    k: int,
    method: str = "lanczos",
    *,
    tol: float | None = None,
    seed: int = 0,
    max_iter: int | None = None,
    block: int | None = None,
) -> Eigenpairs:
    """The k algebraically largest eigenpairs of the operator (Liu et al. 4.2 uses k = 20).

    `block`: block Lanczos on the operator's device (`_block_lanczos`); `tol` bounds each
    true residual relative to |lambda| (default 1e-3), `max_iter` the block products
    (default 200), `block` the vectors per block (default min(op.block, max(4, k/2))).
    `lanczos`: implicitly restarted Lanczos (ARPACK `eigsh`, which="LA") from a start
    vector drawn with `seed` (ARPACK's default ncv); `tol` bounds each Ritz residual
    estimate relative to |lambda| (default 1e-6), `max_iter` the restarts. `power`:
    PyHessian's deflated power iteration, Hessians only, which finds the largest-|lambda|
    eigenvalues one at a time (they are the top ones when the negative part of the
    spectrum is smaller); `tol` is its bound on the relative change between iterations
    (default 1e-3, PyHessian's), `max_iter` its iterations per eigenvalue (default 100).
    That rule stops on slow progress, not on accuracy: with tol 1e-6 the top 5 of a
    digits MLP agree with the dense result to ~1e-5, with 1e-3 the top 20 are off by
    percents.
    """
    if method not in METHODS:
        raise BadInput(
            f"{{arg}} {method!r} is unknown; use one of {', '.join(METHODS)}", argument="method"
        )
    check_top(k, op.dim)
    if tol is not None and not (math.isfinite(tol) and tol >= 0):
        raise BadInput(f"tolerance {tol!r} must be a finite number >= 0")
    if max_iter is not None and (isinstance(max_iter, bool) or max_iter < 1):
        raise BadInput(f"iteration limit {max_iter!r} must be an integer >= 1")
    start_hvp = op.n_hvp
    start = time.perf_counter()
    residuals: Tensor | None = None
    extra = 0
    if method == "block":
        values, vectors, residuals = _block_lanczos(op, k, tol, seed, max_iter, block)
    elif method == "lanczos":
        values, vectors = _lanczos(op, k, tol, seed, max_iter)
    else:
        values, vectors, extra = _power(op, k, tol, seed, max_iter)
    order = np.argsort(-values, kind="stable")
    index = torch.as_tensor(order, device=vectors.device)
    values, vectors = values[order], vectors[index]
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    if residuals is None:
        images = op.matmat(vectors.T).T
        lam = torch.as_tensor(values, device=op.device, dtype=op.dtype)
        residuals = torch.linalg.vector_norm(images - lam[:, None] * vectors, dim=1)
    else:
        residuals = residuals[index.to(residuals.device)]
    return Eigenpairs(
        eigenvalues=values,
        eigenvectors=vectors,
        residuals=residuals.double().cpu().numpy(),
        n_hvp=op.n_hvp - start_hvp + extra,
        wall_s=time.perf_counter() - start,
        method=method,
    )


def _lanczos(
    op: CurvatureOperator, k: int, tol: float | None, seed: int, max_iter: int | None
) -> tuple[np.ndarray, Tensor]:
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
    return values, torch.from_numpy(vectors.T.copy()).to(op.device, op.dtype)


def _block_lanczos(
    op: CurvatureOperator,
    k: int,
    tol: float | None,
    seed: int,
    max_iter: int | None,
    block: int | None,
) -> tuple[np.ndarray, Tensor, Tensor]:
    """Thick-restart block Lanczos with full reorthogonalization, in torch on the op's device.

    The basis V grows by one orthonormal block of b vectors per `matmat` (one pass over
    the data for b <= op.block). Each block's images A V are kept, so the Rayleigh-Ritz
    step (eigh of V^T A V, in float64) gives Ritz pairs (theta, x = V s) and their true
    residuals A x - theta x = (A V) s - theta V s without further products. In exact
    arithmetic the residuals of the Ritz vectors of a block Krylov space span its next
    block, so the next block is the residuals of the b largest unconverged Ritz pairs,
    orthogonalized twice against V ("twice is enough"); converged pairs stop drawing
    products. When V would exceed 4k + 2b vectors it restarts from its leading Ritz
    vectors and their images (a thick restart: no products, the Krylov structure kept).

    Converged: every one of the top k has ||A x - theta x|| <= tol * max(|theta|,
    eps^(2/3) max|theta|), eps the dtype's machine epsilon (ARPACK's floor for near-zero
    eigenvalues, here relative to the spectrum's scale, so rank-deficient GGN and Fisher
    matrices converge). The start block is drawn from `seed` on the CPU, so every device
    and every torchrun rank starts, and then steps, alike. Memory: about 2 (4k + 2b) + 3
    max(k + b, 2k + b) vectors of the operator's dtype.
    """
    b = _block_size(op, k, block)
    tol = BLOCK_TOL if tol is None else tol
    limit = BLOCK_MAX_ITER if max_iter is None else max_iter
    max_basis = min(op.dim, 4 * k + 2 * b)
    keep = min(max(k + b, max_basis // 2), max_basis - b)
    eps = torch.finfo(op.dtype).eps
    gen = torch.Generator().manual_seed(seed)

    def random_block(width: int) -> Tensor:
        draw = torch.randn(op.dim, width, generator=gen, dtype=torch.float64)
        return draw.to(op.device, op.dtype)

    V = torch.zeros(op.dim, 0, device=op.device, dtype=op.dtype)
    AV = torch.zeros_like(V)
    W = random_block(b)
    for _ in range(limit):
        Q = _orthonormal_complement(W[:, : op.dim - V.shape[1]], V, random_block)
        AQ = _finite(op, op.matmat(Q))
        V, AV = torch.cat([V, Q], dim=1), torch.cat([AV, AQ], dim=1)
        m = V.shape[1]
        T = (V.T @ AV).double()
        theta, S = torch.linalg.eigh((T + T.T) / 2)
        theta, S = theta.flip(0), S.flip(1)
        wanted = min(m, max(k + b, keep))
        coords = S[:, :wanted].to(op.dtype)
        X, AX = V @ coords, AV @ coords
        R = AX - X * theta[:wanted].to(op.dtype)
        residuals = torch.linalg.vector_norm(R, dim=0).double()
        floor = eps ** (2 / 3) * float(theta.abs().max())
        converged = residuals <= tol * theta[:wanted].abs().clamp_min(floor)
        if m >= k and bool(converged[:k].all()):
            return theta[:k].cpu().numpy(), X[:, :k].T, residuals[:k]
        if m == op.dim:
            break  # the basis spans everything: only rounding keeps the residuals up
        todo = torch.nonzero(~converged).flatten()[:b]
        W = R[:, todo.to(R.device)]
        if m + b > max_basis:
            V, AV = X[:, :keep], AX[:, :keep]
    done = int(converged[:k].sum()) if m >= k else 0
    raise RuntimeError(
        f"block Lanczos converged {done} of {k} eigenpairs within {limit} block products "
        f"of {b}; raise max_iter or tol"
    )


def _block_size(op: CurvatureOperator, k: int, block: int | None) -> int:
    """Vectors per block: at most op.block (one data pass), by default max(4, k/2).

    Fewer vectors per block converge in fewer products, more in fewer data passes; on the
    digits LeNet top 20, blocks of 4, 8 and 12 took 25, 16 and 12 passes (100, 128, 144
    products) to the same accuracy, and a pass of 10 vectors cost what 4 single products
    do (2 CPU cores); wider blocks pay off more on a GPU, narrower ones on large models.
    """
    if block is None:
        block = min(op.block, max(4, (k + 1) // 2))
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise BadInput(f"{{arg}} {block!r} must be an integer >= 1", argument="block")
    return min(block, op.dim)


def _orthonormal_complement(W: Tensor, V: Tensor, random_block: Callable[[int], Tensor]) -> Tensor:
    """An orthonormal basis of W's columns with span(V) projected out (twice), at most
    W's width; numerically dependent columns are dropped, random ones used if none is left."""
    tiny = math.sqrt(torch.finfo(W.dtype).eps)
    for _ in range(2):
        W = W / torch.linalg.vector_norm(W, dim=0).clamp_min(torch.finfo(W.dtype).tiny)
        for _ in range(2):
            W = W - V @ (V.T @ W)
        Q, R = torch.linalg.qr(W)
        independent = torch.abs(torch.diagonal(R)) > tiny
        if bool(independent.any()):
            Q = Q[:, independent]
            Q = torch.linalg.qr(Q - V @ (V.T @ Q))[0]
            return Q
        W = random_block(W.shape[1])
    raise RuntimeError("could not extend the Krylov basis: the operator's range is exhausted")


@contextlib.contextmanager
def _pyhessian_setup(op: CurvatureOperator, counter: list[int]) -> Iterator[None]:
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
    op: CurvatureOperator, k: int, tol: float | None, seed: int, max_iter: int | None
) -> tuple[np.ndarray, Tensor, int]:
    if op.kind != "hessian":
        raise BadInput(
            f"{{arg}} power (PyHessian) computes Hessians only, not the {op.kind} matrix; "
            "use block or lanczos",
            argument="method",
        )
    if op.device.type not in ("cpu", "cuda"):
        raise BadInput(
            f"{{arg}} power (PyHessian) runs on cpu or cuda, not {op.device.type}",
            argument="method",
        )
    if distributed.world().distributed:
        raise BadInput(
            "{arg} power (PyHessian) runs in one process; use block or lanczos under torchrun",
            argument="method",
        )
    from pyhessian import hessian as PyHessian

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
    op: CurvatureOperator, n_probes: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Hutchinson's estimate of tr(A): the mean of v^T A v over Rademacher v, and its standard error."""
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
    op: CurvatureOperator,
    n_probes: int = 4,
    n_steps: int = 80,
    grid: int | np.ndarray = 1000,
    *,
    sigma: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Spectral density of A by stochastic Lanczos quadrature (Ghorbani et al. 2019, sec. 2).

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
