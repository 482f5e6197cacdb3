"""Final robust test error against a swept setting (Liu Fig. 4, 13, 14): each series as
points with error bars (mean ± std over seeds); widths and learning rates on a log axis.

A group whose `reference` attr names a series (JSON string) draws that series as the
paper draws Fig. 13's eps-warmup: a horizontal line at its best value over x (lowest
mean robust error), its std shaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from . import Figure, Group, color, legend_outside, renderer

X_LABELS = {"lr": r"learning rate $\eta$", "width": "width factor $w$", "eps": r"$\varepsilon$"}
X_WEB = {"lr": "learning rate η", "width": "width factor w", "eps": "ε"}
LOG_KEYS = ("lr", "width")


def _seeds(g: Group) -> int:
    seeds = g.config.get("seeds", [0])
    return len(seeds) if isinstance(seeds, list) else 1


def _reference(g: Group, series: Sequence[str]) -> str | None:
    raw = g.attrs.get("reference")
    if raw is None:
        return None
    name = json.loads(raw)
    if name not in series:
        raise ValueError(f"reference series {name!r} is not one of {list(series)}")
    return name


@renderer("sweep", needs={"x": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    figures = []
    for g in groups:
        key = g.attrs.get("x_key", "x")
        x = g.arrays["x"]
        series = json.loads(g.attrs.get("series", "[]"))
        reference = _reference(g, series)
        spread = f"mean ± std over {_seeds(g)} seeds" if _seeds(g) > 1 else "one seed"
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        web = go.Figure()
        shift = 1.03 if key in LOG_KEYS else None
        points = [s for s in series if s != reference]
        for i, label in enumerate(series):
            mean = g.arrays[f"{label}_robust_error_mean"]
            std = g.arrays[f"{label}_robust_error_std"]
            hue = color(i)
            if label == reference:
                best = int(np.nanargmin(mean))
                ax.axhline(mean[best], color=hue, lw=1.5, label=f"{label} (best, x = {x[best]:g})")
                ax.axhspan(mean[best] - std[best], mean[best] + std[best], color=hue, alpha=0.15)
                web.add_hline(
                    y=float(mean[best]), line_color=hue, annotation_text=f"{label} (best)"
                )
                continue
            # Side by side, so the error bars of two series at one x do not hide each other.
            offset = points.index(label) - (len(points) - 1) / 2
            xs = x * shift**offset if shift else x + 0.01 * offset * np.ptp(x)
            ax.errorbar(
                xs, mean, yerr=std, color=hue, marker="o", ms=4, capsize=3, ls="none", label=label
            )
            web.add_trace(
                go.Scatter(
                    x=x,
                    y=mean,
                    error_y={"array": std},
                    name=label,
                    mode="markers",
                    marker={"color": hue},
                )
            )
        if key in LOG_KEYS:
            ax.set_xscale("log", base=2 if key == "width" else 10)
            if key == "width":
                ax.xaxis.set_major_locator(LogLocator(base=2))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_locator(NullLocator())
            web.update_xaxes(type="log")
        ax.set_xlabel(X_LABELS.get(key, key))
        ax.set_ylabel("robust test error")
        ax.set_ylim(0, max(1.0, float(np.nanmax([ax.get_ylim()[1], 0]))))
        ax.set_title(f"Robust test error ({spread})", fontsize=10)
        legend_outside(ax)
        fig.tight_layout()
        web.update_layout(
            title=f"Robust test error ({spread})",
            xaxis_title=X_WEB.get(key, key),
            yaxis_title="robust test error",
            template="simple_white",
        )
        figures.append(Figure(f"sweep_{g.path.rsplit('/', 1)[-1]}", fig, web))
    return figures
