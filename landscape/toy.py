"""The theory ("toy") figures, from closed forms and scipy: no checkpoint, no dataset files.

- `kanai-fig2` (Kanai et al. Fig. 2): one point x = [-1, 1], y = 1, theta in [-2, 2]^2 and
  ||delta||_p <= 0.6. (a)-(c) the linear model's clean loss log(1 + exp(-y theta^T x)) and its
  adversarial losses in closed form, log(1 + exp(-y theta^T x + eps ||theta||_q)) with q the dual
  norm (q = 2 for L2, q = 1 for L-inf; Kanai Sec. 3.1, Liu et al. eq. 6); (d)-(f) the swish model
  log(1 + exp(-y swish(theta^T (x + delta)))), attacked with PGD; (g)-(h) -F(theta) of EntropySGD
  (Kanai eq. 10, beta = 1) for the linear L2 and L-inf losses.
- `kanai-fig4-5` (Kanai Fig. 4, 5): the linear model's clean, L2 and L-inf losses averaged over
  N = 100 points x_n ~ N(0, I_2), y_n = sign(x_n1) (seeded), and -F(theta) of the two adversarial
  ones. As in the paper, no swish model here.
- `liu-fig5` (Liu et al. Fig. 5, App. A.2): g(x, theta) = log(1 + exp(theta x)), x = 1, and its
  band under |delta| <= eps: every value g(x + delta, theta) lies between
  log(1 + exp(theta x - eps |theta|)) and g_eps = log(1 + exp(theta x + eps |theta|)).
- `liu-thm1` (Liu et al. Thm. 1, App. B.1): a bias-free linear 3-class model on a separable 2-D
  dataset, trained by full-batch gradient descent on the exact adversarial cross-entropy for a sweep
  of eps; above the threshold eps* (`collapse_threshold`) it ends at W = 0, the constant classifier.

Choices the papers leave open:
- gamma (default 1): Kanai et al. use gamma = 0.03 for training networks and do not state the toy
  figures' value; at 0.03 the Gaussian's width 1/sqrt(gamma) = 5.8 exceeds the plotted window and
  -F is a plane there, while gamma = 1 smooths the kinks and keeps the landscape's shape.
- -F(theta) = -log of the integral of exp(-L(theta') - gamma/2 ||theta - theta'||^2) over R^2, the
  exact eq. (10) with no normalising constant: a Gaussian convolution of exp(-L), summed on a grid
  padded by 8 widths (`entropy_smoothed`), not a double integral per point.
- PGD on the swish model: 200 iterations of step 5 eps / 200 from a seeded uniform random start,
  through `attacks.perturb`. The travel 5 eps is twice Madry et al.'s 2.5 eps so that L2 iterates
  started off the optimal direction turn onto it: the last iterate is within 2e-4 of the exact
  maximum (the loss depends on delta through theta^T delta only) over the whole Fig. 2 grid. The toy's inputs
  are not pixels, so PGD runs in coordinates z = (x - lo) / s whose [0, 1] box holds every eps-ball:
  the isotropic map sends the L2 and L-inf balls of radius eps to those of radius eps / s, so the
  attack is the same and perturb's clamp never binds.
- Theorem 1's threshold: the bound of App. B.1 depends on W; the exact threshold follows from the
  theorem's own condition 0 in argmin_W L_eps(W) (see `collapse_threshold`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from scipy.special import expit, softmax
from torch import Tensor

from .analysis import Analysis, Group, Inputs, Stored
from .attacks import AttackConfig, attack_config, perturb
from .util import BadInput, make_generator, parse_eps, resolve_device

FIGURES = ("kanai-fig2", "kanai-fig4-5", "liu-fig5", "liu-thm1")
NORMS = ("l2", "linf")
DUAL = {"l2": 2, "linf": 1}  # q with 1/p + 1/q = 1
LIMIT = 2.0  # every figure shows theta in [-2, 2]
KANAI_EPS = 0.6
LIU_EPS = (0.6, 1.2)
DEFAULT_GAMMA = 1.0
DEFAULT_GRID = 101
DEFAULT_SAMPLES = 100
PGD_STEPS = 200
PGD_TRAVEL = 5.0  # step = PGD_TRAVEL * eps / steps
PAD_WIDTHS = 8.0  # exp(-8^2 / 2) ~ 1e-14: the Gaussian beyond the padding is negligible
SPACING = 1 / 32  # of the kernel width; the kinks of L make the sum's error O(spacing^2)
THM1_CLASSES = 3
THM1_PER_CLASS = 50
THM1_NOISE = 0.2
THM1_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.1, 1.25, 1.5, 2.0)  # of eps*, the default sweep
THM1_STEPS = 2000
THM1_LR = (1.0, 1e-4)  # geometric decay: the subgradient method settles at a kinked minimum
THM1_CIRCLE = 72  # directions sampling the L2 circle, every 5 degrees: eps* within 0.1%
CHUNK = 1 << 20  # (theta, x) pairs per batched PGD call


DATA_DIMS = {"inputs": ("sample", "feature"), "labels": ("sample",)}  # a figure's data set


class _Record:
    """Arrays map one-to-one to datasets, the other fields to attributes (absent ones skipped)."""

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self._items() if isinstance(v, np.ndarray)}

    def attrs(self) -> dict[str, object]:
        return {k: v for k, v in self._items() if not isinstance(v, np.ndarray) and v is not None}

    def _items(self) -> list[tuple[str, object]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]  # type: ignore[arg-type]


@dataclass(frozen=True)
class Surfaces(_Record):
    """`/toy/kanai-fig2` and `/toy/kanai-fig4-5`: surfaces indexed [i, j] = (theta_1 = x_i, theta_2 = y_j).

    `linear_*` closed forms, `swish_*` PGD (kanai-fig2 only), `smoothed_*` = -F(theta) (eq. 10).
    """

    figure: str
    x: np.ndarray
    y: np.ndarray
    linear_clean: np.ndarray
    linear_l2: np.ndarray
    linear_linf: np.ndarray
    smoothed_l2: np.ndarray
    smoothed_linf: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    eps: float
    gamma: float
    swish_clean: np.ndarray | None = None
    swish_l2: np.ndarray | None = None
    swish_linf: np.ndarray | None = None
    pgd: str | None = None
    x_label: str = "θ₁"
    y_label: str = "θ₂"

    def dims(self) -> dict[str, tuple[str | None, ...]]:
        return {n: DATA_DIMS.get(n, ("x", "y")) for n in self.arrays() if n not in ("x", "y")}


@dataclass(frozen=True)
class Band(_Record):
    """`/toy/liu-fig5`: g on the `x` (= theta) grid; rows of `adv` and `lower` follow `eps`."""

    figure: str
    x: np.ndarray
    clean: np.ndarray
    eps: np.ndarray
    adv: np.ndarray
    lower: np.ndarray
    x_label: str = "θ"

    def dims(self) -> dict[str, tuple[str | None, ...]]:
        return {"clean": ("x",), "eps": ("eps",), "adv": ("eps", "x"), "lower": ("eps", "x")}


@dataclass(frozen=True)
class Collapse(_Record):
    """`/toy/liu-thm1`: final weights' norm, errors and adversarial loss against the training eps
    (the `x` axis), the norm along training (`step`), the data, and the threshold eps*."""

    figure: str
    x: np.ndarray
    weight_norm: np.ndarray
    clean_error: np.ndarray
    robust_error: np.ndarray
    adv_loss: np.ndarray
    step: np.ndarray
    weight_norm_trace: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    threshold: float
    norm: str
    loss_at_origin: float
    x_label: str = "ε"

    def dims(self) -> dict[str, tuple[str | None, ...]]:
        curves = ("weight_norm", "clean_error", "robust_error", "adv_loss")
        return {
            **{n: ("x",) for n in curves},
            "weight_norm_trace": ("x", "step"),
            **DATA_DIMS,
        }


# ----------------------------------------------------------------------------- closed forms


def dual_norm(theta: np.ndarray, norm: str) -> np.ndarray:
    """||theta||_q along the last axis, q the dual of the attack norm (L2 -> 2, L-inf -> 1)."""
    return np.linalg.norm(theta, ord=DUAL[norm], axis=-1)


def linear_loss(
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    eps: float = 0.0,
    norm: str = "linf",
    *,
    worst: bool = True,
) -> np.ndarray:
    """Mean over (X, y) of log(1 + exp(-y theta^T x +- eps ||theta||_q)) for theta of shape (..., d).

    With `worst` (+) it is the adversarial loss max over ||delta||_p <= eps (Kanai Sec. 3.1, Liu
    eq. 6); without (-) the smallest loss over the ball, the lower edge of Liu Fig. 5's band.
    """
    shift = (1.0 if worst else -1.0) * eps * dual_norm(theta, norm)[..., None]
    return np.logaddexp(0.0, -(theta @ X.T) * y + shift).mean(-1)


def swish_loss(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean of log(1 + exp(-y swish(theta^T x))), Kanai Fig. 2(d)."""
    u = theta @ X.T
    return np.logaddexp(0.0, -y * u * expit(u)).mean(-1)


def _logistic_sum(z: Tensor, y: Tensor) -> Tensor:
    return F.softplus(-y * z).sum()


def swish_adv_loss(
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    cfg: AttackConfig,
    *,
    device: str | torch.device = "auto",
    seed: int = 0,
) -> np.ndarray:
    """Mean PGD loss of the swish model at every theta (P, d), as one batched attack (fp32).

    Every (theta, x_n) pair is one batch element with its own theta; PGD runs in unit-box
    coordinates (module docstring), through `attacks.perturb`.
    """
    dev = resolve_device(device)
    Xt = torch.as_tensor(X, dtype=torch.float32, device=dev)
    yt = torch.as_tensor(y, dtype=torch.float32, device=dev)
    lo = Xt.min(0).values - cfg.eps - 1.0
    scale = float((Xt.max(0).values - Xt.min(0).values).max()) + 2 * cfg.eps + 2.0
    unit = replace(cfg, eps=cfg.eps / scale, step_size=cfg.step_size / scale)
    Z = (Xt - lo) / scale
    gen = make_generator(seed, dev)
    n = X.shape[0]
    per = max(1, CHUNK // n)
    out = []
    for start in range(0, len(theta), per):
        th = torch.as_tensor(theta[start : start + per], dtype=torch.float32, device=dev)
        th = th.repeat_interleave(n, 0)
        z = Z.repeat(th.shape[0] // n, 1)
        t = yt.repeat(th.shape[0] // n)

        def forward(z_in: Tensor, th: Tensor = th) -> Tensor:
            return F.silu(((lo + scale * z_in) * th).sum(1))

        z_adv = perturb(forward, z, t, unit, generator=gen, loss_fn=_logistic_sum)
        with torch.no_grad():
            out.append(F.softplus(-t * forward(z_adv)).view(-1, n).mean(1).cpu())
    return torch.cat(out).double().numpy()


def entropy_smoothed(
    loss: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, gamma: float
) -> np.ndarray:
    """-F(theta) = -log of the integral of exp(-L(theta') - gamma/2 ||theta - theta'||^2) dtheta'
    (Kanai eq. 10, beta = 1) at theta = (x_i, y_j), for `loss` mapping (..., 2) -> (...).

    A Gaussian convolution of exp(-L) on a grid padded by 8 widths 1/sqrt(gamma), spacing
    width / 32 (about 1e-4 from scipy's nquad at the L-inf kinks for gamma = 1). The 2-D kernel
    separates, so the Riemann sum is Kx E Ky^T with Kx[i, k] = h exp(-gamma/2 (x_i - t_k)^2) and
    E[k, l] = exp(-L(t_k, t_l)).
    """
    width = 1.0 / math.sqrt(gamma)
    h = SPACING * width
    reach = max(np.abs(x).max(), np.abs(y).max()) + PAD_WIDTHS * width
    half = int(math.ceil(reach / h))
    t = h * np.arange(-half, half + 1)
    kx, ky = (h * np.exp(-0.5 * gamma * (a[:, None] - t[None, :]) ** 2) for a in (x, y))
    rows = max(1, (1 << 16) // len(t))
    values = np.concatenate(
        [
            loss(np.stack(np.broadcast_arrays(t[i : i + rows, None], t[None, :]), axis=-1))
            for i in range(0, len(t), rows)
        ]
    )
    shift = values.min()
    return shift - np.log(kx @ np.exp(shift - values) @ ky.T)


# ----------------------------------------------------------------------------- Theorem 1


def thm1_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three separable 2-D classes: 50 points each around the unit-circle points at 90, 210 and
    330 degrees, Gaussian noise of std 0.2 (seeded); labels 0..2."""
    rng = np.random.default_rng(seed)
    angles = np.deg2rad(90.0 + 120.0 * np.arange(THM1_CLASSES))
    means = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    X = means[:, None, :] + THM1_NOISE * rng.standard_normal((THM1_CLASSES, THM1_PER_CLASS, 2))
    return X.reshape(-1, 2), np.repeat(np.arange(THM1_CLASSES), THM1_PER_CLASS)


def collapse_threshold(X: np.ndarray, y: np.ndarray, norm: str) -> float:
    """The smallest eps at which W = 0 minimises the mean adversarial cross-entropy of the
    bias-free linear model logits = W^T x: eps* = min_z max_k ||S_k - z||_p / n_k, with S_k the sum
    and n_k the count of class k's inputs (p the attack norm).

    Why: L_eps is convex (Liu Thm. 1's proof), so 0 is a minimiser iff every directional
    derivative there is >= 0. Along V, Danskin's theorem gives (1/N) sum_k (s_k^T S_k +
    eps n_k ||s_k||_q) / K with s_k = sum_j v_j - K v_k, which range over all tuples summing to 0;
    by duality this is >= 0 for all of them iff some z has ||S_k - z||_p <= eps n_k for every k.
    For balanced classes eps* is the Chebyshev radius of the class means. (The bound in App. B.1
    depends on W and gives no single number.)
    """
    classes = np.unique(y)
    S = np.stack([X[y == k].sum(0) for k in classes])
    n = np.array([(y == k).sum() for k in classes], dtype=float)
    if norm == "linf":
        # Coordinates separate; in 1-D the weighted Chebyshev centre's radius is
        # max over pairs of (S_l - S_k) / (n_k + n_l).
        return float(
            max(
                (S[b] - S[a]).max() / (n[a] + n[b])
                for a, b in itertools.permutations(range(len(classes)), 2)
            )
        )
    z0 = S.sum(0) / n.sum()
    start = np.append(z0, np.max(np.linalg.norm(S - z0 * n[:, None], axis=1) / n))
    res = minimize(
        lambda v: v[-1],
        start,
        method="SLSQP",
        constraints=[
            {"type": "ineq", "fun": lambda v: (n * v[-1]) ** 2 - ((S - v[:-1]) ** 2).sum(1)}
        ],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    return float(res.x[-1])


def _ball_extremes(eps: np.ndarray, norm: str, d: int) -> np.ndarray:
    """Perturbations (E, C, d) whose max attains the linear model's inner maximum: the L-inf box's
    vertices (a convex function of delta peaks at one), or the L2 circle sampled every 5 degrees."""
    if norm == "linf":
        base = np.array(list(itertools.product((-1.0, 1.0), repeat=d)))
    else:
        if d != 2:
            raise BadInput(f"the L2 Theorem 1 sweep samples a circle: inputs must be 2-D, got {d}")
        a = 2 * np.pi * np.arange(THM1_CIRCLE) / THM1_CIRCLE
        base = np.stack([np.cos(a), np.sin(a)], axis=1)
    return eps[:, None, None] * base[None]


def _cross_entropy(inputs: np.ndarray, W: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy of logits = x^T W for inputs (E, N, C, d), weights (E, d, K): (E, N, C)."""
    e, n, c, d = inputs.shape
    logits = np.matmul(inputs.reshape(e, n * c, d), W).reshape(e, n, c, -1)
    top = logits.max(-1, keepdims=True)
    norm = top[..., 0] + np.log(np.exp(logits - top).sum(-1))
    return norm - np.take_along_axis(logits, y[None, :, None, None], -1)[..., 0]


def train_linear(
    X: np.ndarray,
    y: np.ndarray,
    eps: np.ndarray,
    norm: str,
    *,
    steps: int = THM1_STEPS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-batch gradient descent on the adversarial cross-entropy of logits = W^T x, one run per
    eps (vectorised), from the same seeded initial W with zero column mean.

    The common column of W shifts every logit equally (no effect, zero gradient), so centring it
    makes ||W|| measure the model itself. Danskin: the gradient is that of the maximising
    perturbation. LR decays geometrically from 1 to 1e-4. Returns the final W (E, d, K), the
    norms ||W_t|| (E, steps) and the final adversarial loss (E,).
    """
    k = int(y.max()) + 1
    n, d = X.shape
    rng = np.random.default_rng(seed)
    W0 = rng.standard_normal((d, k))
    W = np.broadcast_to(W0 - W0.mean(1, keepdims=True), (len(eps), d, k)).copy()
    onehot = np.eye(k)[y]
    Xa = X[None, :, None, :] + _ball_extremes(eps, norm, d)[:, None]  # E, N, C, d
    rows = np.arange(len(eps))[:, None]
    cols = np.arange(n)[None, :]
    trace = np.empty((len(eps), steps))
    lr0, lr1 = THM1_LR
    for step in range(steps):
        worst = Xa[rows, cols, _cross_entropy(Xa, W, y).argmax(-1)]  # E, N, d
        p = softmax(np.matmul(worst, W), -1) - onehot
        W = W - lr0 * (lr1 / lr0) ** (step / steps) * np.matmul(worst.transpose(0, 2, 1), p) / n
        trace[:, step] = np.linalg.norm(W.reshape(len(eps), -1), axis=1)
    return W, trace, _cross_entropy(Xa, W, y).max(-1).mean(-1)


def linear_errors(
    W: np.ndarray, X: np.ndarray, y: np.ndarray, eps: np.ndarray, norm: str
) -> tuple[np.ndarray, np.ndarray]:
    """Clean and exact robust error of logits = W^T x per run: x is robustly misclassified iff
    some j != y has (w_j - w_y)^T x + eps ||w_j - w_y||_q >= 0 (ties count as errors)."""
    logits = np.einsum("nd,edk->enk", X, W)
    clean = (logits.argmax(-1) != y).mean(-1)
    diff = W[:, None, :, :] - np.take_along_axis(W[:, None, :, :], y[None, :, None, None], -1)
    # diff: E, N, d, K (column j minus the true column)
    margin = np.einsum("nd,endk->enk", X, diff) + eps[:, None, None] * np.linalg.norm(
        diff, ord=DUAL[norm], axis=2
    )
    margin[:, np.arange(len(y)), y] = -np.inf
    return clean, (margin >= 0).any(-1).mean(-1)


# ----------------------------------------------------------------------------- figures


def toy_options(
    figure: str,
    *,
    grid: int = DEFAULT_GRID,
    eps: float | Sequence[float] | None = None,
    gamma: float = DEFAULT_GAMMA,
    samples: int = DEFAULT_SAMPLES,
    norm: str = "linf",
    pgd_steps: int | None = None,
    pgd_step_size: float | None = None,
    train_steps: int = THM1_STEPS,
    seed: int = 0,
) -> dict[str, object]:
    """The options `figure` uses, validated and with defaults filled: its stored `config`.

    `eps`: one budget for the Kanai figures (default 0.6), the band budgets for liu-fig5
    (default 0.6, 1.2), the training budgets for liu-thm1 (default eps* times 0, 0.25, ..., 2).
    """
    if figure not in FIGURES:
        raise BadInput(f"unknown toy figure {figure!r}; choose from {', '.join(FIGURES)} or all")
    if int(grid) < 3:
        raise BadInput(
            f"{{arg}} {grid} is too small; use at least 3 points per axis", argument="grid"
        )
    budgets = [] if eps is None else [eps] if isinstance(eps, (int, float, str)) else list(eps)
    budgets = [parse_eps(e) for e in budgets]
    options: dict[str, object] = {"figure": figure, "seed": int(seed)}
    if figure.startswith("kanai"):
        if len(budgets) > 1:
            raise BadInput(f"{figure} takes one {{arg}}, got {len(budgets)}", argument="eps")
        if not (math.isfinite(gamma) and gamma > 0):
            raise BadInput(f"{{arg}} {gamma} must be a finite number > 0", argument="gamma")
        options.update(grid=int(grid), eps=budgets[0] if budgets else KANAI_EPS, gamma=float(gamma))
        if figure == "kanai-fig2":
            cfg = swish_pgd_config(options["eps"], steps=pgd_steps, step_size=pgd_step_size)
            options.update(pgd_steps=cfg.steps, pgd_step_size=cfg.step_size)
        else:
            if int(samples) < 1:
                raise BadInput(f"{{arg}} {samples} must be >= 1", argument="samples")
            options["samples"] = int(samples)
        return options
    if figure == "liu-fig5":
        del options["seed"]
        options.update(grid=int(grid), eps=budgets or list(LIU_EPS))
        return options
    if norm not in NORMS:
        raise BadInput(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if int(train_steps) < 1:
        raise BadInput(f"{{arg}} {train_steps} must be >= 1", argument="train_steps")
    if not budgets:
        threshold = collapse_threshold(*thm1_data(seed), norm)
        budgets = [f * threshold for f in THM1_FRACTIONS]
    options.update(eps=budgets, norm=norm, train_steps=int(train_steps))
    return options


def swish_pgd_config(
    eps: float, norm: str = "linf", steps: int | None = None, step_size: float | None = None
) -> AttackConfig:
    """The swish model's PGD: 200 iterations of step 5 eps / 200 unless given (module docstring)."""
    steps = PGD_STEPS if steps is None else steps
    size = PGD_TRAVEL * eps / max(steps, 1) if step_size is None else step_size
    return attack_config(eps, norm=norm, steps=steps, step_size=size)


def gaussian_data(samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Kanai Fig. 4: x_n ~ N(0, I_2), y_n = sign(x_n1) (seeded)."""
    X = np.random.default_rng(seed).standard_normal((samples, 2))
    return X, np.where(X[:, 0] >= 0, 1.0, -1.0)


def kanai_surfaces(
    figure: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    grid: int,
    eps: float,
    gamma: float,
    pgd: AttackConfig | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> Surfaces:
    """Kanai Fig. 2 / 4-5 surfaces on theta in [-2, 2]^2; the swish row when `pgd` is given."""
    axis = np.linspace(-LIMIT, LIMIT, grid)
    theta = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1)
    surfaces = {
        "linear_clean": linear_loss(theta, X, y),
        **{f"linear_{p}": linear_loss(theta, X, y, eps, p) for p in NORMS},
        **{
            f"smoothed_{p}": entropy_smoothed(
                lambda t, p=p: linear_loss(t, X, y, eps, p), axis, axis, gamma
            )
            for p in NORMS
        },
    }
    extra: dict[str, object] = {}
    if pgd is not None:
        flat = theta.reshape(-1, 2)
        extra["swish_clean"] = swish_loss(theta, X, y)
        for i, p in enumerate(NORMS):
            cfg = replace(pgd, norm=p)
            extra[f"swish_{p}"] = swish_adv_loss(
                flat, X, y, cfg, device=device, seed=seed + i
            ).reshape(grid, grid)
        extra["pgd"] = (
            f"{pgd.steps} iterations of step {pgd.step_size:.4g}, uniform random start (seed {seed})"
        )
    return Surfaces(
        figure=figure,
        x=axis,
        y=axis.copy(),
        inputs=X,
        labels=y,
        eps=float(eps),
        gamma=float(gamma),
        **surfaces,
        **extra,
    )


def liu_band(grid: int, eps: Sequence[float]) -> Band:
    """Liu Fig. 5: g(1, theta) = log(1 + exp(theta)) and its band under |delta| <= eps."""
    theta = np.linspace(-LIMIT, LIMIT, grid)[:, None]
    X, y = np.ones((1, 1)), -np.ones(1)  # -y theta x = theta x: Liu's g
    budgets = np.asarray(eps, dtype=float)
    return Band(
        figure="liu-fig5",
        x=theta[:, 0],
        clean=linear_loss(theta, X, y),
        eps=budgets,
        adv=np.stack([linear_loss(theta, X, y, e) for e in budgets]),
        lower=np.stack([linear_loss(theta, X, y, e, worst=False) for e in budgets]),
    )


def liu_collapse(eps: Sequence[float], norm: str, *, train_steps: int, seed: int) -> Collapse:
    """Liu Thm. 1: train the 3-class linear model at every eps; report ||W||, errors, eps*."""
    X, y = thm1_data(seed)
    budgets = np.asarray(eps, dtype=float)
    W, trace, adv = train_linear(X, y, budgets, norm, steps=train_steps, seed=seed)
    clean, robust = linear_errors(W, X, y, budgets, norm)
    return Collapse(
        figure="liu-thm1",
        x=budgets,
        weight_norm=trace[:, -1].copy(),
        clean_error=clean,
        robust_error=robust,
        adv_loss=adv,
        step=np.arange(1, train_steps + 1),
        weight_norm_trace=trace,
        inputs=X,
        labels=y,
        threshold=collapse_threshold(X, y, norm),
        norm=norm,
        loss_at_origin=math.log(THM1_CLASSES),
    )


def toy(
    figure: str,
    /,
    *,
    device: str | torch.device = "auto",
    **options: object,
) -> Surfaces | Band | Collapse:
    """Compute one theory figure (`FIGURES`); `options` as in `toy_options`."""
    opts = toy_options(figure, **{k: v for k, v in options.items() if k != "figure"})
    if figure == "kanai-fig2":
        return kanai_surfaces(
            figure,
            np.array([[-1.0, 1.0]]),
            np.array([1.0]),
            grid=opts["grid"],
            eps=opts["eps"],
            gamma=opts["gamma"],
            pgd=swish_pgd_config(
                opts["eps"], steps=opts["pgd_steps"], step_size=opts["pgd_step_size"]
            ),
            seed=opts["seed"],
            device=device,
        )
    if figure == "kanai-fig4-5":
        X, y = gaussian_data(opts["samples"], opts["seed"])
        return kanai_surfaces(figure, X, y, grid=opts["grid"], eps=opts["eps"], gamma=opts["gamma"])
    if figure == "liu-fig5":
        return liu_band(opts["grid"], opts["eps"])
    return liu_collapse(
        opts["eps"], opts["norm"], train_steps=opts["train_steps"], seed=opts["seed"]
    )


RECORDS: dict[str, type[_Record]] = {
    "kanai-fig2": Surfaces,
    "kanai-fig4-5": Surfaces,
    "liu-fig5": Band,
    "liu-thm1": Collapse,
}


@dataclass(frozen=True)
class Toy(Analysis):
    """One theory figure (`FIGURES`) as an analysis with no model inputs (run it with
    `inputs=None`) in `/toy/<figure>`; its stored config is `toy_options`' (the options the
    figure uses, after defaults). `points` per theta axis; `device` runs the swish PGD."""

    name: ClassVar[str] = "toy"
    takes: ClassVar[str] = "nothing"

    figure: str
    points: int = DEFAULT_GRID
    eps: tuple[float, ...] = ()
    gamma: float = DEFAULT_GAMMA
    samples: int = DEFAULT_SAMPLES
    norm: str = "linf"
    pgd_steps: int | None = None
    pgd_step_size: float | None = None
    train_steps: int = THM1_STEPS
    seed: int = 0
    device: Any = field(default="auto", compare=False, metadata={"config": False})

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", resolve_device(self.device))

    def options(self) -> dict[str, Any]:
        return toy_options(
            self.figure,
            grid=self.points,
            eps=list(self.eps) or None,
            gamma=self.gamma,
            samples=self.samples,
            norm=self.norm,
            pgd_steps=self.pgd_steps,
            pgd_step_size=self.pgd_step_size,
            train_steps=self.train_steps,
            seed=self.seed,
        )

    def check(self, inputs: Inputs | None) -> None:
        self.options()

    def compute(
        self, inputs: Inputs | None, *, grid: Any = None, progress: Any = None
    ) -> Surfaces | Band | Collapse:
        return toy(self.figure, device=self.device, **self.options())

    def to_group(self, result: Surfaces | Band | Collapse) -> Group:
        return Group(result.arrays(), result.dims(), result.attrs())

    def from_group(
        self, arrays: Mapping[str, Any], attrs: Mapping[str, Any], where: str
    ) -> Surfaces | Band | Collapse:
        record = RECORDS[self.figure]
        values = {**attrs, **arrays}
        missing = [f.name for f in fields(record) if f.name not in values and f.default is MISSING]
        if missing:
            raise BadInput(f"{where} lacks {', '.join(missing)}; it is not a stored toy figure")
        return record(**{f.name: values[f.name] for f in fields(record) if f.name in values})

    def summary(self, stored: Stored) -> dict[str, Any]:
        threshold = stored.attrs.get("threshold")
        return {
            "cached": stored.cached,
            "elapsed_s": round(stored.elapsed_s, 2),
            **({"threshold": float(threshold)} if threshold is not None else {}),
        }
