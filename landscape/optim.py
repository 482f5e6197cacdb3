"""The trainer's update rules and training objectives.

Rules: SGD / Adam (one mini-batch, one step); EntropySGD (Chaudhari et al.; Kanai et al.
eqs. 10-12, Alg. 1 without h) and its second-order variant (Kanai et al. App. D, Alg. 1);
any of them with adversarial weight perturbation (AWP, Wu et al.). Objectives: PGD
cross-entropy (Madry et al.) and TRADES (Zhang et al., as in Kanai et al. F.2).

A rule consumes mini-batches through `draw()` and returns one `BatchStats` per mini-batch
consumed, so the trace keeps one row per mini-batch whatever the rule. All of a rule's
state that outlives a step (optimizer buffers, the Langevin noise generator) is in its
`state_dict`, so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .attacks import AttackConfig, frozen_batchnorm_stats, perturb
from .params import ParamDict, forward_at, global_norm
from .util import make_generator

if TYPE_CHECKING:
    from .train import TrainConfig

Forward = Callable[[Tensor], Tensor]
LOSSES = ("ce", "trades")
AWP_PROXY_LR = 0.01
# Second-order EntropySGD: the denominator gamma - gamma^2 var is clamped to gamma * this,
# so h is at most 1 / (gamma * NEWTON_FLOOR), ten times the first-order 1 / gamma.
NEWTON_FLOOR = 0.1
# The trainer's data and attack generators use seed + 1 and seed + 2.
NOISE_SEED_OFFSET = 3


def trades_kl(clean_logits: Tensor, adv_logits: Tensor, reduction: str = "batchmean") -> Tensor:
    """KL(p(x) || p(x')) of TRADES (Zhang et al. eq. 5), from logits.

    Both sides enter as log-probabilities (`log_target`), so identical logits give exactly 0.
    """
    return F.kl_div(
        F.log_softmax(adv_logits, dim=1),
        F.log_softmax(clean_logits, dim=1),
        reduction=reduction,
        log_target=True,
    )


@dataclass(frozen=True)
class BatchLoss:
    """The training objective on one mini-batch at one eps.

    `attack` makes the adversarial examples at the model's current weights (the model's
    mode, BN statistics frozen); `loss` scores given examples under any forward (the model,
    or the model at other weights) and returns (mean loss, error rate on x').

    ce: mean cross-entropy on PGD examples. trades: cross-entropy on the clean inputs plus
    beta KL(p(x) || p(x')) (batchmean), with PGD maximizing the KL. The attack starts
    uniformly in the eps-ball, like every PGD here, rather than at TRADES' 0.001 Gaussian:
    both break the symmetry of the KL's zero gradient at x' = x, and the uniform start
    keeps one PGD for every objective.
    """

    attack_cfg: AttackConfig | None
    generator: torch.Generator
    kind: str = "ce"
    beta: float = 6.0

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, part: slice | None = None) -> Tensor:
        """x' for the batch, or for its examples `part` (noise drawn for the whole batch)."""
        if self.attack_cfg is None:
            return x if part is None else x[part]
        cfg, gen = self.attack_cfg, self.generator
        with frozen_batchnorm_stats(model):
            if self.kind != "trades":
                return perturb(model, x, y, cfg, generator=gen, part=part)
            with torch.no_grad():
                clean = model(x if part is None else x[part])

            def kl(logits: Tensor, _: Tensor) -> Tensor:
                return trades_kl(clean, logits, "sum")

            return perturb(model, x, y, cfg, generator=gen, loss_fn=kl, part=part)

    def loss(self, forward: Forward, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "trades":
            logits = forward(x)
            adv = logits if x_adv is x else forward(x_adv)
            loss = F.cross_entropy(logits, y) + self.beta * trades_kl(logits, adv)
        else:
            adv = forward(x_adv)
            loss = F.cross_entropy(adv, y)
        return loss, (adv.detach().argmax(1) != y).float().mean()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.loss(model, x, self.attack(model, x, y), y)


@dataclass
class BatchStats:
    """One trace row's measured values, kept on the device until the epoch ends."""

    loss: Tensor
    robust_error: Tensor
    grad_norm: Tensor


@dataclass
class StepContext:
    """What an update rule needs from the loop for one step (`epoch`: fractional, at its start)."""

    lr: float
    eps: float
    batch_loss: BatchLoss
    epoch: float = 0.0


def awp_perturbation(
    model: nn.Module, loss_at: Callable[[Forward], Tensor], gamma: float
) -> ParamDict:
    """Wu et al.'s adversarial weight perturbation v at the model's current weights.

    A proxy takes one SGD ascent step (lr 0.01) on `loss_at` (the batch loss on fixed
    adversarial examples); each weight with two or more dimensions then moves along the
    proxy's displacement d_l, rescaled to v_l = gamma ||w_l|| d_l / ||d_l||. Biases and
    BN parameters are not perturbed. The proxy's displacement is lr * grad, taken straight
    from the gradient at the model's weights (BN statistics frozen), so no copy is kept.
    """
    named = {n: p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2}
    with frozen_batchnorm_stats(model):
        loss = loss_at(model)
    grads = [
        g if g is not None else torch.zeros_like(w)
        for g, w in zip(
            torch.autograd.grad(loss, list(named.values()), allow_unused=True), named.values()
        )
    ]
    distributed.all_reduce_grads(grads)  # under torchrun `loss_at` is this rank's weighted share
    out: ParamDict = {}
    for (name, w), g in zip(named.items(), grads):
        d = AWP_PROXY_LR * g
        scale = gamma * torch.linalg.vector_norm(w.detach()) / (torch.linalg.vector_norm(d) + 1e-20)
        out[name] = scale * d
    return out


class UpdateRule:
    """Plain first-order training: one mini-batch, one SGD or Adam step (with AWP if asked).

    With AWP the gradient is taken at theta + v through a functional call, so the model's
    tensors are never modified and need no restoring; the step then moves theta.
    """

    def __init__(self, model: nn.Module, config: TrainConfig):
        self.model = model
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if config.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                list(self.params.values()), lr=config.lr, weight_decay=config.weight_decay
            )
        else:
            self.optimizer = torch.optim.SGD(
                list(self.params.values()),
                lr=config.lr,
                momentum=config.momentum,
                nesterov=config.nesterov,
                weight_decay=config.weight_decay,
            )
        self.awp_gamma = config.awp_gamma
        self.awp_warmup = config.awp_warmup

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def gradient(self, x: Tensor, y: Tensor, ctx: StepContext) -> BatchStats:
        """Set .grad to the batch loss's gradient at the model's weights (theta + v with AWP).

        The trace row describes the differentiated objective: loss, error and gradient norm
        all at the (perturbed) weights the gradient was taken at.

        Under torchrun every rank holds the whole mini-batch and works on its contiguous
        share: PGD noise is drawn for the whole batch and sliced, the share's mean loss is
        weighted by its size / batch size, and the gradients (and the trace's loss and
        error) are summed over ranks by one explicit all-reduce. That is exactly the
        batch mean of one process, whatever the split, and it keeps functional calls
        (AWP, the curve's B(t)) free of DDP's module wrapper and hooks.
        """
        shared = distributed.world().distributed
        part = distributed.share(x.shape[0]) if shared else None
        weight = 1.0 if part is None else (part.stop - part.start) / x.shape[0]
        x_adv = ctx.batch_loss.attack(self.model, x, y, part)
        if part is not None:
            x, y = x[part], y[part]
        forward: Forward = self.model
        if self.awp_gamma > 0 and ctx.epoch >= self.awp_warmup:
            v = awp_perturbation(
                self.model,
                lambda f: ctx.batch_loss.loss(f, x, x_adv, y)[0] * weight,
                self.awp_gamma,
            )
            forward = forward_at(self.model, {n: self.params[n] + v[n] for n in v})
        loss, wrong = ctx.batch_loss.loss(forward, x, x_adv, y)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        loss = loss.detach()
        if shared:
            # Parameters outside the graph (the same on every rank) keep no gradient, as in one process.
            grads = [p.grad for p in self.params.values() if p.grad is not None]
            stats = torch.stack([loss * weight, wrong * weight])
            distributed.all_reduce_grads([*grads, stats])
            loss, wrong = stats[0], stats[1]
        grad_norm = global_norm({n: p.grad for n, p in self.params.items() if p.grad is not None})
        return BatchStats(loss, wrong, grad_norm)

    def step(
        self, draw: Callable[[], tuple[Tensor, Tensor] | None], ctx: StepContext
    ) -> list[BatchStats]:
        batch = draw()
        if batch is None:
            return []
        stats = self.gradient(*batch, ctx)
        self.optimizer.step()
        return [stats]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class EntropySGD(UpdateRule):
    """EntropySGD for adversarial training (Kanai et al. eqs. 10-12; Alg. 1 without h).

    One outer step on theta runs L Langevin steps, each on a fresh mini-batch with PGD
    examples made at the inner weights theta' (held in the model meanwhile):

        b      <- m b + grad l(theta')                              (b starts at 0)
        theta' <- theta' - eta' (b + gamma (theta' - theta)) + sqrt(eta') eps_E N(0, I)
        mu     <- (1 - alpha) mu + alpha theta'                      (mu starts at theta)

    m is --inner-momentum, by default the run's --momentum (Nesterov with --nesterov: b is
    replaced by grad + m b), as in Chaudhari et al.'s code, which Kanai et al. build on (E);
    m = 0 gives Alg. 1 lines 10-11 as printed. Without it, L steps of eta' = 0.1 move theta'
    about ten times less than L momentum-0.9 SGD steps at the same rate, and the defaults
    do not train digits in 8 epochs. alpha weighs the newest theta' (Alg. 1 line 12;
    Chaudhari et al.'s code puts its 0.75 on the old mean instead). Alg. 1's line 10 has a
    sign typo: the inner step descends the loss, as in Chaudhari et al. Alg. 1. The rule
    then restores theta exactly and takes the outer step with --lr as the paper's eta:

        theta <- theta - eta (theta - mu)

    This is Alg. 1 line 18 (eq. 77), theta - eta gamma h * (theta - mu), at the first-order
    h = 1/gamma (the variance dropped): the gradient of -F, gamma (theta - mu) (eq. 11),
    scaled by 1/gamma, as Chaudhari et al.'s code does. So E.1's eta = 0.1 is --lr 0.1, and
    the second-order rule differs from this one by h alone. The direction theta - mu goes
    to SGD with the run's momentum, Nesterov flag and weight decay.

    An epoch is still one pass over the data, so it has about n_batches / L outer steps;
    the last one of an epoch runs on the batches left (fewer than L), so no state crosses
    an epoch. eta' is constant (the LR schedule drives eta). Running means are kept of the
    deviation theta' - theta, which is the same arithmetic shifted by theta but spares fp32
    the cancellation of theta - mu. Noise comes from a generator on the model's device
    seeded with seed + 3. Each trace row is one Langevin step: loss, error and ||grad l||
    at theta' (+ v with AWP).

    Window: EntropySGD runs from epoch `entropy_start` until `entropy_stop`; outside it the
    rule takes plain mini-batch SGD steps at --lr with the same SGD state (Kanai et al. E:
    no EnSGD for the first 5 epochs on SVHN, 10 with TRADES+AWP; F.2 "tuned": back to SGD
    at epoch 150; E.1: "the learning rates of SGD and EntropySGD are set to 0.1").
    """

    second_order = False

    def __init__(self, model: nn.Module, config: TrainConfig):
        super().__init__(model, config)
        self.gamma = config.entropy_gamma
        self.noise = config.entropy_noise
        self.inner_lr = config.inner_lr
        self.inner_momentum = (
            config.momentum if config.inner_momentum is None else config.inner_momentum
        )
        self.nesterov = config.nesterov
        self.steps = config.langevin_steps
        self.alpha = config.mean_alpha
        self.start = config.entropy_start
        self.stop = math.inf if config.entropy_stop is None else config.entropy_stop
        tensors = list(self.params.values())
        self.anchor = [torch.zeros_like(p) for p in tensors]
        self.mean = [torch.zeros_like(p) for p in tensors]
        self.velocity = [torch.zeros_like(p) for p in tensors] if self.inner_momentum else []
        self.square = [torch.zeros_like(p) for p in tensors] if self.second_order else []
        device = tensors[0].device
        self.generator = make_generator(config.seed + NOISE_SEED_OFFSET, device)

    def _noise(self, like: list[Tensor]) -> list[Tensor]:
        flat = torch.randn(
            sum(p.numel() for p in like),
            generator=self.generator,
            device=like[0].device,
            dtype=like[0].dtype,
        )
        return [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in like]), like)]

    def step(
        self, draw: Callable[[], tuple[Tensor, Tensor] | None], ctx: StepContext
    ) -> list[BatchStats]:
        if not self.start <= ctx.epoch < self.stop:
            return super().step(draw, ctx)
        params = list(self.params.values())
        with torch.no_grad():
            torch._foreach_copy_(self.anchor, params)
            torch._foreach_zero_(self.mean)
            if self.velocity:
                torch._foreach_zero_(self.velocity)
            if self.second_order:
                torch._foreach_zero_(self.square)
        stats: list[BatchStats] = []
        for _ in range(self.steps):
            batch = draw()
            if batch is None:
                break
            stats.append(self.gradient(*batch, ctx))
            with torch.no_grad():
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                if self.velocity:
                    torch._foreach_mul_(self.velocity, self.inner_momentum)
                    torch._foreach_add_(self.velocity, grads)
                    grads = (
                        torch._foreach_add(grads, self.velocity, alpha=self.inner_momentum)
                        if self.nesterov
                        else self.velocity
                    )
                deviation = torch._foreach_sub(params, self.anchor)
                torch._foreach_add_(
                    params,
                    torch._foreach_add(grads, deviation, alpha=self.gamma),
                    alpha=-self.inner_lr,
                )
                if self.noise > 0:
                    torch._foreach_add_(
                        params, self._noise(params), alpha=math.sqrt(self.inner_lr) * self.noise
                    )
                deviation = torch._foreach_sub(params, self.anchor)
                torch._foreach_lerp_(self.mean, deviation, self.alpha)
                if self.second_order:
                    torch._foreach_lerp_(
                        self.square, torch._foreach_mul(deviation, deviation), self.alpha
                    )
        if not stats:
            return []
        with torch.no_grad():
            torch._foreach_copy_(params, self.anchor)
            for p, direction in zip(params, self.outer_gradient()):
                p.grad = direction
        self.optimizer.step()
        return stats

    def outer_gradient(self) -> list[Tensor]:
        """theta - mu (eq. 11's gradient over gamma), from the running mean of theta' - theta."""
        return torch._foreach_neg(self.mean)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "noise": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["noise"].cpu())


class EntropySGD2(EntropySGD):
    """Second-order EntropySGD (Kanai et al. App. D, Alg. 1 and eq. 77).

    Running estimates of E[theta'] and E[theta' * theta'] give the diagonal variance
    var_j; the Hessian of -F is then diag(gamma - gamma^2 var) and the Newton direction is
    gamma h * (theta - mu) with h_j = 1 / (gamma - gamma^2 var_j). It goes to SGD like
    the first-order gradient (with momentum 0 and no weight decay the step is exactly
    theta <- theta - eta gamma h * (theta - mu)). Guard: where var_j approaches or passes
    1/gamma the diagonal model is flat or concave and h_j would blow up or flip the step
    towards a maximum, so the denominator is clamped to gamma * 0.1 (h_j <= 10 / gamma).
    A clamp rather than a fallback to 1/gamma keeps h monotone in the variance. Both
    moments are kept of theta' - theta (var is shift-invariant), so var_j is not lost to
    fp32 cancellation between E[theta'^2] and mu^2.
    """

    second_order = True

    def outer_gradient(self) -> list[Tensor]:
        variance = torch._foreach_sub(self.square, torch._foreach_mul(self.mean, self.mean))
        out = []
        for m, var in zip(self.mean, variance):
            denominator = (self.gamma - self.gamma**2 * var).clamp_min(self.gamma * NEWTON_FLOOR)
            out.append(-self.gamma * m / denominator)
        return out


RULES: dict[str, Callable[[nn.Module, TrainConfig], UpdateRule]] = {
    "sgd": UpdateRule,
    "adam": UpdateRule,
    "entropy-sgd": EntropySGD,
    "entropy-sgd2": EntropySGD2,
}

DEFAULT_LR: dict[str, float] = {
    "sgd": 0.1,  # Kanai et al. E.1 and Liu et al. C.1 (ResNet-18): SGD, momentum 0.9
    "adam": 1e-3,  # Liu et al. C.1 (VGG); Kingma and Ba's default
    "entropy-sgd": 0.1,  # Kanai et al. E.1: eta = 0.1
    "entropy-sgd2": 0.1,  # the same eta (App. D)
}
"""The learning rate (eta for EntropySGD) each optimizer gets when --lr is not given."""
