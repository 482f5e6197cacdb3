"""PGD (L-inf, L2) and FGSM, the adversarial loss, and ensembles.

Inputs live in [0, 1] (pixel units) and eps is in the same units; normalization is
the model's first layer, so attacks see raw pixels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .util import BadInput, make_generator

NORMS = ("linf", "l2")
Forward = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class AttackConfig:
    """One PGD attack: budget, norm, iterations and step size."""

    eps: float
    norm: str = "linf"
    steps: int = 10
    step_size: float = 0.0
    random_start: bool = True

    def as_dict(self) -> dict:
        return {
            "eps": self.eps,
            "norm": self.norm,
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
        }


def attack_config(
    eps: float,
    *,
    family: str = "mnist-like",
    norm: str = "linf",
    steps: int | None = None,
    step_size: float | None = None,
    random_start: bool = True,
) -> AttackConfig:
    """The papers' PGD defaults (Liu et al. C.1), overridable.

    L-inf, MNIST-like data: step 0.01 and eps/0.01 + 10 iterations; CIFAR-like data:
    10 iterations of step eps/4. L2 (not fixed by the papers): the same iteration
    counts with Madry et al.'s step 2.5 eps / steps.
    """
    if norm not in NORMS:
        raise BadInput(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if family not in ("mnist-like", "cifar-like"):
        raise BadInput(f"unknown dataset family {family!r}")
    if steps is None:
        steps = int(round(eps / 0.01)) + 10 if family == "mnist-like" else 10
    if steps < 0:
        raise BadInput(f"PGD steps must be >= 0, got {steps}")
    if step_size is None:
        if norm == "linf":
            step_size = 0.01 if family == "mnist-like" else eps / 4
        else:
            step_size = 2.5 * eps / max(steps, 1)
    if not math.isfinite(step_size) or step_size < 0:
        raise BadInput(f"PGD step size must be a finite number >= 0, got {step_size}")
    return AttackConfig(float(eps), norm, int(steps), float(step_size), random_start)


def _per_sample_norm(t: Tensor) -> Tensor:
    return (
        torch.linalg.vector_norm(t.flatten(1), dim=1)
        .clamp_min(1e-12)
        .view(-1, *([1] * (t.dim() - 1)))
    )


def _random_start(x: Tensor, cfg: AttackConfig, generator: torch.Generator | None) -> Tensor:
    if cfg.norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * noise - 1) * cfg.eps
    # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d).
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = direction / _per_sample_norm(direction)
    d = x[0].numel()
    u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
    radius = cfg.eps * u.pow(1.0 / d)
    return direction * radius.view(-1, *([1] * (x.dim() - 1)))


def _project(delta: Tensor, cfg: AttackConfig) -> Tensor:
    if cfg.norm == "linf":
        return delta.clamp(-cfg.eps, cfg.eps)
    return delta * (cfg.eps / _per_sample_norm(delta)).clamp(max=1.0)


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Attack a model in train mode without feeding its BN running statistics.

    BN keeps using batch statistics, but momentum 0 leaves the running estimates as
    they were, so the K attack iterations do not pollute them.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def perturb(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    cfg: AttackConfig,
    *,
    generator: torch.Generator | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    part: slice | None = None,
) -> Tensor:
    """PGD on one batch: random start, sign (L-inf) or normalized (L2) steps, projection, clamp.

    `loss_fn(logits, y)` must be a sum over the batch (so each example's gradient is its
    own); default cross-entropy. Only the input gradient is computed: parameters are
    not differentiated, which is what makes a PGD step cheaper than a training step.
    `part` attacks only the examples x[part], y[part], with the random start
    drawn for the whole batch: a rank's share of a distributed batch sees the same noise
    as in one process.
    """
    if part is not None:
        delta = _random_start(x, cfg, generator)[part] if cfg.random_start and cfg.eps > 0 else None
        x, y = x[part], y[part]
    if cfg.eps == 0 or cfg.steps == 0 and not cfg.random_start:
        return x.detach().clone()
    loss_fn = loss_fn or (lambda logits, target: F.cross_entropy(logits, target, reduction="sum"))
    x = x.detach()
    if part is None:
        delta = _random_start(x, cfg, generator) if cfg.random_start else torch.zeros_like(x)
    elif delta is None:
        delta = torch.zeros_like(x)
    x_adv = (x + delta).clamp_(0.0, 1.0)
    for _ in range(cfg.steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(forward(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            if cfg.norm == "linf":
                step = grad.sign()
            else:
                step = grad / _per_sample_norm(grad)
            delta = _project(x_adv.detach() + cfg.step_size * step - x, cfg)
            x_adv = (x + delta).clamp_(0.0, 1.0)
    return x_adv.detach()


def pgd(
    model: Forward,
    X: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    steps: int | None = None,
    step_size: float | None = None,
    *,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    random_start: bool = True,
    family: str | None = None,
) -> Tensor:
    """Adversarial examples for (X, y) against `model` (any callable `x -> logits`).

    Missing `steps`/`step_size` take the papers' defaults for the data family, which is
    guessed from the channel count when not given (1 channel: MNIST-like). The caller
    chooses the model's mode; analyses attack in eval mode.
    """
    fam = family or ("mnist-like" if X.shape[1] == 1 else "cifar-like")
    cfg = attack_config(
        eps, family=fam, norm=norm, steps=steps, step_size=step_size, random_start=random_start
    )
    gen = generator if generator is not None else make_generator(seed or 0, X.device)
    bs = batch_size or X.shape[0]
    return torch.cat(
        [
            perturb(model, X[i : i + bs], y[i : i + bs], cfg, generator=gen)
            for i in range(0, X.shape[0], bs)
        ]
    )


def fgsm(model: Forward, X: Tensor, y: Tensor, eps: float, norm: str = "linf") -> Tensor:
    """Fast gradient (sign) method: one full-size step from the clean input."""
    cfg = AttackConfig(eps, norm, steps=1, step_size=eps, random_start=False)
    return perturb(model, X, y, cfg)


class Ensemble(nn.Module):
    """Prediction by mean softmax; outputs log of the mean probabilities, so cross-entropy
    on it is the ensemble's NLL and attacks target the ensemble as a whole."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise BadInput("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    def forward(self, x: Tensor) -> Tensor:
        logp = torch.stack([F.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


@dataclass(frozen=True)
class Evaluation:
    """Mean loss and error rate on clean and on adversarial inputs."""

    clean_loss: float
    clean_error: float
    adv_loss: float
    adv_error: float
    n: int
    attack: AttackConfig

    def as_dict(self) -> dict:
        return {
            "clean_loss": self.clean_loss,
            "clean_error": self.clean_error,
            "adv_loss": self.adv_loss,
            "adv_error": self.adv_error,
            "n": self.n,
            "attack": self.attack.as_dict(),
        }


def evaluate(
    model: nn.Module | Sequence[nn.Module] | Forward,
    X: Tensor,
    y: Tensor,
    cfg: AttackConfig,
    *,
    batch_size: int = 500,
    seed: int = 0,
) -> Evaluation:
    """Clean and adversarial loss and error of a model, a callable, or an ensemble
    (a list of models, attacked as one) on (X, y). nn.Modules are put in eval mode."""
    if isinstance(model, (list, tuple)):
        model = Ensemble(model) if len(model) > 1 else model[0]
    if isinstance(model, nn.Module):
        model.eval()
    gen = make_generator(seed, X.device)
    sums = torch.zeros(4, dtype=torch.float64, device=X.device)
    for i in range(0, X.shape[0], batch_size):
        xb, yb = X[i : i + batch_size], y[i : i + batch_size]
        # At eps 0 the adversarial pass would repeat the clean one: copy it instead.
        inputs = (xb,) if cfg.eps == 0 else (xb, perturb(model, xb, yb, cfg, generator=gen))
        with torch.no_grad():
            for j, x in enumerate(inputs):
                logits = model(x)
                sums[2 * j] += F.cross_entropy(logits, yb, reduction="sum").double()
                sums[2 * j + 1] += (logits.argmax(1) != yb).sum()
    if cfg.eps == 0:
        sums[2:] = sums[:2]
    s = (sums / X.shape[0]).tolist()
    return Evaluation(s[0], s[1], s[2], s[3], int(X.shape[0]), cfg)


def perturb_points(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    cfg: AttackConfig,
    points: int,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD on one batch at `points` parameter points at once (surfaces batch their points).

    `forward` maps the point-major stack of `points` copies of the batch, shape
    (points * B, ...), to its logits, e.g. by a vmap over stacked parameter sets. Every
    point starts from the random start that `perturb` draws from `generator` for (x, y),
    drawn once and repeated: the result equals `points` calls of `perturb` with equally
    seeded generators, up to the float rounding of the stacked forward. The per-example
    cross-entropy sum makes each copy's gradient its own point's. Returns (points * B, ...).
    """
    if cfg.eps == 0 or cfg.steps == 0 and not cfg.random_start:
        return x.detach().repeat(points, *([1] * (x.dim() - 1)))
    x = x.detach()
    delta = _random_start(x, cfg, generator) if cfg.random_start else torch.zeros_like(x)
    reps = (points, *([1] * (x.dim() - 1)))
    x, delta, y = x.repeat(reps), delta.repeat(reps), y.repeat(points)
    x_adv = (x + delta).clamp_(0.0, 1.0)
    for _ in range(cfg.steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(forward(x_adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            step = grad.sign() if cfg.norm == "linf" else grad / _per_sample_norm(grad)
            delta = _project(x_adv.detach() + cfg.step_size * step - x, cfg)
            x_adv = (x + delta).clamp_(0.0, 1.0)
    return x_adv.detach()
