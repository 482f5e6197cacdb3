"""PGD (L-inf, L2) and FGSM, the adversarial loss, ensembles, and AutoAttack.

Inputs live in [0, 1] (pixel units) and eps is in the same units; normalization is
the model's first layer, so attacks see raw pixels.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

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


# AutoAttack (Croce & Hein 2020) through the optional `pyautoattack` package. The
# standard version runs its attacks as a cascade: each attacks only the examples that all
# earlier ones left correctly classified.
AUTOATTACK_VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "apgd-ce": ("apgd-ce",),
}
AUTOATTACK_INSTALL = 'pip install "adv-landscape[autoattack]"'


def require_autoattack() -> type:
    """The `pyautoattack.AutoAttack` class, or BadInput naming the extra that installs it."""
    try:
        from pyautoattack import AutoAttack
    except ImportError as exc:
        raise BadInput(
            f"AutoAttack needs the optional package pyautoattack; install it with "
            f"{AUTOATTACK_INSTALL}"
        ) from exc
    return AutoAttack


@dataclass(frozen=True)
class AutoAttackResult:
    """Clean error and robust error under AutoAttack, with the error after each attack.

    `adv_error_after` maps each attack that ran, in order, to the robust error after it
    (cumulative); the cascade stops early once no example is left. `x_adv` holds, for
    each example, the first successful attack's input, or the clean input where all
    failed. `warnings` are pyautoattack's own checks (randomized or dynamic defenses,
    probabilities instead of logits, a Square attack stronger than the gradient ones).
    """

    clean_loss: float
    clean_error: float
    adv_error: float
    n: int
    eps: float
    norm: str
    version: str
    seed: int
    adv_error_after: dict[str, float]
    warnings: tuple[str, ...]
    x_adv: Tensor = field(repr=False, compare=False)

    @property
    def attacks_run(self) -> tuple[str, ...]:
        return tuple(self.adv_error_after)

    def as_dict(self) -> dict:
        return {
            "clean_loss": self.clean_loss,
            "clean_error": self.clean_error,
            "adv_error": self.adv_error,
            "n": self.n,
            "attack": {
                "name": "autoattack",
                "version": self.version,
                "eps": self.eps,
                "norm": self.norm,
                "seed": self.seed,
                "attacks": list(AUTOATTACK_VERSIONS[self.version]),
                "attacks_run": list(self.attacks_run),
            },
            "adv_error_after": self.adv_error_after,
            "warnings": list(self.warnings),
        }


class _RecordWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


@contextlib.contextmanager
def _autoattack_warnings() -> Iterator[list[str]]:
    """Collect the warnings of pyautoattack's logger into the result instead of stderr."""
    logger = logging.getLogger("auto-attack")
    handler, propagate = _RecordWarnings(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _predict(model: Forward, X: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(X[i : i + batch_size]) for i in range(0, X.shape[0], batch_size)])


def autoattack_error(
    model: nn.Module | Sequence[nn.Module],
    X: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    *,
    seed: int = 0,
    batch_size: int = 500,
) -> AutoAttackResult:
    """Robust error of a model, or of an ensemble (a list, attacked as one), under AutoAttack.

    `version="standard"` runs APGD-CE, APGD-T, FAB-T and Square with the standard
    version's settings (Croce & Hein 2020); `"apgd-ce"` only its first, cheaper
    attack. X holds raw [0, 1] pixels (normalization is the model's first layer) on the
    model's device. Deterministic for a seed; the global RNG state is left as it was.
    Needs the `autoattack` extra (BadInput otherwise).
    """
    AutoAttack = require_autoattack()
    if norm not in NORMS:
        raise BadInput(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if version not in AUTOATTACK_VERSIONS:
        raise BadInput(
            f"unknown AutoAttack version {version!r}; use one of {', '.join(AUTOATTACK_VERSIONS)}"
        )
    if not math.isfinite(eps) or eps < 0:
        raise BadInput(f"{{arg}} must be a finite number >= 0, got {eps}", argument="eps")
    if X.numel() and (X.min() < 0 or X.max() > 1):
        raise BadInput("AutoAttack attacks raw pixels in [0, 1]; normalize inside the model")
    if isinstance(model, (list, tuple)):
        model = Ensemble(model) if len(model) > 1 else model[0]
    model.eval()
    logits = _predict(model, X, batch_size)
    clean_loss = F.cross_entropy(logits, y).item()
    robust = logits.argmax(1) == y
    n_classes = logits.shape[1]
    targeted = any(a.endswith("-t") for a in AUTOATTACK_VERSIONS[version])
    if targeted and n_classes < 4:
        # The targeted DLR loss divides by the gap between the first and third logits.
        raise BadInput(
            f"AutoAttack's {version} version needs at least 4 classes, the model has "
            f"{n_classes}; use the apgd-ce version"
        )
    x_adv = X.clone()
    error_after: dict[str, float] = {}
    forked = [X.device] if X.device.type == "cuda" else []
    # pyautoattack seeds the global RNG before each attack: fork it so the caller's stream
    # continues as if no attack had run.
    with torch.random.fork_rng(devices=forked), _autoattack_warnings() as warnings:
        if eps > 0:
            adversary = AutoAttack(
                model,
                norm=norm.capitalize(),
                eps=eps,
                version="standard",
                seed=seed,
                device=X.device,
            )
            adversary.verbose = False
            # The standard version targets the 9 runner-up classes; fewer classes have fewer.
            adversary.apgd_targeted.n_target_classes = min(9, n_classes - 1)
            adversary.fab.n_target_classes = min(9, n_classes - 1)
            for attack in AUTOATTACK_VERSIONS[version]:
                remaining = robust.nonzero().flatten()
                if remaining.numel() == 0:
                    break
                # One attack per call on the examples still robust: the same batches and
                # seeds as one standard run, and the error after each attack is known.
                adversary.attacks_to_run = [attack]
                found, _ = adversary.run_standard_evaluation(
                    X[remaining], y[remaining], batch_size=batch_size
                )
                fooled = _predict(model, found, batch_size).argmax(1) != y[remaining]
                x_adv[remaining[fooled]] = found[fooled]
                robust[remaining[fooled]] = False
                error_after[attack] = 1.0 - robust.double().mean().item()
    n = int(X.shape[0])
    return AutoAttackResult(
        clean_loss=clean_loss,
        clean_error=1.0 - (logits.argmax(1) == y).double().mean().item(),
        adv_error=1.0 - robust.double().mean().item(),
        n=n,
        eps=float(eps),
        norm=norm,
        version=version,
        seed=seed,
        adv_error_after=error_after,
        warnings=tuple(warnings),
        x_adv=x_adv,
    )


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
