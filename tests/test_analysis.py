"""One way to run an analysis: `landscape.run` caches, stores with provenance and refuses
clashes for any analysis object; the CLI, `figures` and Python users share it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape import store
from landscape.analysis import analyses
from landscape.util import BadInput


@pytest.fixture(scope="module")
def inputs(digits_run):
    return ls.load_inputs(digits_run / "final.pt", samples=48)


def test_the_readme_example_runs_caches_and_plans(inputs, tmp_path):
    out = tmp_path / "results.h5"
    job = ls.Hessian(ls.attack_config(0.1, family=inputs.family), top=3, random_samples=2)
    stored = ls.run(job, inputs, out=out, name="e01")
    assert stored.group == "/hessian/e01" and not stored.cached
    values = stored.result.eigenpairs.eigenvalues
    assert values.shape == (3,) and np.all(np.diff(values) <= 0)
    attrs = store.read_group(out, stored.group)[1]
    assert attrs["status"] == "complete" and attrs["checkpoint"] == inputs.checkpoint
    assert json.loads(attrs["config"]) == job.config(inputs)
    again = ls.run(job, inputs, out=out, name="e01")
    assert again.cached and np.array_equal(again.result.eigenpairs.eigenvalues, values)
    assert store.read_group(out, stored.group)[1]["created"] == attrs["created"]
    plan = ls.plan(job, inputs, out=out, name="e01")
    assert plan.passes.get("hvp", 0) == 0  # stored: nothing to compute
    with pytest.raises(BadInput, match="another config"):
        ls.run(ls.Hessian(job.attack, top=2, random_samples=2), inputs, out=out, name="e01")


def test_an_in_memory_module_is_identified_by_its_state(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    X, y = ls.load_dataset("digits")
    a = ls.Inputs(model, X[:32], y[:32])
    job = ls.Smoothness(ls.attack_config(0.0), radii=(0.01, 0.1), count=2)
    first = ls.run(job, a, out=tmp_path / "r.h5", name="s")
    assert first.result.lipschitz["lipschitz_clean_mean"].shape == (2,)
    with torch.no_grad():
        model[1].bias += 1
    b = ls.Inputs(model, X[:32], y[:32])
    assert a.checkpoint_sha256 != b.checkpoint_sha256
    with pytest.raises(BadInput, match="another config"):
        ls.run(job, b, out=tmp_path / "r.h5", name="s")


def test_options_build_every_analysis_and_unknown_ones_are_refused():
    surface = ls.Surface.from_options({"eps": 0.1, "xrange": "-1:1:5", "dim": 1})
    assert surface.xrange == tuple(np.linspace(-1, 1, 5)) and surface.attack.steps == 20
    smooth = ls.Smoothness.from_options({"eps": 0.1, "radii": "1e-3:1:4"})
    assert smooth.radii == pytest.approx(tuple(np.geomspace(1e-3, 1, 4)))
    with pytest.raises(BadInput, match="no option"):
        ls.Cosine.from_options({"eps": 0.1, "grid": 3})
    assert set(analyses()) == {"hessian", "cosine", "surface", "smoothness", "connect", "toy"}


def test_an_analysis_reads_no_file_the_caller_hands_them_over(inputs, tmp_path):
    job = ls.Surface(ls.attack_config(0.0), dirs="interp", other=("elsewhere.pt",))
    with pytest.raises(BadInput, match="read from files by the caller"):
        ls.run(job, inputs, out=tmp_path / "r.h5", name="s")
