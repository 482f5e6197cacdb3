import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from landscape.checkpoint import load_checkpoint
from landscape.directions import (
    filter_direction,
    filter_normalize,
    inner,
    interpolation_direction,
    make_directions,
    on_params,
    orthogonalize,
    random_direction,
    trajectory_directions,
)
from landscape.models import build_model
from landscape.params import combine, global_norm, named_params
from landscape.util import BadInput


def lenet():
    torch.manual_seed(0)
    return build_model(
        "lenet", input_shape=(1, 8, 8), num_classes=10, mean=[0.3], std=[0.4], width=1
    )


def test_every_filter_has_the_norm_of_its_weight_filter():
    params = named_params(lenet())
    d = filter_direction(params, torch.Generator().manual_seed(1), bias_bn="ignore")
    assert set(d) == set(params)
    for name, w in params.items():
        if w.dim() <= 1:
            assert torch.count_nonzero(d[name]) == 0, name
            continue
        dn = torch.linalg.vector_norm(d[name].flatten(1), dim=1)
        wn = torch.linalg.vector_norm(w.flatten(1), dim=1)
        torch.testing.assert_close(dn, wn, rtol=1e-5, atol=1e-7)
    # Filter mode: each 1-D entry is a filter of size 1, d_j = sign(d_j) |theta_j|.
    raw = random_direction(params, torch.Generator().manual_seed(1), normalize=False)
    f = filter_normalize(raw, params, bias_bn="filter")
    for name, w in params.items():
        if w.dim() == 1:
            assert torch.equal(f[name].abs(), w.abs()) and torch.equal(
                f[name].sign(), raw[name].sign()
            )


def test_filter_normalization_maps_by_name_not_order():
    params = named_params(lenet())
    raw = random_direction(params, torch.Generator().manual_seed(2), normalize=False)
    reversed_params = dict(reversed(list(params.items())))
    a = filter_normalize(raw, params)
    b = filter_normalize(dict(reversed(list(raw.items()))), reversed_params)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(BadInput, match="bias_bn .zero. is not valid"):
        filter_normalize(raw, params, bias_bn="zero")


def test_random_direction_is_seeded_unit_and_orthogonalization_keeps_norms():
    params = named_params(lenet())
    d1 = random_direction(params, torch.Generator().manual_seed(3))
    d2 = random_direction(params, torch.Generator().manual_seed(3))
    assert all(torch.equal(d1[k], d2[k]) for k in d1)
    assert float(global_norm(d1)) == pytest.approx(1.0, abs=1e-6)
    f1 = filter_direction(params, torch.Generator().manual_seed(4))
    f2 = filter_direction(params, torch.Generator().manual_seed(5))
    o1, o2 = orthogonalize([f1, f2])
    assert float(inner(o1, o2)) == pytest.approx(0.0, abs=1e-4)
    assert float(global_norm(o2)) == pytest.approx(float(global_norm(f2)), rel=1e-5)
    assert all(torch.equal(o1[k], f1[k]) for k in f1)
    with pytest.raises(BadInput, match="linearly dependent"):
        orthogonalize([f1, {k: 2 * v for k, v in f1.items()}])


def test_on_params_fills_missing_names_and_refuses_strangers():
    params = named_params(lenet())
    partial = {"fc2.weight": torch.ones_like(params["fc2.weight"])}
    full = on_params(partial, params)
    assert set(full) == set(params) and float(global_norm(full)) == pytest.approx(
        params["fc2.weight"].numel() ** 0.5
    )
    with pytest.raises(BadInput, match="first nope"):
        on_params({"nope": torch.ones(3)}, params)
    with pytest.raises(BadInput, match="another shape"):
        on_params({"fc2.weight": torch.ones(2)}, params)


def test_interpolation_reaches_the_other_checkpoint(digits_run):
    model, spec = load_checkpoint(digits_run / "final.pt")
    other, _ = load_checkpoint(digits_run / "init.pt")
    d = interpolation_direction(model, spec, digits_run / "init.pt")
    end = combine(named_params(model), (1.0, d))
    for k, v in named_params(other).items():
        torch.testing.assert_close(end[k], v)
    with pytest.raises(BadInput, match="2 other checkpoint"):
        make_directions("interp", model, 2, other=[digits_run / "init.pt"], spec=spec)


def test_trajectory_pca_matches_sklearn(digits_run):
    model, spec = load_checkpoint(digits_run / "final.pt")
    traj = trajectory_directions(model, spec, digits_run, k=2)
    assert [p.rsplit("/", 1)[-1] for p in traj.paths] == ["init.pt", "epoch_001.pt", "final.pt"]
    assert list(traj.epochs) == [0.0, 1.0, 2.0]
    base = named_params(model)
    offsets = []
    for p in traj.paths:
        theta = named_params(load_checkpoint(p)[0])
        offsets.append(torch.cat([(theta[k] - base[k]).reshape(-1) for k in base]).numpy())
    offsets = np.stack(offsets)
    ref = PCA(n_components=2).fit(offsets)
    np.testing.assert_allclose(
        traj.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-4
    )
    for d, comp in zip(traj.directions, ref.components_):
        flat = torch.cat([d[k].reshape(-1) for k in base]).numpy()
        assert abs(float(flat @ comp)) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(traj.coordinates[-1], 0.0, atol=1e-6)  # final.pt is the centre
    with pytest.raises(BadInput, match="at least 4"):
        trajectory_directions(model, spec, digits_run, k=3)
    with pytest.raises(BadInput, match="not a folder"):
        trajectory_directions(model, spec, digits_run / "missing", k=2)


def test_make_directions_validates_kind_and_inputs():
    model = lenet()
    with pytest.raises(BadInput, match="kind 'sideways'"):
        make_directions("sideways", model, 1)
    with pytest.raises(BadInput, match="kind pca needs trajectory"):
        make_directions("pca", model, 2, spec={})
    with pytest.raises(BadInput, match="FILE:/hessian"):
        make_directions("eigen", model, 1, hessian_group="/hessian/run")
    dset = make_directions("filter", model, 2, seed=7, orthogonal=True)
    assert len(dset.vectors) == 2 and float(inner(*dset.vectors)) == pytest.approx(0.0, abs=1e-4)


def test_eigen_directions_from_a_stored_group_match_the_computed_ones(digits_run, tmp_path):
    from landscape.curvature import hvp
    from landscape.data import load_dataset
    from landscape.hessian import hessian, store_hessian
    from landscape.store import provenance

    model, spec = load_checkpoint(digits_run / "final.pt")
    X, y = load_dataset("digits", "train")
    X, y = X[:40], y[:40]
    res = hessian(model, X, y, 0.0, top=2, random_samples=0, save_vectors=True, spec=spec)
    out = tmp_path / "r.h5"
    store_hessian(out, "/hessian/run", res, provenance(command="test", config={}))
    stored = make_directions("eigen", model, 2, hessian_group="/hessian/run", results_file=out)
    computed = make_directions("eigen", model, 2, X=X, y=y)
    for s, c, lam in zip(stored.vectors, computed.vectors, res.eigenpairs.eigenvalues):
        assert set(s) == set(named_params(model))
        assert float(global_norm(s)) == pytest.approx(1.0, abs=1e-5)
        assert abs(float(inner(s, c))) == pytest.approx(1.0, abs=1e-3)  # the same up to sign
        hv = hvp(model, X, y, s)
        resid = global_norm({k: hv[k] - lam * s[k] for k in s})
        assert float(resid) < 1e-2 * abs(lam)
    with pytest.raises(BadInput, match="holds 2 eigenvectors; 3 needed"):
        make_directions("eigen", model, 3, hessian_group=f"{out}:/hessian/run")


@pytest.mark.parametrize("magnitude", [1e-30, 1.0, 1e20])
def test_unit_direction_survives_extreme_magnitudes(magnitude):
    """Entries near 1e20 square past float32's range and near 1e-30 below it; the unit
    vector must still have norm 1 and point the same way."""
    from landscape.directions import unit

    d = {"a": torch.tensor([3.0, 0.0]) * magnitude, "b": torch.tensor([[4.0]]) * magnitude}
    u = unit(d)
    assert torch.allclose(u["a"], torch.tensor([0.6, 0.0])) and torch.allclose(
        u["b"], torch.tensor([[0.8]])
    )
    with pytest.raises(BadInput, match="non-finite"):
        unit({"a": torch.tensor([float("nan"), 1.0])})
    with pytest.raises(BadInput, match="zero everywhere"):
        unit({"a": torch.zeros(3)})
