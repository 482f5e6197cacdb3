"""The recipe runner: a tiny recipe folder run end to end, the cache, and the collect renderers."""

import json
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
check = "rows_better"
check_options = {{ better = [["periodic", "plain"]] }}

[quick.models]
a = {{ {BASE}, epochs = 1, eps = 0.0 }}
b = {{ {BASE}, epochs = 1, eps = 0.1 }}

[[quick.steps]]
collect = "traces"
each = ["a", "b-s1"]
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
seeds = [0, 1]
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
    assert "## tiny" in index and "![tiny: trace](tiny/trace.png)" in index
    found = json.loads((root / "figs" / "tiny" / "verdict.json").read_text())
    assert found["status"] in ("holds", "partly", "does not hold")
    # the verdict opens the entry, before the claim
    entry = index[index.index("## tiny") :]
    assert entry.index(f"**Verdict: {found['status']}.**") < entry.index("**Claim.**")
    assert f"| [tiny](#tiny) | a test recipe | {found['status']} |" in index
    groups = [g for g, _ in store.list_groups(root / "runs" / "tiny.h5")]
    assert {
        "/trace/a",
        "/trace/b-s1",
        "/sweep/lr",
        "/table/rows",
        "/schedule/s",
        "/hessian/b",
        "/models/a",
        "/models/b",
        "/models/b-s1",
    } <= set(groups)


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
    # two seeds per row: the mean and the sample std of the per-seed errors
    per_seed = table["robust_error_seeds"]
    assert per_seed.shape == (2, 2)
    assert np.allclose(table["robust_error"], per_seed.mean(1))
    assert np.allclose(table["robust_error_std"], per_seed.std(1, ddof=1))
    assert list(table["seeds"]) == [2, 2]
    # a model id with -s<seed> is that model trained with that seed: its own folder
    _, seeded = store.read_group(results, "/trace/b-s1")
    assert json.loads(seeded["config"])["seed"] == 1
    models = {name: store.read_group(results, f"/models/{name}") for name in ("a", "b", "b-s1")}
    assert len({attrs["checkpoint_sha256"] for _, attrs in models.values()}) == 3
    hessian_sha = store.read_group(results, "/hessian/b")[1]["checkpoint_sha256"]
    assert models["b"][1]["checkpoint_sha256"] == hessian_sha
    arrays, attrs = models["a"]
    assert 0 <= arrays["test_error"][0] <= arrays["test_error"][1] <= 1
    assert abs(attrs["chance_error"] - (1 - 37 / 357)) < 0.02  # digits' test labels
    sched, _ = store.read_group(results, "/schedule/s")
    assert sched["cosine"][0] == 0 and sched["cosine"][-1] == 0.3
    trace, attrs = store.read_group(results, "/trace/b-s1")
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
    assert len(recipes) >= 19
    for recipe in recipes.values():
        assert "quick" in recipe.modes and "full" in recipe.modes, recipe.name
        for mode in recipe.modes:
            for step in recipe.plan(mode).get("steps", []):
                kind = analyses().get(step.get("analysis"))
                assert kind is not None or step.get("collect") in COLLECTORS, recipe.name
                if kind is not None and kind.takes != "pair":  # the options build the analysis
                    options = {
                        k: v for k, v in step.get("options", {}).items() if "{" not in str(v)
                    }
                    kind.from_options(options)


@pytest.mark.parametrize("mode", ["quick", "mnist", "full"])
def test_every_tier_plans_its_models(mode, tmp_path):
    """Each tier's graph builds (every model id and check name resolves) without training;
    the mnist tier's models are real MNIST at the paper's LeNet, three seeds each."""
    from landscape.figures import Runner, plan_graph
    from landscape.verdicts import CHECKS

    runner = Runner(mode, runs=tmp_path, out=tmp_path, device="cpu", data_root=None)
    chosen = [r for r in load_recipes().values() if mode in r.modes]
    assert all(r.check in CHECKS for r in chosen if r.check)
    graph = plan_graph(runner, chosen)
    assert graph.trainings
    if mode == "mnist":
        names = {r.name for r in chosen}
        assert {"liu-fig1", "liu-fig2", "liu-fig3", "liu-fig15"} <= names
        assert {"kanai-fig3", "kanai-fig7", "kanai-table1", "smoothness"} <= names
        labels = {t.label for t in graph.trainings.values()}
        assert {f"m-e02-s{s}" for s in range(3)} <= labels
        assert {t.fields["dataset"] for t in graph.trainings.values()} == {"mnist5k"}


def test_tier_dataset_is_swapped_for_a_full_mnist(tmp_path):
    from landscape.figures import Runner, plan_graph

    runner = Runner(
        "mnist", runs=tmp_path, out=tmp_path, device="cpu", data_root=None, dataset="mnist"
    )
    recipes = load_recipes()
    graph = plan_graph(runner, [recipes["liu-fig2"]])
    assert {t.fields["dataset"] for t in graph.trainings.values()} == {"mnist"}
    # A table's rows are swapped too, so they stay the models the figures draw: Kanai's
    # 4 methods x 3 seeds once, not once per recipe.
    kanai = plan_graph(runner, [recipes["kanai-fig3"], recipes["kanai-table1"]])
    assert {t.fields["dataset"] for t in kanai.trainings.values()} == {"mnist"}
    assert len(kanai.trainings) == 12
    full = Runner(
        "full", runs=tmp_path, out=tmp_path, device="cpu", data_root=None, dataset="mnist5k"
    )
    sweep = plan_graph(full, [recipes["liu-fig4"]])
    assert {t.fields["dataset"] for t in sweep.trainings.values()} == {"mnist5k"}


def test_seeds_expand_single_models_and_refuse_pairs():
    from landscape.figures import split_seed, step_items

    assert step_items({"each": ["e0", "e01"], "seeds": [0, 2]}) == [
        "e0-s0",
        "e0-s2",
        "e01-s0",
        "e01-s2",
    ]
    assert split_seed("m-e01-s12") == ("m-e01", 12) and split_seed("e01") == ("e01", None)
    with pytest.raises(BadInput, match="pairs"):
        step_items({"each": [["a", "b"]], "seeds": [0]})


def test_lr_curves_follow_the_trainer_with_periodic_resets(tmp_path):
    """Liu Fig. 6: the recipe's LR curves are the trainer's own schedule, reset per period."""
    run_figures("quick", only=["liu-fig7"], runs=tmp_path / "runs", out=tmp_path / "out")
    arrays, attrs = store.read_group(tmp_path / "runs" / "liu-fig7.h5", "/schedule/lr-resnet18")
    assert attrs["quantity"] == "lr"
    epoch = arrays["epoch"]
    before, after = epoch < 100, (epoch >= 100) & (epoch < 150)
    assert np.allclose(arrays["vanilla"][before], 0.1)
    assert np.allclose(arrays["vanilla"][after], 0.01)
    assert arrays["periodic"][after][0] == pytest.approx(0.1)  # reset at epoch 100
    assert arrays["periodic"][epoch < 100].min() == pytest.approx(0.001)


def _hessian_recipe(each: str, top: int) -> str:
    return f"""
name = "edited"
paper = "a test recipe"
claim = "a changed recipe replaces its results only when asked"
[quick.models]
a = {{ {BASE}, epochs = 1, eps = 0.0 }}
b = {{ {BASE}, epochs = 1, eps = 0.1 }}
[[quick.steps]]
analysis = "hessian"
each = {each}
options = {{ top = {top}, random_samples = 1 }}
data = {{ samples = 64 }}
"""


def test_changed_recipe_is_refused_unless_overwrite(tmp_path, device):
    """An edited recipe: refused (nothing lost) without --overwrite; with it, the changed
    run is recomputed, the run and model the recipe dropped leave its results file, and
    the trained models stay cached."""
    folder, results = tmp_path / "recipes", tmp_path / "runs" / "edited.h5"
    folder.mkdir()
    recipe = folder / "edited.toml"
    recipe.write_text(_hessian_recipe('["a", "b"]', 2))
    kwargs = dict(runs=tmp_path / "runs", out=tmp_path / "figs", device=device, folder=folder)
    run_figures("quick", **kwargs)
    before = {g for g, _ in store.list_groups(results)}
    assert {"/hessian/a", "/hessian/b", "/models/a", "/models/b"} <= before
    recipe.write_text(_hessian_recipe('["a"]', 3))
    with pytest.raises(BadInput, match="another config.*--overwrite"):
        run_figures("quick", **kwargs)
    assert {g for g, _ in store.list_groups(results)} == before
    assert store.read_group(results, "/hessian/a")[0]["eigenvalues"].shape == (2,)
    log: list[str] = []
    run_figures("quick", overwrite=True, log=log.append, **kwargs)
    after = {g for g, _ in store.list_groups(results)}
    assert "/hessian/b" not in after and "/models/b" not in after
    assert store.read_group(results, "/hessian/a")[0]["eigenvalues"].shape == (3,)
    assert not any(line.strip().startswith("train ") for line in log)
    assert any("dropped /hessian/b" in line for line in log)


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
