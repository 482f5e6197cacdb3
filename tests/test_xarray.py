"""Every group landscape writes opens with xarray through h5netcdf, with its dimensions and
coordinates named, and xarray reads the same numbers as landscape's own reader."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from landscape import store
from landscape.cli import main
from landscape.figures import COLLECTORS, Runner
from landscape.train import TrainConfig, train

TINY = {"dataset": "digits", "arch": "linear", "batch_size": 256}


def run_cli(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0, args


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    """A linear digits model trained 2 epochs at eps 0.1, evaluated each epoch, with a
    middle checkpoint (a 3-checkpoint trajectory for PCA directions)."""
    out = tmp_path_factory.mktemp("linear_run")
    config = TrainConfig(**TINY, epochs=2, eps=0.1, save_epochs=(1,), eval_every=1, eval_samples=50)
    train(config, out, device="cpu")
    return out


@pytest.fixture(scope="module")
def results(linear_run, tmp_path_factory):
    """One results file holding a group of every analysis, computed small."""
    out = str(tmp_path_factory.mktemp("xarray") / "results.h5")
    final, init = str(linear_run / "final.pt"), str(linear_run / "init.pt")
    small = ["--samples", "40", "--device", "cpu", "--out", out]
    grid = ["--range", "-1:1:3"]
    for args in (
        ["hessian", final, "--top", "2", "--save-vectors", "--trace", "--density", "--name", "h"],
        ["hessian", final, "--top", "2", "--random-samples", "0", "--name", "bare"],
        ["surface", final, *grid, "--eps", "0.1", "--name", "line"],
        ["surface", final, *grid, "--dirs", "pca", "--trajectory", str(linear_run), "--dim", "2"],
        ["cosine", final, "--range", "0:1:3", "--repeats", "1", "--eps", "0.1"],
        ["smoothness", final, "--radii", "1e-2:1:3", "--eps", "0.1", "--directions", "1"],
        ["connect", final, init, "--epochs", "1", "--points", "3", "--bn-samples", "40"],
    ):
        run_cli([*args, *small])
    for figure in ("kanai-fig2", "kanai-fig4-5", "liu-fig5", "liu-thm1"):
        run_cli(
            ["toy", figure, "--grid", "5", "--samples", "10", "--train-steps", "20", "--out", out]
        )
    return out


# group -> (its dimensions, its coordinates, some variables' dimensions)
EXPECTED = {
    "/hessian/h": (
        {"index", "parameter", "random_sample", "density_grid"},
        {"index", "density_grid"},
        {
            "eigenvalues": ("index",),
            "eigenvectors": ("index", "parameter"),
            "random_losses": ("random_sample",),
            "density": ("density_grid",),
        },
    ),
    "/hessian/bare": ({"index", "random_sample"}, {"index"}, {"residuals": ("index",)}),
    "/surface/line": ({"x"}, {"x"}, {"loss": ("x",), "adv_error": ("x",), "done": ("x",)}),
    "/surface/final_dirspca": (
        {"x", "y", "direction", "checkpoint"},
        {"x", "y"},
        {
            "loss": ("x", "y"),
            "nonfinite": ("x", "y"),
            "trajectory": ("checkpoint", "direction"),
            "explained_variance_ratio": ("direction",),
        },
    ),
    "/cosine/": ({"alpha"}, {"alpha"}, {"cosine_top_mean": ("alpha",), "done": ("alpha",)}),
    "/smoothness/": ({"radius"}, {"radius"}, {"lipschitz_linf_mean": ("radius",)}),
    "/connect/": ({"t"}, {"t"}, {"train_loss": ("t",), "line_test_error": ("t",)}),
    "/toy/kanai-fig2": (
        {"x", "y", "sample", "feature"},
        {"x", "y"},
        {"swish_linf": ("x", "y"), "inputs": ("sample", "feature"), "labels": ("sample",)},
    ),
    "/toy/kanai-fig4-5": ({"x", "y", "sample", "feature"}, {"x", "y"}, {"smoothed_l2": ("x", "y")}),
    "/toy/liu-fig5": ({"eps", "x"}, {"eps", "x"}, {"adv": ("eps", "x"), "clean": ("x",)}),
    "/toy/liu-thm1": (
        {"x", "step", "sample", "feature"},
        {"x", "step"},
        {"weight_norm_trace": ("x", "step"), "robust_error": ("x",)},
    ),
}


def assert_opens(path, group: str, dims: set, coords: set, variables: dict) -> xr.Dataset:
    """The group through xarray: named dimensions, coordinates, and landscape's numbers."""
    arrays, attrs = store.read_group(path, group)
    with xr.open_dataset(path, group=group, engine="h5netcdf") as ds:
        ds.load()
    assert set(ds.sizes) == dims, group
    assert set(ds.coords) == coords, group
    for name, named in variables.items():
        assert ds[name].dims == named, (group, name)
    assert set(ds.variables) == set(arrays), group  # bare dimensions are no data
    for name, values in arrays.items():
        if values.dtype.kind in "OS":  # text: h5py reads bytes, xarray decodes them
            values = np.array([v.decode() for v in values.ravel()]).reshape(values.shape)
        np.testing.assert_array_equal(ds[name].values, values, err_msg=f"{group}:{name}")
    assert ds.attrs["config"] == attrs["config"]
    return ds


@pytest.mark.parametrize("prefix", list(EXPECTED))
def test_analysis_groups_open_with_xarray(results, prefix):
    (group,) = [g for g, _ in store.list_groups(results) if g.startswith(prefix)]
    assert_opens(results, group, *EXPECTED[prefix])


def test_hessian_parameter_axis_is_a_bare_dimension(results):
    """The eigenvectors' parameter axis is named but stores no data: the file stays small
    and landscape's reader does not return it."""
    import h5py

    arrays, _ = store.read_group(results, "/hessian/h")
    assert "parameter" not in arrays and arrays["eigenvectors"].shape[1] == 650
    with h5py.File(results) as f:
        bare = f["/hessian/h/parameter"]
        assert store.is_bare_dimension(bare) and bare.id.get_storage_size() == 0
        assert not store.is_bare_dimension(f["/hessian/h/index"])


def test_trace_has_one_step_dimension(linear_run):
    """epoch, eps and lr run along `step`; they are not dimensions of their own."""
    ds = assert_opens(
        linear_run / "trace.h5",
        "/trace",
        {"step"},
        {"step"},
        {k: ("step",) for k in ("epoch", "eps", "lr", "loss", "grad_norm")},
    )
    assert ds.sizes["step"] == 12 and np.all(np.diff(ds["epoch"].values) > 0)
    evals = assert_opens(
        linear_run / "trace.h5", "/eval", {"epoch"}, {"epoch"}, {"robust_error": ("epoch",)}
    )
    assert evals["epoch"].values.tolist() == [1.0, 2.0]


class TrainedRunner(Runner):
    """A recipe runner whose every model is the one already trained (no training here)."""

    def __init__(self, folder, tmp_path):
        super().__init__("quick", runs=tmp_path, out=tmp_path, device="cpu", data_root=None)
        self.folder_of_model = folder

    def trained(self, fields, label):
        return self.folder_of_model


def test_recipe_groups_open_with_xarray(linear_run, tmp_path):
    """The groups `landscape figures` collects: traces, evals, sweep, table, schedules."""
    results = tmp_path / "recipe.h5"
    runner = TrainedRunner(linear_run, tmp_path)
    plan = {"models": {"a": dict(TINY)}}
    steps = [
        {"collect": "traces", "each": ["a"], "window": 3},
        {"collect": "evals", "each": ["a"]},
        {"collect": "sweep", "name": "lr", "x": "lr", "values": [1e-3, 1e-2], "base": TINY}
        | {"series": {"constant": {}}},
        {"collect": "table", "name": "rows", "eps": 0.1, "samples": 50, "base": TINY}
        | {"rows": {"plain": {}, "again": {}}},
        {"collect": "schedules", "name": "s", "epochs": 10, "points": 7}
        | {"curves": {"cosine": {"kind": "cosine", "target": 0.3, "eps_max": 0.45}}},
    ]
    for step in steps:
        COLLECTORS[step["collect"]](runner, plan, step, results)
    assert_opens(results, "/trace/a", {"step"}, {"step"}, {"epoch": ("step",), "lr": ("step",)})
    assert_opens(results, "/evalcurve/a", {"epoch"}, {"epoch"}, {"wall_time": ("epoch",)})
    assert_opens(results, "/sweep/lr", {"x"}, {"x"}, {"constant_robust_error_mean": ("x",)})
    table = assert_opens(results, "/table/rows", {"index"}, {"index"}, {"row": ("index",)})
    assert table["row"].values.tolist() == ["plain", "again"]
    assert_opens(results, "/schedule/s", {"epoch"}, {"epoch"}, {"cosine": ("epoch",)})


def test_unnamed_axes_get_names_and_equal_lengths_stay_apart(tmp_path):
    """Without `dims`, an axis takes the one coordinate of its length, else a name of its
    own; `dims` decides between coordinates of equal length; masks follow a grid's fields."""
    path = tmp_path / "r.h5"
    attrs = store.provenance(command="test", config={})
    x, y = np.arange(3.0), np.arange(3.0) + 10
    arrays = {"x": x, "y": y, "loss": np.ones((3, 3)), "table": np.zeros((2, 5)), "t": x}
    store.write_group(path, "/a/run", arrays, attrs, dims={"loss": ("y", "x"), "t": ("y",)})
    assert_opens(
        path,
        "/a/run",
        {"x", "y", "table_dim0", "table_dim1"},
        {"x", "y"},
        {"loss": ("y", "x"), "t": ("y",), "table": ("table_dim0", "table_dim1")},
    )
    grid = store.Grid(path, "/surface/g", {"k": 1}, (3, 3), ["loss"], flush_seconds=0)
    for index in grid.pending():
        grid.record(index, {"loss": float(sum(index))})
    grid.finish({"x": x, "y": y}, attrs, dims={"loss": ("x", "y")})
    assert_opens(
        path,
        "/surface/g",
        {"x", "y"},
        {"x", "y"},
        {"loss": ("x", "y"), "done": ("x", "y"), "nonfinite": ("x", "y")},
    )
