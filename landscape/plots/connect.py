"""Mode connectivity in the style of Liu et al. Fig. 15 (after Garipov et al.): training loss
and test error along t, one colour per eps, the learned Bezier curve solid and the
straight line between the same endpoints dashed; seeds of one eps as their mean with a
min–max band. The two panels of one kind share nothing but t; runs share each panel's y.

`connect` shows what each curve was trained on: the adversarial loss and robust error
(`adv_` datasets) for eps > 0, the clean ones for eps = 0. `connect_clean` shows the clean
loss and error of every run; it is drawn only when some run has eps > 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from . import Figure, Group, band_handle, legend_outside, plot_series, renderer, series_of

PANELS = {
    True: (
        ("train_loss", r"training loss $\mathcal{L}_\varepsilon(\phi_\theta(t))$"),
        ("test_error", "robust test error"),
    ),
    False: (
        ("train_loss", r"training loss $\mathcal{L}(\phi_\theta(t))$"),
        ("test_error", "clean test error"),
    ),
}


def _figure(groups: Sequence[Group], name: str, robust: bool) -> Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    pfig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in PANELS[robust]])
    series = series_of(groups, unit="pairs")  # runs of one eps join different pairs of models
    for s in series:
        t = s.groups[0].arrays["t"]
        order = s.groups[0].attrs.get("order")
        label = s.label + (f", order {int(order)}" if order is not None else "")
        adv = robust and all("adv_train_loss" in g.arrays for g in s.groups)
        for col, (key, _) in enumerate(PANELS[robust]):
            key = f"adv_{key}" if adv else key
            for prefix, style, dash, what in (
                ("", "-", "solid", "curve"),
                ("line_", "--", "dash", "line"),
            ):
                curves = [g.arrays[prefix + key] for g in s.groups]
                plot_series(axes[col], t, curves, s, linestyle=style)
                pfig.add_trace(
                    go.Scatter(
                        x=t,
                        y=np.mean(np.stack(curves), 0),
                        name=f"{label} ({what})",
                        legendgroup=f"{s.label}{what}",
                        showlegend=col == 0,
                        line={"color": s.color, "dash": dash},
                    ),
                    row=1,
                    col=col + 1,
                )
    for col, (_, ylabel) in enumerate(PANELS[robust]):
        axes[col].set(xlabel="$t$", ylabel=ylabel, xlim=(0, 1))
        pfig.update_xaxes(title_text="t", range=[0, 1], row=1, col=col + 1)
    handles = [Line2D([], [], color=s.color, label=s.label) for s in series]
    handles += [
        Line2D([], [], color="0.3", ls="-", label="Bézier curve"),
        Line2D([], [], color="0.3", ls="--", label="straight line"),
    ]
    if any(s.seeds > 1 for s in series):
        handles.append(band_handle("pairs"))
    kind = "adversarial" if robust else "clean"
    fig.suptitle(f"Mode connectivity between two minima ({kind} loss)")
    legend_outside(fig, handles=handles)
    pfig.update_layout(template="plotly_white", title=f"Mode connectivity ({kind} loss)")
    return Figure(name, matplotlib=fig, plotly=pfig)


@renderer("connect", needs={"t": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    figures = [_figure(groups, "connect", robust=True)]
    if any("adv_train_loss" in g.arrays for g in groups):
        figures.append(_figure(groups, "connect_clean", robust=False))
    return figures
