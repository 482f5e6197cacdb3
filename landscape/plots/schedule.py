"""The eps schedules of eq. (5) (Liu Fig. 7) and the learning-rate schedules (Liu Fig. 6):
the group attr `quantity` says which."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import plotly.graph_objects as go

from . import Figure, Group, color, legend_outside, renderer


@renderer("schedule", needs={"epoch": 1})
def render(groups: Sequence[Group]) -> list[Figure]:
    figures = []
    for g in groups:
        epoch = g.arrays["epoch"]
        curves = [k for k in g.arrays if k != "epoch"]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        web = go.Figure()
        for i, name in enumerate(curves):
            ax.plot(epoch, g.arrays[name], color=color(i), label=name)
            web.add_trace(
                go.Scatter(x=epoch, y=g.arrays[name], name=name, line={"color": color(i)})
            )
        learning_rate = g.attrs.get("quantity") == "lr"
        ax.set_xlabel("epoch $d$")
        if learning_rate:
            ax.set_yscale("log")
            ax.set_ylabel(r"learning rate $\eta(d)$")
            title = "Learning-rate schedules, vanilla and periodic (Fig. 6)"
        else:
            ax.set_ylabel(r"$\varepsilon(d)$")
            title = r"Schedules of the adversarial budget $\varepsilon(d)$, eq. (5)"
        ax.set_title(title, fontsize=10)
        legend_outside(ax)
        fig.tight_layout()
        web.update_layout(
            xaxis_title="epoch",
            yaxis_title="η(d)" if learning_rate else "ε(d)",
            yaxis_type="log" if learning_rate else "linear",
            template="simple_white",
        )
        figures.append(Figure(f"schedule_{g.path.rsplit('/', 1)[-1]}", fig, web))
    return figures
