"""The gradient-Lipschitz profile ||grad L(theta + r u) - grad L(theta)|| / r against r, log-log.

One panel per eps; colour per norm (clean, L-inf, L2), random directions solid and top
eigen-directions dashed, +-1 std over the directions shaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from . import Figure, Group, color, renderer, sort_by_eps

NORMS = {"clean": (7, "clean"), "linf": (1, "L∞"), "l2": (0, "L2")}
DASH = {"random": ("-", "solid"), "eigen": ("--", "dash")}


def _eps_of(g: Group) -> float:
    eps = g.config.get("eps", 0.0)
    return float(eps) if isinstance(eps, (int, float)) else 0.0


@renderer("smoothness", needs={"radius": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    groups = sort_by_eps(groups)
    panels = sorted({_eps_of(g) for g in groups})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    titles = [f"ε = {e:.4g}" for e in panels]
    pfig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles)
    several = len({g.label for g in groups}) < len(groups)  # runs sharing an eps: name them
    for g in groups:
        col = panels.index(_eps_of(g))
        ax = axes[0, col]
        r = g.arrays["radius"]
        kind = g.config.get("dirs", "random")
        ls, dash = DASH.get(kind, DASH["random"])
        for norm, (ci, name) in NORMS.items():
            key = f"lipschitz_{norm}_mean"
            if key not in g.arrays:
                continue
            mean, std = g.arrays[key], g.arrays[f"lipschitz_{norm}_std"]
            eps = g.attrs.get(f"eps_{norm}")
            label = f"{name}{'' if not eps else f' (ε={float(eps):.3g})'}, {kind}"
            if several:
                label = f"{g.path.rsplit('/', 1)[-1]}: {label}"
            ax.plot(r, mean, ls, marker="o", ms=3, color=color(ci), label=label)
            lo = np.clip(mean - std, mean * 1e-3, None)
            ax.fill_between(r, lo, mean + std, color=color(ci), alpha=0.15, lw=0)
            pfig.add_trace(
                go.Scatter(
                    x=r,
                    y=mean,
                    error_y={"type": "data", "array": std, "visible": True},
                    name=label,
                    line={"color": color(ci), "dash": dash},
                ),
                row=1,
                col=col + 1,
            )
        ax.set(xscale="log", yscale="log", xlabel="radius r", title=titles[col])
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("‖∇L(θ + r u) − ∇L(θ)‖ / r")
    fig.tight_layout()
    pfig.update_xaxes(type="log", title_text="radius r")
    pfig.update_yaxes(type="log")
    pfig.update_yaxes(title_text="gradient Lipschitz ratio", row=1, col=1)
    pfig.update_layout(template="plotly_white", title="Gradient-Lipschitz profile")
    return [Figure("smoothness", matplotlib=fig, plotly=pfig)]
