import h5py
import numpy as np
import pytest

from landscape import store
from landscape.util import BadInput


def attrs(config):
    return store.provenance(
        command="test", config=config, checkpoint="a.pt", device="cpu", seed=1, elapsed_s=0.5
    )


def test_group_round_trip_with_provenance_and_scales(tmp_path):
    path = tmp_path / "r.h5"
    x, y = np.linspace(-1, 1, 3), np.linspace(0, 1, 4)
    loss = np.arange(12.0).reshape(3, 4)
    store.write_group(
        path,
        "/surface/run",
        {"x": x, "y": y, "loss": loss},
        attrs({"eps": 0.1}),
        dims={"loss": ("x", "y")},
    )
    arrays, a = store.read_group(path, "/surface/run")
    assert np.array_equal(arrays["loss"], loss) and np.array_equal(arrays["x"], x)
    for key in store.PROVENANCE_KEYS:
        assert key in a
    assert a["status"] == "complete" and a["seed"] == 1
    with h5py.File(path) as f:
        ds = f["/surface/run/loss"]
        assert ds.dims[0][0].name == "/surface/run/x" and ds.dims[1][0].name == "/surface/run/y"
        assert f.attrs["landscape_format"] == store.FORMAT


def test_groups_accumulate_and_config_clash(tmp_path):
    path = tmp_path / "r.h5"
    store.write_group(path, "/a/one", {"v": [1.0]}, attrs({"k": 1}))
    store.write_group(path, "/a/two", {"v": [2.0]}, attrs({"k": 2}))
    assert [g for g, _ in store.list_groups(path)] == ["/a/one", "/a/two"]
    with pytest.raises(BadInput, match="another config"):
        store.write_group(path, "/a/one", {"v": [3.0]}, attrs({"k": 3}))
    assert store.read_group(path, "/a/one")[0]["v"][0] == 1.0  # untouched
    store.write_group(path, "/a/one", {"v": [3.0]}, attrs({"k": 3}), overwrite=True)
    assert store.read_group(path, "/a/one")[0]["v"][0] == 3.0
    assert store.find_complete(path, "/a/two", {"k": 2})
    with pytest.raises(BadInput):
        store.find_complete(path, "/a/two", {"k": 5})


def test_foreign_and_broken_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = [1, 2, 3]
    before = foreign.read_bytes()
    with pytest.raises(BadInput, match="another tool"):
        store.write_group(foreign, "/a/b", {"v": [1.0]}, attrs({}))
    assert foreign.read_bytes() == before
    with pytest.raises(BadInput, match="another tool"):
        store.list_groups(foreign)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(BadInput):
        store.read_group(junk, "/a")
    with pytest.raises(BadInput):
        store.write_group(junk, "/a/b", {"v": [1.0]}, attrs({}))
    assert junk.read_bytes() == b"not hdf5 at all"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.h5", "junk.h5"]


def test_failed_write_leaves_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "r.h5"
    store.write_group(path, "/a/one", {"v": [1.0]}, attrs({"k": 1}))
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise RuntimeError("crash in the middle of a write")

    monkeypatch.setattr(store, "_set_attrs", explode)
    with pytest.raises(RuntimeError):
        store.write_group(path, "/a/two", {"v": [2.0]}, attrs({"k": 2}))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]


def test_grid_resumes_from_sidecar(tmp_path):
    path = tmp_path / "r.h5"
    cfg = {"range": [0, 1, 4]}
    grid = store.Grid(path, "/surface/g", cfg, (2, 2), ["loss"], flush_seconds=0)
    grid.record((0, 0), {"loss": 1.0})
    grid.record((1, 1), {"loss": 4.0})
    assert grid.sidecar.exists() and not path.exists()
    again = store.Grid(path, "/surface/g", cfg, (2, 2), ["loss"], flush_seconds=0)
    assert again.pending() == [(0, 1), (1, 0)]
    for idx, v in zip(again.pending(), (2.0, 3.0)):
        again.record(idx, {"loss": v})
    assert again.complete
    again.finish({"x": np.arange(2.0), "y": np.arange(2.0)}, attrs(cfg), dims={"loss": ("x", "y")})
    arrays, a = store.read_group(path, "/surface/g")
    assert np.array_equal(arrays["loss"], [[1, 2], [3, 4]]) and arrays["done"].all()
    assert not again.sidecar.exists()
    with pytest.raises(BadInput):
        store.Grid(path, "/surface/g", {"range": [0, 2, 4]}, (2, 2), ["loss"])


def test_grid_sidecar_with_other_config_needs_overwrite(tmp_path):
    path = tmp_path / "r.h5"
    grid = store.Grid(path, "/s/g", {"a": 1}, (3,), ["loss"], flush_seconds=0)
    grid.record((0,), {"loss": 1.0})
    with pytest.raises(BadInput, match="partial work"):
        store.Grid(path, "/s/g", {"a": 2}, (3,), ["loss"])
    fresh = store.Grid(path, "/s/g", {"a": 2}, (3,), ["loss"], overwrite=True)
    assert len(fresh.pending()) == 3


def test_run_names_are_sanitized():
    assert store.safe_run_name("final eps=8/255") == "final_eps=8_255"
    with pytest.raises(BadInput):
        store.safe_run_name("///")
