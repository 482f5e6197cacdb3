"""Directions in parameter space, as name-keyed dicts shaped like the model's parameters.

Kinds (used by `surface`, `cosine` and `smoothness`):

- `random`: a seeded Gaussian direction scaled to unit global norm.
- `filter`: a seeded Gaussian direction, filter-normalized (Li et al. 2018, sec. 4): every
  filter (slice along dim 0 of a parameter with 2+ dimensions: a conv output channel, a
  row of a linear weight) is rescaled to the norm of the matching filter of the weights,
  d_i <- d_i ||theta_i|| / ||d_i||. One-dimensional parameters (biases, BatchNorm scales
  and shifts) follow `bias_bn`: `ignore` sets them to zero (Li et al.'s default);
  `filter` treats each entry as a filter of size 1, d_j <- sign(d_j) |theta_j|, so each
  entry moves by its own magnitude. (Li et al.'s code copies theta itself in that mode;
  the size-1-filter rule keeps the random sign.)
- `eigen`: top Hessian eigenvectors (unit), read from a stored `/hessian/<run>` group or
  computed on the fly.
- `interp`: theta_B - theta_A toward another checkpoint (unnormalized: coordinate 1 is B).
- `pca`: principal directions of a training trajectory (Li et al. sec. 7): the
  checkpoints the trainer saved (init.pt, epoch_*.pt, period_*.pt, final.pt), offsets
  theta_i - theta_final, centred and decomposed by SVD as in Li et al.'s code (sklearn
  PCA); unit vectors.

Optional Gram-Schmidt orthogonalization uses name-keyed inner products and restores
each direction's norm afterwards, so coordinates keep their meaning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .params import ParamDict, global_norm, named_params
from .util import BadInput

KINDS = ("filter", "random", "eigen", "interp", "pca")
BIAS_BN = ("ignore", "filter")
TRAJECTORY_GLOBS = ("init.pt", "epoch_*.pt", "period_*.pt", "final.pt")


def inner(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """<a, b> summed over the names of `a` (a name missing from `b` counts as zero)."""
    terms = [(a[k] * b[k]).sum() for k in a if k in b]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def scaled(direction: Mapping[str, Tensor], factor: float | Tensor) -> ParamDict:
    return {k: v * factor for k, v in direction.items()}


def unit(direction: Mapping[str, Tensor]) -> ParamDict:
    """The direction divided by its global norm; a zero or non-finite direction is bad input.

    It is first divided by its largest entry, so the norm neither overflows (entries near
    1e20 square past float32's range) nor underflows.
    """
    peak = max((float(v.abs().max()) for v in direction.values() if v.numel()), default=0.0)
    if peak != peak or peak == float("inf"):
        raise BadInput("a direction has non-finite entries; it has no unit vector")
    if peak == 0.0:
        raise BadInput("a direction is zero everywhere; it has no unit vector")
    direction = scaled(direction, 1.0 / peak)
    return scaled(direction, 1.0 / global_norm(direction))


def random_direction(
    params: Mapping[str, Tensor], generator: torch.Generator, *, normalize: bool = True
) -> ParamDict:
    """Gaussian entries drawn in name order from `generator`; unit global norm if `normalize`."""
    d = {
        k: torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
        for k, p in params.items()
    }
    return unit(d) if normalize else d


def filter_normalize(
    direction: Mapping[str, Tensor], params: Mapping[str, Tensor], bias_bn: str = "ignore"
) -> ParamDict:
    """Li et al.'s filter normalization of `direction` against `params` (see module docstring)."""
    if bias_bn not in BIAS_BN:
        raise BadInput(
            f"{{arg}} {bias_bn!r} is not valid; use one of {', '.join(BIAS_BN)}", argument="bias_bn"
        )
    out: ParamDict = {}
    for name, d in direction.items():
        w = params[name]
        if w.dim() <= 1:
            out[name] = torch.zeros_like(d) if bias_bn == "ignore" else d.sign() * w.abs()
            continue
        d_norm = torch.linalg.vector_norm(d.flatten(1), dim=1)
        w_norm = torch.linalg.vector_norm(w.flatten(1), dim=1)
        # A zero direction filter stays zero rather than dividing by zero.
        factor = torch.where(d_norm > 0, w_norm / d_norm.clamp_min(1e-30), torch.zeros_like(d_norm))
        out[name] = d * factor.view(-1, *([1] * (d.dim() - 1)))
    return out


def filter_direction(
    params: Mapping[str, Tensor], generator: torch.Generator, bias_bn: str = "ignore"
) -> ParamDict:
    """A seeded Gaussian direction, filter-normalized against `params`."""
    return filter_normalize(random_direction(params, generator, normalize=False), params, bias_bn)


def orthogonalize(directions: Sequence[Mapping[str, Tensor]]) -> list[ParamDict]:
    """Gram-Schmidt in order, by name-keyed inner products; each keeps its original norm."""
    out: list[ParamDict] = []
    basis: list[ParamDict] = []
    for i, d in enumerate(directions):
        norm = global_norm(d)
        v = {k: t.clone() for k, t in d.items()}
        for b in basis:
            c = inner(v, b)
            v = {k: t - c * b[k] for k, t in v.items()}
        residual = global_norm(v)
        if float(residual) <= 1e-6 * max(float(norm), 1e-30):
            raise BadInput(f"direction {i + 1} is linearly dependent on the ones before it")
        basis.append(scaled(v, 1.0 / residual))
        out.append(scaled(v, norm / residual))
    return out


def _check_names(reference: Mapping[str, Tensor], other: Mapping[str, Tensor], source: str) -> None:
    missing = [k for k in reference if k not in other]
    wrong = [k for k in reference if k in other and other[k].shape != reference[k].shape]
    if missing or wrong:
        first = (missing or wrong)[0]
        raise BadInput(
            f"{source} does not match the model's parameters "
            f"({len(missing)} missing, {len(wrong)} of another shape; first {first})"
        )


def _load_params(
    path: str | Path, model: nn.Module, spec: Mapping, device: torch.device
) -> tuple[ParamDict, float]:
    """The parameters of another checkpoint of the same architecture, and its epoch."""
    from .checkpoint import load_checkpoint, load_options

    other, other_spec = load_checkpoint(path, device, **load_options(spec))
    params = named_params(other)
    _check_names(named_params(model), params, str(path))
    epoch = other_spec.get("train", {}).get("epoch")
    if not isinstance(epoch, (int, float)):
        match = re.search(r"(\d+)", Path(path).stem)
        epoch = float(match.group(1)) if match else float("inf")
    return {k: params[k] for k in named_params(model)}, float(epoch)


def interpolation_direction(
    model: nn.Module, spec: Mapping, other: str | Path, device: torch.device | None = None
) -> ParamDict:
    """theta_other - theta_model by name (checkpoints of the same architecture)."""
    base = named_params(model)
    dev = device or next(iter(base.values())).device
    target, _ = _load_params(other, model, spec, dev)
    return {k: target[k] - base[k] for k in base}


@dataclass(frozen=True)
class Trajectory:
    """PCA of a training trajectory around the analysed parameters."""

    directions: list[ParamDict]
    explained_variance_ratio: np.ndarray  # (k,)
    coordinates: np.ndarray  # (n, k): each checkpoint projected on the directions
    epochs: np.ndarray  # (n,)
    paths: list[str]


def trajectory_directions(
    model: nn.Module, spec: Mapping, folder: str | Path, k: int = 2
) -> Trajectory:
    """Top-k principal directions of theta_i - theta (Li et al. sec. 7), theta = the model's.

    The offsets are centred before the SVD, as sklearn's PCA (used by Li et al.) does.
    """
    root = Path(folder)
    if not root.is_dir():
        raise BadInput(
            f"{{arg}} {root} is not a folder of training checkpoints", argument="trajectory"
        )
    paths = sorted({p for pattern in TRAJECTORY_GLOBS for p in root.glob(pattern)})
    if len(paths) < k + 1:
        raise BadInput(
            f"{{arg}} {root} holds {len(paths)} checkpoints (init.pt, epoch_*.pt, period_*.pt, "
            f"final.pt); PCA of {k} directions needs at least {k + 1}",
            argument="trajectory",
        )
    base = named_params(model)
    names = list(base)
    device = next(iter(base.values())).device
    loaded = [(*_load_params(p, model, spec, device), p) for p in paths]
    loaded.sort(key=lambda item: (item[1], item[2].name))
    offsets = torch.stack(
        [torch.cat([(theta[n] - base[n]).reshape(-1) for n in names]) for theta, _, _ in loaded]
    )
    centred = offsets - offsets.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = s.square()
    total = float(variance.sum())
    if total == 0.0 or int((s > s[0] * 1e-6).sum()) < k:
        raise BadInput(
            f"the checkpoints in {root} span fewer than {k} directions; PCA is undefined"
        )
    components = vh[:k]
    directions = []
    for c in components:
        d, offset = {}, 0
        for n in names:
            size = base[n].numel()
            d[n] = c[offset : offset + size].view_as(base[n]).clone()
            offset += size
        directions.append(d)
    return Trajectory(
        directions=directions,
        explained_variance_ratio=(variance[:k] / total).cpu().numpy(),
        coordinates=(offsets @ components.T).cpu().numpy(),
        epochs=np.asarray([epoch for _, epoch, _ in loaded], dtype=float),
        paths=[str(p) for _, _, p in loaded],
    )


def stored_eigen_directions(
    model: nn.Module, source: str, default_file: str | Path | None = None
) -> list[ParamDict]:
    """Unit eigenvectors from `[FILE:]/hessian/<run>` (saved with --save-vectors), by name."""
    from .hessian import load_eigenvectors

    path, group = split_group(source, default_file)
    base = named_params(model)
    return [on_params(v, base, f"{path}:{group}") for v in load_eigenvectors(path, group)]


def on_params(
    direction: Mapping[str, Tensor], params: Mapping[str, Tensor], source: str = "a direction"
) -> ParamDict:
    """`direction` over exactly the names of `params`, on their device and dtype.

    Names it lacks are zero (a sub-Hessian's eigenvector leaves the other parameters
    still); names the model lacks, or tensors of another shape, are bad input.
    """
    unknown = [k for k in direction if k not in params]
    wrong = [k for k in direction if k in params and direction[k].shape != params[k].shape]
    if unknown or wrong:
        first = (unknown or wrong)[0]
        raise BadInput(
            f"{source} does not match the model's parameters "
            f"({len(unknown)} unknown names, {len(wrong)} of another shape; first {first})"
        )
    return {
        k: direction[k].to(device=p.device, dtype=p.dtype)
        if k in direction
        else torch.zeros_like(p)
        for k, p in params.items()
    }


def split_group(source: str, default_file: str | Path | None = None) -> tuple[str, str]:
    """`FILE:/group` or `/group` (in `default_file`) -> (file, group)."""
    text = str(source)
    if ":/" in text:
        path, group = text.split(":/", 1)
        return path, "/" + group
    if default_file is None:
        raise BadInput(f"{{arg}} {text!r} must be FILE:/hessian/<run>", argument="hessian_group")
    return str(default_file), "/" + text.strip("/")


@dataclass(frozen=True)
class Directions:
    """The direction vectors of an analysis, and the trajectory behind `pca` ones."""

    vectors: list[ParamDict]
    kind: str = "given"
    trajectory: Trajectory | None = None


FILE_KINDS = ("interp", "pca")  # kinds read from files; `eigen` too, with a stored group


def load_directions(
    kind: str,
    model: nn.Module,
    count: int,
    *,
    hessian_group: str | None = None,
    results_file: str | Path | None = None,
    other: Sequence[str | Path] = (),
    trajectory: str | Path | None = None,
    spec: Mapping | None = None,
    orthogonal: bool = False,
) -> Directions | None:
    """The directions of a kind that lives in files, read for an analysis (which never
    opens files itself); None for the kinds an analysis computes (`compute_directions`).

    `eigen` with `hessian_group` (`[FILE:]/hessian/<run>`, FILE defaulting to
    `results_file`, saved with --save-vectors); `interp` needs `count` checkpoints in
    `other`; `pca` a `trajectory` folder; both need the model's `spec`.
    """
    if kind not in KINDS:
        raise BadInput(
            f"{{arg}} {kind!r} is not valid; use one of {', '.join(KINDS)}", argument="kind"
        )
    traj = None
    if kind == "eigen" and hessian_group is not None:
        vectors = stored_eigen_directions(model, hessian_group, results_file)
        if len(vectors) < count:
            raise BadInput(
                f"{{arg}} {hessian_group} holds {len(vectors)} eigenvectors; {count} needed",
                argument="hessian_group",
            )
        vectors = vectors[:count]
    elif kind == "interp":
        if len(other) != count or spec is None:
            raise BadInput(
                f"{{arg:kind}} interp in {count}D needs {count} {{arg}} checkpoint(s), got {len(other)}",
                argument="other",
            )
        device = next(iter(named_params(model).values())).device
        vectors = [interpolation_direction(model, spec, p, device) for p in other]
    elif kind == "pca":
        if trajectory is None or spec is None:
            raise BadInput(
                "{arg:kind} pca needs {arg} DIR, a folder of training checkpoints",
                argument="trajectory",
            )
        traj = trajectory_directions(model, spec, trajectory, count)
        vectors = traj.directions
    else:
        return None
    if orthogonal and len(vectors) > 1:
        vectors = orthogonalize(vectors)
    return Directions(vectors, kind, traj)


def compute_directions(
    kind: str,
    model: nn.Module,
    count: int,
    *,
    X: Tensor | None = None,
    y: Tensor | None = None,
    seed: int = 0,
    bias_bn: str = "ignore",
    attack=None,
    orthogonal: bool = False,
) -> Directions:
    """`count` directions of a kind computed around the model's parameters (module docstring).

    Random kinds draw from a generator seeded with `seed` on the parameters' device;
    `eigen` computes the top eigenvectors of the Hessian of L_eps on (X, y) under
    `attack` (None: the clean loss).
    """
    if kind not in KINDS or kind in FILE_KINDS:
        computed = [k for k in KINDS if k not in FILE_KINDS]
        raise BadInput(
            f"{{arg}} {kind!r} is read from files (load_directions), not computed; "
            f"computed kinds: {', '.join(computed)}",
            argument="kind",
        )
    if bias_bn not in BIAS_BN:
        raise BadInput(
            f"{{arg}} {bias_bn!r} is not valid; use one of {', '.join(BIAS_BN)}", argument="bias_bn"
        )
    base = named_params(model)
    device = next(iter(base.values())).device
    if kind in ("filter", "random"):
        gen = torch.Generator(device=device).manual_seed(int(seed))
        if kind == "filter":
            vectors = [filter_direction(base, gen, bias_bn) for _ in range(count)]
        else:
            vectors = [random_direction(base, gen) for _ in range(count)]
    else:
        if X is None or y is None:
            raise BadInput(
                "eigen directions need data (X, y) or a stored {arg}", argument="hessian_group"
            )
        from .hessian import eigen_directions

        eps = 0.0 if attack is None else attack.eps
        vectors = eigen_directions(model, X, y, count, eps, attack=attack, seed=seed)
    if orthogonal and len(vectors) > 1:
        vectors = orthogonalize(vectors)
    return Directions(vectors, kind)


def make_directions(
    kind: str,
    model: nn.Module,
    count: int,
    *,
    X: Tensor | None = None,
    y: Tensor | None = None,
    seed: int = 0,
    bias_bn: str = "ignore",
    hessian_group: str | None = None,
    results_file: str | Path | None = None,
    other: Sequence[str | Path] = (),
    trajectory: str | Path | None = None,
    spec: Mapping | None = None,
    attack=None,
    orthogonal: bool = False,
) -> Directions:
    """`count` directions of one kind: read (`load_directions`) or computed (`compute_directions`)."""
    if bias_bn not in BIAS_BN:
        raise BadInput(
            f"{{arg}} {bias_bn!r} is not valid; use one of {', '.join(BIAS_BN)}", argument="bias_bn"
        )
    loaded = load_directions(
        kind,
        model,
        count,
        hessian_group=hessian_group,
        results_file=results_file,
        other=other,
        trajectory=trajectory,
        spec=spec,
        orthogonal=orthogonal,
    )
    if loaded is not None:
        return loaded
    return compute_directions(
        kind,
        model,
        count,
        X=X,
        y=y,
        seed=seed,
        bias_bn=bias_bn,
        attack=attack,
        orthogonal=orthogonal,
    )
