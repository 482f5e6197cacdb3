"""The gradient-Lipschitz profile ||grad L(theta + r u) - grad L(theta)|| / r against r, log-log.

One panel per loss (clean, L-inf, L2 adversarial), one shared y-scale; one colour per
eps (`eps_color`), random directions solid and top eigen-directions dashed. One run:
+-1 std over the directions shaded; several seeds of one eps: their mean, min–max shaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from . import Figure, Group, band, legend_outside, plot_series, renderer, series_of, share_limits

NORMS = {"clean": "clean loss $\\mathcal{L}$", "linf": "$\\ell_\\infty$", "l2": "$\\ell_2$"}
NORMS_WEB = {"clean": "clean", "linf": "L∞", "l2": "L2"}
DASH = {"random": ("-", "solid"), "eigen": ("--", "dash")}
YLABEL = r"$\|\nabla\mathcal{L}(\theta + r u) - \nabla\mathcal{L}(\theta)\| \,/\, r$"


def _title(groups: Sequence[Group], norm: str) -> str:
    if norm == "clean":
        return NORMS[norm]
    budgets = {float(g.attrs[f"eps_{norm}"]) for g in groups if g.attrs.get(f"eps_{norm}")}
    attack = f", attack ε = {budgets.pop():.3g}" if len(budgets) == 1 else ""
    return rf"adversarial loss $\mathcal{{L}}_\varepsilon$, {NORMS[norm]}{attack}"


@renderer("smoothness", needs={"radius": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    norms = [n for n in NORMS if any(f"lipschitz_{n}_mean" in g.arrays for g in groups)]
    fig, axes = plt.subplots(1, len(norms), figsize=(4.3 * len(norms), 3.8), squeeze=False)
    pfig = make_subplots(rows=1, cols=len(norms), subplot_titles=[NORMS_WEB[n] for n in norms])
    series = series_of(groups)
    for col, norm in enumerate(norms):
        ax = axes[0, col]
        key = f"lipschitz_{norm}_mean"
        for s in series:
            runs = [g for g in s.groups if key in g.arrays]
            if not runs:
                continue
            r = runs[0].arrays["radius"]
            ls, dash = DASH.get(runs[0].config.get("dirs", "random"), DASH["random"])
            curves = [g.arrays[key] for g in runs]
            plot_series(ax, r, curves, s, linestyle=ls, marker="o", ms=3)
            mean, lo, hi = band(curves)
            if len(runs) == 1:
                std = runs[0].arrays[f"lipschitz_{norm}_std"]
                lo, hi = np.clip(mean - std, mean * 1e-3, None), mean + std
                ax.fill_between(r, lo, hi, color=s.color, alpha=0.15, lw=0)
            pfig.add_trace(
                go.Scatter(
                    x=r,
                    y=mean,
                    error_y={"type": "data", "array": hi - mean, "arrayminus": mean - lo},
                    name=s.label,
                    legendgroup=s.label,
                    showlegend=col == 0,
                    line={"color": s.color, "dash": dash},
                ),
                row=1,
                col=col + 1,
            )
        ax.set(xscale="log", yscale="log", xlabel="radius $r$")
        ax.set_title(_title(groups, norm), fontsize=9)
    share_limits(list(axes[0]), "y")
    axes[0, 0].set_ylabel(YLABEL)
    handles = [Line2D([], [], color=s.color, label=s.label) for s in series]
    kinds = {g.config.get("dirs", "random") for g in groups}
    handles += [
        Line2D([], [], color="0.3", ls=DASH[k][0], label=f"{k} directions")
        for k in DASH
        if k in kinds
    ]
    several = any(s.seeds > 1 for s in series)
    shade = "min–max over seeds" if several else "±1 std over directions"
    handles.append(Patch(color="0.6", alpha=0.3, label=f"shaded: {shade}"))
    fig.suptitle("Gradient-Lipschitz profile (one y-scale)")
    legend_outside(fig, handles=handles)
    pfig.update_xaxes(type="log", title_text="radius r")
    pfig.update_yaxes(type="log", matches="y")
    pfig.update_yaxes(title_text="‖∇L(θ + r u) − ∇L(θ)‖ / r", row=1, col=1)
    pfig.update_layout(template="plotly_white", title="Gradient-Lipschitz profile")
    return [Figure("smoothness", matplotlib=fig, plotly=pfig)]
