"""Loss surfaces: 1D lines (Kanai et al. Fig. 7), 2D contour / filled contour / heatmap,
and 3D surfaces (Liu et al. Fig. 12), static (matplotlib) and interactive (plotly).

2D figures show the adversarial loss L_eps when stored (eps > 0), else the clean loss;
points not yet computed are blank. A `pca` surface also shows the training trajectory.
Panels meant to be compared share one scale: the 1D lines one y range per panel row, the
3D surfaces one z range and one colour scale, the contour figures of one file one set of
levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from . import (
    Figure,
    Group,
    band_handle,
    legend_outside,
    plot_series,
    renderer,
    series_of,
    sort_by_eps,
)

LOSS = r"$\mathcal{L}(\theta + \alpha d)$"
ADV_LOSS = r"$\mathcal{L}_\varepsilon(\theta + \alpha d)$"


def distinct_labels(groups: Sequence[Group]) -> list[str]:
    """Each group's label (its eps), with the run name added when two would be the same,
    as for several training methods at one eps (Kanai et al. Fig. 7)."""
    labels = [g.label for g in groups]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{g.path.rsplit('/', 1)[-1]} ({label})" for g, label in zip(groups, labels)]


def _field(g: Group) -> tuple[str, str]:
    """The dataset a 2D figure shows and its name in math."""
    if "adv_loss" in g.arrays:
        return "adv_loss", r"$\mathcal{L}_\varepsilon$"
    return "loss", r"$\mathcal{L}$"


def _name(g: Group) -> str:
    return g.path.strip("/").split("/", 1)[-1].replace("/", "_")


def _lines(groups: Sequence[Group]) -> Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    pfig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "error"))
    series = series_of(groups)
    for s in series:
        x = s.groups[0].arrays["x"]
        for field, ls, dash, what in (
            ("", "-", "solid", "clean"),
            ("adv_", "--", "dash", "adversarial"),
        ):
            if any(f"{field}loss" not in g.arrays for g in s.groups):
                continue
            label = f"{s.label}, {what}"
            for col, (ax, stat) in enumerate(((ax_loss, "loss"), (ax_err, "error")), start=1):
                curves = [g.arrays[f"{field}{stat}"] for g in s.groups]
                plot_series(ax, x, curves, s, linestyle=ls)
                pfig.add_trace(
                    go.Scatter(
                        x=x,
                        y=np.mean(np.stack(curves), 0),
                        name=label,
                        legendgroup=label,
                        showlegend=col == 1,
                        line={"color": s.color, "dash": dash},
                    ),
                    row=1,
                    col=col,
                )
    dirs = {g.config.get("dirs", "") for g in groups}
    named = ", ".join(sorted(d for d in dirs if d))
    xlabel = rf"$\alpha$ ({named} direction $d$)" if named else r"$\alpha$"
    ax_loss.set(xlabel=xlabel, ylabel="loss")
    ax_loss.set_title(f"loss: clean {LOSS} solid, adversarial {ADV_LOSS} dashed", fontsize=9)
    ax_err.set(xlabel=xlabel, ylabel="error (clean solid, robust dashed)")
    ax_err.set_title("error", fontsize=9)
    handles = [Line2D([], [], color=s.color, label=s.label) for s in series]
    handles += [
        Line2D([], [], color="0.3", ls="-", label="clean"),
        Line2D([], [], color="0.3", ls="--", label="adversarial"),
    ]
    if any(s.seeds > 1 for s in series):
        handles.append(band_handle())
    fig.suptitle("Loss along a direction of parameter space")
    legend_outside(fig, handles=handles)
    pfig.update_xaxes(title_text="α")
    pfig.update_layout(template="plotly_white", title="1D loss surface")
    return Figure("surface_1d", matplotlib=fig, plotly=pfig)


def _common_range(groups: Sequence[Group]) -> tuple[float, float]:
    """One range for every shown field of `groups` (their finite values)."""
    values = np.concatenate([g.arrays[_field(g)[0]].ravel() for g in groups])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _planar(g: Group, name: str, zrange: tuple[float, float]) -> Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    field, what = _field(g)
    x, y, z = g.arrays["x"], g.arrays["y"], g.arrays[field]
    X, Y = np.meshgrid(x, y, indexing="ij")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    levels = np.linspace(*zrange, 31)
    norm = Normalize(*zrange)
    if np.isfinite(z).sum() >= 4 and len(x) > 1 and len(y) > 1:
        cs = axes[0].contour(X, Y, z, levels=levels[::2], cmap="viridis", norm=norm)
        axes[0].clabel(cs, fontsize=6)
        filled = axes[1].contourf(X, Y, z, levels=levels, cmap="viridis", norm=norm)
        fig.colorbar(filled, ax=axes[1], label=what, ticks=MaxNLocator(6))
    mesh = axes[2].pcolormesh(X, Y, z, shading="nearest", cmap="viridis", norm=norm)
    fig.colorbar(mesh, ax=axes[2], label=what)
    path = g.arrays.get("trajectory")
    for ax, kind in zip(axes, ("contour", "filled contour", "heatmap")):
        ax.set(xlabel=r"$\alpha_1$", ylabel=r"$\alpha_2$", title=kind)
        ax.plot([0], [0], "k+", ms=10)
        if path is not None and path.ndim == 2 and path.shape[1] >= 2:
            ax.plot(path[:, 0], path[:, 1], "o-", color="white", mec="black", ms=3, lw=1)
    fig.suptitle(f"{what} around θ, {name} (colour scale shared by the file's surfaces)")
    fig.tight_layout()
    pfig = make_subplots(rows=1, cols=2, subplot_titles=("contour", "heatmap"))
    scale = {"zmin": zrange[0], "zmax": zrange[1], "colorscale": "Viridis"}
    pfig.add_trace(go.Contour(x=x, y=y, z=z.T, showscale=False, **scale), row=1, col=1)
    pfig.add_trace(go.Heatmap(x=x, y=y, z=z.T, colorbar={"title": "loss"}, **scale), row=1, col=2)
    if path is not None and path.ndim == 2 and path.shape[1] >= 2:
        pfig.add_trace(
            go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines+markers", name="trajectory"),
            row=1,
            col=1,
        )
    pfig.update_xaxes(title_text="α₁")
    pfig.update_yaxes(title_text="α₂")
    pfig.update_layout(template="plotly_white", title=f"Loss surface, {name}")
    return Figure(f"surface_{_name(g)}_contour", matplotlib=fig, plotly=pfig)


def _three_d(groups: Sequence[Group], zrange: tuple[float, float], seeds: int = 1) -> Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(groups)
    fig = plt.figure(figsize=(4.2 * n, 4.4))
    names = distinct_labels(groups)
    pfig = make_subplots(rows=1, cols=n, specs=[[{"type": "surface"}] * n], subplot_titles=names)
    norm = Normalize(*zrange)
    for i, (g, name) in enumerate(zip(groups, names)):
        field, what = _field(g)
        x, y, z = g.arrays["x"], g.arrays["y"], g.arrays[field]
        X, Y = np.meshgrid(x, y, indexing="ij")
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        ax.plot_surface(
            X, Y, np.ma.masked_invalid(z), cmap="viridis", norm=norm, linewidth=0, antialiased=True
        )
        ax.set_zlim(*zrange)
        ax.set(xlabel=r"$\alpha_1$", ylabel=r"$\alpha_2$", title=name)
        ax.set_zlabel(what, labelpad=2)
        ax.xaxis.set_major_locator(MaxNLocator(4, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_locator(MaxNLocator(4, steps=[1, 2, 2.5, 5, 10]))
        pfig.add_trace(
            go.Surface(
                x=x,
                y=y,
                z=z.T,
                colorscale="Viridis",
                cmin=zrange[0],
                cmax=zrange[1],
                showscale=i == n - 1,
            ),
            row=1,
            col=i + 1,
        )
        pfig.update_scenes({"zaxis": {"range": list(zrange)}}, row=1, col=i + 1)
    fields = {_field(g)[1] for g in groups}
    shown = f"; the first of {seeds} seeds per ε" if seeds > 1 else ""
    fig.suptitle(f"Loss surfaces {', '.join(sorted(fields))} around θ (one z-scale{shown})")
    fig.tight_layout(rect=(0, 0, 0.98, 0.95))
    pfig.update_layout(
        template="plotly_white", title="Loss surfaces, one z-scale (Liu et al. Fig. 12)", height=500
    )
    return Figure("surface_3d", matplotlib=fig, plotly=pfig)


@renderer("surface", needs={"x": 1, "loss": None, "error": None})
def render(groups: Sequence[Group]) -> list[Figure]:
    groups = sort_by_eps(groups)
    lines = [g for g in groups if "y" not in g.arrays]
    planes = [g for g in groups if "y" in g.arrays]
    figures = [_lines(lines)] if lines else []
    if planes:
        # One panel per run (eps), its first seed: the paper's Fig. 12 layout; the verdict
        # reads every seed.
        runs = series_of(planes)
        shown = [s.groups[0] for s in runs]
        seeds = max(s.seeds for s in runs)
        zrange = _common_range(shown)
        figures += [_planar(g, n, zrange) for g, n in zip(shown, distinct_labels(shown))]
        figures.append(_three_d(shown, zrange, seeds))
    return figures
