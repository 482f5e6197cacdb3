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
import math
import pkgutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..store import SCALE_NAMES, check_arrays, list_groups, read_group  # noqa: E402
from ..util import SEED_SUFFIX, BadInput, atomic_path  # noqa: E402

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


# One colour per budget in every figure: MNIST-scale budgets, then CIFAR's k/255.
EPS_COLORS = {
    0.0: "#000000",
    0.01: "#999999",
    0.02: "#BCBD22",
    0.03: "#17BECF",
    0.05: "#E69F00",
    0.1: "#0072B2",
    0.15: "#56B4E9",
    0.2: "#D55E00",
    0.25: "#8C564B",
    0.3: "#009E73",
    0.4: "#CC79A7",
    0.5: "#7F0000",
    1 / 255: "#9467BD",
    2 / 255: "#1F77B4",
    4 / 255: "#FF7F0E",
    8 / 255: "#2CA02C",
    16 / 255: "#D62728",
}
NO_EPS_COLOR = "#555555"


def eps_color(eps: float | None) -> str:
    """The colour of budget `eps` in every figure (a hex string). Budgets outside
    `EPS_COLORS` take a fixed point of the plasma map by log10(eps), so they too keep
    their colour from figure to figure."""
    if eps is None or not math.isfinite(eps):
        return NO_EPS_COLOR
    for known, hex_color in EPS_COLORS.items():
        if math.isclose(eps, known, rel_tol=1e-6, abs_tol=1e-12):
            return hex_color
    position = (math.log10(eps) + 3) / 3 if eps > 0 else 0.0
    return matplotlib.colors.to_hex(matplotlib.colormaps["plasma"](0.85 * min(max(position, 0), 1)))


def eps_of(group: Group) -> float | None:
    """The training budget in a group's `config` attr, None when it names none."""
    eps = group.config.get("eps")
    return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None


def eps_label(eps: float | None) -> str:
    """A legend entry for a budget, as `Group.label` writes it."""
    return "" if eps is None else f"ε = {eps:.4g}"


def run_name(group: Group) -> str:
    """A run's name without its seed: `e01-s2` and `e01-s0` are seeds of run `e01`, and
    `e01-s2-top2` of `e01-top2`."""
    return SEED_SUFFIX.sub("", str(group.attrs.get("label") or group.path.rsplit("/", 1)[-1]), 1)


@dataclass(frozen=True)
class Series:
    """The runs of one curve: every seed of one run name at one eps."""

    name: str
    eps: float | None
    groups: tuple[Group, ...]
    label: str
    color: str

    @property
    def seeds(self) -> int:
        return len(self.groups)


def series_of(groups: Sequence[Group], unit: str = "seeds") -> list[Series]:
    """Groups as curves, ordered by eps: seeds (run names equal up to `-s<digits>`, same eps)
    join one series. Colour and label are the eps's when the eps tells the series apart;
    otherwise (several methods at one eps, Kanai et al.) the run name is in the label and
    colours follow the sorted names. `unit` names what a series' runs are in its label."""
    keyed: dict[tuple[float, str], list[Group]] = {}
    for g in groups:
        eps = eps_of(g)
        keyed.setdefault((math.inf if eps is None else eps, run_name(g)), []).append(g)
    keys = sorted(keyed)
    by_eps = [k[0] for k in keys]
    distinct = len(set(by_eps)) == len(by_eps) and math.inf not in by_eps
    names = sorted({k[1] for k in keys})
    series = []
    for eps_key, name in keys:
        eps = None if eps_key == math.inf else eps_key
        runs = tuple(sorted(keyed[(eps_key, name)], key=lambda g: g.path))
        if distinct:
            label, hue = eps_label(eps), eps_color(eps)
        else:
            label = name if eps is None else f"{name} ({eps_label(eps)})"
            hue = color(names.index(name))
        if len(runs) > 1:
            label += f", {len(runs)} {unit}"
        series.append(Series(name, eps, runs, label, hue))
    return series


def band(curves: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds of curves on one grid (cut to the shortest)."""
    n = min(len(c) for c in curves)
    stack = np.stack([np.asarray(c[:n], dtype=float) for c in curves])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a point masked in every seed
        return np.nanmean(stack, 0), np.nanmin(stack, 0), np.nanmax(stack, 0)


BAND_LABEL = "shaded: min–max over seeds"


def band_handle(over: str = "seeds") -> Patch:
    return Patch(color="0.6", alpha=0.3, label=BAND_LABEL.replace("seeds", over))


def plot_series(
    ax: Any, x: np.ndarray, curves: Sequence[np.ndarray], series: Series, **line: Any
) -> None:
    """The mean of a series' seeds as a line, their min–max as a band (nothing more for one)."""
    mean, lo, hi = band(curves)
    ax.plot(x[: len(mean)], mean, color=series.color, **line)
    if len(curves) > 1:
        ax.fill_between(x[: len(mean)], lo, hi, color=series.color, alpha=0.2, lw=0)


def legend_outside(target: Any, handles: Sequence[Any] | None = None, **kw: Any) -> Any:
    """A legend right of the axes (or of the figure's axes), never over the data."""
    options = {"loc": "upper left", "borderaxespad": 0.0, "fontsize": 8, **kw}
    if isinstance(target, matplotlib.figure.Figure):
        target.tight_layout()
        right = max(ax.get_position().x1 for ax in target.axes)
        return target.legend(handles=handles, bbox_to_anchor=(right + 0.01, 0.95), **options)
    if handles is None:
        return target.legend(bbox_to_anchor=(1.02, 1.0), **options)
    return target.legend(handles=handles, bbox_to_anchor=(1.02, 1.0), **options)


def share_limits(axes: Sequence[Any], axis: str = "y") -> None:
    """One scale for panels meant to be compared."""
    lims = [getattr(ax, f"get_{axis}lim")() for ax in axes]
    lo, hi = min(lim[0] for lim in lims), max(lim[1] for lim in lims)
    for ax in axes:
        getattr(ax, f"set_{axis}lim")(lo, hi)


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
    """Render the selected groups of a results file (only the figures whose names match a
    pattern of `figures`, `fnmatch` style, when given); returns the files written. Every figure is drawn before any is written,
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
        if figures and not any(fnmatch(fig.name, pattern) for pattern in figures):
            if fig.matplotlib is not None:
                plt.close(fig.matplotlib)
            continue
        written += save_figure(fig, out, formats)
    return written
