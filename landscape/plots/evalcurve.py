"""Robust test accuracy against epoch and against wall time, one line per method (Kanai Fig. 3, 6)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import Figure, Group, color, renderer


@renderer("evalcurve", needs={"epoch": 1, "wall_time": 1, "robust_error": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    web = make_subplots(
        rows=1, cols=2, shared_yaxes=True, subplot_titles=["vs epoch", "vs wall time"]
    )
    for i, g in enumerate(groups):
        label = g.attrs.get("label", g.path.rsplit("/", 1)[-1])
        acc = 1 - g.arrays["robust_error"]
        for col, key in enumerate(("epoch", "wall_time")):
            axes[col].plot(g.arrays[key], acc, color=color(i), marker="o", ms=3, label=label)
            web.add_trace(
                go.Scatter(
                    x=g.arrays[key],
                    y=acc,
                    name=label,
                    legendgroup=label,
                    showlegend=col == 0,
                    line={"color": color(i)},
                ),
                row=1,
                col=col + 1,
            )
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("wall time (s)")
    axes[0].set_ylabel("robust test accuracy")
    axes[0].legend()
    fig.tight_layout()
    web.update_layout(template="simple_white", yaxis_title="robust test accuracy")
    return [Figure("robust_accuracy", fig, web)]
