"""One analysis, one object; one way to run it cached and stored (DESIGN.md, Data flow).

An analysis is a frozen dataclass of its options (an `AttackConfig` among them, passed
whole) whose methods sit side by side: `check` (the validation every path runs first),
`compute` (returns the result record), `plan` (its dry run: the passes it would make),
and its HDF5 schema (`to_group` / `from_group`). `run` is the one place that finds a
stored group, computes, attaches provenance and writes, for the CLI, `figures` and
Python users alike, rank-aware under torchrun. `plan` answers what `run` would do.

Subclasses register themselves by `name`, so the registry (`analyses()`) is derived.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed
from .attacks import AttackConfig
from .util import BadInput

Progress = Callable[[int, int], None]

_REGISTRY: dict[str, type[Analysis]] = {}


@dataclass
class Inputs:
    """A model in eval mode with its data, and where they came from (for provenance).

    `spec` is the checkpoint's model spec (None for a user's `nn.Module`); `family` is
    the data family that picks the papers' PGD defaults (`mnist-like`, `cifar-like`).
    """

    model: nn.Module
    X: Tensor
    y: Tensor
    spec: dict[str, Any] | None = None
    family: str = ""
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    device: Any = None
    split: str = "train"
    dataset: str = ""

    def __post_init__(self) -> None:
        if self.device is None:
            self.device = self.X.device
        if not self.family:
            self.family = "mnist-like" if self.X.shape[1] == 1 else "cifar-like"
        if not self.dataset:
            self.dataset = (self.spec or {}).get("dataset", "")
        if not self.checkpoint_sha256:
            self.checkpoint_sha256 = state_sha256(self.model)

    def data_config(self) -> dict[str, Any]:
        """What identifies the model and data of a run in its stored config; for a foreign
        checkpoint also how it was read (so reading the same file otherwise is another run)."""
        return {
            **foreign_reading(self.spec),
            "checkpoint_sha256": self.checkpoint_sha256,
            "dataset": self.dataset,
            "split": self.split,
            "examples": int(self.X.shape[0]),
        }

    def provenance(self, config: Mapping[str, Any], seed: int, elapsed_s: float, command: str):
        """The provenance attributes of a run on these inputs (`store.provenance`)."""
        from .store import provenance

        return provenance(
            command=command,
            config=config,
            checkpoint=self.checkpoint,
            checkpoint_sha256=self.checkpoint_sha256,
            device=str(self.device),
            seed=seed,
            elapsed_s=elapsed_s,
        )


def foreign_reading(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """How a foreign checkpoint was read (--arch, --width, --model, --normalize, ...), as
    part of a run's config; nothing for a landscape checkpoint, which its file fixes."""
    if not spec or not spec.get("foreign"):
        return {}
    keys = ("arch", "width", "activation", "model", "model_kwargs", "normalize")
    return {"foreign_model": {k: spec.get(k) for k in keys}}


def load_inputs(
    checkpoint: str | Path,
    *,
    device: str | torch.device = "cpu",
    dataset: str | None = None,
    data_root: str | Path | None = None,
    split: str = "train",
    samples: int | None = None,
    foreign: Mapping[str, Any] | None = None,
) -> Inputs:
    """The one loading helper: a checkpoint in eval mode and the first `samples` examples
    of its dataset's `split`, as the `Inputs` of a run. `foreign` are `load_checkpoint`'s
    options for a foreign state_dict or user model; a foreign model at chance accuracy
    that the other normalization would fix is refused (`checkpoint.check_normalization`)."""
    from .checkpoint import check_normalization, load_checkpoint, sha256_file
    from .data import dataset_info, load_dataset
    from .util import resolve_device

    dev = resolve_device(device)
    model, spec = load_checkpoint(checkpoint, dev, dataset=dataset, **dict(foreign or {}))
    name = dataset or spec["dataset"]
    X, y = load_dataset(name, split, data_root, dev)
    if samples is not None:
        X, y = X[:samples], y[:samples]
    check_normalization(model, spec, X, y, str(checkpoint))
    return Inputs(
        model,
        X,
        y,
        spec=spec,
        family=dataset_info(name).family,
        checkpoint=str(checkpoint),
        checkpoint_sha256=sha256_file(checkpoint),
        device=dev,
        split=split,
        dataset=name,
    )


def state_sha256(model: nn.Module) -> str:
    """A digest of a module's state (names, shapes, dtypes, values): the identity of an
    in-memory model that has no checkpoint file."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
        # 1-D first: a 0-d tensor (BatchNorm's step count) cannot be viewed as bytes.
        flat = data.reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class Group:
    """An HDF5 group's content: arrays, their dimension names, and attributes."""

    arrays: dict[str, Any]
    dims: dict[str, Sequence[str | None]]
    attrs: dict[str, Any]


@dataclass(frozen=True)
class Stored:
    """What `run` returns: the group, the result record, whether it was a cache hit, the
    seconds the computation took (stored with it), and the stored arrays and attributes."""

    group: str
    result: Any
    cached: bool
    elapsed_s: float
    arrays: dict[str, Any]
    attrs: dict[str, Any]


class Analysis:
    """Base of every analysis (a frozen dataclass in each subclass).

    Class attributes: `name` (the group `/<name>/<run>` and the CLI command), `grid`
    (True when the result is a resumable grid of points), `axes` (coordinate names of
    its arrays, the dimension scales). Grid analyses give `shape(inputs)` and
    `fields()`; their `compute` fills the `store.Grid` it is handed. An analysis without
    model inputs (the toy figures) is given `inputs=None` throughout.
    """

    name: ClassVar[str]
    grid: ClassVar[bool] = False
    axes: ClassVar[tuple[str, ...]] = ()
    # Range fields that plain options may give as `a:b:n` text, and whether log-spaced.
    ranges: ClassVar[dict[str, bool]] = {}
    # What it runs on: one checkpoint's `Inputs`, a pair of checkpoints (a curve), or nothing.
    takes: ClassVar[str] = "checkpoint"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    # ------------------------------------------------------------ what subclasses give
    def check(self, inputs: Inputs | None) -> None:
        """Validate the options against the inputs before any work (BadInput)."""

    def compute(self, inputs: Inputs | None, *, grid: Any = None, progress: Progress | None = None):
        raise NotImplementedError

    def plan(self, inputs: Inputs | None, context: PlanContext) -> Any:
        raise NotImplementedError

    def to_group(self, result: Any) -> Group:
        raise NotImplementedError

    def from_group(self, arrays: Mapping[str, Any], attrs: Mapping[str, Any], where: str):
        raise NotImplementedError

    def summary(self, stored: Stored) -> dict[str, Any]:
        """The few numbers a command prints about a stored run."""
        return {}

    def summary_line(self, stats: Mapping[str, Any]) -> str:
        """`summary` as one line of text."""
        return ", ".join(f"{k} {v}" for k, v in stats.items())

    def warning(self, stored: Stored) -> str | None:
        """What a command warns of about a stored run: where it met non-finite values."""
        from .store import nonfinite_where

        mask = stored.arrays.get("nonfinite")
        if mask is None or not np.any(mask):
            return None
        where = nonfinite_where(
            mask, {a: stored.arrays[a] for a in self.axes if a in stored.arrays}
        )
        return (
            f"non-finite loss at {int(np.sum(mask))} of {np.size(mask)} points ({where}); "
            "stored as NaN and flagged in `nonfinite`"
        )

    def shape(self, inputs: Inputs | None) -> tuple[int, ...]:
        raise NotImplementedError

    def fields(self) -> tuple[str, ...]:
        raise NotImplementedError

    def with_files(self, inputs: Inputs | None, results_file: str | Path | None) -> Analysis:
        """The caller's loading step: the analysis with what it reads from files (stored
        eigenvectors, other checkpoints) handed over as arguments, since `compute` opens
        no file. The CLI and `figures` call it before `run`; nothing to read by default."""
        return self

    # ------------------------------------------------------------------ shared
    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, family: str = "mnist-like") -> Analysis:
        """An analysis from plain options (a recipe step's TOML): `eps`, `norm`, `pgd_steps`
        and `pgd_step_size` make its `AttackConfig` (the papers' defaults for the data
        `family`), `a:b:n` text gives a range field (`ranges`), lists become tuples."""
        from .attacks import attack_config
        from .surface import parse_range

        opts = dict(options)
        known = {f.name for f in fields(cls)}
        if "attack" in known:
            opts["attack"] = attack_config(
                float(opts.pop("eps", 0.0)),
                family=family,
                norm=opts.pop("norm", "linf"),
                steps=opts.pop("pgd_steps", None),
                step_size=opts.pop("pgd_step_size", None),
            )
        unknown = sorted(set(opts) - known)
        if unknown:
            raise BadInput(
                f"{cls.name} has no option(s) {', '.join(unknown)}; "
                f"its options: {', '.join(sorted(known - {'attack'}))}"
            )
        for key, value in opts.items():
            if key in cls.ranges and isinstance(value, str):
                opts[key] = tuple(parse_range(value, key, log=cls.ranges[key]))
            elif isinstance(value, list):
                opts[key] = tuple(value)
        return cls(**opts)

    def options(self) -> dict[str, Any]:
        """Every option after defaults, JSON-ready (the attack flattened into it)."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if not f.metadata.get("config", True) or (
                f.metadata.get("omit_default") and value == f.default
            ):
                continue
            if isinstance(value, AttackConfig):
                out.update(value.as_dict())
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    def config(self, inputs: Inputs | None) -> dict[str, Any]:
        """The stored config: a stored run with exactly this config is a cache hit."""
        data = inputs.data_config() if inputs is not None else {}
        return {"analysis": self.name, **data, **self.options()}


def speed_knob(default: Any) -> Any:
    """A field that changes how fast a result comes, not its numbers (batch sizes, points
    per vmapped call): kept out of the stored config, so changing it reuses stored work."""
    return field(default=default, metadata={"config": False})


def precision_field() -> Any:
    """The dtype a grid analysis evaluates the network in (`params.PRECISIONS`); recorded
    in the config except at its default fp32, so fp32 runs stored before it stay valid."""
    return field(default="fp32", metadata={"omit_default": True})


def given(default: Any = None) -> Any:
    """A field of inputs handed over by the caller (directions read from files): not
    config; the config records where they came from."""
    return field(default=default, compare=False, metadata={"config": False})


def analyses() -> dict[str, type[Analysis]]:
    """Every analysis by name (the modules that define them are imported here)."""
    from . import connect, cosine, hessian, smoothness, surface, toy  # noqa: F401

    return dict(_REGISTRY)


@dataclass(frozen=True)
class PlanContext:
    """What a dry run knows of the stored state: the group, its config, the points a
    grid already holds (`done`), whether the run is stored complete, and the calibration."""

    group: str
    config: dict[str, Any]
    done: np.ndarray | None
    complete: bool
    calibration: Any
    out: str | None
    overwrite: bool


def group_path(analysis: Analysis, name: str) -> str:
    from .store import safe_run_name

    return f"/{analysis.name}/{safe_run_name(name)}"


def _command() -> str:
    return " ".join(["landscape", *sys.argv[1:]]) if sys.argv else "python"


def run(
    analysis: Analysis,
    inputs: Inputs | None,
    *,
    out: str | Path | None = None,
    name: str = "run",
    overwrite: bool = False,
    progress: Progress | None = None,
    command: str | None = None,
) -> Stored | None:
    """Run `analysis` on `inputs`, cached and stored in the results file `out`.

    A group `/<analysis>/<name>` stored complete with the same config is read back, not
    recomputed; another config under that name is refused unless `overwrite`. Grids
    resume from their sidecar. The group carries the provenance of DESIGN.md. Without
    `out` the result is computed and returned, nothing is written. Under torchrun every
    rank computes its share and rank 0 alone writes; other ranks get None. An analysis
    without model inputs (the toy figures) runs with `inputs=None`.
    """
    analysis.check(inputs)
    if out is None:
        start = time.perf_counter()
        result = analysis.compute(inputs, progress=progress)
        group = analysis.to_group(result)
        return Stored("", result, False, time.perf_counter() - start, group.arrays, group.attrs)
    from .store import find_complete, read_group, write_group

    group = group_path(analysis, name)
    config = analysis.config(inputs)
    main = distributed.world().is_main
    start = time.perf_counter()
    grid = None
    if analysis.grid:
        grid = open_grid(out, group, config, analysis.shape(inputs), analysis.fields(), overwrite)
        cached = grid is None
    else:
        cached = distributed.on_main(lambda: find_complete(out, group, config, overwrite=overwrite))
    if not cached:
        result = analysis.compute(inputs, grid=grid, progress=progress)
        if main:
            content = analysis.to_group(result)
            attrs = _provenance(
                analysis, inputs, config, time.perf_counter() - start, command or _command()
            )
            attrs.update(content.attrs)
            if grid is None:
                write_group(
                    out, group, content.arrays, attrs, dims=content.dims, overwrite=overwrite
                )
            else:
                grid.finish({}, attrs, extra=content.arrays, dims=content.dims, overwrite=overwrite)
    if not main:
        return None
    arrays, attrs = read_group(out, group)
    record = analysis.from_group(arrays, attrs, f"{out}:{group}") if cached else result
    return Stored(group, record, cached, float(attrs["elapsed_s"]), arrays, dict(attrs))


def _provenance(
    analysis: Analysis,
    inputs: Inputs | None,
    config: Mapping[str, Any],
    elapsed_s: float,
    command: str,
) -> dict[str, Any]:
    """The provenance attributes of a run: of its inputs, or without a checkpoint (and on
    the analysis's own device) when it has none."""
    seed = int(getattr(analysis, "seed", 0))
    if inputs is not None:
        return inputs.provenance(config, seed, elapsed_s, command)
    from .store import provenance

    device = str(getattr(analysis, "device", ""))
    return provenance(command=command, config=config, device=device, seed=seed, elapsed_s=elapsed_s)


def open_grid(
    out: str | Path,
    group: str,
    config: Mapping[str, Any],
    shape: tuple[int, ...],
    fields_: Sequence[str],
    overwrite: bool,
) -> Any:
    """The run's resumable `store.Grid`, or None on every rank when it is stored complete.

    Under torchrun rank 0 alone opens the results file and the sidecar (its BadInput
    reaches every rank); the other ranks compute into an in-memory grid.
    """
    from .store import Grid

    grids: list[Any] = []

    def open_on_main() -> bool:
        grids.append(Grid(out, group, config, shape, fields_, overwrite=overwrite))
        return grids[0].stored

    if distributed.on_main(open_on_main):
        return None
    return grids[0] if grids else Grid.in_memory(shape, fields_)


def stored_state(
    analysis: Analysis,
    inputs: Inputs | None,
    *,
    out: str | Path,
    name: str = "run",
    overwrite: bool = False,
) -> tuple[np.ndarray | None, bool]:
    """What `run` would find in `out`, read without changing anything: (the points a grid
    has already done, None for other analyses; whether the run is stored complete with
    this config). The same refusals as `run` (another config, a foreign file); rank 0
    reads, every rank gets the answer. A caller with work to do before `run` (training a
    curve) skips it when the run is stored."""
    from .store import find_complete

    group = group_path(analysis, name)
    config = analysis.config(inputs)
    if not analysis.grid:
        complete = distributed.on_main(
            lambda: find_complete(out, group, config, overwrite=overwrite, tidy=False)
        )
        return None, complete
    state = distributed.on_main(
        lambda: _grid_state(out, group, config, analysis, inputs, overwrite)
    )
    done = np.asarray(state["done"], dtype=bool).reshape(analysis.shape(inputs))
    return done, state["stored"]


def plan(
    analysis: Analysis,
    inputs: Inputs | None,
    *,
    out: str | Path | None = None,
    name: str = "run",
    overwrite: bool = False,
    calibration: Any = None,
) -> Any:
    """The dry run of `run`: the same checks and cache decisions, then the analysis's plan
    (`dryrun.Plan`); nothing is computed or written."""
    from .dryrun import Calibration

    analysis.check(inputs)
    if out is not None:
        done, complete = stored_state(analysis, inputs, out=out, name=name, overwrite=overwrite)
    else:
        done, complete = None, False
        if analysis.grid:
            done = np.zeros(analysis.shape(inputs), dtype=bool)
    if calibration is None and inputs is not None:
        calibration = Calibration(
            inputs.model, inputs.X, inputs.y, batch_size=getattr(analysis, "batch_size", 256)
        )
    where = None if out is None else str(out)
    context = PlanContext(
        group_path(analysis, name),
        analysis.config(inputs),
        done,
        complete,
        calibration,
        where,
        overwrite,
    )
    return analysis.plan(inputs, context)


def _grid_state(
    out: str | Path,
    group: str,
    config: Mapping[str, Any],
    analysis: Analysis,
    inputs: Inputs | None,
    overwrite: bool,
) -> dict[str, Any]:
    """A grid run's stored state, read-only (a dry run tidies nothing)."""
    from .store import Grid

    shape = analysis.shape(inputs)
    grid = Grid(out, group, config, shape, analysis.fields(), overwrite=overwrite, read_only=True)
    done = np.ones(shape, dtype=bool) if grid.stored else grid.done
    return {"stored": bool(grid.stored), "done": done.reshape(-1).tolist()}


def require(condition: bool, message: str, argument: str | None = None) -> None:
    """BadInput(message) unless `condition` (for `check`s that read as a list of rules)."""
    if not condition:
        raise BadInput(message, argument=argument)
