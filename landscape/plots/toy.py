"""Theory figures from `/toy/<figure>` groups: Kanai et al. Fig. 2, 4, 5 (filled-contour panels:
clean | L2 | L-inf per model, and EntropySGD's -F), Liu et al. Fig. 5 (the adversarial band) and
Theorem 1 (||W|| against the training eps, with the threshold eps*)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
from matplotlib import colormaps
from plotly.subplots import make_subplots

from . import Figure, Group, color, renderer

COLUMNS = (("clean", "clean"), ("l2", "L2"), ("linf", "L∞"))
ROWS = (
    ("linear", "linear model ℓ_ε(θ)"),
    ("swish", "swish model ℓ_ε(θ), PGD"),
    ("smoothed", "EntropySGD −F(θ)"),
)
# Panel letters of the papers' figures, by (row, column).
LETTERS = {
    "kanai-fig2": {
        ("linear", "clean"): "(a)",
        ("linear", "l2"): "(b)",
        ("linear", "linf"): "(c)",
        ("swish", "clean"): "(d)",
        ("swish", "l2"): "(e)",
        ("swish", "linf"): "(f)",
        ("smoothed", "l2"): "(g)",
        ("smoothed", "linf"): "(h)",
    },
    "kanai-fig4-5": {
        ("linear", "clean"): "Fig. 4(a)",
        ("linear", "l2"): "Fig. 4(b)",
        ("linear", "linf"): "Fig. 4(c)",
        ("smoothed", "l2"): "Fig. 5(a)",
        ("smoothed", "linf"): "Fig. 5(b)",
    },
}
TITLES = {
    "kanai-fig2": "Kanai et al. Fig. 2: one point x = [−1, 1], y = 1",
    "kanai-fig4-5": "Kanai et al. Fig. 4, 5: N = {n} points x ~ N(0, I), y = sign(x₁)",
}
NORM_NAMES = {"l2": "L2", "linf": "L∞"}


def _figure_name(g: Group) -> str:
    return str(g.attrs.get("figure", g.path.rsplit("/", 1)[-1]))


def _colorbar_at(web: go.Figure, row: int, col: int, cols: int) -> dict:
    """A colour bar beside subplot (row, col), so every panel keeps its own scale."""
    k = (row - 1) * cols + col
    suffix = "" if k == 1 else str(k)
    xd = web.layout[f"xaxis{suffix}"].domain
    yd = web.layout[f"yaxis{suffix}"].domain
    return {
        "x": xd[1] + 0.005,
        "y": (yd[0] + yd[1]) / 2,
        "len": (yd[1] - yd[0]) * 0.95,
        "thickness": 10,
    }


def _surfaces(g: Group) -> Figure:
    figure = _figure_name(g)
    x, y = g.arrays["x"], g.arrays["y"]
    rows = [(key, label) for key, label in ROWS if f"{key}_l2" in g.arrays]
    panels = [
        (r, c, key, col_key, f"{key}_{col_key}")
        for r, (key, _) in enumerate(rows)
        for c, (col_key, _) in enumerate(COLUMNS)
    ]
    eps, gamma = g.attrs.get("eps"), g.attrs.get("gamma")
    letters = LETTERS.get(figure, {})

    def title(key: str, col_key: str) -> str:
        head = f"{letters.get((key, col_key), '')} {dict(ROWS)[key]}".strip()
        return f"{head}<br>{dict(COLUMNS)[col_key]}"

    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 3.9 * len(rows)), squeeze=False)
    web = make_subplots(
        rows=len(rows),
        cols=3,
        subplot_titles=[title(k, c) if f"{k}_{c}" in g.arrays else "" for _, _, k, c, _ in panels],
        horizontal_spacing=0.09,
        vertical_spacing=0.1,
    )
    for r, c, key, col_key, name in panels:
        ax = axes[r, c]
        if name not in g.arrays:
            ax.set_axis_off()
            continue
        z = g.arrays[name]
        filled = ax.contourf(x, y, z.T, levels=30, cmap="viridis")
        fig.colorbar(filled, ax=ax, fraction=0.046, pad=0.03)
        ax.set_title(title(key, col_key).replace("<br>", "\n"), fontsize=9)
        ax.set_aspect("equal")
        ax.grid(False)
        ax.set_xlabel(g.attrs.get("x_label", "θ₁"))
        ax.set_ylabel(g.attrs.get("y_label", "θ₂"))
        web.add_trace(
            go.Contour(
                x=x,
                y=y,
                z=z.T,
                colorscale="Viridis",
                ncontours=30,
                line={"width": 0},
                colorbar=_colorbar_at(web, r + 1, c + 1, 3),
                name=name,
                hovertemplate="θ₁ %{x:.3f}<br>θ₂ %{y:.3f}<br>value %{z:.4f}<extra>"
                + name
                + "</extra>",
            ),
            row=r + 1,
            col=c + 1,
        )
    head = TITLES.get(figure, figure).format(n=len(g.arrays["labels"]))
    suptitle = f"{head}; ε = {eps:g}, γ = {gamma:g}"
    fig.suptitle(suptitle)
    fig.tight_layout()
    web.update_xaxes(title_text=g.attrs.get("x_label", "θ₁"))
    web.update_yaxes(title_text=g.attrs.get("y_label", "θ₂"), scaleanchor="x", scaleratio=1)
    web.update_layout(title=suptitle, template="simple_white", height=380 * len(rows), width=1200)
    return Figure(f"toy_{figure}", matplotlib=fig, plotly=web)


def _band(g: Group) -> Figure:
    theta, clean = g.arrays["x"], g.arrays["clean"]
    budgets = g.arrays["eps"]
    red, blue, light = color(1), color(0), color(5)
    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 3.8), squeeze=False)
    web = make_subplots(rows=1, cols=len(budgets), subplot_titles=[f"ε = {e:g}" for e in budgets])
    for i, e in enumerate(budgets):
        adv, lower = g.arrays["adv"][i], g.arrays["lower"][i]
        ax = axes[0, i]
        ax.fill_between(
            theta, lower, adv, color=light, alpha=0.35, lw=0, label="g(x + δ, θ), |δ| ≤ ε"
        )
        ax.plot(theta, clean, color=red, label="g(x, θ)")
        ax.plot(theta, adv, color=blue, label=r"$g_\varepsilon(x, \theta)$")
        ax.set(xlabel=g.attrs.get("x_label", "θ"), ylabel="loss", title=f"ε = {e:g}")
        first = i == 0
        web.add_trace(
            go.Scatter(
                x=theta,
                y=lower,
                line={"width": 0, "color": light},
                showlegend=False,
                hoverinfo="skip",
            ),
            row=1,
            col=i + 1,
        )
        web.add_trace(
            go.Scatter(
                x=theta,
                y=adv,
                fill="tonexty",
                fillcolor="rgba(86, 180, 233, 0.35)",
                line={"color": blue},
                name="g_ε(x, θ) (band: |δ| ≤ ε)",
                legendgroup="adv",
                showlegend=first,
                hovertemplate="θ %{x:.3f}<br>g_ε %{y:.4f}",
            ),
            row=1,
            col=i + 1,
        )
        web.add_trace(
            go.Scatter(
                x=theta,
                y=clean,
                line={"color": red},
                name="g(x, θ)",
                legendgroup="clean",
                showlegend=first,
                hovertemplate="θ %{x:.3f}<br>g %{y:.4f}",
            ),
            row=1,
            col=i + 1,
        )
    axes[0, 0].legend(loc="upper left")
    fig.suptitle("Liu et al. Fig. 5: g(x, θ) = log(1 + exp(θx)), x = 1")
    fig.tight_layout()
    web.update_xaxes(title_text=g.attrs.get("x_label", "θ"))
    web.update_yaxes(title_text="loss")
    web.update_layout(title="Liu et al. Fig. 5: the adversarial band", template="simple_white")
    return Figure("toy_liu-fig5", matplotlib=fig, plotly=web)


def _collapse(g: Group) -> Figure:
    eps, a = g.arrays["x"], g.arrays
    threshold = float(g.attrs["threshold"])
    norm = g.attrs.get("norm", "")
    tiny = np.finfo(float).tiny
    cmap = colormaps["viridis"]
    shade = [cmap(i / max(1, len(eps) - 1)) for i in range(len(eps))]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    web = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=(
            "final ‖W‖ against training ε",
            "‖W_t‖ during training",
            "final adversarial loss",
            "final error",
        ),
    )
    ax = axes[0, 0]
    ax.semilogy(eps, np.maximum(a["weight_norm"], tiny), "o-", color=color(0))
    ax.set(xlabel="training ε", ylabel="‖W‖ (final)")
    ax = axes[0, 1]
    for i, e in enumerate(eps):
        ax.semilogy(
            a["step"],
            np.maximum(a["weight_norm_trace"][i], tiny),
            color=shade[i],
            lw=1.2,
            label=f"ε = {e:.3g}",
        )
        web.add_trace(
            go.Scatter(
                x=a["step"],
                y=a["weight_norm_trace"][i],
                name=f"ε = {e:.3g}",
                line={"color": "rgb({:.0f},{:.0f},{:.0f})".format(*(255 * np.array(shade[i][:3])))},
                hovertemplate="step %{x}<br>‖W‖ %{y:.3g}",
            ),
            row=1,
            col=2,
        )
    ax.set(xlabel="gradient step", ylabel="‖W_t‖")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1, 0]
    ax.plot(eps, a["adv_loss"], "o-", color=color(0), label=r"$\mathcal{L}_\varepsilon(W)$ (final)")
    ax.axhline(
        float(g.attrs["loss_at_origin"]),
        color="0.4",
        ls=":",
        label=r"$\mathcal{L}_\varepsilon(0) = \log K$",
    )
    ax.set(xlabel="training ε", ylabel="adversarial loss")
    ax = axes[1, 1]
    ax.plot(eps, a["clean_error"], "o-", color=color(2), label="clean error")
    ax.plot(eps, a["robust_error"], "s-", color=color(1), label="robust error")
    ax.set(xlabel="training ε", ylabel="error")
    for ax in axes.flat:
        if ax is not axes[0, 1]:
            ax.axvline(threshold, color="0.3", ls="--", lw=1, label=f"ε* = {threshold:.3g}")
            ax.legend(fontsize=8)
    web.add_trace(
        go.Scatter(
            x=eps, y=a["weight_norm"], name="‖W‖", hovertemplate="ε %{x:.3g}<br>‖W‖ %{y:.3g}"
        ),
        row=1,
        col=1,
    )
    web.add_trace(
        go.Scatter(
            x=eps, y=a["adv_loss"], name="L_ε(W)", hovertemplate="ε %{x:.3g}<br>loss %{y:.5f}"
        ),
        row=2,
        col=1,
    )
    for key, label in (("clean_error", "clean error"), ("robust_error", "robust error")):
        web.add_trace(
            go.Scatter(x=eps, y=a[key], name=label, hovertemplate="ε %{x:.3g}<br>%{y:.3f}"),
            row=2,
            col=2,
        )
    for row, col in ((1, 1), (2, 1), (2, 2)):
        web.add_vline(x=threshold, line_dash="dash", line_color="gray", row=row, col=col)
    web.update_yaxes(type="log", row=1, col=1)
    web.update_yaxes(type="log", row=1, col=2)
    title = (
        f"Liu et al. Theorem 1: {NORM_NAMES.get(norm, norm)} adversarial training of a linear model "
        f"ends at W = 0 above ε* = {threshold:.3g}"
    )
    fig.suptitle(title)
    fig.tight_layout()
    web.update_layout(title=title, template="simple_white")
    return Figure("toy_liu-thm1", matplotlib=fig, plotly=web)


@renderer("toy")
def render(groups: Sequence[Group]) -> list[Figure]:
    out = []
    for g in sorted(groups, key=lambda g: g.path):
        if "linear_clean" in g.arrays:
            out.append(_surfaces(g))
        elif "lower" in g.arrays:
            out.append(_band(g))
        elif "weight_norm" in g.arrays:
            out.append(_collapse(g))
    return out
