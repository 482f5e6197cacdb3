"""`landscape.hessian`: the analysis, its HDF5 group, its renderer and the `hessian` command."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from landscape.attacks import attack_config, pgd
from landscape.checkpoint import load_checkpoint
from landscape.cli import cli, main
from landscape.curvature import HessianOperator, top_eigenpairs
from landscape.data import load_dataset
from landscape.hessian import (
    eigen_directions,
    hessian,
    load_eigenvectors,
    load_hessian,
    store_hessian,
)
from landscape.params import global_norm
from landscape.plots import render_file
from landscape.store import provenance, read_group
from landscape.util import BadInput

N = 96


@pytest.fixture(scope="module")
def lenet(digits_run):
    """The shared digits LeNet w=1 (1994 parameters), its spec and 96 training images."""
    model, spec = load_checkpoint(digits_run / "final.pt")
    X, y = load_dataset("digits", "train", None, "cpu")
    return model, spec, X[:N], y[:N]


def test_hessian_on_fixed_adversarial_examples(lenet):
    model, spec, X, y = lenet
    res = hessian(model, X, y, 0.1, top=5, spec=spec, random_samples=3, batch_size=40)
    # The same examples, generated once at theta with seed 0, in a separate computation.
    X_adv = pgd(model, X, y, 0.1, seed=0, batch_size=40)
    direct = top_eigenpairs(HessianOperator(model, X_adv, y), 5)
    pairs = res.eigenpairs
    assert np.allclose(pairs.eigenvalues, direct.eigenvalues, rtol=1e-4)
    assert pairs.residuals.max() < 1e-3 * pairs.eigenvalues[0]
    assert res.loss_scale.random_losses.shape == (3,) and res.loss_scale.init == "spec"
    # Fresh initializations predict about uniformly: the loss is near ln 10 (Liu et al.: ~2.30).
    scale = res.loss_scale
    assert np.all(np.abs(scale.random_losses - math.log(10)) < 0.3)
    assert scale.scale == pytest.approx(scale.random_losses.mean())
    assert np.allclose(pairs.normalized, pairs.eigenvalues / scale.scale)
    assert res.n_hvp >= 5 and pairs.method == "lanczos" and pairs.eigenvectors is None
    assert res.matrix == "hessian"
    assert len(res.param_names) == len(res.param_shapes) == 8
    assert res.trace is None and res.density is None
    # Fixed-seed PGD makes the analysis repeatable.
    again = hessian(model, X, y, 0.1, top=5, random_samples=0, batch_size=40)
    assert np.allclose(again.eigenpairs.eigenvalues, pairs.eigenvalues, rtol=1e-4)
    assert math.isnan(again.loss_scale.scale) and again.loss_scale.init == "none"
    assert np.all(np.isnan(again.eigenpairs.normalized))


def test_hessian_options_are_validated(lenet):
    model, spec, X, y = lenet
    with pytest.raises(BadInput, match="top 0"):
        hessian(model, X, y, top=0, spec=spec)
    with pytest.raises(BadInput, match="'fc9\\*' matches no parameter"):
        hessian(model, X, y, top=3, spec=spec, params=["fc9*"])
    with pytest.raises(BadInput, match="unknown method"):
        hessian(model, X, y, top=3, spec=spec, method="bogus")
    with pytest.raises(BadInput, match="disagrees"):
        hessian(model, X, y, 0.1, top=3, random_samples=0, attack=attack_config(0.2))


def test_store_round_trip_and_eigenvectors(lenet, tmp_path):
    model, spec, X, y = lenet
    res = hessian(
        model,
        X,
        y,
        top=4,
        params=["fc*"],
        random_samples=0,
        save_vectors=True,
        trace=True,
        density=True,
    )
    assert res.param_names == ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    assert np.isfinite(res.trace.mean) and res.trace.stderr > 0 and res.density.density.size == 1000
    path = tmp_path / "r.h5"
    attrs = provenance(command="test", config={"eps": 0.0}, checkpoint="final.pt")
    assert store_hessian(path, "run", res, attrs) == "/hessian/run"
    back = load_hessian(path, "/hessian/run")
    assert np.array_equal(back.eigenpairs.eigenvectors, res.eigenpairs.eigenvectors)
    for part in ("eigenvalues", "normalized", "residuals"):
        assert np.array_equal(
            getattr(back.eigenpairs, part), getattr(res.eigenpairs, part), equal_nan=True
        )
    assert np.array_equal(back.loss_scale.random_losses, res.loss_scale.random_losses)
    assert back.density.density.tolist() == res.density.density.tolist()
    assert back.trace == res.trace and back.matrix == res.matrix
    for field in ("n_hvp", "param_names", "param_shapes", "loss"):
        assert getattr(back, field) == getattr(res, field)
    with h5py.File(path) as f:
        g = f["/hessian/run"]
        assert g["eigenvalues"].dims[0][0].name == "/hessian/run/index"
        assert list(g["index"][()]) == [1, 2, 3, 4] and g["eigenvectors"].shape == (4, 1738)
        assert json.loads(g.attrs["param_names"])[0] == "fc1.weight"
        assert g.attrs["status"] == "complete" and g.attrs["method"] == "lanczos"
    directions = load_eigenvectors(path, "/hessian/run")
    assert len(directions) == 4 and list(directions[0]) == list(res.param_names)
    assert directions[0]["fc1.weight"].shape == (64, 16)
    assert all(float(global_norm(d)) == pytest.approx(1.0, abs=1e-5) for d in directions)
    computed = eigen_directions(model, X, y, 2, params=["fc*"])
    for a, b in zip(computed, directions):
        assert abs(sum(float((a[n] * b[n]).sum()) for n in a)) == pytest.approx(1.0, abs=1e-4)
    plain = hessian(model, X, y, top=2, random_samples=0)
    store_hessian(path, "plain", plain, attrs)
    with pytest.raises(BadInput, match="--save-vectors"):
        load_eigenvectors(path, "plain")


def run_cli(*args):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_cli_two_eps_cache_and_plot(digits_run, tmp_path):
    out = tmp_path / "r.h5"
    args = [
        "hessian", str(digits_run / "final.pt"), "--eps", "0", "--eps", "0.1", "--top", "3",
        "--samples", str(N), "--random-samples", "2", "--out", str(out), "--device", "cpu", "--json",
    ]  # fmt: skip
    code, output = run_cli(*args)
    assert code == 0, output
    rows = json.loads(output[output.index("{") :])
    groups = ["/hessian/final_eps0_normlinf", "/hessian/final_eps0.1_normlinf"]
    assert list(rows) == groups and not any(r["cached"] for r in rows.values())
    for group, eps in zip(groups, (0.0, 0.1)):
        arrays, attrs = read_group(out, group)
        assert arrays["eigenvalues"].shape == (3,) and arrays["random_losses"].shape == (2,)
        assert json.loads(attrs["config"])["eps"] == eps and attrs["n_hvp"] > 0
    created = [read_group(out, g)[1]["created"] for g in groups]
    code, output = run_cli(*args)
    assert code == 0 and all(r["cached"] for r in json.loads(output[output.index("{") :]).values())
    assert [read_group(out, g)[1]["created"] for g in groups] == created
    written = render_file(out, tmp_path / "figs", formats=("png", "html"))
    assert sorted(p.name for p in written) == ["hessian_spectrum.html", "hessian_spectrum.png"]
    assert all(p.stat().st_size > 1000 for p in written)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--top", "0"], "--top"),
        (["--top", "1994"], "--top 1994"),
        (["--params", "nope*"], "'nope*' matches no parameter"),
        (["--method", "bogus"], "--method"),
        (["--eps", "-1"], "eps"),
    ],
)
def test_cli_bad_inputs_exit_2_and_write_nothing(digits_run, tmp_path, capsys, options, message):
    out = tmp_path / "r.h5"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "hessian",
                str(digits_run / "final.pt"),
                "--out",
                str(out),
                "--device",
                "cpu",
                *options,
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []
