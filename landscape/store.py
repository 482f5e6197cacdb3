"""HDF5 results: one group per run under `/<analysis>/<run>`, with provenance.

Safety model: the results file is never modified in place. Every write copies it,
changes the copy and renames the copy over the original (under a folder lock), so a
crash at any moment leaves either the old or the new file, never a damaged one.
Work in progress (a grid being filled) lives in a sidecar file
`<results>.<analysis>.<run>.partial.h5`, replaced atomically as points finish; it is
merged into the results file when the grid completes and then removed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import distributed
from ._version import __version__
from .util import BadInput, atomic_path, file_lock

FORMAT = "landscape-results"
WRITE_HINT = "; choose another --out"
SCALE_NAMES = ("alpha", "x", "y", "t", "index", "step", "radius", "lr", "epoch")
PROVENANCE_KEYS = (
    "landscape_version",
    "created",
    "command",
    "config",
    "checkpoint",
    "checkpoint_sha256",
    "device",
    "seed",
    "status",
    "elapsed_s",
)


def version() -> str:
    return __version__


def canonical_config(config: Mapping[str, Any]) -> str:
    """The JSON form used to decide whether a stored run matches a request."""
    return json.dumps(config, sort_keys=True, default=str)


def provenance(
    *,
    command: str,
    config: Mapping[str, Any],
    checkpoint: str = "",
    checkpoint_sha256: str = "",
    device: str = "",
    seed: int = 0,
    elapsed_s: float = 0.0,
    status: str = "complete",
) -> dict[str, Any]:
    """The attributes every group carries (DESIGN.md, Results)."""
    return {
        "landscape_version": version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "config": canonical_config(config),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "device": str(device),
        "seed": int(seed),
        "status": status,
        "elapsed_s": float(elapsed_s),
    }


def safe_run_name(name: str) -> str:
    """Run names become HDF5 group names and file-name parts: keep them tame."""
    cleaned = re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", name).strip("_.")
    if not cleaned:
        raise BadInput(f"run name {name!r} has no usable characters")
    return cleaned


def _check_ours(f: h5py.File, path: Path, hint: str = "") -> None:
    if text_attr(f.attrs, "landscape_format") != FORMAT:
        raise BadInput(
            f"{path} is an HDF5 file of another tool (no landscape_format attribute){hint}"
        )


def text_attr(attrs: Mapping[str, Any], key: str) -> str | None:
    """A text attribute, or None where it is missing or not text (a foreign or hostile file)."""
    value = attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value if isinstance(value, str) else None


def _check_group_path(f: h5py.File, group: str, path: Path) -> None:
    """BadInput when a dataset sits where `group` or one of its parents belongs."""
    parts = group.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:i])
        if prefix in f and not isinstance(f[prefix], h5py.Group):
            raise BadInput(
                f"{path}:{prefix} is a dataset where a group belongs; choose another --out"
            )


def open_results(path: str | Path, hint: str = "") -> h5py.File:
    """Open an existing results file read-only, refusing missing, broken and foreign files
    (`hint` ends the message for a foreign one)."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"results file {p} does not exist")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise BadInput(f"{p} is not a readable HDF5 file ({exc.__class__.__name__})") from exc
    try:
        _check_ours(f, p, hint)
    except BadInput:
        f.close()
        raise
    return f


# netCDF-4's mark for a dimension that has no coordinate variable; h5netcdf and netCDF
# readers (xarray) take a scale whose NAME holds it as a bare dimension, not as data.
BARE_DIMENSION = b"This is a netCDF dimension but not a netCDF variable."


def is_bare_dimension(ds: h5py.Dataset) -> bool:
    """A dataset that only names a dimension (`_write_arrays`): no data, not a result."""
    try:
        name = ds.attrs.get("NAME", b"")
        mark = name.encode() if isinstance(name, str) else bytes(name)
        return bool(h5py.h5ds.is_scale(ds.id)) and BARE_DIMENSION in mark
    except (OSError, TypeError, ValueError):  # an attribute of a foreign or hostile file
        return False


def _dimension_names(
    arrays: Mapping[str, np.ndarray], dims: Mapping[str, Sequence[str | None]] | None
) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """(the coordinates, each other array's dimension names), so that every axis is named.

    A 1-D array is a coordinate when SCALE_NAMES or another array's `dims` names it, unless
    `dims` puts it along another dimension (trace: `epoch` and `lr` run along `step`). An
    axis takes the name `dims` gives it; without a `dims` entry, the one coordinate of its
    length; else `<array>_dim<axis>`.
    """
    dims = dims or {}
    named = {d for wanted in dims.values() for d in wanted if d is not None}
    coords = [
        n
        for n, a in arrays.items()
        if a.ndim == 1 and (n in SCALE_NAMES or n in named) and tuple(dims.get(n, (n,))) == (n,)
    ]
    axes: dict[str, tuple[str, ...]] = {}
    for name, arr in arrays.items():
        if name in coords:
            continue
        wanted = dims.get(name)
        names = []
        for axis, size in enumerate(arr.shape):
            dim = wanted[axis] if wanted is not None and axis < len(wanted) else None
            if dim is None and wanted is None:
                fits = [c for c in coords if arrays[c].shape[0] == size]
                dim = fits[0] if len(fits) == 1 else None
            names.append(dim or f"{name}_dim{axis}")
        axes[name] = tuple(names)
    return coords, axes


def _write_arrays(
    group: h5py.Group,
    arrays: Mapping[str, Any],
    dims: Mapping[str, Sequence[str | None]] | None,
) -> None:
    """Datasets with every axis on a named dimension scale, as netCDF-4 lays them out, so
    `xarray.open_dataset(file, group=..., engine="h5netcdf")` reads each group with its
    dimensions and coordinates (`_dimension_names` says which). A dimension without a
    coordinate is a bare scale (`BARE_DIMENSION`), which no landscape reader returns."""
    values = {name: np.asarray(value) for name, value in arrays.items()}
    for name, arr in values.items():
        if arr.dtype.kind == "U":
            group.create_dataset(name, data=arr.astype(h5py.string_dtype()))
        else:
            group.create_dataset(name, data=arr)
    coords, axes = _dimension_names(values, dims)
    scales = {n: group[n] for n in coords}
    for n, ds in scales.items():
        ds.make_scale(n)
    for name, names in axes.items():
        for axis, dim in enumerate(names):
            size = values[name].shape[axis]
            if dim not in scales:
                if dim in group:
                    raise ValueError(f"{group.name}: dimension {dim!r} is the name of an array")
                bare = group.create_dataset(dim, shape=(size,), dtype="f4")  # never written
                bare.make_scale(BARE_DIMENSION + f"{size:10d}".encode())
                scales[dim] = bare
            if scales[dim].shape[0] != size:
                raise ValueError(
                    f"{group.name}: {name!r} axis {axis} has {size} points, dimension {dim!r} "
                    f"{scales[dim].shape[0]}"
                )
            group[name].dims[axis].attach_scale(scales[dim])
            group[name].dims[axis].label = dim


def _set_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        if isinstance(value, (dict, list, tuple)) and not (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, (int, float)) for v in value)
        ):
            value = json.dumps(value, default=str)
        obj.attrs[key] = value


def write_group(
    path: str | Path,
    group: str,
    arrays: Mapping[str, Any],
    attrs: Mapping[str, Any],
    *,
    dims: Mapping[str, Sequence[str | None]] | None = None,
    overwrite: bool = False,
) -> str:
    """Write (or replace, with `overwrite`) one group atomically; returns its path.

    A group that exists with another config is an error unless `overwrite`; one that
    exists with the same config is replaced (it is the same run, recomputed).
    """
    target = Path(path)
    group = "/" + group.strip("/")
    with file_lock(target):
        with atomic_path(target) as tmp:
            if target.exists():
                try:
                    with h5py.File(target, "r") as old:
                        _check_ours(old, target, WRITE_HINT)
                        _check_group_path(old, group, target)
                        if group in old and not overwrite:
                            old_cfg = text_attr(old[group].attrs, "config")
                            if old_cfg is not None and old_cfg != attrs.get("config"):
                                raise BadInput(
                                    f"{target}:{group} exists with another config; choose another --name or --out, or pass --overwrite"
                                )
                except OSError as exc:
                    raise BadInput(
                        f"{target} is not a readable HDF5 file; choose another --out"
                    ) from exc
                shutil.copyfile(target, tmp)
                mode = "a"
            else:
                mode = "w"
            with h5py.File(tmp, mode) as f:
                if mode == "w":
                    f.attrs["landscape_format"] = FORMAT
                    f.attrs["landscape_version"] = version()
                if group in f:
                    del f[group]
                g = f.require_group(group)
                _write_arrays(g, arrays, dims)
                _set_attrs(g, attrs)
    return group


def drop_groups(path: str | Path, groups: Sequence[str]) -> None:
    """Remove run groups from a results file atomically (a kill leaves it as it was)."""
    target = Path(path)
    with file_lock(target), atomic_path(target) as tmp:
        shutil.copyfile(target, tmp)
        with h5py.File(tmp, "a") as f:
            _check_ours(f, target, WRITE_HINT)
            for group in groups:
                if group in f:
                    del f[group]


def _readable(ds: h5py.Dataset) -> bool:
    """Numbers, booleans and text: the only types a landscape results file holds."""
    return ds.dtype.kind in "biuf" or h5py.check_string_dtype(ds.dtype) is not None


def check_arrays(
    where: str, arrays: Mapping[str, np.ndarray], needs: Mapping[str, int | None]
) -> None:
    """BadInput unless each array named in `needs` is present, numeric and has that many
    dimensions (None: any), so that hostile or foreign files fail with a clear message."""
    for name, ndim in needs.items():
        arr = arrays.get(name)
        if arr is None:
            problem = "is missing"
        elif np.asarray(arr).dtype.kind not in "biuf":
            problem = f"holds {np.asarray(arr).dtype} values, not numbers"
        elif ndim is not None and np.ndim(arr) != ndim:
            problem = f"is {np.ndim(arr)}-D, expected {ndim}-D"
        else:
            continue
        raise BadInput(
            f"{where}: dataset {name!r} {problem}; the group is not as landscape stores it"
        )


def read_group(
    path: str | Path, group: str, needs: Mapping[str, int | None] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All datasets and attributes of one group, as numpy arrays and python values.

    `needs` names datasets that must be there, numeric, with so many dimensions (`check_arrays`).
    """
    with open_results(path) as f:
        if group not in f or not isinstance(f[group], h5py.Group):
            raise BadInput(f"{path} has no group {group!r}; `landscape info {path}` lists them")
        g = f[group]
        odd = [k for k, v in g.items() if isinstance(v, h5py.Dataset) and not _readable(v)]
        if odd:
            raise BadInput(
                f"{path}:{group}: dataset {odd[0]!r} has type {g[odd[0]].dtype}, which landscape never writes"
            )
        arrays = {
            k: v[()]
            for k, v in g.items()
            if isinstance(v, h5py.Dataset) and not is_bare_dimension(v)
        }
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
    check_arrays(f"{path}:{group}", arrays, needs or {})
    return arrays, attrs


def list_groups(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Every run group (`/<analysis>/<run>`, or any group carrying a `status`) with attributes."""
    found: list[tuple[str, dict[str, Any]]] = []
    with open_results(path) as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Group) and "status" in obj.attrs:
                found.append(("/" + name, {**obj.attrs, "status": text_attr(obj.attrs, "status")}))

        f.visititems(visit)
    return found


def find_complete(
    path: str | Path,
    group: str,
    config: Mapping[str, Any],
    *,
    overwrite: bool = False,
    tidy: bool = True,
) -> bool:
    """True when `group` is stored complete with exactly this config (a cache hit).

    The same name with another config is an error unless `overwrite`. On a hit, a sidecar
    of the same run is a leftover of a kill between the final write and its removal, and
    is removed (unless not `tidy`: a dry run writes nothing).
    """
    target = Path(path)
    if not target.exists():
        return False
    with open_results(target, WRITE_HINT) as f:
        _check_group_path(f, group, target)
        if group not in f:
            return False
        attrs = f[group].attrs
        same = text_attr(attrs, "config") == canonical_config(config)
        if not same and not overwrite:
            raise BadInput(
                f"{target}:{group} exists with another config; choose another --name or --out, or pass --overwrite"
            )
        hit = same and text_attr(attrs, "status") == "complete"
    if hit and tidy:
        _drop_finished_sidecar(sidecar_path(target, group), canonical_config(config))
    return hit


def sidecar_path(path: str | Path, group: str) -> Path:
    """`<results>.<analysis>.<run>.partial.h5`: where a grid's unfinished work lives."""
    p = Path(path)
    return p.with_name(f"{p.name}.{group.strip('/').replace('/', '.')}.partial.h5")


def _drop_finished_sidecar(sidecar: Path, config: str) -> None:
    try:
        with h5py.File(sidecar, "r") as f:
            same = text_attr(f.attrs, "config") == config
    except (OSError, KeyError):
        return
    if same:
        sidecar.unlink(missing_ok=True)


def nonfinite_where(mask: np.ndarray, coords: Mapping[str, np.ndarray], limit: int = 5) -> str:
    """Where a grid's flagged points lie, as `x=0.5, y=-1; x=1, y=1 (and 3 more)`.

    `coords` names the axes in order (one coordinate array per axis of `mask`).
    """
    points = np.argwhere(np.asarray(mask, dtype=bool))
    names = list(coords)
    shown = [
        ", ".join(f"{n}={float(coords[n][i]):.4g}" for n, i in zip(names, idx))
        for idx in points[:limit]
    ]
    more = f" (and {len(points) - limit} more)" if len(points) > limit else ""
    return "; ".join(shown) + more


MASKS = ("done", "nonfinite")  # a grid's finished points and its non-finite ones


def resolve_grid(grid: Grid | None, shape: tuple[int, ...], fields: Sequence[str]) -> Grid:
    """The caller's persistent grid, checked against the analysis's shape and fields, or an
    in-memory one. Under torchrun every rank's `done` mask becomes rank 0's."""
    if grid is None:
        grid = Grid.in_memory(shape, fields)
    elif grid.shape != tuple(shape) or set(grid.arrays) != set(fields):
        raise BadInput(
            f"the grid has shape {grid.shape} and fields {sorted(grid.arrays)}; expected {tuple(shape)}, {sorted(fields)}"
        )
    distributed.sync_done(grid.done)
    return grid


class Grid:
    """A resumable grid of scalar fields: finished points persist in a sidecar file.

    `record` marks points done; `finish` merges everything into the results file in
    one atomic write and removes the sidecar. A rerun with the same config picks up the
    sidecar's done points; a sidecar with another config is discarded only with
    `overwrite` (otherwise it is an error, so no work is silently lost).

    A point where any value is NaN or infinite (a diverging loss) is stored as NaN in
    every field and flagged in the `nonfinite` mask, which `finish` stores beside `done`:
    no finite-looking number is ever computed from a broken point.
    """

    def __init__(
        self,
        path: str | Path,
        group: str,
        config: Mapping[str, Any],
        shape: tuple[int, ...],
        fields: Sequence[str],
        *,
        flush_seconds: float = 2.0,
        overwrite: bool = False,
        read_only: bool = False,
    ):
        self.path = Path(path)
        self.group = "/" + group.strip("/")
        self.config = canonical_config(config)
        self.shape = tuple(shape)
        self.flush_seconds = flush_seconds
        self.sidecar = sidecar_path(self.path, self.group)
        self.arrays = {f: np.full(self.shape, np.nan) for f in fields}
        self.done = np.zeros(self.shape, dtype=bool)
        self.nonfinite = np.zeros(self.shape, dtype=bool)
        self._last_flush = time.monotonic()
        self._dirty = False
        self.read_only = read_only
        self.stored = self.path.exists() and find_complete(
            self.path, self.group, config, overwrite=overwrite, tidy=not read_only
        )
        if self.sidecar.exists():
            self._load_sidecar(overwrite)

    def _load_sidecar(self, overwrite: bool) -> None:
        try:
            with h5py.File(self.sidecar, "r") as f:
                same = text_attr(f.attrs, "config") == self.config
                if same:
                    problem = self._sidecar_problem(f)
                    if problem is None:
                        self.done = f["done"][()].astype(bool)
                        for name in self.arrays:
                            self.arrays[name] = f[name][()]
                        # Flagged points are the done ones stored as NaN (see `record`).
                        self.nonfinite = self.done & np.any(
                            [np.isnan(a) for a in self.arrays.values()], axis=0
                        )
                        return
                else:
                    problem = "holds partial work with another config"
        except OSError:
            problem = "is not a readable HDF5 file"
        if not overwrite:
            raise BadInput(f"{self.sidecar} {problem}; pass --overwrite to discard it")
        if not self.read_only:
            self.sidecar.unlink()

    def _sidecar_problem(self, f: h5py.File) -> str | None:
        """What is wrong with a sidecar of this run's config (hostile or damaged), or None."""
        for name in ("done", *self.arrays):
            ds = f.get(name)
            if not isinstance(ds, h5py.Dataset):
                return f"lacks the dataset {name!r}"
            if ds.dtype.kind not in ("b" if name == "done" else "biuf"):
                return f"holds {ds.dtype} values in {name!r}"
            if tuple(ds.shape) != self.shape:
                return f"holds {name!r} of shape {tuple(ds.shape)}, not the grid's {self.shape}"
        return None

    @classmethod
    def in_memory(cls, shape: tuple[int, ...], fields: Sequence[str]) -> Grid:
        """The same bookkeeping without a file, for analyses called without persistence."""
        grid = cls.__new__(cls)
        grid.path, grid.group, grid.config, grid.sidecar = None, "", "", None
        grid.read_only, grid.stored = False, False
        grid.shape, grid.flush_seconds = tuple(shape), math.inf
        grid.arrays = {f: np.full(grid.shape, np.nan) for f in fields}
        grid.done = np.zeros(grid.shape, dtype=bool)
        grid.nonfinite = np.zeros(grid.shape, dtype=bool)
        grid._last_flush, grid._dirty = time.monotonic(), False
        return grid

    def pending(self) -> list[tuple[int, ...]]:
        return [tuple(int(i) for i in idx) for idx in np.argwhere(~self.done)]

    def record(self, index: tuple[int, ...], values: Mapping[str, float]) -> None:
        """Store one finished point; a non-finite value makes the whole point NaN and flagged."""
        bad = not all(math.isfinite(float(v)) for v in values.values())
        for name, value in values.items():
            self.arrays[name][index] = math.nan if bad else value
        self.nonfinite[index] = bad
        self.done[index] = True
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def run(
        self,
        tasks: Sequence[Any],
        work: Callable[[Any], list[tuple[Sequence[int], dict[str, float]]]],
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Compute and record the points of `tasks`: `work(task)` returns [(index, values)].

        Under torchrun the tasks are dealt to ranks (`distributed.run_queue`) and rank 0
        records every point; `progress(done, total)` follows each one. The sidecar is
        flushed at the end, also when the work stops on an error or an interrupt.
        """
        finished, total = int(self.done.sum()), self.done.size

        def record(_: Any, points: list[tuple[Sequence[int], dict[str, float]]]) -> None:
            nonlocal finished
            for index, values in points:
                self.record(tuple(int(i) for i in index), values)
                finished += 1
                if progress is not None:
                    progress(finished, total)

        try:
            distributed.run_queue(tasks, work, record)
        finally:
            self.flush()

    def flush(self) -> None:
        if not self._dirty or self.sidecar is None:
            return
        with atomic_path(self.sidecar) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["config"] = self.config
                f.attrs["status"] = "running"
                f.create_dataset("done", data=self.done)
                for name, arr in self.arrays.items():
                    f.create_dataset(name, data=arr)
        self._last_flush = time.monotonic()
        self._dirty = False

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def nonfinite_points(self) -> list[tuple[int, ...]]:
        """Indices of the flagged points, in grid order."""
        return [tuple(int(i) for i in idx) for idx in np.argwhere(self.nonfinite)]

    def finish(
        self,
        coords: Mapping[str, Any],
        attrs: Mapping[str, Any],
        *,
        extra: Mapping[str, Any] | None = None,
        dims: Mapping[str, Sequence[str | None]] | None = None,
        overwrite: bool = False,
    ) -> str:
        """Store coordinates, fields, the `done` and `nonfinite` masks and `extra` arrays as one
        complete group. The masks lie along the fields' dimensions unless `dims` names theirs."""
        arrays: dict[str, Any] = dict(coords)
        arrays.update(self.arrays)
        arrays["done"] = self.done
        arrays["nonfinite"] = self.nonfinite
        arrays.update(extra or {})
        grid_dims = next((dims[f] for f in (*MASKS, *self.arrays) if dims and f in dims), None)
        if grid_dims is not None:
            dims = {**{m: grid_dims for m in MASKS}, **(dims or {})}
        group = write_group(self.path, self.group, arrays, attrs, dims=dims, overwrite=overwrite)
        if self.sidecar.exists():
            self.sidecar.unlink()
        return group
