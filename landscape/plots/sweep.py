"""Final test error against a swept setting, one line per series (Liu Fig. 4, 13, 14)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go

from . import Figure, Group, color, renderer

X_LABELS = {"lr": "learning rate", "width": "width factor w", "eps": r"$\epsilon$"}


@renderer("sweep", needs={"x": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    figures = []
    for g in groups:
        key = g.attrs.get("x_key", "x")
        x = g.arrays["x"]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        web = go.Figure()
        for i, label in enumerate(json.loads(g.attrs.get("series", "[]"))):
            mean, std = (
                g.arrays[f"{label}_robust_error_mean"],
                g.arrays[f"{label}_robust_error_std"],
            )
            ax.errorbar(x, mean, yerr=std, color=color(i), marker="o", ms=4, capsize=3, label=label)
            web.add_trace(
                go.Scatter(
                    x=x, y=mean, error_y={"array": std}, name=label, line={"color": color(i)}
                )
            )
        if key == "lr":
            ax.set_xscale("log")
            web.update_xaxes(type="log")
        ax.set_xlabel(X_LABELS.get(key, key))
        ax.set_ylabel("robust test error")
        ax.set_ylim(0, max(1.0, float(np.nanmax([ax.get_ylim()[1], 0]))))
        ax.legend()
        fig.tight_layout()
        web.update_layout(
            xaxis_title=X_LABELS.get(key, key).strip("$"),
            yaxis_title="robust test error",
            template="simple_white",
        )
        figures.append(Figure(f"sweep_{g.path.rsplit('/', 1)[-1]}", fig, web))
    return figures
