"""Parameters as name-keyed dicts: functional evaluation, flat vectors and simple algebra.

Every analysis evaluates the model at other parameters through `functional_forward`,
so one module instance serves every point and nothing is deep-copied. Parameters are
always matched by name, never by position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

ParamDict = dict[str, Tensor]


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
) -> Tensor:
    """The model's output at `params` (a subset by name is fine: the rest come from the model)."""
    tensors: dict[str, Tensor] = dict(params)
    if buffers:
        tensors.update(buffers)
    return functional_call(model, tensors, (x,), strict=False)


def forward_at(model: nn.Module, params: Mapping[str, Tensor]) -> Callable[[Tensor], Tensor]:
    """A callable `x -> logits` for the model at `params`, usable wherever a model is."""
    return lambda x: functional_forward(model, params, x)


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
