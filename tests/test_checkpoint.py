import os
import pickle

import pytest
import torch

from landscape.checkpoint import (
    build_from_spec,
    load_checkpoint,
    model_spec,
    read_checkpoint,
    save_checkpoint,
)
from landscape.util import BadInput


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    spec = model_spec("lenet", "digits", width=2)
    model = build_from_spec(spec)
    path = save_checkpoint(
        tmp_path / "m.pt", model, spec, train={"epoch": 3, "metrics": {"err": 0.1}}
    )
    return path, model, spec


def test_round_trip(saved):
    path, model, spec = saved
    loaded, loaded_spec = load_checkpoint(path)
    assert not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert (
        loaded_spec["arch"] == "lenet"
        and loaded_spec["width"] == 2
        and loaded_spec["train"]["epoch"] == 3
    )
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model.eval()(x), loaded(x))
    # Plain data only: loadable with weights_only=True by anyone.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "landscape-checkpoint" and raw["version"] == 1


def test_atomic_write_leaves_no_temp_files(saved, tmp_path):
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh, protocol=2)
    with pytest.raises(BadInput, match="refused"):
        load_checkpoint(path, arch="lenet", width=2, dataset="digits")
    assert not marker.exists()
    # The same payload inside torch's zip format.
    torch.save({"state_dict": Evil()}, tmp_path / "evil2.pt")
    with pytest.raises(BadInput):
        read_checkpoint(tmp_path / "evil2.pt")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"garbage bytes", None])
def test_missing_empty_truncated(tmp_path, saved, content):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInput):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path, saved):
    path, _, _ = saved
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BadInput, match="truncated"):
        load_checkpoint(cut)


def test_foreign_state_dicts(tmp_path, saved):
    _, model, _ = saved
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    for i, wrapped in enumerate(
        [model.state_dict(), {"state_dict": state}, {"model": model.state_dict()}]
    ):
        path = tmp_path / f"foreign{i}.pt"
        torch.save(wrapped, path)
        with pytest.raises(BadInput, match="--arch"):
            load_checkpoint(path)
        loaded, spec = load_checkpoint(path, arch="lenet", width=2, dataset="digits")
        assert spec["arch"] == "lenet"
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), loaded.state_dict().values())
        )
    with pytest.raises(BadInput, match="does not fit"):
        load_checkpoint(tmp_path / "foreign0.pt", arch="lenet", width=3, dataset="digits")
    with pytest.raises(BadInput, match="does not fit"):
        load_checkpoint(tmp_path / "foreign0.pt", arch="mlp", width=2, dataset="digits")


def test_mismatched_arch_for_own_checkpoint(saved):
    path, _, _ = saved
    with pytest.raises(BadInput, match="arch"):
        load_checkpoint(path, arch="vgg")
    with pytest.raises(BadInput, match="width"):
        load_checkpoint(path, width=4)
