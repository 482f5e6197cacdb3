"""Robust accuracy against epoch and against wall time, one line per method (Kanai Fig. 3, 6).

When the runs also recorded training-set metrics (`landscape train --eval-train-samples`,
the `train_*` columns of /eval), the training curves sit left of the test curves as in
Kanai et al. Fig. 6; the panels of one row share their y-scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
from plotly.subplots import make_subplots

from . import Figure, Group, band_handle, legend_outside, plot_series, renderer, series_of


def _panels(groups: Sequence[Group]) -> list[tuple[str, str, str]]:
    """(x key, error key, title) of each panel."""
    train = all("train_robust_error" in g.arrays for g in groups)
    sets = (
        [("train_robust_error", "training set"), ("robust_error", "test set")]
        if train
        else [("robust_error", "test set")]
    )
    return [(x, key, title) for x in ("epoch", "wall_time") for key, title in sets]


@renderer("evalcurve", needs={"epoch": 1, "wall_time": 1, "robust_error": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    import plotly.graph_objects as go

    panels = _panels(groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.4), sharey=True)
    web = make_subplots(
        rows=1,
        cols=len(panels),
        shared_yaxes=True,
        subplot_titles=[
            f"{t}, vs {'epoch' if x == 'epoch' else 'wall time'}" for x, _, t in panels
        ],
    )
    series = series_of(groups)
    for s in series:
        for col, (xkey, key, _) in enumerate(panels):
            curves = [1 - g.arrays[key] for g in s.groups]
            x = s.groups[0].arrays[xkey]
            plot_series(axes[col], x, curves, s, marker="o", ms=3, label=s.label)
            web.add_trace(
                go.Scatter(
                    x=x,
                    y=sum(curves) / len(curves),
                    name=s.label,
                    legendgroup=s.label,
                    showlegend=col == 0,
                    line={"color": s.color},
                ),
                row=1,
                col=col + 1,
            )
    for ax, (xkey, _, title) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        if xkey == "epoch":
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.set_xlabel("wall time (s)")
    axes[0].set_ylabel("robust accuracy")
    fig.suptitle("Robust accuracy during training")
    handles = axes[0].get_legend_handles_labels()[0]
    legend_outside(fig, handles=handles + ([band_handle()] if len(groups) > len(series) else []))
    web.update_layout(template="simple_white", yaxis_title="robust accuracy")
    return [Figure("robust_accuracy", fig, web)]
