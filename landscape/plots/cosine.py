"""Liu et al. Fig. 3 / 10: perturbation cosine similarity against a, and the robust error.

Left: cosine of the perturbations at theta + a v and theta - a v, top eigenvector
dashed, random direction solid, one colour per eps, +-1 std shaded. Right: robust error
at theta + s v for signed s (s < 0 is theta - |s| v), with the same styles.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from . import Figure, Group, color, renderer, sort_by_eps
from .surface import distinct_labels

STYLES = {"top": ("--", "dash", "top eigenvector"), "random": ("-", "solid", "random")}


def _signed(g: Group, kind: str) -> tuple[np.ndarray, np.ndarray]:
    a = g.arrays["alpha"]
    plus, minus = g.arrays[f"robust_error_{kind}_plus"], g.arrays[f"robust_error_{kind}_minus"]
    order = np.argsort(-a)
    s = np.concatenate([-a[order], a[order[::-1]]])
    err = np.concatenate([minus[order], plus[order[::-1]]])
    keep = np.concatenate([[True], np.diff(s) != 0])  # a = 0 appears once
    return s[keep], err[keep]


@renderer("cosine", needs={"alpha": 1, "cosine_top_mean": 1, "cosine_random_mean": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    groups = sort_by_eps(groups)
    fig, (ax_cos, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    pfig = make_subplots(rows=1, cols=2, subplot_titles=("perturbation cosine", "robust error"))
    zeros = 0
    for i, (g, run) in enumerate(zip(groups, distinct_labels(groups))):
        a = g.arrays["alpha"]
        for kind, (ls, dash, name) in STYLES.items():
            mean, std = g.arrays[f"cosine_{kind}_mean"], g.arrays[f"cosine_{kind}_std"]
            zeros += int(np.clip(g.arrays[f"zero_perturbations_{kind}"], 0, None).sum())
            label = f"{run}, {name}"
            ax_cos.plot(a, mean, ls, color=color(i), label=label)
            ax_cos.fill_between(a, mean - std, mean + std, color=color(i), alpha=0.15, lw=0)
            s, err = _signed(g, kind)
            ax_err.plot(s, err, ls, color=color(i), label=label)
            line = {"color": color(i), "dash": dash}
            pfig.add_trace(
                go.Scatter(
                    x=a,
                    y=mean,
                    error_y={"type": "data", "array": std, "visible": True},
                    name=label,
                    legendgroup=label,
                    line=line,
                ),
                row=1,
                col=1,
            )
            pfig.add_trace(
                go.Scatter(x=s, y=err, name=label, legendgroup=label, showlegend=False, line=line),
                row=1,
                col=2,
            )
    ax_cos.set(xlabel="a", ylabel="cos(x'₊ − x, x'₋ − x)", title="perturbation cosine")
    ax_err.set(xlabel="a (θ + a v)", ylabel="robust error", title="robust error at θ ± a v")
    ax_cos.legend(fontsize=8)
    if zeros:
        ax_cos.text(
            0.01,
            0.01,
            f"{zeros} zero perturbations excluded",
            transform=ax_cos.transAxes,
            fontsize=8,
        )
    fig.tight_layout()
    pfig.update_xaxes(title_text="a", row=1, col=1)
    pfig.update_xaxes(title_text="a (θ + a v)", row=1, col=2)
    pfig.update_yaxes(title_text="cosine", row=1, col=1)
    pfig.update_yaxes(title_text="robust error", row=1, col=2)
    pfig.update_layout(
        template="plotly_white", title="Perturbation cosine similarity (Liu et al. Fig. 3)"
    )
    return [Figure("cosine", matplotlib=fig, plotly=pfig)]
