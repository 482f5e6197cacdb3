"""The gallery's figures read like the papers': one colour per eps in every renderer, seeds
as a mean with a band, legends off the data, math labels, shared scales, the papers'
protocols (Liu Fig. 3's 70 % filter, Fig. 13's reference line, Kanai Fig. 6's training
curves) and tables with their spread."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.text import Text
from plot_data import build

from landscape.plots import (
    Group,
    draw,
    eps_color,
    load_groups,
    series_of,
    style,
)

FORBIDDEN = (
    "adv_loss",
    "adv_error",
    "grad_norm",
    "robust_error",
    "clean_error",
    "distance_from_init",
    "train_loss",
    "test_error",
    "eigenvalues_normalized",
    "lipschitz_",
    "wall_time",
)


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """Every matplotlib figure of the synthetic gallery, by name."""
    path = build(tmp_path_factory.mktemp("plots") / "r.h5")
    style()
    drawn = {}
    groups = load_groups(path)
    for analysis, members in groups.items():
        for fig in draw(analysis, members, path):
            fig.matplotlib.canvas.draw()
            drawn[fig.name] = fig.matplotlib
    yield {"path": path, "groups": groups, **drawn}
    for fig in drawn.values():
        plt.close(fig)


def legend_colors(fig) -> dict[str, tuple]:
    """Legend entry -> RGBA of its handle, over the figure's and its axes' legends."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    out = {}
    for legend in legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            rgba = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()
            out[text.get_text()] = to_rgba(rgba)
    return out


EPS_FIGURES = ("hessian_spectrum", "cosine", "connect", "trace", "trace_loss", "surface_1d")


def test_one_colour_per_eps_across_renderers(figures):
    for name in (*EPS_FIGURES, "smoothness"):
        colors = legend_colors(figures[name])
        for eps, entry in ((0.0, "ε = 0"), (0.1, "ε = 0.1"), (0.2, "ε = 0.2")):
            hits = [rgba for text, rgba in colors.items() if text.split(",")[0] == entry]
            assert hits == [to_rgba(eps_color(eps))], (name, entry, colors)
        # The lines drawn carry the same colours as the legend says.
        drawn = {to_rgba(line.get_color()) for ax in figures[name].axes for line in ax.lines}
        assert to_rgba(eps_color(0.1)) in drawn and to_rgba(eps_color(0.2)) in drawn
    assert len({eps_color(e) for e in (0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 8 / 255)}) == 8
    assert eps_color(0.1) == eps_color(0.1000000001) and eps_color(0.123) == eps_color(0.123)


def test_seeds_of_one_eps_are_a_mean_with_a_min_max_band(figures):
    ax = figures["hessian_spectrum"].axes[0]
    seeds = [
        g.arrays["eigenvalues_normalized"]
        for g in figures["groups"]["hessian"]
        if g.path.startswith("/hessian/e01-")
    ]
    assert len(seeds) == 3
    blue = to_rgba(eps_color(0.1))
    means = [line.get_ydata() for line in ax.lines if to_rgba(line.get_color()) == blue]
    assert any(np.allclose(y, np.mean(seeds, 0)) for y in means)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # eps 0.1 normalized and raw; single runs have none
    lows = [p.get_paths()[0].vertices[:, 1].min() for p in bands]
    assert min(lows) == pytest.approx(np.min(seeds))
    assert "ε = 0.1, 3 seeds" in legend_colors(figures["hessian_spectrum"])
    assert any("min–max over seeds" in t for t in legend_colors(figures["trace"]))


def test_series_grouping():
    def group(path, eps):
        return Group(path, {}, {"config": f'{{"eps": {eps}}}'})

    series = series_of(
        [group("/h/e01-s1", 0.1), group("/h/e01-s0", 0.1), group("/h/e02", 0.2), group("/h/e0", 0)]
    )
    assert [(s.name, s.eps, s.seeds) for s in series] == [
        ("e0", 0.0, 1),
        ("e01", 0.1, 2),
        ("e02", 0.2, 1),
    ]
    assert series[1].color == eps_color(0.1)
    methods = series_of([group("/c/AT", 0.1), group("/c/AWP", 0.1)])
    assert [s.label for s in methods] == ["AT (ε = 0.1)", "AWP (ε = 0.1)"]
    assert methods[0].color != methods[1].color


def test_no_variable_names_and_math_labels(figures):
    for name, fig in figures.items():
        if name in ("path", "groups"):
            continue
        texts = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
        for text in texts:
            plain = re.sub(r"\$[^$]*\$", "", text)
            assert not any(word in text for word in FORBIDDEN), (name, text)
            assert "_" not in plain, (name, text)
    labels = lambda fig: " ".join(t.get_text() for t in fig.findobj(Text))  # noqa: E731
    assert r"$\lambda_i$" in labels(figures["hessian_spectrum"])
    assert r"\mathcal{L}_\varepsilon" in labels(figures["hessian_spectrum"])
    assert r"$\|\theta - \theta_0\|$" in labels(figures["trace"])
    assert r"\nabla_\theta" in labels(figures["trace"])


def test_legends_do_not_cover_the_data(figures):
    for name, fig in figures.items():
        if name in ("path", "groups") or name.startswith("table"):
            continue
        renderer = fig.canvas.get_renderer()
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                if ax.get_label() == "<colorbar>":
                    continue
                assert not box.overlaps(ax.get_window_extent(renderer)), name


def test_compared_panels_share_their_scale(figures):
    zlims = [ax.get_zlim() for ax in figures["surface_3d"].axes if hasattr(ax, "get_zlim")]
    assert len(zlims) == 3 and len(set(zlims)) == 1
    arrays = [g.arrays["adv_loss"] for g in figures["groups"]["surface"] if "y" in g.arrays]
    assert zlims[0] == pytest.approx((min(a.min() for a in arrays), max(a.max() for a in arrays)))
    surfaces = [c for ax in figures["surface_3d"].axes for c in ax.collections]
    assert len({tuple(c.get_clim()) for c in surfaces}) == 1
    climits = {
        tuple(c.get_clim())
        for name in ("surface_e0_contour", "surface_e01_contour", "surface_e02_contour")
        for c in figures[name].axes[2].collections
    }
    assert len(climits) == 1
    smooth = [ax.get_ylim() for ax in figures["smoothness"].axes]
    assert len(smooth) == 2 and smooth[0] == smooth[1]


def test_integer_and_log_axes(figures):
    ticks = figures["hessian_spectrum"].axes[0].get_xticks()
    assert np.allclose(ticks, np.round(ticks))
    epochs = figures["robust_accuracy"].axes[0].get_xticks()
    assert np.allclose(epochs, np.round(epochs))
    width = figures["sweep_width"].axes[0]
    assert width.get_xscale() == "log"
    lo, hi = width.get_xlim()
    shown = [t.get_text() for t in width.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    assert shown == ["1", "2", "4", "8"]
    assert figures["sweep_lr"].axes[0].get_xscale() == "log"


def test_sweep_reference_is_a_line_at_its_best(figures):
    group = next(g for g in figures["groups"]["sweep"] if g.path == "/sweep/lr")
    best = float(np.min(group.arrays["constant_robust_error_mean"]))
    ax = figures["sweep_lr"].axes[0]
    flat = [line for line in ax.lines if np.ptp(line.get_ydata()) == 0]
    assert [line.get_ydata()[0] for line in flat] == [pytest.approx(best)]
    assert any(t.startswith("constant (best") for t in legend_colors(figures["sweep_lr"]))
    # The other series are points with error bars, not a line.
    assert any(len(c.get_segments()) == 3 for c in ax.collections if hasattr(c, "get_segments"))


def test_cosine_shown_only_above_70_percent_robust_accuracy(figures):
    g = next(g for g in figures["groups"]["cosine"] if g.path == "/cosine/e0")
    worst = np.maximum(g.arrays["robust_error_top_plus"], g.arrays["robust_error_top_minus"])
    assert (worst >= 0.3).any() and (worst < 0.3).any()
    black = to_rgba(eps_color(0.0))
    ax = figures["cosine"].axes[0]
    top = next(
        line
        for line in ax.lines
        if to_rgba(line.get_color()) == black and line.get_linestyle() == "--"
    )
    y = np.asarray(top.get_ydata(), dtype=float)
    assert np.isnan(y[worst >= 0.3]).all()
    assert np.allclose(y[worst < 0.3], g.arrays["cosine_top_mean"][worst < 0.3])
    assert "70 %" in ax.get_title() and "training" in ax.get_title()


def test_evalcurve_training_beside_test(figures):
    axes = figures["robust_accuracy"].axes
    assert [ax.get_title() for ax in axes] == ["training set", "test set"] * 2
    g = next(g for g in figures["groups"]["evalcurve"] if g.path == "/evalcurve/AT")
    ys = [line.get_ydata() for line in axes[0].lines]
    assert any(np.allclose(y, 1 - g.arrays["train_robust_error"]) for y in ys)
    assert axes[0].get_ylim() == axes[1].get_ylim()


def test_table_has_spread_and_no_margin(figures):
    fig = figures["table_methods"]
    texts = [c.get_text().get_text() for c in fig.axes[0].tables[0].get_celld().values()]
    assert "3.10 ± 0.20" in texts and "25.00 ± 2.00" in texts
    renderer = fig.canvas.get_renderer()
    table = fig.axes[0].tables[0].get_window_extent(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    assert table.width / width > 0.6 and table.height / height > 0.9


def test_seeded_surfaces_draw_one_panel_per_eps_and_filters_take_patterns(tmp_path):
    """Liu Fig. 12's layout with seeds: one 3D panel (and one contour file) per eps, its
    first seed; a recipe's `figures = ["surface_*"]` keeps the surfaces only."""
    from landscape.plots import render_file
    from landscape.store import provenance, write_group

    path = tmp_path / "r.h5"
    grid = np.linspace(-0.5, 0.5, 5)
    bowl = np.add.outer(grid**2, grid**2)
    for eps in (0.0, 0.1):
        for seed in range(3):
            name = f"e{eps:g}-s{seed}"
            surface = {
                "x": grid,
                "y": grid,
                "loss": bowl * (1 + seed),
                "error": bowl,
                "adv_loss": bowl * (1 + 10 * eps + seed),
                "adv_error": bowl,
                "done": np.ones_like(bowl, dtype=bool),
                "nonfinite": np.zeros_like(bowl, dtype=bool),
            }
            attrs = provenance(command="test", config={"eps": eps})
            write_group(path, f"/surface/{name}", surface, attrs)
            index = np.arange(1, 3)
            spectrum = {"index": index, "eigenvalues": 1.0 / index, "eigenvalues_normalized": index}
            write_group(path, f"/hessian/{name}-top2", spectrum, attrs)
    written = render_file(path, tmp_path / "out", figures=["surface_*"])
    assert sorted(p.name for p in written) == [
        "surface_3d.png",
        "surface_e0-s0_contour.png",
        "surface_e0.1-s0_contour.png",
    ]
