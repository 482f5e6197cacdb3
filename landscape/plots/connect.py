"""Mode connectivity in the style of Liu et al. Fig. 15 (after Garipov et al.): training loss
and test error along t, one colour per run (eps), the learned Bezier curve solid and the
straight line between the same endpoints dashed.

`connect` shows what each curve was trained on: the adversarial loss and robust error
(`adv_` datasets) for eps > 0, the clean ones for eps = 0. `connect_clean` shows the clean
loss and error of every run; it is drawn only when some run has eps > 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt

from . import Figure, Group, color, renderer, sort_by_eps

PANELS = (("train_loss", "training loss"), ("test_error", "test error"))


def _figure(groups: Sequence[Group], name: str, robust: bool) -> Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    titles = [f"{'robust ' if robust else ''}{title}" for _, title in PANELS]
    pfig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    for i, g in enumerate(groups):
        t = g.arrays["t"]
        adv = robust and "adv_train_loss" in g.arrays
        order = g.attrs.get("order")
        label = g.label + (f", order {int(order)}" if order is not None else "")
        for col, (key, _) in enumerate(PANELS):
            key = f"adv_{key}" if adv else key
            for prefix, style, dash, what in (
                ("", "-", "solid", "curve"),
                ("line_", "--", "dash", "line"),
            ):
                values = g.arrays[prefix + key]
                axes[col].plot(
                    t,
                    values,
                    style,
                    color=color(i),
                    label=f"{label} ({what})" if col == 0 else None,
                )
                pfig.add_trace(
                    go.Scatter(
                        x=t,
                        y=values,
                        name=f"{label} ({what})",
                        legendgroup=f"{i}{what}",
                        showlegend=col == 0,
                        line={"color": color(i), "dash": dash},
                    ),
                    row=1,
                    col=col + 1,
                )
    for col, title in enumerate(titles):
        axes[col].set(xlabel="t", title=title, xlim=(0, 1))
        pfig.update_xaxes(title_text="t", range=[0, 1], row=1, col=col + 1)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    kind = "robust" if robust else "clean"
    pfig.update_layout(
        template="plotly_white", title=f"Connectivity along the Bezier curve ({kind})"
    )
    return Figure(name, matplotlib=fig, plotly=pfig)


@renderer("connect", needs={"t": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    groups = sort_by_eps(groups)
    figures = [_figure(groups, "connect", robust=True)]
    if any("adv_train_loss" in g.arrays for g in groups):
        figures.append(_figure(groups, "connect_clean", robust=False))
    return figures
