"""Parameters as name-keyed dicts: functional evaluation, flat vectors and simple algebra.

Every analysis evaluates the model at other parameters through `functional_forward`,
so one module instance serves every point and nothing is deep-copied. Parameters are
always matched by name, never by position.

Reduced precision (`--precision bf16|fp16`): `functional_forward(..., dtype=...)` runs the
network in that dtype, casting its parameters (computed in fp32 by the caller), buffers and
input at the call, and widens the output back to fp32, so losses are computed and summed
in full precision. Explicit casts rather than `torch.autocast`: in torch 2.13 autocast
leaves convolutions in fp32 under `vmap`, so stacked and single points would be evaluated
at different precisions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .util import BadInput

ParamDict = dict[str, Tensor]
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_dtype(precision: str) -> torch.dtype | None:
    """The evaluation dtype of a `--precision` name; None for fp32 (no casts at all)."""
    if precision not in PRECISIONS:
        raise BadInput(
            f"{{arg}} {precision!r} is not valid; use one of {', '.join(PRECISIONS)}",
            argument="precision",
        )
    return PRECISIONS[precision]


def named_params(model: nn.Module, *, trainable_only: bool = True) -> ParamDict:
    """Detached parameter tensors by name (no copies: they share storage with the model)."""
    return {
        name: p.detach()
        for name, p in model.named_parameters()
        if p.requires_grad or not trainable_only
    }


def functional_forward(
    model: nn.Module,
    params: Mapping[str, Tensor],
    x: Tensor,
    buffers: Mapping[str, Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The model's output at `params` (a subset by name is fine: the rest come from the model).

    With `dtype` the whole network runs in it (floating parameters, buffers and the input are
    cast; a tensor already in `dtype` is used as is, so BN statistics passed in that dtype
    are updated in place) and the output comes back in fp32.
    """
    tensors: dict[str, Tensor] = dict(params)
    if buffers:
        tensors.update(buffers)
    if dtype is None:
        return functional_call(model, tensors, (x,), strict=False)
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        tensors.setdefault(name, t.detach())
    low = {k: t.to(dtype) if t.is_floating_point() else t for k, t in tensors.items()}
    return functional_call(model, low, (x.to(dtype),), strict=False).float()


def forward_at(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Callable[[Tensor], Tensor]:
    """A callable `x -> logits` for the model at `params` (and `buffers`, in `dtype`), usable
    wherever a model is."""
    return lambda x: functional_forward(model, params, x, buffers, dtype)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block; its own mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def estimate_bn(
    net: nn.Module,
    params: Mapping[str, Tensor],
    X: Tensor,
    y: Tensor | None = None,
    *,
    batch_size: int = 500,
    attack: Callable[[Tensor, Tensor], Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Tensor]:
    """BN running statistics of `net` at `params`, re-estimated on X from fresh buffers.

    One pass in train mode, batches weighted by their size (for equal batches this is
    torch's momentum=None cumulative average); `attack`, when given, maps each clean
    batch to the inputs BN should see and runs in eval mode. Returns {buffer name: tensor}
    for a functional call, {} for a network without BN; the network's own buffers,
    momenta and mode are left as they were. With `dtype` the pass runs in that dtype and
    the statistics are accumulated and returned in it.
    """
    bns = [
        (name, m)
        for name, m in net.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]
    if not bns:
        return {}
    buffers: dict[str, Tensor] = {}
    for name, m in bns:
        prefix = f"{name}." if name else ""
        buffers[prefix + "running_mean"] = torch.zeros_like(m.running_mean, dtype=dtype)
        buffers[prefix + "running_var"] = torch.ones_like(m.running_var, dtype=dtype)
        buffers[prefix + "num_batches_tracked"] = torch.zeros_like(m.num_batches_tracked)
    momenta = [m.momentum for _, m in bns]
    was_training = net.training
    seen = 0
    try:
        for i in range(0, X.shape[0], batch_size):
            xb = X[i : i + batch_size]
            if attack is not None:
                net.eval()
                xb = attack(xb, y[i : i + batch_size])
            seen += xb.shape[0]
            for _, m in bns:
                m.momentum = xb.shape[0] / seen
            net.train()
            with torch.no_grad():
                functional_forward(net, params, xb, buffers, dtype)
    finally:
        for (_, m), momentum in zip(bns, momenta):
            m.momentum = momentum
        net.train(was_training)
    return buffers


def flatten(params: Mapping[str, Tensor], names: list[str] | None = None) -> Tensor:
    """Concatenate tensors in the order of `names` (default: the mapping's order)."""
    keys = list(params) if names is None else names
    return torch.cat([params[k].reshape(-1) for k in keys])


def unflatten(vector: Tensor, like: Mapping[str, Tensor]) -> ParamDict:
    """Split a flat vector into tensors shaped like `like`, in its key order."""
    out: ParamDict = {}
    offset = 0
    for name, ref in like.items():
        n = ref.numel()
        out[name] = vector[offset : offset + n].view_as(ref)
        offset += n
    if offset != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, parameters have {offset}")
    return out


def global_norm(params: Mapping[str, Tensor]) -> Tensor:
    """The Euclidean norm of all tensors together, as a 0-d tensor on their device."""
    norms = torch._foreach_norm(list(params.values()))
    return torch.linalg.vector_norm(torch.stack(norms))


def combine(
    base: Mapping[str, Tensor], *terms: tuple[float | Tensor, Mapping[str, Tensor]]
) -> ParamDict:
    """base + sum_i c_i d_i, by name; names missing from a direction count as zero."""
    out = {k: v.clone() for k, v in base.items()}
    for coeff, direction in terms:
        for k, d in direction.items():
            out[k] += coeff * d
    return out
