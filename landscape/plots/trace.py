"""Training traces: Liu et al. Fig. 1 / 8 (first and last mini-batches) and Fig. 11 (loss)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from plotly.subplots import make_subplots

from . import (
    Figure,
    Group,
    Series,
    band,
    band_handle,
    legend_outside,
    plot_series,
    renderer,
    series_of,
)

PANELS = (
    ("grad_norm", r"$\|\nabla_\theta \hat{\mathcal{L}}_\varepsilon(\theta)\|$", "‖∇L‖"),
    ("robust_error", r"robust training error", "robust error"),
    ("distance_from_init", r"$\|\theta - \theta_0\|$", "‖θ − θ₀‖"),
)


def window(groups: Sequence[Group]) -> int:
    """Mini-batches per side: the stored `window` attr, else half the shortest trace (at most 2000)."""
    stored = [int(g.attrs["window"]) for g in groups if "window" in g.attrs]
    if stored:
        return min(stored)
    return max(1, min(2000, min(len(g.arrays["step"]) for g in groups) // 2))


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    """A centred running mean, so the per-batch noise does not hide the trend."""
    if width <= 1 or len(values) < width:
        return values
    kernel = np.ones(width) / width
    return np.convolve(
        np.pad(values, (width // 2, width - 1 - width // 2), mode="edge"), kernel, mode="valid"
    )


def _handles(series: Sequence[Series]) -> list:
    handles = [Line2D([], [], color=s.color, label=s.label) for s in series]
    return handles + ([band_handle()] if any(s.seeds > 1 for s in series) else [])


@renderer("trace", needs={"step": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    series = series_of(groups)
    n = window(groups)
    k = max(1, n // 50)
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    web = make_subplots(
        rows=2,
        cols=3,
        subplot_titles=[f"{t} — first {n}" for _, _, t in PANELS]
        + [f"{t} — last {n}" for _, _, t in PANELS],
    )
    for s in series:
        step = s.groups[0].arrays["step"]
        length = min(len(g.arrays["step"]) for g in s.groups)
        for row, part in enumerate((slice(0, n), slice(length - n, length))):
            for col, (key, label, short) in enumerate(PANELS):
                curves = [smooth(g.arrays[key][part], k) for g in s.groups]
                x = step[part]
                plot_series(axes[row, col], x, curves, s, lw=1.2)
                axes[row, col].set_ylabel(label)
                web.add_trace(
                    go.Scatter(
                        x=x,
                        y=band(curves)[0],
                        name=s.label,
                        legendgroup=s.label,
                        showlegend=row == col == 0,
                        line={"color": s.color},
                        hovertemplate=f"step %{{x}}<br>{short} %{{y:.4g}}",
                    ),
                    row=row + 1,
                    col=col + 1,
                )
    for col in range(3):
        axes[0, col].set_title(f"first {n} mini-batches", fontsize=10)
        axes[1, col].set_title(f"last {n} mini-batches", fontsize=10)
        axes[1, col].set_xlabel("mini-batch update")
        for row in range(2):
            axes[row, col].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Adversarial training: the first and the last mini-batches")
    legend_outside(fig, handles=_handles(series))
    web.update_layout(title="Training traces (Liu et al. Fig. 1 / 8)", template="simple_white")

    loss_fig, ax = plt.subplots(figsize=(5, 3.5))
    loss_web = go.Figure()
    for s in series:
        epoch = s.groups[0].arrays["epoch"]
        curves = [smooth(g.arrays["loss"], max(1, len(g.arrays["loss"]) // 100)) for g in s.groups]
        plot_series(ax, epoch, curves, s, lw=1.2)
        loss_web.add_trace(
            go.Scatter(x=epoch, y=band(curves)[0], name=s.label, line={"color": s.color})
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"training loss $\hat{\mathcal{L}}_\varepsilon(\theta)$")
    ax.set_title("Training loss", fontsize=10)
    legend_outside(ax, handles=_handles(series))
    loss_fig.tight_layout()
    loss_web.update_layout(
        title="Training loss (Liu et al. Fig. 11)",
        xaxis_title="epoch",
        yaxis_title="loss",
        template="simple_white",
    )
    return [Figure("trace", fig, web), Figure("trace_loss", loss_fig, loss_web)]
