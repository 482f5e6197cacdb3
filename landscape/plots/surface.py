"""Loss surfaces: 1D lines (Kanai et al. Fig. 7), 2D contour / filled contour / heatmap,
and 3D surfaces (Liu et al. Fig. 12), static (matplotlib) and interactive (plotly).

2D figures show the adversarial loss L_eps when stored (eps > 0), else the clean loss;
points not yet computed are blank. A `pca` surface also shows the training trajectory.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from . import Figure, Group, color, renderer, sort_by_eps


def distinct_labels(groups: Sequence[Group]) -> list[str]:
    """Each group's label (its eps), with the run name added when two would be the same,
    as for several training methods at one eps (Kanai et al. Fig. 7)."""
    labels = [g.label for g in groups]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{g.path.rsplit('/', 1)[-1]} ({label})" for g, label in zip(groups, labels)]


def _field(g: Group) -> tuple[str, str]:
    return ("adv_loss", "adversarial loss L_ε") if "adv_loss" in g.arrays else ("loss", "loss")


def _name(g: Group) -> str:
    return g.path.strip("/").split("/", 1)[-1].replace("/", "_")


def _lines(groups: Sequence[Group]) -> Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    pfig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "error"))
    for i, (g, name) in enumerate(zip(groups, distinct_labels(groups))):
        x = g.arrays["x"]
        for field, ls, dash, what in (
            ("", "-", "solid", "clean"),
            ("adv_", "--", "dash", "adversarial"),
        ):
            if f"{field}loss" not in g.arrays:
                continue
            label = f"{name}, {what}"
            for col, (ax, stat) in enumerate(((ax_loss, "loss"), (ax_err, "error")), start=1):
                y = g.arrays[f"{field}{stat}"]
                ax.plot(x, y, ls, color=color(i), label=label)
                pfig.add_trace(
                    go.Scatter(
                        x=x,
                        y=y,
                        name=label,
                        legendgroup=label,
                        showlegend=col == 1,
                        line={"color": color(i), "dash": dash},
                    ),
                    row=1,
                    col=col,
                )
    dirs = {g.config.get("dirs", "") for g in groups}
    xlabel = f"α ({', '.join(sorted(d for d in dirs if d))} direction)"
    ax_loss.set(xlabel=xlabel, ylabel="loss", title="loss")
    ax_err.set(xlabel=xlabel, ylabel="error", title="error")
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    pfig.update_xaxes(title_text=xlabel)
    pfig.update_layout(template="plotly_white", title="1D loss surface")
    return Figure("surface_1d", matplotlib=fig, plotly=pfig)


def _planar(g: Group, name: str) -> Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    field, what = _field(g)
    x, y, z = g.arrays["x"], g.arrays["y"], g.arrays[field]
    X, Y = np.meshgrid(x, y, indexing="ij")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    title = f"{name}: {what}"
    if np.isfinite(z).sum() >= 4 and len(x) > 1 and len(y) > 1:
        cs = axes[0].contour(X, Y, z, levels=15, cmap="viridis")
        axes[0].clabel(cs, fontsize=6)
        filled = axes[1].contourf(X, Y, z, levels=30, cmap="viridis")
        fig.colorbar(filled, ax=axes[1])
    mesh = axes[2].pcolormesh(X, Y, z, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=axes[2])
    path = g.arrays.get("trajectory")
    for ax, kind in zip(axes, ("contour", "filled contour", "heatmap")):
        ax.set(xlabel="α₁", ylabel="α₂", title=kind)
        ax.plot([0], [0], "k+", ms=10)
        if path is not None and path.ndim == 2 and path.shape[1] >= 2:
            ax.plot(path[:, 0], path[:, 1], "o-", color="white", mec="black", ms=3, lw=1)
    fig.suptitle(title)
    fig.tight_layout()
    pfig = make_subplots(rows=1, cols=2, subplot_titles=("contour", "heatmap"))
    pfig.add_trace(go.Contour(x=x, y=y, z=z.T, colorscale="Viridis", showscale=False), row=1, col=1)
    pfig.add_trace(
        go.Heatmap(x=x, y=y, z=z.T, colorscale="Viridis", colorbar={"title": field}), row=1, col=2
    )
    if path is not None and path.ndim == 2 and path.shape[1] >= 2:
        pfig.add_trace(
            go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines+markers", name="trajectory"),
            row=1,
            col=1,
        )
    pfig.update_xaxes(title_text="α₁")
    pfig.update_yaxes(title_text="α₂")
    pfig.update_layout(template="plotly_white", title=title)
    return Figure(f"surface_{_name(g)}_contour", matplotlib=fig, plotly=pfig)


def _three_d(groups: Sequence[Group]) -> Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(groups)
    fig = plt.figure(figsize=(4.5 * n, 4.2))
    titles = [f"{name}: {_field(g)[0]}" for g, name in zip(groups, distinct_labels(groups))]
    pfig = make_subplots(rows=1, cols=n, specs=[[{"type": "surface"}] * n], subplot_titles=titles)
    for i, g in enumerate(groups):
        field, _ = _field(g)
        x, y, z = g.arrays["x"], g.arrays["y"], g.arrays[field]
        X, Y = np.meshgrid(x, y, indexing="ij")
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        ax.plot_surface(
            X, Y, np.ma.masked_invalid(z), cmap="viridis", linewidth=0, antialiased=True
        )
        ax.set(xlabel="α₁", ylabel="α₂", zlabel=field, title=titles[i])
        pfig.add_trace(
            go.Surface(x=x, y=y, z=z.T, colorscale="Viridis", showscale=i == n - 1),
            row=1,
            col=i + 1,
        )
    fig.tight_layout()
    pfig.update_layout(
        template="plotly_white", title="Loss surfaces (Liu et al. Fig. 12)", height=500
    )
    return Figure("surface_3d", matplotlib=fig, plotly=pfig)


@renderer("surface", needs={"x": 1, "loss": None, "error": None})
def render(groups: Sequence[Group]) -> list[Figure]:
    groups = sort_by_eps(groups)
    lines = [g for g in groups if "y" not in g.arrays]
    planes = [g for g in groups if "y" in g.arrays]
    figures = [_lines(lines)] if lines else []
    figures += [_planar(g, name) for g, name in zip(planes, distinct_labels(planes))]
    if planes:
        figures.append(_three_d(planes))
    return figures
