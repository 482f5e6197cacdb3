"""Liu et al. Fig. 3 / 10: perturbation cosine similarity against a, and the robust error.

Left: cosine of the perturbations at theta + a v and theta - a v, top eigenvector
dashed, random direction solid, one colour per eps. As in the paper, a cosine is drawn
only where the robust accuracy at both theta + a v and theta - a v stays above 70 %
(`ACCURACY_FLOOR`); the rest is masked. One run: +-1 std over the PGD restarts shaded;
several seeds of one eps: their mean, min–max shaded. Right: robust error at
theta + s v for signed s (s < 0 is theta - |s| v), every a, the 70 % line dotted.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from . import Figure, Group, band, legend_outside, plot_series, renderer, series_of

STYLES = {"top": ("--", "dash", "top eigenvector"), "random": ("-", "solid", "random direction")}
ACCURACY_FLOOR = 0.7
COSINE_LABEL = r"$\cos(x'_{+} - x,\ x'_{-} - x)$"


def _signed(g: Group, kind: str) -> tuple[np.ndarray, np.ndarray]:
    a = g.arrays["alpha"]
    plus, minus = g.arrays[f"robust_error_{kind}_plus"], g.arrays[f"robust_error_{kind}_minus"]
    order = np.argsort(-a)
    s = np.concatenate([-a[order], a[order[::-1]]])
    err = np.concatenate([minus[order], plus[order[::-1]]])
    keep = np.concatenate([[True], np.diff(s) != 0])  # a = 0 appears once
    return s[keep], err[keep]


def shown_cosine(g: Group, kind: str) -> np.ndarray:
    """The mean cosine where the robust accuracy on both sides is above the floor, else NaN."""
    worst = np.maximum(
        g.arrays[f"robust_error_{kind}_plus"], g.arrays[f"robust_error_{kind}_minus"]
    )
    return np.where(worst < 1 - ACCURACY_FLOOR, g.arrays[f"cosine_{kind}_mean"], np.nan)


@renderer("cosine", needs={"alpha": 1, "cosine_top_mean": 1, "cosine_random_mean": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    series = series_of(groups)
    fig, (ax_cos, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    pfig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("perturbation cosine (robust accuracy > 70 %)", "robust error at θ + s v"),
    )
    zeros = 0
    for s in series:
        a = s.groups[0].arrays["alpha"]
        for kind, (ls, dash, name) in STYLES.items():
            zeros += sum(
                int(np.clip(g.arrays[f"zero_perturbations_{kind}"], 0, None).sum())
                for g in s.groups
            )
            cosines = [shown_cosine(g, kind) for g in s.groups]
            plot_series(ax_cos, a, cosines, s, linestyle=ls, marker="o", markersize=2.5)
            mean, lo, hi = band(cosines)
            if s.seeds == 1:
                std = np.where(np.isfinite(mean), s.groups[0].arrays[f"cosine_{kind}_std"], np.nan)
                lo, hi = mean - std, mean + std
                ax_cos.fill_between(a, lo, hi, color=s.color, alpha=0.15, lw=0)
            signed = [_signed(g, kind) for g in s.groups]
            plot_series(ax_err, signed[0][0], [e for _, e in signed], s, linestyle=ls)
            line = {"color": s.color, "dash": dash}
            label = f"{s.label}, {name}"
            pfig.add_trace(
                go.Scatter(
                    x=a,
                    y=mean,
                    error_y={"type": "data", "array": hi - mean, "arrayminus": mean - lo},
                    name=label,
                    legendgroup=label,
                    line=line,
                ),
                row=1,
                col=1,
            )
            err_mean, _, _ = band([e for _, e in signed])
            pfig.add_trace(
                go.Scatter(
                    x=signed[0][0],
                    y=err_mean,
                    name=label,
                    legendgroup=label,
                    showlegend=False,
                    line=line,
                ),
                row=1,
                col=2,
            )
    ax_err.axhline(1 - ACCURACY_FLOOR, color="0.4", ls=":", lw=1)
    ax_cos.set(xlabel="$a$", ylabel=COSINE_LABEL)
    splits = {str(g.config.get("split", "train")) for g in groups}
    data = "training" if splits == {"train"} else "/".join(sorted(splits))
    ax_cos.set_title(rf"shown where robust {data} accuracy at $\theta \pm a v$ > 70 %", fontsize=9)
    ax_err.set(xlabel=r"$s$  ($\theta + s\,v$)", ylabel="robust error", ylim=(0, 1.02))
    ax_err.set_title(r"robust error at $\theta + s\,v$ (dotted: 70 % accuracy)", fontsize=9)
    handles = [Line2D([], [], color=s.color, label=s.label) for s in series]
    handles += [Line2D([], [], color="0.3", ls=ls, label=name) for ls, _, name in STYLES.values()]
    shades = {s.seeds > 1 for s in series}
    shade = {
        frozenset({True}): "min–max over seeds",
        frozenset({False}): "±1 std over PGD restarts",
    }.get(frozenset(shades), "min–max over seeds; one seed: ±1 std over PGD restarts")
    handles.append(Patch(color="0.6", alpha=0.3, label=f"shaded: {shade}"))
    if zeros:
        handles.append(Patch(color="none", label=f"{zeros} zero perturbations excluded"))
    fig.suptitle(r"Perturbation cosine along the top eigenvector of $\mathcal{L}_\varepsilon$")
    legend_outside(fig, handles=handles)
    pfig.update_xaxes(title_text="a", row=1, col=1)
    pfig.update_xaxes(title_text="s (θ + s v)", row=1, col=2)
    pfig.update_yaxes(title_text="cos(x'₊ − x, x'₋ − x)", row=1, col=1)
    pfig.update_yaxes(title_text="robust error", row=1, col=2)
    pfig.update_layout(
        template="plotly_white",
        title="Perturbation cosine, shown where robust accuracy > 70 % (Liu et al. Fig. 3)",
    )
    return [Figure("cosine", matplotlib=fig, plotly=pfig)]
