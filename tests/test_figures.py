"""The recipe runner: a tiny recipe folder run end to end, the cache, and the collect renderers."""

from pathlib import Path

import numpy as np
import pytest

from landscape import store
from landscape.figures import load_recipes, run_figures
from landscape.plots import render_file
from landscape.util import BadInput

BASE = 'dataset = "digits", arch = "mlp", width = 1, batch_size = 256'

RECIPE = f"""
name = "tiny"
paper = "a test recipe"
claim = "the runner trains, collects and renders"
check = "table"

[quick.models]
a = {{ {BASE}, epochs = 1, eps = 0.0 }}
b = {{ {BASE}, epochs = 1, eps = 0.1 }}

[[quick.steps]]
collect = "traces"
each = ["a", "b"]
window = 5

[[quick.steps]]
collect = "sweep"
name = "lr"
x = "lr"
values = [1e-3, 1e-2]
base = {{ {BASE}, epochs = 1, eps = 0.1 }}
series.constant = {{ eps_schedule = "constant" }}
series.linear = {{ eps_schedule = "linear", eps_max = 0.2 }}

[[quick.steps]]
collect = "table"
name = "rows"
eps = 0.1
samples = 100
base = {{ {BASE}, eps = 0.1, epochs = 2 }}
rows.plain = {{ eps_schedule = "constant" }}
rows.periodic = {{ periods = [1], lr_schedule = "cosine", ensemble = "period_*.pt" }}

[[quick.steps]]
collect = "schedules"
name = "s"
epochs = 10
curves = {{ cosine = {{ kind = "cosine", target = 0.3, eps_max = 0.45 }} }}

[[quick.steps]]
analysis = "hessian"
each = ["b"]
options = {{ top = 2, random_samples = 1 }}
data = {{ samples = 64 }}
"""


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory, device):
    root = tmp_path_factory.mktemp("recipes")
    (root / "recipes").mkdir()
    (root / "recipes" / "tiny.toml").write_text(RECIPE)
    log: list[str] = []
    outcomes = run_figures(
        "quick",
        runs=root / "runs",
        out=root / "figs",
        device=device,
        folder=root / "recipes",
        log=log.append,
    )
    return root, outcomes, log


def test_recipe_runs_end_to_end(recipe_run):
    root, outcomes, log = recipe_run
    (outcome,) = outcomes
    names = sorted(Path(p).name for p in outcome.files)
    assert names == [
        "hessian_spectrum.png",
        "schedule_s.png",
        "sweep_lr.png",
        "table_rows.png",
        "trace.png",
        "trace_loss.png",
    ]
    index = (root / "figs" / "index.md").read_text()
    assert "## tiny: a test recipe" in index and "![tiny: trace](tiny/trace.png)" in index
    assert "**Measured.** clean/robust test error: plain:" in index
    groups = [g for g, _ in store.list_groups(root / "runs" / "tiny.h5")]
    assert {"/trace/a", "/trace/b", "/sweep/lr", "/table/rows", "/schedule/s", "/hessian/b"} <= set(
        groups
    )


def test_collected_numbers(recipe_run):
    root, _, _ = recipe_run
    results = root / "runs" / "tiny.h5"
    sweep, attrs = store.read_group(results, "/sweep/lr")
    assert np.array_equal(sweep["x"], [1e-3, 1e-2]) and attrs["x_key"] == "lr"
    assert np.all(
        (sweep["linear_robust_error_mean"] >= 0) & (sweep["linear_robust_error_mean"] <= 1)
    )
    assert np.all(sweep["constant_robust_error_std"] == 0)  # one seed
    table, _ = store.read_group(results, "/table/rows")
    assert [r.decode() if isinstance(r, bytes) else r for r in table["row"]] == [
        "plain",
        "periodic",
    ]
    sched, _ = store.read_group(results, "/schedule/s")
    assert sched["cosine"][0] == 0 and sched["cosine"][-1] == 0.3
    trace, attrs = store.read_group(results, "/trace/b")
    assert attrs["window"] == 5 and trace["distance_from_init"][0] == 0


def test_second_run_computes_nothing(recipe_run, device):
    root, _, _ = recipe_run
    checkpoints = sorted((root / "runs" / "checkpoints").iterdir())
    stamps = {p: (p / "final.pt").stat().st_mtime_ns for p in checkpoints}
    hessian_created = store.read_group(root / "runs" / "tiny.h5", "/hessian/b")[1]["created"]
    log: list[str] = []
    run_figures(
        "quick",
        runs=root / "runs",
        out=root / "figs",
        device=device,
        folder=root / "recipes",
        log=log.append,
    )
    assert not any(line.strip().startswith("train ") for line in log)
    assert {p: (p / "final.pt").stat().st_mtime_ns for p in checkpoints} == stamps
    assert (
        store.read_group(root / "runs" / "tiny.h5", "/hessian/b")[1]["created"] == hessian_created
    )


def test_shipped_recipes_load_and_name_known_steps():
    import landscape
    from landscape.analysis import analyses
    from landscape.figures import COLLECTORS, RECIPE_DIR

    assert RECIPE_DIR == Path(landscape.__file__).parent / "recipes"  # shipped in the package
    recipes = load_recipes()
    assert len(recipes) >= 18
    for recipe in recipes.values():
        for mode in ("quick", "full"):
            for step in recipe.plan(mode).get("steps", []):
                kind = analyses().get(step.get("analysis"))
                assert kind is not None or step.get("collect") in COLLECTORS, recipe.name
                if kind is not None and kind.takes != "pair":  # the options build the analysis
                    options = {
                        k: v for k, v in step.get("options", {}).items() if "{" not in str(v)
                    }
                    kind.from_options(options)


def test_unknown_recipe_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="unknown recipe"):
        run_figures("quick", only=["liu-fig99"], runs=tmp_path, out=tmp_path)


def test_evalcurve_renderer(tmp_path):
    path = tmp_path / "r.h5"
    for name, offset in (("AT", 0.0), ("EnSGD", 0.05)):
        arrays = {
            "epoch": np.arange(1.0, 4.0),
            "wall_time": np.array([1.0, 2.0, 3.0]),
            "robust_error": np.array([0.6, 0.5, 0.4]) - offset,
            "clean_error": np.array([0.3, 0.2, 0.1]),
        }
        attrs = store.provenance(command="test", config={})
        attrs["label"] = name
        store.write_group(path, f"/evalcurve/{name}", arrays, attrs)
    written = render_file(path, tmp_path / "out", formats=("png", "html"))
    assert sorted(p.name for p in written) == ["robust_accuracy.html", "robust_accuracy.png"]
    assert "EnSGD" in (tmp_path / "out" / "robust_accuracy.html").read_text()
