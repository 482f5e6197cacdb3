"""Hessian spectra (Liu et al. Fig. 2 and 9): top eigenvalues against their index, one
colour per eps (`eps_color`), normalized solid and raw dashed, the seeds of one eps as
their mean with a min–max band; the SLQ density when it was stored."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from . import Figure, Group, band, band_handle, legend_outside, plot_series, renderer, series_of

MATRIX_NAMES = {"hessian": "Hessian", "ggn": "Gauss-Newton (GGN)", "fisher": "empirical Fisher"}
KINDS = (
    ("eigenvalues_normalized", "normalized", "-", "solid"),
    ("eigenvalues", "raw", "--", "dash"),
)


def _matrix(group: Group) -> str:
    """The curvature matrix a run stored (runs from before `--matrix` are Hessians)."""
    return str(group.attrs.get("matrix", "hessian"))


def _spectrum(groups: Sequence[Group], matrix: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    pfig = go.Figure()
    values = []
    series = series_of(groups)
    top = max(len(g.arrays["index"]) for g in groups)
    for s in series:
        index = s.groups[0].arrays["index"]
        for key, kind, style, dash in KINDS:
            curves = [g.arrays[key] for g in s.groups if np.all(np.isfinite(g.arrays[key]))]
            if not curves:
                continue
            values += curves
            plot_series(ax, index, curves, s, linestyle=style, marker="o", markersize=2.5)
            mean, lo, hi = band(curves)
            pfig.add_trace(
                go.Scatter(
                    x=index,
                    y=mean,
                    error_y={"type": "data", "array": hi - mean, "arrayminus": mean - lo}
                    if len(curves) > 1
                    else None,
                    mode="lines+markers",
                    name=f"{s.label}, {kind}",
                    legendgroup=s.label,
                    line={"color": s.color, "dash": dash},
                )
            )
    log = bool(values) and all(np.all(v > 0) for v in values)
    if log:
        ax.set_yscale("log")
    handles = [Line2D([], [], color=s.color, label=s.label) for s in series]
    handles += [
        Line2D([], [], color="0.3", linestyle="-", label="normalized"),
        Line2D([], [], color="0.3", linestyle="--", label="raw"),
    ]
    if any(s.seeds > 1 for s in series):
        handles.append(band_handle())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("eigenvalue index $i$")
    ax.set_ylabel(r"$\lambda_i$")
    name = MATRIX_NAMES.get(matrix, matrix)
    ax.set_title(rf"Top-{top} {name} eigenvalues of $\mathcal{{L}}_\varepsilon$", fontsize=10)
    legend_outside(ax, handles=handles)
    fig.tight_layout()
    pfig.update_layout(
        title=f"Top-{top} {name} eigenvalues of L_ε (normalized solid, raw dashed)",
        xaxis_title="eigenvalue index i",
        yaxis_title="λ_i",
        yaxis_type="log" if log else "linear",
        xaxis={"dtick": 1} if top <= 20 else {},
        template="plotly_white",
    )
    stem = "hessian_spectrum" if matrix == "hessian" else f"hessian_{matrix}_spectrum"
    return Figure(stem, matplotlib=fig, plotly=pfig)


def _density(groups: Sequence[Group]) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    pfig = go.Figure()
    owner = {g.path: s for s in series_of(groups) for g in s.groups}
    for g in groups:
        if "density" not in g.arrays:
            continue
        s = owner[g.path]
        label = s.label if s.seeds == 1 else f"{s.label} ({g.path.rsplit('/', 1)[-1]})"
        grid, density = g.arrays["density_grid"], g.arrays["density"]
        ax.plot(grid, density, color=s.color, label=label)
        pfig.add_trace(
            go.Scatter(x=grid, y=density, mode="lines", name=label, line={"color": s.color})
        )
    # Gaussian tails underflow to 0 far from the spectrum: show six decades.
    top = max(float(g.arrays["density"].max()) for g in groups if "density" in g.arrays)
    ax.set_yscale("log")
    ax.set_ylim(top * 1e-6, top * 2)
    ax.set_xlabel(r"eigenvalue $\lambda$")
    ax.set_ylabel("density (SLQ)")
    ax.set_title(r"Hessian eigenvalue density of $\mathcal{L}_\varepsilon$", fontsize=10)
    legend_outside(ax)
    fig.tight_layout()
    pfig.update_layout(
        title="Hessian eigenvalue density (stochastic Lanczos quadrature)",
        xaxis_title="eigenvalue λ",
        yaxis_title="density",
        yaxis={"type": "log", "range": [np.log10(top) - 6, np.log10(top) + 0.3]},
        template="plotly_white",
    )
    return Figure("hessian_density", matplotlib=fig, plotly=pfig)


@renderer("hessian", needs={"index": 1, "eigenvalues": 1, "eigenvalues_normalized": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    """The spectra of every run, one figure per curvature matrix, and the densities of the
    runs that have one."""
    matrices = list(dict.fromkeys(_matrix(g) for g in groups))
    figures = [_spectrum([g for g in groups if _matrix(g) == m], m) for m in matrices]
    if any("density" in g.arrays for g in groups):
        figures.append(_density(groups))
    return figures
