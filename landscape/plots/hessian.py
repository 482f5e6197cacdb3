"""Hessian spectra (Liu et al. Fig. 2 and 9): top eigenvalues against their index, one
colour per eps, normalized solid and raw dashed; the SLQ density when it was stored."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from . import Figure, Group, color, renderer, sort_by_eps


def _labels(groups: Sequence[Group]) -> list[str]:
    """The eps label, or the run name where two runs share an eps."""
    labels = [g.label for g in groups]
    return [
        lab if labels.count(lab) == 1 else f"{lab} ({g.path.rsplit('/', 1)[-1]})"
        for lab, g in zip(labels, groups)
    ]


MATRIX_NAMES = {"hessian": "Hessian", "ggn": "Gauss-Newton (GGN)", "fisher": "empirical Fisher"}


def _matrix(group: Group) -> str:
    """The curvature matrix a run stored (runs from before `--matrix` are Hessians)."""
    return str(group.attrs.get("matrix", "hessian"))


def _spectrum(groups: Sequence[Group], matrix: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    pfig = go.Figure()
    values = []
    for i, (g, label) in enumerate(zip(groups, _labels(groups))):
        index = g.arrays["index"]
        curves = (
            ("normalized", g.arrays["eigenvalues_normalized"], "-", "solid"),
            ("raw", g.arrays["eigenvalues"], "--", "dash"),
        )
        for kind, y, style, dash in curves:
            if not np.all(np.isfinite(y)):
                continue
            values.append(y)
            ax.plot(index, y, style, color=color(i), marker="o", markersize=2.5)
            pfig.add_trace(
                go.Scatter(
                    x=index,
                    y=y,
                    mode="lines+markers",
                    name=f"{label}, {kind}",
                    legendgroup=label,
                    line={"color": color(i), "dash": dash},
                )
            )
    log = bool(values) and all(np.all(v > 0) for v in values)
    if log:
        ax.set_yscale("log")
    handles = [Line2D([], [], color=color(i), label=lab) for i, lab in enumerate(_labels(groups))]
    handles += [
        Line2D([], [], color="0.3", linestyle="-", label="normalized"),
        Line2D([], [], color="0.3", linestyle="--", label="raw"),
    ]
    ax.legend(handles=handles, fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("eigenvalue")
    ax.set_title(f"Top {MATRIX_NAMES.get(matrix, matrix)} eigenvalues of the adversarial loss")
    fig.tight_layout()
    pfig.update_layout(
        title=f"Top {MATRIX_NAMES.get(matrix, matrix)} eigenvalues (normalized solid, raw dashed)",
        xaxis_title="eigenvalue index",
        yaxis_title="eigenvalue",
        yaxis_type="log" if log else "linear",
        template="plotly_white",
    )
    stem = "hessian_spectrum" if matrix == "hessian" else f"hessian_{matrix}_spectrum"
    return Figure(stem, matplotlib=fig, plotly=pfig)


def _density(groups: Sequence[Group]) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    pfig = go.Figure()
    for i, (g, label) in enumerate(zip(groups, _labels(groups))):
        if "density" not in g.arrays:
            continue
        grid, density = g.arrays["density_grid"], g.arrays["density"]
        ax.plot(grid, density, color=color(i), label=label)
        pfig.add_trace(
            go.Scatter(x=grid, y=density, mode="lines", name=label, line={"color": color(i)})
        )
    # Gaussian tails underflow to 0 far from the spectrum: show six decades.
    top = max(float(g.arrays["density"].max()) for g in groups if "density" in g.arrays)
    ax.set_yscale("log")
    ax.set_ylim(top * 1e-6, top * 2)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (SLQ)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    pfig.update_layout(
        title="Hessian eigenvalue density (stochastic Lanczos quadrature)",
        xaxis_title="eigenvalue",
        yaxis_title="density",
        yaxis={"type": "log", "range": [np.log10(top) - 6, np.log10(top) + 0.3]},
        template="plotly_white",
    )
    return Figure("hessian_density", matplotlib=fig, plotly=pfig)


@renderer("hessian", needs={"index": 1, "eigenvalues": 1, "eigenvalues_normalized": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    """The spectra of every run, one figure per curvature matrix, and the densities of the
    runs that have one."""
    ordered = sort_by_eps(groups)
    matrices = list(dict.fromkeys(_matrix(g) for g in ordered))
    figures = [_spectrum([g for g in ordered if _matrix(g) == m], m) for m in matrices]
    if any("density" in g.arrays for g in ordered):
        figures.append(_density(ordered))
    return figures
