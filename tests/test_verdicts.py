"""Verdicts on synthetic results files written in the layouts the analyses and collectors use."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from landscape import store
from landscape.connect import Connectivity
from landscape.cosine import CosineResult
from landscape.smoothness import SmoothnessResult
from landscape.surface import SurfaceResult
from landscape.util import BadInput
from landscape.verdicts import (
    CHECKS,
    FAILS,
    HOLDS,
    NO_DATA,
    PARTLY,
    Sample,
    Verdict,
    compare,
    trend,
    verdict,
)

RNG_SEEDS = (0, 1, 2)


def provenance(config: dict, sha: str = "") -> dict:
    return store.provenance(command="test", config=config, checkpoint_sha256=sha)


def add_model(path, label: str, eps: float, seed: int, robust: float, chance: float = 0.9) -> str:
    """A `/models/<label>` group as the recipe runner writes it; returns its sha."""
    sha = f"sha-{label}"
    store.write_group(
        path,
        f"/models/{label}",
        {"test_error": np.array([0.05, robust])},
        {
            "checkpoint_sha256": sha,
            "config": json.dumps({"eps": eps, "seed": seed}),
            "chance_error": chance,
            "status": "complete",
        },
    )
    return sha


def eps_id(eps: float) -> str:
    return "e" + f"{eps:g}".replace(".", "")


# --- statistics ---------------------------------------------------------------------------


def test_compare_uses_two_standard_errors():
    a, b = Sample.of([3.1, 3.4, 3.7]), Sample.of([1.0, 1.1, 1.2])
    assert str(a) == "3.40 ± 0.30 (n=3)"
    assert compare(a, b) == "higher" and compare(b, a) == "lower"
    # means 1.5 and 1.7, standard error of the difference sqrt(0.25 + 0.25) = 0.71 > 0.2 / 2
    assert compare(Sample.of([1.0, 2.0]), Sample.of([1.2, 2.2])) == "within noise"
    # one seed: no band, so any difference counts, and the count is said
    one = Sample.of([1.21])
    assert compare(one, Sample.of([1.2])) == "higher" and str(one) == "1.21 (n=1)"
    assert compare(Sample.of([math.inf]), Sample.of([5.0])) == "higher"
    assert Sample.of([math.nan, 2.0]).n == 1 and Sample.of([math.nan]) is None


def test_trend_holds_partly_fails():
    up = [("a", Sample.of([1, 1.1])), ("b", Sample.of([2, 2.1])), ("c", Sample.of([3, 3.1]))]
    assert trend(up, "higher").status == HOLDS
    flat_middle = [up[0], up[1], ("c", Sample.of([2.0, 2.1]))]
    judged = trend(flat_middle, "higher")
    assert judged.status == PARTLY and "b -> c within noise" in judged.detail
    assert trend(up, "lower").status == FAILS
    assert trend(up[:1], "higher").status == NO_DATA


def test_verdict_markdown_and_unknown_check(tmp_path):
    v = Verdict(HOLDS, "The check.", "eps 0: 1.00 (n=1)")
    assert v.markdown() == "**Verdict: holds.** The check. Measured: eps 0: 1.00 (n=1)"
    with pytest.raises(BadInput, match="unknown check 'nope'"):
        verdict(tmp_path / "r.h5", "nope")


def empty_file(path):
    with h5py.File(path, "w") as f:
        f.attrs["landscape_format"] = store.FORMAT
    return path


NEEDED_OPTIONS = {
    "rows_better": {"better": [["a", "b"]]},
    "sweep_reference": {"reference": "cosine"},
}


@pytest.mark.parametrize("check", list(CHECKS))
def test_every_check_says_no_data_on_an_empty_file(tmp_path, check):
    v = verdict(empty_file(tmp_path / "r.h5"), check, NEEDED_OPTIONS.get(check, {}))
    assert v.status == NO_DATA and v.numbers.startswith("no ") and v.check


def test_bad_options_are_refused(tmp_path):
    path = empty_file(tmp_path / "r.h5")
    with pytest.raises(BadInput, match="unknown option.*group_sufix"):
        verdict(path, "eigenvalues_grow", {"group_sufix": "-top2"})
    with pytest.raises(BadInput, match="max_robust_error = 'high' must be a number"):
        verdict(path, "cosine_drops", {"max_robust_error": "high"})
    with pytest.raises(BadInput, match="pairs"):
        verdict(path, "faster_in_time", {"pairs": [["AT"]]})
    with pytest.raises(BadInput, match="better or at_least"):
        verdict(path, "rows_better", {})


# --- 1. eigenvalues_grow ------------------------------------------------------------------


def hessian_file(path, tops: dict[float, list[float]], *, suffix="", collapsed=(), nan=()):
    """One /hessian/<id>-s<seed><suffix> group per eps and seed; `collapsed` and `nan` list
    (eps, seed) pairs whose model collapsed or whose eigenvalue is NaN."""
    for eps, values in tops.items():
        for seed, top in enumerate(values):
            label = f"{eps_id(eps)}-s{seed}"
            sha = add_model(path, label, eps, seed, 0.89 if (eps, seed) in collapsed else 0.3)
            top = math.nan if (eps, seed) in nan else top
            store.write_group(
                path,
                f"/hessian/{label}{suffix}",
                {
                    "index": np.arange(1, 3),
                    "eigenvalues": np.array([top * 100, 1.0]),
                    "eigenvalues_normalized": np.array([top, 0.01]),
                },
                {**provenance({"analysis": "hessian", "eps": eps}, sha), "loss": 0.5},
            )
    return path


def test_eigenvalues_grow_holds_and_quotes_numbers(tmp_path):
    path = hessian_file(
        tmp_path / "r.h5", {0.0: [1.1, 1.2, 1.3], 0.1: [3.1, 3.4, 3.7], 0.2: [6.0, 6.2, 6.4]}
    )
    v = verdict(path, "eigenvalues_grow")
    assert v.status == HOLDS
    assert "eps 0.1: 3.40 ± 0.30 (n=3)" in v.numbers
    assert "eps 0: 1.20 ± 0.10 (n=3)" in v.numbers
    assert "raw top eigenvalue: eps 0: 120 ± 10 (n=3)" in v.numbers
    assert v.markdown().startswith("**Verdict: holds.** The top normalized Hessian eigenvalue")


def test_eigenvalues_grow_partly_and_fails(tmp_path):
    partly = hessian_file(
        tmp_path / "p.h5", {0.0: [1.0, 1.1, 1.2], 0.1: [3.0, 3.1, 3.2], 0.2: [3.0, 3.2, 3.05]}
    )
    v = verdict(partly, "eigenvalues_grow")
    assert v.status == PARTLY and "eps 0.1 -> eps 0.2 within noise" in v.numbers
    fails = hessian_file(tmp_path / "f.h5", {0.0: [3.0, 3.1, 3.2], 0.1: [1.0, 1.1, 1.2]})
    v = verdict(fails, "eigenvalues_grow")
    assert v.status == FAILS and "eps 0 -> eps 0.1 lower" in v.numbers


def test_eigenvalues_grow_overlapping_seeds_are_noise(tmp_path):
    path = hessian_file(tmp_path / "r.h5", {0.0: [1.0, 2.0], 0.1: [1.2, 2.2]})
    v = verdict(path, "eigenvalues_grow")
    assert v.status != HOLDS and "within noise" in v.numbers


def test_eigenvalues_grow_excludes_collapsed_models_and_nan(tmp_path):
    path = hessian_file(
        tmp_path / "r.h5",
        {0.0: [1.0, 1.1, 1.2], 0.1: [3.0, 3.1, 9.0], 0.3: [0.01, 0.02, 0.01]},
        collapsed={(0.3, 0), (0.3, 1), (0.3, 2)},
        nan={(0.1, 2)},
    )
    v = verdict(path, "eigenvalues_grow")
    assert v.status == HOLDS  # without the exclusions eps 0.3 would make it partly
    assert "collapsed (excluded): eps 0.3 seed 1 (robust error 0.890, chance 0.900)" in v.numbers
    assert "NaN (excluded): eps 0.1 seed 2" in v.numbers
    assert "eps 0.1: 3.05 ± 0.07 (n=2)" in v.numbers


def test_eigenvalues_grow_group_suffix_and_one_seed(tmp_path):
    path = hessian_file(tmp_path / "r.h5", {0.0: [1.0], 0.1: [2.0]}, suffix="-top2")
    hessian_file(path, {0.0: [5.0], 0.1: [1.0]})
    v = verdict(path, "eigenvalues_grow", {"group_suffix": "-top2"})
    assert v.status == HOLDS and "eps 0.1: 2.00 (n=1)" in v.numbers
    assert verdict(path, "eigenvalues_grow", {"group_suffix": "-top9"}).status == NO_DATA


def test_incomplete_groups_are_skipped_and_said(tmp_path):
    path = hessian_file(tmp_path / "r.h5", {0.0: [1.0], 0.1: [2.0]})
    arrays, attrs = store.read_group(path, "/hessian/e01-s0")
    store.write_group(path, "/hessian/e02-s0", arrays, {**attrs, "status": "running"})
    v = verdict(path, "eigenvalues_grow")
    assert "/hessian/e02-s0 skipped (status running)" in v.numbers and "eps 0.2" not in v.numbers


# --- 2. gradients -------------------------------------------------------------------------


def trace_file(path, points: dict[float, tuple[float, float]], *, seeds=RNG_SEEDS, collapsed=()):
    """Collected trainer traces `/trace/<id>-s<seed>` (no status attribute): the gradient
    norm is `early` over the first window of 10 updates and `late` over the last 10."""
    rng = np.random.default_rng(0)
    for eps, (early, late) in points.items():
        for seed in seeds:
            label = f"{eps_id(eps)}-s{seed}"
            add_model(path, label, eps, seed, 0.89 if eps in collapsed else 0.3)
            grad = np.concatenate([np.full(10, early), np.full(20, 1.0), np.full(10, late)])
            grad += rng.normal(0, 0.01, grad.shape)
            loss = np.linspace(2.0, 0.5, grad.size)
            arrays = {"step": np.arange(grad.size), "grad_norm": grad, "loss": loss}
            attrs = {"config": json.dumps({"eps": eps, "seed": seed}), "window": 10}
            store.write_group(path, f"/trace/{label}", arrays, attrs)
    return path


def test_gradients_holds_with_a_collapsed_model_excluded(tmp_path):
    path = trace_file(
        tmp_path / "r.h5",
        {0.0: (1.0, 0.5), 0.1: (0.5, 1.0), 0.2: (0.2, 2.0), 0.3: (0.1, 0.05)},
        collapsed={0.3},
    )
    v = verdict(path, "gradients")
    assert v.status == HOLDS
    assert "(a) eps 0.2 against eps 0: lower" in v.numbers
    assert "collapsed (excluded): eps 0.3 seed 0" in v.numbers
    assert "late gradient norm: eps 0: 0.50" in v.numbers


def test_gradients_partly_and_fails(tmp_path):
    partly = trace_file(tmp_path / "p.h5", {0.0: (1.0, 2.0), 0.1: (0.5, 1.0), 0.2: (0.2, 0.5)})
    v = verdict(partly, "gradients")
    assert v.status == PARTLY and "(b) steps: eps 0 -> eps 0.1 lower" in v.numbers
    fails = trace_file(tmp_path / "f.h5", {0.0: (0.2, 2.0), 0.1: (1.0, 1.0)})
    assert verdict(fails, "gradients").status == FAILS


def test_gradients_noise_is_not_holds(tmp_path):
    path = tmp_path / "r.h5"
    for eps, lates in ((0.0, [0.5, 1.5]), (0.1, [0.7, 1.7])):
        for seed, late in enumerate(lates):
            grad = np.concatenate([np.full(10, 1.0 - eps * 5), np.full(10, late)])
            store.write_group(
                path,
                f"/trace/{eps_id(eps)}-s{seed}",
                {"step": np.arange(20), "grad_norm": grad},
                {"config": json.dumps({"eps": eps, "seed": seed})},  # window: half the trace
            )
    v = verdict(path, "gradients")
    assert v.status == PARTLY and "(b) steps: eps 0 -> eps 0.1 within noise" in v.numbers


# --- 3. cosine_drops ----------------------------------------------------------------------

ALPHA = np.array([0.0, 0.05, 0.1, 0.2])


def add_cosine(path, name, eps, *, top, random, error, sha=""):
    n = ALPHA.size
    result = CosineResult(
        alpha=ALPHA,
        cosine_top_mean=np.asarray(top, float),
        cosine_top_std=np.zeros(n),
        robust_error_top_plus=np.asarray(error, float),
        robust_error_top_minus=np.asarray(error, float) - 0.01,
        zero_perturbations_top=np.zeros(n, dtype=np.int64),
        cosine_random_mean=np.asarray(random, float),
        cosine_random_std=np.zeros(n),
        robust_error_random_plus=np.full(n, 0.1),
        robust_error_random_minus=np.full(n, 0.1),
        zero_perturbations_random=np.zeros(n, dtype=np.int64),
        done=np.ones(n, bool),
        nonfinite=np.zeros(n, bool),
        examples=64,
        repeats=1,
    )
    store.write_group(
        path,
        f"/cosine/{name}",
        result.arrays(),
        {**provenance({"analysis": "cosine", "eps": eps}, sha), **result.attrs()},
        dims=result.dims(),
    )


CURVY = {"top": [1, 0.9, 0.6, 0.3], "random": [1, 0.99, 0.98, 0.95]}
STRAIGHT = {"top": [1, 0.99, 0.98, 0.95], "random": [1, 0.99, 0.98, 0.95]}
ERROR = [0.1, 0.2, 0.25, 0.6]  # a* = 0.1 under the 0.3 filter


def cosine_file(path, kinds: dict[float, dict], error=ERROR):
    for eps, kind in kinds.items():
        for seed in RNG_SEEDS:
            wobble = 0.01 * seed
            add_cosine(
                path,
                f"{eps_id(eps)}-s{seed}",
                eps,
                top=np.array(kind["top"]) - wobble,
                random=np.array(kind["random"]) - wobble / 10,
                error=error,
            )
    return path


def test_cosine_drops_holds(tmp_path):
    v = verdict(cosine_file(tmp_path / "r.h5", {0.1: CURVY, 0.2: CURVY}), "cosine_drops")
    assert v.status == HOLDS
    assert "eps 0.1: a* 0.100, drop top 0.410 ± 0.010 (n=3) vs random 0.0210" in v.numbers
    assert "robust error at a* 0.245 ± 0.000 (n=3) vs at a = 0 0.0950 ± 0.0000 (n=3)" in v.numbers


def test_cosine_drops_partly_fails_and_coarse_grid(tmp_path):
    v = verdict(cosine_file(tmp_path / "p.h5", {0.1: CURVY, 0.2: STRAIGHT}), "cosine_drops")
    assert v.status == PARTLY and "eps 0.2: a* 0.100" in v.numbers
    v = verdict(cosine_file(tmp_path / "f.h5", {0.1: STRAIGHT}), "cosine_drops")
    assert v.status == FAILS and "(within noise)" in v.numbers
    coarse = cosine_file(tmp_path / "c.h5", {0.1: CURVY})
    add_cosine(coarse, "e03-s0", 0.3, **CURVY, error=[0.1, 0.5, 0.6, 0.9])
    v = verdict(coarse, "cosine_drops")
    assert v.status == PARTLY
    assert "eps 0.3: not shown (no a > 0 passes the filter: the grid is too coarse)" in v.numbers


def test_cosine_drops_filter_option_and_nan(tmp_path):
    path = cosine_file(tmp_path / "r.h5", {0.1: CURVY})
    v = verdict(path, "cosine_drops", {"max_robust_error": 0.22})
    assert "a* 0.0500" in v.numbers and "drop top 0.110 ± 0.010" in v.numbers
    # a NaN at a = 0.1 stops the filter there
    add_cosine(path, "e02-s0", 0.2, **CURVY, error=[0.1, 0.2, math.nan, 0.6])
    v = verdict(path, "cosine_drops")
    assert "eps 0.2: a* 0.0500" in v.numbers


# --- 4. connectivity ----------------------------------------------------------------------

T = np.linspace(0, 1, 11)


def add_connect(path, name, eps, curve_barrier, line_barrier):
    bump = np.sin(np.pi * T)
    ends = 0.01 + 0.0 * T
    metric = {"train_loss": None, "train_error": None, "test_loss": None, "test_error": None}
    values = {}
    for prefix, height in (("", curve_barrier), ("line_", line_barrier)):
        for m in metric:
            clean = ends + (height if eps == 0 else 0.1) * bump
            values[prefix + m] = clean
            if eps > 0:
                values[f"{prefix}adv_{m}"] = ends + height * bump
    result = Connectivity(
        t=T, done=np.ones(T.size, bool), nonfinite=np.zeros(T.size, bool), **values
    )
    store.write_group(
        path,
        f"/connect/{name}",
        result.arrays(),
        provenance({"analysis": "connect", "eps": eps}),
        dims={k: ("t",) for k in result.arrays() if k != "t"},
    )


def connect_file(path, barriers: dict[float, tuple[list[float], float]]):
    for eps, (curves, line) in barriers.items():
        for seed, curve in enumerate(curves):
            add_connect(path, f"{eps_id(eps)}-pair-s{seed}", eps, curve, line)
    return path


def test_connectivity_holds(tmp_path):
    path = connect_file(
        tmp_path / "r.h5",
        {0.0: ([0.05, 0.06, 0.07], 2.0), 0.1: ([0.5, 0.55, 0.6], 2.0), 0.2: ([1.0, 1.1], 2.5)},
    )
    v = verdict(path, "connectivity")
    assert v.status == HOLDS
    assert "(a) eps 0: curve 0.0600 ± 0.0100 (n=3) <= 0.1 x 2.00 ± 0.00 (n=3)" in v.numbers
    assert "curve barrier: eps 0: 0.0600 ± 0.0100 (n=3), eps 0.1: 0.550 ± 0.050 (n=3)" in v.numbers
    assert "line barrier: eps 0: 2.00 ± 0.00 (n=3)" in v.numbers  # identical seeds


def test_connectivity_partly_and_fails(tmp_path):
    partly = connect_file(tmp_path / "p.h5", {0.0: ([0.65], 1.84), 0.1: ([1.0], 2.0)})
    v = verdict(partly, "connectivity")
    assert v.status == PARTLY and "(a) eps 0: curve 0.650 (n=1) > 0.1 x 1.84 (n=1)" in v.numbers
    fails = connect_file(tmp_path / "f.h5", {0.0: ([0.65], 1.84), 0.1: ([0.3], 2.0)})
    assert verdict(fails, "connectivity").status == FAILS
    loose = verdict(partly, "connectivity", {"flat_fraction": 0.5})
    assert loose.status == HOLDS and "0.5 x" in loose.numbers


# --- 9. rows_better -----------------------------------------------------------------------


def table_file(path, rows: dict[str, tuple[float, float]], *, seeds=3, name="methods"):
    arrays = {
        "index": np.arange(len(rows)),
        "row": np.array(list(rows)),
        "clean_error": np.full(len(rows), 0.05),
        "robust_error": np.array([m for m, _ in rows.values()]),
    }
    if seeds:
        arrays["robust_error_std"] = np.array([s for _, s in rows.values()])
        arrays["clean_error_std"] = np.zeros(len(rows))
        arrays["seeds"] = np.full(len(rows), seeds)
    store.write_group(path, f"/table/{name}", arrays, provenance({"eps": 0.1}))
    return path


KANAI_OPTIONS = {"better": [["AT+EnSGD", "AT"]], "at_least": [["AWP+EnSGD", "AWP"]]}


def test_rows_better_holds_partly_fails(tmp_path):
    rows = {"AT": (0.40, 0.01), "AT+EnSGD": (0.30, 0.01), "AWP": (0.30, 0.02)}
    holds = table_file(tmp_path / "h.h5", {**rows, "AWP+EnSGD": (0.31, 0.02)})
    v = verdict(holds, "rows_better", KANAI_OPTIONS)
    assert v.status == HOLDS
    assert "methods: AT 0.400 ± 0.010 (n=3), AT+EnSGD 0.300 ± 0.010 (n=3)" in v.numbers
    assert "AWP+EnSGD not higher than AWP: within noise (holds)" in v.numbers
    partly = table_file(tmp_path / "p.h5", {**rows, "AWP+EnSGD": (0.40, 0.02)})
    v = verdict(partly, "rows_better", KANAI_OPTIONS)
    assert v.status == PARTLY and "AWP+EnSGD not higher than AWP: higher" in v.numbers
    fails = table_file(
        tmp_path / "f.h5",
        {
            "AT": (0.30, 0.01),
            "AT+EnSGD": (0.31, 0.01),
            "AWP": (0.3, 0.01),
            "AWP+EnSGD": (0.4, 0.01),
        },
    )
    assert verdict(fails, "rows_better", KANAI_OPTIONS).status == FAILS


def test_rows_better_noise_one_seed_nan_and_unknown_rows(tmp_path):
    noisy = table_file(tmp_path / "n.h5", {"AT": (0.32, 0.05), "AT+EnSGD": (0.30, 0.05)})
    v = verdict(noisy, "rows_better", {"better": [["AT+EnSGD", "AT"]]})
    assert v.status == FAILS and "lower than AT: within noise" in v.numbers
    old = table_file(tmp_path / "o.h5", {"AT": (0.32, 0.0), "AT+EnSGD": (0.30, 0.0)}, seeds=0)
    v = verdict(old, "rows_better", {"better": [["AT+EnSGD", "AT"]]})
    assert v.status == HOLDS and "AT 0.320 (n=1)" in v.numbers
    nan = table_file(tmp_path / "x.h5", {"AT": (math.nan, 0.0), "AT+EnSGD": (0.30, 0.0)})
    v = verdict(nan, "rows_better", {"better": [["AT+EnSGD", "AT"]]})
    assert v.status == NO_DATA and "AT NaN (excluded)" in v.numbers
    with pytest.raises(BadInput, match="no table has the row.*TRADES"):
        verdict(old, "rows_better", {"better": [["TRADES", "AT"]]})
    assert verdict(old, "rows_better", {"table": "other", "better": [["a", "b"]]}).status == NO_DATA


# --- 10-12. sweeps ------------------------------------------------------------------------


def sweep_file(path, errors: dict[str, list[float]], *, x=(0.01, 0.03, 0.1, 0.3), key="lr"):
    arrays = {"x": np.array(x, float)}
    for series, means in errors.items():
        arrays[f"{series}_robust_error_mean"] = np.array(means, float)
        arrays[f"{series}_robust_error_std"] = np.full(len(x), 0.01)
        arrays[f"{series}_clean_error_mean"] = np.full(len(x), 0.05)
        arrays[f"{series}_clean_error_std"] = np.zeros(len(x))
    attrs = provenance({"x": key, "values": list(x), "seeds": [0, 1, 2]})
    attrs["x_key"], attrs["series"] = key, json.dumps(list(errors))
    store.write_group(path, f"/sweep/{key}", arrays, attrs)
    return path


def test_sweep_range_holds_partly_fails(tmp_path):
    constant = [0.9, 0.5, 0.10, 0.9]
    holds = sweep_file(
        tmp_path / "h.h5",
        {"constant": constant, "cosine": [0.12, 0.1, 0.08, 0.5], "linear": [0.5, 0.12, 0.1, 0.5]},
    )
    v = verdict(holds, "sweep_range")
    assert v.status == HOLDS
    assert (
        "best mean robust error 0.0800; good (<= 0.130): cosine 3 of 4, linear 2 of 4" in v.numbers
    )
    assert "constant 1 of 4" in v.numbers and "constant: lr 0.01 0.900 ± 0.010 (n=3)" in v.numbers
    partly = sweep_file(
        tmp_path / "p.h5",
        {"constant": constant, "cosine": [0.12, 0.1, 0.08, 0.5], "linear": [0.9, 0.5, 0.1, 0.5]},
    )
    assert verdict(partly, "sweep_range").status == PARTLY
    fails = sweep_file(
        tmp_path / "f.h5", {"constant": constant, "cosine": constant, "linear": [0.9] * 4}
    )
    assert verdict(fails, "sweep_range").status == FAILS
    with pytest.raises(BadInput, match="no series step; it has constant, cosine, linear"):
        verdict(fails, "sweep_range", {"warmup": ["step"]})


def test_sweep_range_skips_nan_points(tmp_path):
    path = sweep_file(
        tmp_path / "r.h5",
        {"constant": [0.9, 0.5, 0.1, math.nan], "cosine": [0.12, 0.1, 0.08, 0.1]},
    )
    v = verdict(path, "sweep_range", {"warmup": ["cosine"]})
    assert v.status == HOLDS and "lr 0.3 NaN (excluded)" in v.numbers


def test_sweep_reference_and_small_models(tmp_path):
    path = sweep_file(
        tmp_path / "r.h5",
        {"eps-warmup": [0.3, 0.2, 0.25, 0.4], "lr-warmup": [0.5, 0.3, 0.28, 0.5]},
    )
    v = verdict(path, "sweep_reference", {"reference": "eps-warmup"})
    assert v.status == HOLDS and "lr-warmup best 0.280 ± 0.010 (n=3) at lr 0.1: higher" in v.numbers
    close = sweep_file(tmp_path / "c.h5", {"eps-warmup": [0.2] * 4, "lr-warmup": [0.21] * 4})
    assert verdict(close, "sweep_reference", {"reference": "eps-warmup"}).status == FAILS
    widths = sweep_file(
        tmp_path / "w.h5",
        {"constant": [0.9, 0.3, 0.2], "cosine": [0.3, 0.25, 0.2], "linear": [0.5, 0.25, 0.2]},
        x=(1, 2, 4),
        key="width",
    )
    v = verdict(widths, "small_models")
    assert v.status == PARTLY  # linear trains at width 1 but 0.300 above its best
    assert "linear at width 1: 0.500 ± 0.010 (n=3) (constant higher: holds)" in v.numbers
    assert verdict(widths, "small_models", {"competitive": 0.35}).status == HOLDS


# --- 5-8, 13: the other checks ------------------------------------------------------------


def surface_group(path, name, eps, adv, *, loss=None, sha=""):
    x = np.linspace(-1, 1, adv.shape[0])
    y = np.linspace(-1, 1, adv.shape[1]) if adv.ndim == 2 else None
    result = SurfaceResult(
        x=x,
        y=y,
        loss=adv if loss is None else loss,
        error=np.zeros(adv.shape),
        adv_loss=adv if eps > 0 else None,
        adv_error=np.zeros(adv.shape) if eps > 0 else None,
        done=np.ones(adv.shape, bool),
        nonfinite=np.isnan(adv),
    )
    store.write_group(
        path,
        f"/surface/{name}",
        result.arrays(),
        {**provenance({"analysis": "surface", "eps": eps}, sha), **result.attrs()},
        dims=result.dims(),
    )


def test_surface_steepens(tmp_path):
    path = tmp_path / "r.h5"
    X, Y = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), indexing="ij")
    for eps, c in ((0.0, 1.0), (0.1, 2.0), (0.2, 4.0)):
        for seed in RNG_SEEDS:
            surface_group(
                path, f"{eps_id(eps)}-s{seed}", eps, 0.3 + (c + 0.1 * seed) * (X**2 + Y**2)
            )
    v = verdict(path, "surface_steepens")
    assert v.status == HOLDS and "mean rise of adv_loss/loss: eps 0: 1.10 ± 0.10 (n=3)" in v.numbers
    sha = add_model(path, "e03-s0", 0.3, 0, 0.9)
    flat = 0.3 + 0.1 * (X**2 + Y**2)
    flat[0, 0] = math.nan
    surface_group(path, "e03-s0", 0.3, flat, sha=sha)
    v = verdict(path, "surface_steepens")
    assert v.status == HOLDS and "collapsed (excluded): eps 0.3 seed 0" in v.numbers
    assert "/surface/e03-s0: 1 NaN grid points excluded" in v.numbers


def test_lower_train_loss_reports_flatness_unjudged(tmp_path):
    path = tmp_path / "r.h5"
    x = np.linspace(-1, 1, 21)
    shapes = {"AT": (0.5, 3.0), "AT+EnSGD": (0.3, 6.0), "AWP": (0.4, 3.0), "AWP+EnSGD": (0.41, 2.0)}
    for method, (bottom, curvature) in shapes.items():
        for seed in RNG_SEEDS:
            surface_group(path, f"{method}-s{seed}", 0.1, bottom + 0.01 * seed + curvature * x**2)
    v = verdict(path, "lower_train_loss")
    assert v.status == PARTLY
    assert "AT+EnSGD lower than AT: lower (holds)" in v.numbers
    # 0.42 ± 0.01 against 0.41 ± 0.01 over 3 seeds: 2 standard errors are 0.016
    assert "AWP+EnSGD lower than AWP: within noise (does not hold)" in v.numbers
    assert (
        "rise at |alpha| = 1 (not judged): AT: 3.00 ± 0.00 (n=3), AT+EnSGD: 6.00 ± 0.00 (n=3)"
        in v.numbers
    )


def test_loss_magnitudes(tmp_path):
    path = tmp_path / "r.h5"
    steps = np.arange(200)
    for eps, (start, end) in {0.0: (2.3, 0.1), 0.1: (2.4, 0.8), 0.2: (2.3, 1.5)}.items():
        for seed in RNG_SEEDS:
            loss = start + (end - start) * (1 - np.exp(-steps / 30)) + 0.01 * seed
            store.write_group(
                path,
                f"/trace/{eps_id(eps)}-s{seed}",
                {"step": steps, "loss": loss, "grad_norm": np.ones(200)},
                {"config": json.dumps({"eps": eps, "seed": seed}), "status": "complete"},
            )
    v = verdict(path, "loss_magnitudes")
    assert v.status == HOLDS and "(a) outside 15% of eps 0: none" in v.numbers
    strict = verdict(path, "loss_magnitudes", {"tolerance": 0.001})
    assert strict.status == PARTLY and "outside 0% of eps 0: eps 0.1" in strict.numbers


def test_smoothest_clean(tmp_path):
    path = tmp_path / "r.h5"
    radius = np.array([1e-3, 1e-2])
    for name, (linf, l2, clean, std) in {
        "e01-s0": (9.0, 5.0, 1.0, 0.5),
        "e01-s1": (9.0, 5.0, 4.5, 1.0),
    }.items():
        result = SmoothnessResult(
            radius=radius,
            done=np.ones(2, bool),
            nonfinite=np.zeros(2, bool),
            lipschitz={
                **{
                    f"lipschitz_{n}_mean": np.array([v, v])
                    for n, v in (("linf", linf), ("l2", l2), ("clean", clean))
                },
                **{f"lipschitz_{n}_std": np.full(2, std) for n in ("linf", "l2", "clean")},
            },
            eps={"linf": 0.1, "l2": 1.0},
            directions=4,
        )
        store.write_group(
            path,
            f"/smoothness/{name}",
            result.arrays(),
            {**provenance({"analysis": "smoothness", "eps": 0.1, "count": None}), **result.attrs()},
            dims=result.dims(),
        )
    v = verdict(path, "smoothest_clean")
    assert v.status == PARTLY  # e01-s1: l2 5.0 ± 1.0 and clean 4.5 ± 1.0 over 4 directions overlap
    assert "e01-s0 at radius 0.00100: linf 9.00 ± 0.50 (n=4)" in v.numbers
    assert "e01-s1 at radius 0.00100: linf 9.00 ± 1.00 (n=4), l2 5.00 ± 1.00 (n=4)" in v.numbers
    assert "l2 vs clean: within noise" in v.numbers


def test_faster_in_time(tmp_path):
    path = tmp_path / "r.h5"
    epochs = np.arange(1, 11)
    curves = {
        "AT": (10.0, 0.60),
        "AT+EnSGD": (6.0, 0.62),
        "AWP": (10.0, 0.60),
        "AWP+EnSGD": (20.0, 0.60),
    }
    for method, (per_epoch, best) in curves.items():
        for seed in RNG_SEEDS:
            robust = 1 - best * (1 - np.exp(-epochs / 2))
            store.write_group(
                path,
                f"/evalcurve/{method}-s{seed}",
                {"epoch": epochs, "wall_time": per_epoch * epochs + seed, "robust_error": robust},
                {"config": json.dumps({"eps": 0.1, "seed": seed}), "label": method},
            )
    v = verdict(path, "faster_in_time")
    assert v.status == PARTLY
    assert "AT+EnSGD faster than AT: lower (holds)" in v.numbers
    assert "AWP+EnSGD faster than AWP: higher (does not hold)" in v.numbers
    never = verdict(path, "faster_in_time", {"target": 0.99})
    assert never.status == FAILS and "inf (n=3)" in never.numbers


def test_malformed_groups_and_missing_files_are_bad_input(tmp_path):
    path = tmp_path / "r.h5"
    store.write_group(
        path,
        "/hessian/e0-s0",
        {"index": np.arange(1, 3), "eigenvalues": np.array([2.0, 1.0])},
        provenance({"analysis": "hessian", "eps": 0.0}),
    )
    with pytest.raises(BadInput, match="'eigenvalues_normalized' is missing"):
        verdict(path, "eigenvalues_grow")
    with pytest.raises(BadInput, match="does not exist"):
        verdict(tmp_path / "absent.h5", "eigenvalues_grow")


def test_collapse_on_the_real_theorem1_toy(tmp_path):
    """Liu Thm. 1 on the shipped toy: every budget above eps* ends at W = 0, none below;
    an altered copy that keeps weights above eps* only partly holds."""
    from landscape.analysis import run
    from landscape.toy import Toy

    path = tmp_path / "r.h5"
    run(Toy("liu-thm1"), None, out=path, name="liu-thm1")
    found = verdict(path, "collapse")
    assert found.status == "holds", found.numbers
    assert "eps* = " in found.numbers
    arrays, attrs = store.read_group(path, "/toy/liu-thm1")
    above = arrays["x"] > attrs["threshold"]
    arrays["weight_norm"] = np.where(above, 1.0, arrays["weight_norm"])
    store.write_group(tmp_path / "altered.h5", "/toy/liu-thm1", arrays, attrs)
    assert verdict(tmp_path / "altered.h5", "collapse").status == "partly"
