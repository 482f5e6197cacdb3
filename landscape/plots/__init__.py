"""Renderers: one module per analysis, each reading only stored HDF5 groups.

A renderer is registered with `@renderer("<analysis>")` and receives every selected
group of that analysis at once (so one figure can hold one line per eps). It returns
`Figure` records; `render_file` writes them in the asked formats: matplotlib for
png/pdf/svg, plotly for html.

Files come from anywhere, so `draw` checks each group first: the datasets a renderer
`needs` are there, every dataset holds numbers (text only where the renderer declares
it), coordinates are 1-D; whatever else a renderer cannot draw is BadInput naming the groups.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..store import SCALE_NAMES, check_arrays, list_groups, read_group  # noqa: E402
from ..util import BadInput, atomic_path  # noqa: E402

FORMATS = ("png", "pdf", "svg", "html")
# Okabe-Ito: distinguishable under the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


@dataclass(frozen=True)
class Group:
    """One stored run as a renderer sees it."""

    path: str
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        try:
            return json.loads(self.attrs.get("config", "{}"))
        except (TypeError, ValueError):
            return {}

    @property
    def label(self) -> str:
        """A legend entry: the eps when there is one, else the run name."""
        eps = self.config.get("eps")
        return f"ε = {eps:.4g}" if isinstance(eps, (int, float)) else self.path.rsplit("/", 1)[-1]


@dataclass
class Figure:
    """A rendered figure: `name` becomes the file stem."""

    name: str
    matplotlib: Any = None
    plotly: Any = None


Renderer = Callable[[Sequence[Group]], list[Figure]]
_RENDERERS: dict[str, Renderer] = {}
# Per analysis: datasets its renderer needs (name -> dimensions, None: any), and text datasets.
_NEEDS: dict[str, dict[str, int | None]] = {}
_TEXT: dict[str, tuple[str, ...]] = {}


def renderer(
    analysis: str, needs: dict[str, int | None] | None = None, text: tuple[str, ...] = ()
) -> Callable[[Renderer], Renderer]:
    """Register a renderer with the datasets it cannot draw without and those holding text."""

    def register(fn: Renderer) -> Renderer:
        _RENDERERS[analysis] = fn
        _NEEDS[analysis] = dict(needs or {})
        _TEXT[analysis] = text
        return fn

    return register


def renderers() -> dict[str, Renderer]:
    """Every registered renderer: each module of this package registers its own on import."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return _RENDERERS


def style() -> None:
    """One look for every static figure."""
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "font.size": 10,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
            "legend.frameon": False,
        }
    )


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def sort_by_eps(groups: Sequence[Group]) -> list[Group]:
    return sorted(
        groups,
        key=lambda g: (
            g.config.get("eps", 0.0) if isinstance(g.config.get("eps"), (int, float)) else 0.0,
            g.path,
        ),
    )


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise BadInput(
            f"unknown format {','.join(bad) or text!r}; choose from {', '.join(FORMATS)}"
        )
    return formats


def save_figure(fig: Figure, out_dir: Path, formats: Sequence[str]) -> list[Path]:
    """Write a figure in each format atomically; an HTML page embeds plotly.js (works offline)."""
    written = []
    for fmt in formats:
        target = out_dir / f"{fig.name}.{fmt}"
        if fmt == "html":
            if fig.plotly is None:
                continue
            with atomic_path(target) as tmp:
                fig.plotly.write_html(str(tmp), include_plotlyjs=True, full_html=True)
        else:
            if fig.matplotlib is None:
                continue
            with atomic_path(target) as tmp:
                fig.matplotlib.savefig(tmp, format=fmt, bbox_inches="tight")
        written.append(target)
    if fig.matplotlib is not None:
        plt.close(fig.matplotlib)
    return written


def load_groups(path: str | Path, selection: Sequence[str] = ()) -> dict[str, list[Group]]:
    """Complete groups of a results file by analysis; `selection` names groups or analyses."""
    wanted = ["/" + s.strip("/") for s in selection]
    by_analysis: dict[str, list[Group]] = {}
    for name, attrs in list_groups(path):
        if attrs.get("status") != "complete":
            continue
        if wanted and not any(name == w or name.startswith(w + "/") for w in wanted):
            continue
        arrays, attrs = read_group(path, name)
        analysis = name.strip("/").split("/", 1)[0]
        by_analysis.setdefault(analysis, []).append(Group(name, arrays, attrs))
    if wanted and not by_analysis:
        raise BadInput(f"{path} has no complete group matching {', '.join(selection)}")
    return by_analysis


def check_group(analysis: str, group: Group, source: str | Path) -> None:
    """BadInput unless `group` holds what the renderer of `analysis` can draw (module docstring)."""
    where = f"{source}:{group.path}"
    numbers = {n: None for n in group.arrays if n not in _TEXT.get(analysis, ())}
    coords = {n: 1 for n in group.arrays if n in SCALE_NAMES}
    check_arrays(where, group.arrays, {**numbers, **coords, **_NEEDS.get(analysis, {})})


def draw(analysis: str, groups: Sequence[Group], source: str | Path) -> list[Figure]:
    """The figures of `groups`; [] when no renderer knows the analysis."""
    render = renderers().get(analysis)
    if render is None:
        return []
    for g in groups:
        check_group(analysis, g, source)
    opened = set(plt.get_fignums())
    try:
        return render(groups)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        for num in set(plt.get_fignums()) - opened:
            plt.close(num)
        names = ", ".join(g.path for g in groups)
        raise BadInput(
            f"{source}: cannot draw {names}: the data are not as `landscape {analysis}` stores them "
            f"({exc.__class__.__name__}: {exc})"
        ) from exc


def render_file(
    path: str | Path,
    out_dir: str | Path,
    selection: Sequence[str] = (),
    formats: Sequence[str] = ("png",),
    figures: Sequence[str] = (),
) -> list[Path]:
    """Render the selected groups of a results file (only the figures named in `figures`,
    when given); returns the files written. Every figure is drawn before any is written,
    so a group that cannot be drawn leaves no partial output."""
    style()
    out = Path(out_dir)
    drawn: list[Figure] = []
    try:
        for analysis, groups in load_groups(path, selection).items():
            drawn += draw(analysis, groups, path)
    except BadInput:
        for fig in drawn:
            if fig.matplotlib is not None:
                plt.close(fig.matplotlib)
        raise
    written: list[Path] = []
    for fig in drawn:
        if figures and fig.name not in figures:
            if fig.matplotlib is not None:
                plt.close(fig.matplotlib)
            continue
        written += save_figure(fig, out, formats)
    return written
