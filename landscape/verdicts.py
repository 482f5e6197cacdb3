"""Verdicts: each recipe's claim checked against the numbers of its results file.

A check reads the groups a recipe stored, groups runs of one eps (or one method) as
seeds of one point (`<id>-s<seed>`), leaves out models that collapsed to the constant
classifier (Liu et al. Theorem 1; the `/models/<label>` groups say which) and NaN
entries, and answers `holds`, `partly`, `does not hold` or `no data`, quoting what it
measured as mean ± std over seeds with their count.

Two samples differ when their means are more than 2 standard errors of the difference
apart (std with ddof = 1 over sqrt(n); a sample of one seed adds no noise band, and its
count `n=1` is quoted). A trend over eps holds when every consecutive step moves the
claimed way beyond noise, partly when only the extremes do, and does not hold otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import store
from .util import SEED_SUFFIX, BadInput

HOLDS, PARTLY, FAILS, NO_DATA = "holds", "partly", "does not hold", "no data"
STATUSES = (HOLDS, PARTLY, FAILS, NO_DATA)
HIGHER, LOWER, NOISE = "higher", "lower", "within noise"
COLLAPSE_MARGIN = 0.02  # robust error this close to chance: the constant classifier


@dataclass(frozen=True)
class Verdict:
    """A claim's status, the check in words and what was measured."""

    status: str
    check: str
    numbers: str

    def markdown(self) -> str:
        return f"**Verdict: {self.status}.** {self.check} Measured: {self.numbers}"


# --- statistics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One quantity over seeds (or directions): mean, std (ddof = 1) and count."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Sample | None:
        """The sample of the non-NaN values (None when none is left); an infinite value
        (a target never reached) makes the mean infinite and the std 0."""
        kept = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
        if kept.size == 0:
            return None
        finite = bool(np.all(np.isfinite(kept)))
        std = float(kept.std(ddof=1)) if kept.size > 1 and finite else 0.0
        return cls(float(kept.mean()), std, int(kept.size))

    @property
    def stderr(self) -> float:
        return self.std / math.sqrt(self.n) if self.n > 1 else 0.0

    def __str__(self) -> str:
        return f"{_number_pair(self.mean, self.std if self.n > 1 else None)} (n={self.n})"


def _decimals(value: float) -> int:
    """Decimals that show three significant digits of `value` (0 to 6)."""
    if value == 0 or not math.isfinite(value):
        return 2
    return min(6, max(0, 2 - math.floor(math.log10(abs(value)))))


def _number_pair(mean: float, std: float | None) -> str:
    """`3.40 ± 0.30`: the mean to three significant digits, the std to as many decimals
    (up to two more when it needs them to show its first digit); `3.40` without a std."""
    if not math.isfinite(mean):
        return str(mean)
    if abs(mean) >= 1e5 or 0 < abs(mean) < 1e-4:
        return f"{mean:.3g}" + ("" if std is None else f" ± {std:.2g}")
    digits = _decimals(mean)
    if std is not None and 0 < std < 1:
        needed = -math.floor(math.log10(std))
        if needed <= digits + 2:  # a smaller std is rounding noise: it shows as 0
            digits = min(6, max(digits, needed))
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def fmt(value: float) -> str:
    """One number as the verdicts quote it."""
    return _number_pair(value, None)


def compare(a: Sample, b: Sample) -> str:
    """`higher`, `lower` or `within noise`: a's mean against b's, beyond 2 standard errors
    of the difference (no band from a sample of one)."""
    if not (math.isfinite(a.mean) and math.isfinite(b.mean)):
        if a.mean == b.mean:
            return NOISE
        return HIGHER if a.mean > b.mean else LOWER
    diff, band = a.mean - b.mean, 2 * math.hypot(a.stderr, b.stderr)
    if diff > band:
        return HIGHER
    if diff < -band:
        return LOWER
    return NOISE


@dataclass(frozen=True)
class Judged:
    """A status with the words that justify it."""

    status: str
    detail: str


def trend(points: Sequence[tuple[str, Sample]], claimed: str) -> Judged:
    """Whether ordered points move the `claimed` way (HIGHER: increase, LOWER: decrease):
    holds when every consecutive step does beyond noise, partly when the extremes do."""
    if len(points) < 2:
        return Judged(NO_DATA, "fewer than two points to compare")
    steps = [(f"{a} -> {b}", compare(sb, sa)) for (a, sa), (b, sb) in pairwise(points)]
    words = ", ".join(f"{where} {how}" for where, how in steps)
    if all(how == claimed for _, how in steps):
        return Judged(HOLDS, f"steps: {words}")
    ends = compare(points[-1][1], points[0][1])
    status = PARTLY if ends == claimed else FAILS
    return Judged(status, f"steps: {words}; {points[0][0]} -> {points[-1][0]} {ends}")


def combine(statuses: Sequence[str]) -> str:
    """The status of a claim of several parts (or items): holds when all hold, partly when
    some hold or partly hold, no data when none has data, else does not hold."""
    if statuses and all(s == HOLDS for s in statuses):
        return HOLDS
    if any(s in (HOLDS, PARTLY) for s in statuses):
        return PARTLY
    if all(s == NO_DATA for s in statuses):
        return NO_DATA
    return FAILS


def _yes(ok: bool) -> str:
    return HOLDS if ok else FAILS


def _or_nan(sample: Sample | None) -> str:
    return "NaN (excluded)" if sample is None else str(sample)


# --- runs, models and seeds -------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A trained model's `/models/<label>` group: its final test errors and chance error."""

    label: str
    clean_error: float
    robust_error: float
    chance_error: float

    @property
    def collapsed(self) -> bool:
        """The constant classifier of Liu et al. Theorem 1: robust error at chance level."""
        return self.robust_error >= self.chance_error - COLLAPSE_MARGIN


@dataclass(frozen=True)
class Run:
    """One complete group `/<analysis>/<name>` and the model it was computed on (if known).

    Its datasets are read when asked for, so stored eigenvectors or trajectories that no
    check needs are never loaded."""

    path: Path
    group: str
    names: frozenset[str]
    attrs: dict[str, Any]
    model: Model | None = None

    @property
    def name(self) -> str:
        return self.group.rsplit("/", 1)[-1]

    @property
    def base(self) -> str:
        """The run's name without its `-s<seed>` part."""
        return SEED_SUFFIX.sub("", self.name, count=1)

    @property
    def seed(self) -> int | None:
        found = SEED_SUFFIX.search(self.name)
        return int(found.group(1)) if found else None

    @property
    def config(self) -> dict[str, Any]:
        try:
            config = json.loads(self.attrs.get("config", "{}"))
        except (TypeError, ValueError):
            return {}
        return config if isinstance(config, dict) else {}

    @property
    def eps(self) -> float:
        try:
            return float(self.config.get("eps", math.nan))
        except (TypeError, ValueError):
            return math.nan

    @property
    def collapsed(self) -> bool:
        return self.model is not None and self.model.collapsed

    def has(self, name: str) -> bool:
        return name in self.names

    def raw(self, name: str) -> Any:
        """A dataset as stored (numbers or text), None when the group has none."""
        if name not in self.names:
            return None
        with store.open_results(self.path) as f:
            ds = f[self.group][name]
            if ds.dtype.kind not in "biuf" and h5py.check_string_dtype(ds.dtype) is None:
                raise BadInput(
                    f"{self.path}:{self.group}: dataset {name!r} has type {ds.dtype}, which "
                    "landscape never writes"
                )
            return ds[()]

    def array(self, name: str, ndim: int | None = None) -> np.ndarray:
        """A stored array as floats; BadInput when the group lacks it (not landscape's layout)."""
        value = self.raw(name)
        found = {} if value is None else {name: value}
        store.check_arrays(f"{self.path}:{self.group}", found, {name: ndim})
        return np.asarray(value, dtype=float)

    def where(self, key: str) -> str:
        """`eps 0.3 seed 1`: the run as the numbers name it."""
        return f"{key} seed {self.seed}" if self.seed is not None else f"{key} ({self.name})"


def _groups(results: Path, analysis: str) -> list[Run]:
    """Every group `/<analysis>/<name>`, its dataset names and attributes (no model yet)."""
    found = []
    with store.open_results(results) as f:
        node = f.get(analysis)
        children = node.items() if isinstance(node, h5py.Group) else []
        for key, g in children:
            if not isinstance(g, h5py.Group):
                continue
            names = frozenset(
                k
                for k, v in g.items()
                if isinstance(v, h5py.Dataset) and not store.is_bare_dimension(v)
            )
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in g.attrs.items()}
            found.append(Run(results, f"/{analysis}/{key}", names, attrs))
    return found


def _models(results: Path) -> tuple[dict[str, Model], dict[str, Model]]:
    """The `/models` groups by checkpoint sha256 and by label."""
    by_sha, by_label = {}, {}
    for run in _groups(results, "models"):
        errors = run.array("test_error", 1)
        if errors.size != 2 or "chance_error" not in run.attrs:
            raise BadInput(
                f"{results}:{run.group} needs test_error [clean, robust] and a chance_error "
                "attribute"
            )
        model = Model(
            run.name, float(errors[0]), float(errors[1]), float(run.attrs["chance_error"])
        )
        by_label[run.name] = model
        sha = store.text_attr(run.attrs, "checkpoint_sha256")
        if sha:
            by_sha[sha] = model
    return by_sha, by_label


def load_runs(results: str | Path, analysis: str) -> tuple[list[Run], list[str]]:
    """The complete groups under `/<analysis>` (groups without a status count as complete:
    the trainer's collected ones), each with its model, and notes on the groups skipped.

    A group is matched to its `/models` group by its `checkpoint_sha256` attribute, or by
    name when it has none (collected trainer groups are named after the model's label)."""
    path = Path(results)
    by_sha, by_label = _models(path)
    runs, notes = [], []
    for run in _groups(path, analysis):
        status = store.text_attr(run.attrs, "status")
        if "status" in run.attrs and status != "complete":
            notes.append(f"{run.group} skipped (status {status})")
            continue
        sha = store.text_attr(run.attrs, "checkpoint_sha256")
        model = by_sha.get(sha) if sha else by_label.get(run.name)
        runs.append(replace(run, model=model))
    return runs, notes


@dataclass
class Points:
    """One measured value per key (eps or method), as a sample over seeds, with the runs
    that were left out and why."""

    samples: dict[Hashable, Sample]
    notes: list[str]

    def listed(self) -> list[tuple[str, Sample]]:
        return [(key_label(k), s) for k, s in self.samples.items()]

    def listing(self) -> str:
        return ", ".join(f"{label}: {s}" for label, s in self.listed()) or "none"


def key_label(key: Hashable) -> str:
    return f"eps {key:g}" if isinstance(key, float) else str(key)


def by_eps(run: Run) -> float:
    return run.eps


def by_method(run: Run) -> str:
    """A method's runs: the label attribute, or the name, without `-s<seed>`."""
    label = store.text_attr(run.attrs, "label")
    return SEED_SUFFIX.sub("", label, count=1) if label else run.base


def gather(
    runs: Sequence[Run],
    value: Callable[[Run], float],
    *,
    key: Callable[[Run], Hashable] = by_eps,
    exclude_collapsed: bool = True,
) -> Points:
    """`value` of every run, grouped by `key` (sorted) into samples over seeds; collapsed
    models (unless not `exclude_collapsed`) and NaN values are left out and named."""
    values: dict[Hashable, list[float]] = {}
    notes = []
    for run in runs:
        k = key(run)
        if isinstance(k, float) and math.isnan(k):
            notes.append(f"{run.group} skipped (no eps in its config)")
            continue
        where = run.where(key_label(k))
        if run.collapsed and exclude_collapsed:
            m = run.model
            notes.append(
                f"collapsed (excluded): {where} (robust error {fmt(m.robust_error)}, "
                f"chance {fmt(m.chance_error)})"
            )
            continue
        v = float(value(run))
        if math.isnan(v):
            notes.append(f"NaN (excluded): {where}")
            continue
        values.setdefault(k, []).append(v)
    samples = {k: Sample.of(values[k]) for k in sorted(values)}
    return Points({k: s for k, s in samples.items() if s is not None}, notes)


def _numbers(*parts: str | Iterable[str]) -> str:
    """The measured numbers: the parts in order, each note once."""
    flat: list[str] = []
    for part in parts:
        flat += [part] if isinstance(part, str) else list(part)
    return "; ".join(dict.fromkeys(p for p in flat if p))


def _no_data(check: str, expected: str, notes: Sequence[str] = ()) -> Verdict:
    return Verdict(NO_DATA, check, _numbers(f"no {expected} in the results file", notes))


# --- options ------------------------------------------------------------------------------

NUMBER, OPTIONAL_NUMBER, TEXT, OPTIONAL_TEXT, NAMES, PAIRS = (
    "a number",
    "a number or nothing",
    "a text",
    "a text or nothing",
    "a list of names",
    "a list of [a, b] pairs of names",
)


def _valid(kind: str, value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == NUMBER:
        return number and math.isfinite(value)
    if kind == OPTIONAL_NUMBER:
        return value is None or (number and math.isfinite(value))
    if kind == TEXT:
        return isinstance(value, str)
    if kind == OPTIONAL_TEXT:
        return value is None or isinstance(value, str)
    if kind == NAMES:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    return isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, str) for v in p)
        for p in value
    )


def _options(
    check: str, given: Mapping[str, Any], spec: Mapping[str, tuple[str, Any]]
) -> dict[str, Any]:
    """The check's options: its defaults updated with `given`; BadInput for an unknown
    option or a value of the wrong kind."""
    unknown = sorted(set(given) - set(spec))
    if unknown:
        takes = ", ".join(spec) or "no options"
        raise BadInput(f"check {check}: unknown option(s) {', '.join(unknown)}; it takes {takes}")
    out = {name: default for name, (_, default) in spec.items()}
    for name, value in given.items():
        kind = spec[name][0]
        if not _valid(kind, value):
            raise BadInput(f"check {check}: option {name} = {value!r} must be {kind}")
        out[name] = value
    return out


# --- shared measurements ------------------------------------------------------------------


def _trace_window(run: Run, column: str) -> tuple[np.ndarray, int]:
    """A trace column and its window (attr `window`, else half the trace, at most all)."""
    values = run.array(column, 1)
    window = int(run.attrs.get("window", len(values) // 2))
    return values, max(1, min(window, len(values)))


def _surface_field(run: Run) -> tuple[str, np.ndarray]:
    """The adversarial loss of a surface, or the clean loss where it has none (eps 0)."""
    name = "adv_loss" if run.has("adv_loss") else "loss"
    return name, run.array(name)


def _nearest(axis: np.ndarray, value: float) -> int:
    return int(np.argmin(np.abs(axis - value)))


def _surface_center(run: Run, field: np.ndarray) -> tuple[int, ...]:
    """The grid index nearest the trained parameters (x = 0, and y = 0 for a 2D grid)."""
    axes = [run.array("x", 1)] + ([run.array("y", 1)] if run.has("y") else [])
    if tuple(len(a) for a in axes) != field.shape:
        raise BadInput(f"{run.group}: the loss grid does not match its x/y axes")
    return tuple(_nearest(a, 0.0) for a in axes)


def _nan_points(runs: Sequence[Run], count: Callable[[Run], int], what: str) -> list[str]:
    return [f"{run.group}: {n} NaN {what} excluded" for run in runs if (n := count(run))]


# --- the checks ---------------------------------------------------------------------------


def check_eigenvalues_grow(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Figs. 2/9: the top normalized eigenvalue grows with eps."""
    opts = _options("eigenvalues_grow", options, {"group_suffix": (TEXT, "")})
    text = (
        "The top normalized Hessian eigenvalue increases with eps over the models that did "
        "not collapse (mean over seeds, each step beyond 2 standard errors)."
    )
    runs, notes = load_runs(results, "hessian")
    runs = [r for r in runs if r.base.endswith(opts["group_suffix"])]
    if not runs:
        return _no_data(text, f"complete /hessian/<run>{opts['group_suffix']} groups", notes)
    normalized = gather(runs, lambda r: r.array("eigenvalues_normalized", 1)[0])
    raw = gather(runs, lambda r: r.array("eigenvalues", 1)[0])
    judged = trend(normalized.listed(), HIGHER)
    return Verdict(
        judged.status,
        text,
        _numbers(
            f"top normalized eigenvalue: {normalized.listing()}",
            judged.detail,
            f"raw top eigenvalue: {raw.listing()}",
            normalized.notes,
            raw.notes,
            notes,
        ),
    )


def check_gradients(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Figs. 1/8: small early gradients under a large eps; late gradients that
    do not vanish and grow with eps."""
    _options("gradients", options, {})
    text = (
        "(a) The mean gradient norm over the first window of updates is lower at the largest "
        "eps whose model did not collapse than at eps 0; (b) over the last window it "
        "increases with eps over the models that did not collapse."
    )
    runs, notes = load_runs(results, "trace")
    if not runs:
        return _no_data(text, "complete /trace/<model> groups", notes)

    def mean_over(last: bool) -> Callable[[Run], float]:
        def value(run: Run) -> float:
            grads, window = _trace_window(run, "grad_norm")
            return float(np.mean(grads[-window:] if last else grads[:window]))

        return value

    early, late = gather(runs, mean_over(last=False)), gather(runs, mean_over(last=True))
    listed = early.listed()
    if len(listed) < 2:
        a = Judged(NO_DATA, "(a) needs eps 0 and a larger eps")
    else:
        how = compare(listed[-1][1], listed[0][1])
        a = Judged(_yes(how == LOWER), f"(a) {listed[-1][0]} against {listed[0][0]}: {how}")
    b = trend(late.listed(), HIGHER)
    return Verdict(
        combine([a.status, b.status]),
        text,
        _numbers(
            f"early gradient norm: {early.listing()}",
            f"{a.detail} ({a.status})",
            f"late gradient norm: {late.listing()}",
            f"(b) {b.detail} ({b.status})",
            early.notes,
            late.notes,
            notes,
        ),
    )


@dataclass(frozen=True)
class _CosineAt:
    """One cosine run at a* (the largest a > 0 of the robust-error filter)."""

    a_star: float
    drop_top: float
    drop_random: float
    error_at_a: float
    error_at_0: float


def _cosine_at(run: Run, max_error: float) -> _CosineAt | None:
    """The run's numbers at a*, or None when no a > 0 keeps the robust error along the top
    eigenvector (both signs) below `max_error` (the grid is too coarse)."""
    alpha = run.array("alpha", 1)
    names = [f"robust_error_top_{s}" for s in ("plus", "minus")]
    names += ["cosine_top_mean", "cosine_random_mean"]
    arrays = {n: run.array(n, 1) for n in names}
    error = (arrays["robust_error_top_plus"] + arrays["robust_error_top_minus"]) / 2
    kept = (arrays["robust_error_top_plus"] < max_error) & (
        arrays["robust_error_top_minus"] < max_error
    )
    kept &= np.all([np.isfinite(a) for a in arrays.values()], axis=0)
    best = None
    for i in np.argsort(alpha):  # the positive a's from 0 up, until the filter first fails
        if alpha[i] <= 0:
            continue
        if not kept[i]:
            break
        best = i
    if best is None:
        return None
    zero = _nearest(alpha, 0.0)
    return _CosineAt(
        float(alpha[best]),
        1 - float(arrays["cosine_top_mean"][best]),
        1 - float(arrays["cosine_random_mean"][best]),
        float(error[best]),
        float(error[zero]),
    )


def check_cosine_drops(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Figs. 3/10: the cosine between the perturbations at theta +- aV drops
    along the top eigenvector and not along a random direction."""
    opts = _options("cosine_drops", options, {"max_robust_error": (NUMBER, 0.3)})
    limit = float(opts["max_robust_error"])
    text = (
        f"For every eps > 0, at a* (the largest a > 0 up to which the robust error at theta +- "
        f"aV along the top eigenvector stays below {limit:g}), 1 - cosine along the top "
        "eigenvector exceeds 1 - cosine along a random direction, and the robust error along "
        "the top eigenvector at a* exceeds the one at a = 0 (over seeds, beyond 2 standard "
        "errors)."
    )
    runs, notes = load_runs(results, "cosine")
    runs = [r for r in runs if not r.eps == 0]
    if not runs:
        return _no_data(text, "complete /cosine/<run> groups with eps > 0", notes)
    at = {r.group: _cosine_at(r, limit) for r in runs}
    coarse = [r for r in runs if at[r.group] is None]
    shown = [r for r in runs if at[r.group] is not None]

    def field(name: str) -> Points:
        return gather(shown, lambda r: getattr(at[r.group], name))

    top, rand, err_a, err_0 = (
        field(n) for n in ("drop_top", "drop_random", "error_at_a", "error_at_0")
    )
    statuses, parts = [], []
    for eps in sorted({r.eps for r in runs}):
        where = key_label(eps)
        if eps not in top.samples:
            statuses.append(FAILS)
            parts.append(f"{where}: not shown (no a > 0 passes the filter: the grid is too coarse)")
            continue
        a_stars = sorted({at[r.group].a_star for r in shown if r.eps == eps and not r.collapsed})
        drop = compare(top.samples[eps], rand.samples[eps])
        rise = compare(err_a.samples[eps], err_0.samples[eps])
        statuses.append(_yes(drop == HIGHER and rise == HIGHER))
        parts.append(
            f"{where}: a* {'/'.join(fmt(a) for a in a_stars)}, drop top {top.samples[eps]} "
            f"vs random {rand.samples[eps]} ({drop}), robust error at a* "
            f"{err_a.samples[eps]} vs at a = 0 {err_0.samples[eps]} ({rise}): {statuses[-1]}"
        )
    too_coarse = [f"{r.where(key_label(r.eps))}: no a > 0 passes the filter" for r in coarse]
    return Verdict(
        combine(statuses), text, _numbers(parts, too_coarse, top.notes, err_0.notes, notes)
    )


def check_connectivity(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Fig. 15: a flat eps = 0 Bezier curve, and a curve barrier that grows with eps."""
    from .connect import barriers

    opts = _options("connectivity", options, {"flat_fraction": (NUMBER, 0.1)})
    fraction = float(opts["flat_fraction"])
    text = (
        f"(a) The eps = 0 curve is flat: its training-loss barrier is at most {fraction:g} "
        "x the straight line's; (b) the curve's barrier (adversarial training loss for "
        "eps > 0) increases with eps."
    )
    runs, notes = load_runs(results, "connect")
    if not runs:
        return _no_data(text, "complete /connect/<pair> groups", notes)

    def barrier(what: str) -> Callable[[Run], float]:
        def value(run: Run) -> float:
            metric = "adv_train_loss" if run.has("adv_train_loss") else "train_loss"
            error = metric.replace("train_loss", "test_error")
            needed = [p + m for p in ("", "line_") for m in (metric, error)]
            arrays = {name: run.array(name, 1) for name in ("t", *needed)}
            return barriers(arrays)[f"{metric}_barrier_{what}"]

        return value

    curve, line = gather(runs, barrier("curve")), gather(runs, barrier("line"))
    if 0.0 in curve.samples and 0.0 in line.samples:
        c0, l0 = curve.samples[0.0], line.samples[0.0]
        flat = c0.mean <= fraction * l0.mean
        a = Judged(_yes(flat), f"(a) eps 0: curve {c0} {'<=' if flat else '>'} {fraction:g} x {l0}")
    else:
        a = Judged(NO_DATA, "(a) no eps 0 pair")
    b = trend(curve.listed(), HIGHER)
    return Verdict(
        combine([a.status, b.status]),
        text,
        _numbers(
            f"curve barrier: {curve.listing()}",
            f"line barrier: {line.listing()}",
            f"{a.detail} ({a.status})",
            f"(b) {b.detail} ({b.status})",
            curve.notes,
            line.notes,
            notes,
        ),
    )


def check_surface_steepens(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Fig. 12: the adversarial loss around the trained parameters gets steeper with eps."""
    _options("surface_steepens", options, {})
    text = (
        "The mean rise of the adversarial loss over the surface grid above its value at the "
        "trained parameters increases with eps over the models that did not collapse."
    )
    runs, notes = load_runs(results, "surface")
    if not runs:
        return _no_data(text, "complete /surface/<run> groups", notes)

    def rise(run: Run) -> float:
        _, field = _surface_field(run)
        center = field[_surface_center(run, field)]
        kept = field[np.isfinite(field)]
        return float(np.mean(kept - center)) if kept.size else math.nan

    rises = gather(runs, rise)
    judged = trend(rises.listed(), HIGHER)
    fields = sorted({_surface_field(r)[0] for r in runs})
    nans = _nan_points(runs, lambda r: int(np.isnan(_surface_field(r)[1]).sum()), "grid points")
    return Verdict(
        judged.status,
        text,
        _numbers(
            f"mean rise of {'/'.join(fields)}: {rises.listing()}",
            judged.detail,
            rises.notes,
            nans,
            notes,
        ),
    )


def check_collapse(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Theorem 1: above eps* adversarial training of a linear model ends at W = 0."""
    tol = _options("collapse", options, {"tolerance": (NUMBER, 1e-2)})["tolerance"]
    text = (
        "Trained above Theorem 1's threshold eps*, the linear model's weights end at zero "
        f"(norm at most {fmt(tol)} x the largest norm below eps*, the constant classifier); "
        "trained below eps* (eps > 0), they do not."
    )
    runs, notes = load_runs(results, "toy")
    runs = [r for r in runs if r.has("weight_norm") and "threshold" in r.attrs]
    if not runs:
        return _no_data(text, "/toy/liu-thm1 group", notes)
    parts, statuses = [], []
    for run in runs:
        eps, norms = run.array("x", 1), run.array("weight_norm", 1)
        threshold = float(run.attrs["threshold"])
        below, above = (eps > 0) & (eps < threshold), eps > threshold * (1 + 1e-9)
        scale = float(np.max(norms[eps < threshold]))
        collapsed_above = bool(np.all(norms[above] <= tol * scale)) if above.any() else None
        alive_below = bool(np.all(norms[below] > tol * scale)) if below.any() else None
        judged = [v for v in (collapsed_above, alive_below) if v is not None]
        statuses.append(HOLDS if all(judged) else PARTLY if any(judged) else FAILS)
        listing = ", ".join(f"eps {fmt(e)}: {fmt(n)}" for e, n in zip(eps, norms))
        parts.append(f"eps* = {fmt(threshold)}; final ||W||: {listing}")
    return Verdict(combine(statuses), text, _numbers(parts, notes))


KANAI_PAIRS = [["AT+EnSGD", "AT"], ["AWP+EnSGD", "AWP"]]


def _pairs_judged(
    pairs: Sequence[Sequence[str]],
    samples: Mapping[Hashable, Sample],
    ok: Callable[[str], bool],
    verb: str,
) -> tuple[list[str], list[str]]:
    """(a status per pair, its words): the first's sample compared with the second's, the
    pair holding when `ok(comparison)`; no data when either has no sample."""
    statuses, parts = [], []
    for first, second in pairs:
        missing = [m for m in (first, second) if m not in samples]
        if missing:
            statuses.append(NO_DATA)
            parts.append(f"{first} vs {second}: no numbers for {', '.join(missing)}")
            continue
        how = compare(samples[first], samples[second])
        statuses.append(_yes(ok(how)))
        parts.append(f"{first} {verb} {second}: {how} ({statuses[-1]})")
    return statuses, parts


def _is(wanted: str) -> Callable[[str], bool]:
    return lambda how: how == wanted


def check_lower_train_loss(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Kanai et al. Fig. 7 and F.1: EntropySGD reaches a lower training loss without
    necessarily flattening the landscape."""
    opts = _options("lower_train_loss", options, {"pairs": (PAIRS, KANAI_PAIRS)})
    text = (
        "For each pair, the (adversarial) training loss at alpha = 0 of the first method is "
        "lower than the second's (over seeds, beyond 2 standard errors); the flatness (mean "
        "rise at |alpha| = 1) is reported, not judged (Kanai et al. F.1: EntropySGD does not "
        "necessarily flatten the landscape)."
    )
    runs, notes = load_runs(results, "surface")
    if not runs:
        return _no_data(text, "complete /surface/<method> groups", notes)

    def at_zero(run: Run) -> float:
        _, field = _surface_field(run)
        return float(field[_surface_center(run, field)])

    def flatness(run: Run) -> float:
        _, field = _surface_field(run)
        center = _surface_center(run, field)
        x = run.array("x", 1)
        ends = [field[(_nearest(x, side), *center[1:])] for side in (-1.0, 1.0)]
        return float(np.mean(ends) - field[center])

    losses = gather(runs, at_zero, key=by_method, exclude_collapsed=False)
    rises = gather(runs, flatness, key=by_method, exclude_collapsed=False)
    statuses, parts = _pairs_judged(opts["pairs"], losses.samples, _is(LOWER), "lower than")
    return Verdict(
        combine(statuses),
        text,
        _numbers(
            f"loss at alpha = 0: {losses.listing()}",
            parts,
            f"rise at |alpha| = 1 (not judged): {rises.listing()}",
            losses.notes,
            rises.notes,
            notes,
        ),
    )


def check_loss_magnitudes(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Fig. 11: L_eps has similar magnitudes for every eps, and its range during
    training is smaller under a large eps."""
    opts = _options(
        "loss_magnitudes",
        options,
        {"tolerance": (NUMBER, 0.15), "start_steps": (NUMBER, 10), "smooth": (NUMBER, 50)},
    )
    tolerance, start, smooth = opts["tolerance"], int(opts["start_steps"]), int(opts["smooth"])
    text = (
        f"(a) The initial training loss (mean of the first {start} updates) of every eps is "
        f"within {tolerance:.0%} of eps 0's; (b) the range (max - min) of its {smooth}-update "
        "moving average decreases with eps over the models that did not collapse."
    )
    runs, notes = load_runs(results, "trace")
    if not runs:
        return _no_data(text, "complete /trace/<model> groups", notes)

    def initial(run: Run) -> float:
        return float(np.mean(run.array("loss", 1)[:start]))

    def spread(run: Run) -> float:
        loss = run.array("loss", 1)
        width = max(1, min(smooth, len(loss)))
        averaged = np.convolve(loss, np.ones(width) / width, mode="valid")
        return float(np.max(averaged) - np.min(averaged))

    first = gather(runs, initial, exclude_collapsed=False)
    ranges = gather(runs, spread)
    if 0.0 in first.samples and len(first.samples) > 1:
        base = first.samples[0.0].mean
        off = [
            key_label(k)
            for k, s in first.samples.items()
            if abs(s.mean - base) > tolerance * abs(base)
        ]
        a = Judged(
            _yes(not off), f"(a) outside {tolerance:.0%} of eps 0: {', '.join(off) or 'none'}"
        )
    else:
        a = Judged(NO_DATA, "(a) needs eps 0 and another eps")
    b = trend(ranges.listed(), LOWER)
    return Verdict(
        combine([a.status, b.status]),
        text,
        _numbers(
            f"initial loss: {first.listing()}",
            f"{a.detail} ({a.status})",
            f"range of the moving average: {ranges.listing()}",
            f"(b) {b.detail} ({b.status})",
            first.notes,
            ranges.notes,
            notes,
        ),
    )


def _directions_count(run: Run) -> int:
    """The number of directions behind a smoothness run's mean: the `directions` attribute,
    else the configured `count` (1 when neither is stored)."""
    for found in (run.attrs.get("directions"), run.config.get("count")):
        if found is not None and np.ndim(found) == 0 and float(found) >= 1:
            return int(found)
    return 1


def check_smoothest_clean(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Prop. 2, Kanai et al. Theorems 1-2: the L-inf adversarial loss is the least
    smooth, then L2, then the clean loss."""
    _options("smoothest_clean", options, {})
    norms = ("linf", "l2", "clean")
    text = (
        "At the smallest radius, the gradient-Lipschitz estimate of the L-inf adversarial "
        "loss exceeds the L2 one, which exceeds the clean loss's (beyond 2 standard errors "
        "over the directions)."
    )
    runs, notes = load_runs(results, "smoothness")
    complete = [r for r in runs if all(r.has(f"lipschitz_{n}_mean") for n in norms)]
    skipped = [
        f"{r.group} skipped (not all of {', '.join(norms)})" for r in runs if r not in complete
    ]
    if not complete:
        return _no_data(text, "complete /smoothness/<run> groups with linf, l2 and clean", notes)
    statuses, parts = [], []
    for run in complete:
        i = int(np.argmin(run.array("radius", 1)))
        n = _directions_count(run)
        samples = {
            norm: Sample(
                float(run.array(f"lipschitz_{norm}_mean", 1)[i]),
                float(run.array(f"lipschitz_{norm}_std", 1)[i]),
                n,
            )
            for norm in norms
        }
        nan = [k for k, s in samples.items() if math.isnan(s.mean)]
        if nan:
            parts.append(f"{run.name}: NaN (excluded) for {', '.join(nan)}")
            statuses += [NO_DATA, NO_DATA]
            continue
        radius = fmt(float(run.array("radius", 1)[i]))
        words = [f"{k} {s}" for k, s in samples.items()]
        for high, low in pairwise(norms):
            how = compare(samples[high], samples[low])
            statuses.append(_yes(how == HIGHER))
            words.append(f"{high} vs {low}: {how}")
        parts.append(f"{run.name} at radius {radius}: " + ", ".join(words))
    return Verdict(combine(statuses), text, _numbers(parts, skipped, notes))


def _table_rows(run: Run, metric: str) -> dict[str, Sample | None]:
    """A table's rows: mean, std and seed count of `metric` (std 0 and one seed when the
    group stores no `<metric>_std` or `seeds`)."""
    means = run.array(metric, 1)
    names = run.raw("row")
    if np.ndim(names) != 1 or len(names) != len(means):
        raise BadInput(f"{run.path}:{run.group}: dataset 'row' must name each row of {metric}")
    rows = [r.decode() if isinstance(r, bytes) else str(r) for r in names]
    std_name = f"{metric}_std"
    stds = run.array(std_name, 1) if run.has(std_name) else np.zeros(len(rows))
    seeds = np.broadcast_to(run.array("seeds") if run.has("seeds") else 1, (len(rows),))
    if stds.shape != means.shape:
        raise BadInput(f"{run.path}:{run.group}: {std_name} needs one value per row")
    return {
        row: None if math.isnan(m) else Sample(float(m), float(s), int(k))
        for row, m, s, k in zip(rows, means, stds, seeds)
    }


def check_rows_better(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Table 1, Kanai et al. Tables 1-3: some rows are more robust than others."""
    opts = _options(
        "rows_better",
        options,
        {
            "table": (OPTIONAL_TEXT, None),
            "better": (PAIRS, []),
            "at_least": (PAIRS, []),
            "metric": (TEXT, "robust_error"),
        },
    )
    metric = opts["metric"]
    if not opts["better"] and not opts["at_least"]:
        raise BadInput("check rows_better: give pairs of rows in option better or at_least")
    text = (
        f"In every table, for each pair in `better` the first row's {metric.replace('_', ' ')} "
        "is lower than the second's, and for each pair in `at_least` it is not higher (over "
        "seeds, beyond 2 standard errors)."
    )
    runs, notes = load_runs(results, "table")
    if opts["table"] is not None:
        runs = [r for r in runs if r.name == opts["table"]]
    if not runs:
        return _no_data(text, f"complete /table/{opts['table'] or '<name>'} groups", notes)
    tables = {r.name: _table_rows(r, metric) for r in runs}
    named = {row for pair in opts["better"] + opts["at_least"] for row in pair}
    unknown = sorted(named - {row for rows in tables.values() for row in rows})
    if unknown:
        raise BadInput(f"check rows_better: no table has the row(s) {', '.join(unknown)}")
    statuses, parts = [], []
    for name, rows in tables.items():
        listing = ", ".join(f"{row} {_or_nan(s)}" for row, s in rows.items())
        parts.append(f"{name}: {listing}")
        kept = {row: s for row, s in rows.items() if s is not None}
        for pairs, ok, verb in (
            (opts["better"], _is(LOWER), "lower than"),
            (opts["at_least"], lambda how: how != HIGHER, "not higher than"),
        ):
            inside = [p for p in pairs if p[0] in rows and p[1] in rows]
            got, words = _pairs_judged(inside, kept, ok, verb)
            statuses += got
            parts += [f"{name}: {w}" for w in words]
    apart = [
        f"{a} vs {b}: in no one table"
        for a, b in opts["better"] + opts["at_least"]
        if not any(a in rows and b in rows for rows in tables.values())
    ]
    statuses += [NO_DATA] * len(apart)
    return Verdict(combine(statuses), text, _numbers(parts, apart, notes))


@dataclass(frozen=True)
class _Sweep:
    """A `/sweep/<name>` group: x, its key, and each series' robust error per x."""

    name: str
    x: np.ndarray
    x_key: str
    errors: dict[str, list[Sample | None]]

    def listing(self) -> str:
        return "; ".join(
            f"{series}: "
            + ", ".join(f"{self.x_key} {x:g} {_or_nan(s)}" for x, s in zip(self.x, errs))
            for series, errs in self.errors.items()
        )

    def known(self, names: Iterable[str]) -> None:
        unknown = [n for n in names if n not in self.errors]
        if unknown:
            raise BadInput(
                f"/sweep/{self.name} has no series {', '.join(unknown)}; it has "
                f"{', '.join(self.errors)}"
            )


def _sweep(results: Path, name: str | None, check: str) -> _Sweep | None:
    """The sweep group `name` (or the only one); None when the file has none."""
    runs, _ = load_runs(results, "sweep")
    if name is not None:
        runs = [r for r in runs if r.name == name]
    if not runs:
        return None
    if len(runs) > 1:
        names = ", ".join(r.name for r in runs)
        raise BadInput(
            f"check {check}: the file has several sweeps ({names}); name one in option sweep"
        )
    run = runs[0]
    x = run.array("x", 1)
    try:
        series = json.loads(run.attrs.get("series", "[]"))
    except (TypeError, ValueError):
        series = None
    if not isinstance(series, list) or not all(isinstance(s, str) for s in series):
        raise BadInput(f"{run.group}: attribute series must be a JSON list of names")
    seeds = run.array("seeds") if run.has("seeds") else len(run.config.get("seeds", [0]))
    counts = np.broadcast_to(np.asarray(seeds), x.shape)
    errors = {}
    for s in series:
        mean = run.array(f"{s}_robust_error_mean", 1)
        std = run.array(f"{s}_robust_error_std", 1)
        errors[s] = [
            None if math.isnan(m) else Sample(float(m), float(d), int(k))
            for m, d, k in zip(mean, std, counts)
        ]
    return _Sweep(run.name, x, store.text_attr(run.attrs, "x_key") or "x", errors)


LIU_WARMUPS = ["cosine", "linear"]


def check_sweep_range(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Fig. 4: eps warmup gives good robust error over a wider range of settings."""
    opts = _options(
        "sweep_range",
        options,
        {
            "sweep": (OPTIONAL_TEXT, None),
            "good_margin": (NUMBER, 0.05),
            "warmup": (NAMES, LIU_WARMUPS),
            "baseline": (TEXT, "constant"),
        },
    )
    margin, baseline = float(opts["good_margin"]), opts["baseline"]
    text = (
        f"Each warmup series ({', '.join(opts['warmup'])}) has a mean robust test error within "
        f"{margin:g} of the best of all series at more values of the swept setting than "
        f"the {baseline} series."
    )
    sweep = _sweep(results, opts["sweep"], "sweep_range")
    if sweep is None:
        return _no_data(text, "complete /sweep/<name> group")
    sweep.known([*opts["warmup"], baseline])
    means = [s.mean for errs in sweep.errors.values() for s in errs if s is not None]
    if not means:
        return _no_data(text, f"finite robust error in /sweep/{sweep.name}")
    best = min(means)
    good = {
        series: sum(s is not None and s.mean <= best + margin for s in errs)
        for series, errs in sweep.errors.items()
    }
    statuses = [_yes(good[w] > good[baseline]) for w in opts["warmup"]]
    counts = ", ".join(f"{s} {good[s]} of {len(sweep.x)}" for s in [*opts["warmup"], baseline])
    return Verdict(
        combine(statuses),
        text,
        _numbers(
            f"best mean robust error {fmt(best)}; good (<= {fmt(best + margin)}): {counts}",
            f"robust error: {sweep.listing()}",
        ),
    )


def _series_best(errors: Sequence[Sample | None]) -> tuple[int, Sample] | None:
    kept = [(i, s) for i, s in enumerate(errors) if s is not None]
    return min(kept, key=lambda item: item[1].mean) if kept else None


def check_sweep_reference(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Fig. 13: learning-rate warmup does not give the benefit of eps warmup."""
    opts = _options(
        "sweep_reference", options, {"sweep": (OPTIONAL_TEXT, None), "reference": (TEXT, "")}
    )
    reference = opts["reference"]
    if not reference:
        raise BadInput("check sweep_reference: option reference (the eps-warmup series) is needed")
    text = (
        f"The best mean robust test error of every series is higher than the {reference} "
        "series' best (beyond 2 standard errors over seeds)."
    )
    sweep = _sweep(results, opts["sweep"], "sweep_reference")
    if sweep is None:
        return _no_data(text, "complete /sweep/<name> group")
    sweep.known([reference])
    bests = {s: _series_best(errs) for s, errs in sweep.errors.items()}
    if bests[reference] is None:
        return _no_data(text, f"finite robust error of {reference}")
    ref = bests[reference][1]
    statuses, parts = [], []
    for series, best in bests.items():
        if best is None:
            parts.append(f"{series}: NaN only (excluded)")
            statuses.append(NO_DATA)
            continue
        i, sample = best
        how = compare(sample, ref)
        if series != reference:
            statuses.append(_yes(how == HIGHER))
        tail = "" if series == reference else f": {how} ({statuses[-1]})"
        parts.append(f"{series} best {sample} at {sweep.x_key} {sweep.x[i]:g}{tail}")
    return Verdict(combine(statuses), text, _numbers(parts, f"robust error: {sweep.listing()}"))


def check_small_models(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Liu et al. Fig. 14: at small widths eps warmup still trains where a constant eps fails."""
    opts = _options(
        "small_models",
        options,
        {
            "sweep": (OPTIONAL_TEXT, None),
            "warmup": (NAMES, LIU_WARMUPS),
            "baseline": (TEXT, "constant"),
            "competitive": (NUMBER, 0.15),
        },
    )
    baseline, within = opts["baseline"], float(opts["competitive"])
    text = (
        f"At the smallest width the {baseline} series' robust test error is higher than each "
        f"warmup series' ({', '.join(opts['warmup'])}, beyond 2 standard errors), and each "
        f"warmup's error there is within {within:g} of its best over widths."
    )
    sweep = _sweep(results, opts["sweep"], "small_models")
    if sweep is None:
        return _no_data(text, "complete /sweep/<name> group")
    sweep.known([*opts["warmup"], baseline])
    small = int(np.argmin(sweep.x))
    base = sweep.errors[baseline][small]
    where = f"{sweep.x_key} {sweep.x[small]:g}"
    if base is None:
        return _no_data(text, f"finite robust error of {baseline} at {where}")
    statuses, parts = [], [f"{baseline} at {where}: {base}"]
    for series in opts["warmup"]:
        at_small, best = sweep.errors[series][small], _series_best(sweep.errors[series])
        if at_small is None or best is None:
            statuses += [NO_DATA, NO_DATA]
            parts.append(f"{series}: NaN at {where} (excluded)")
            continue
        how = compare(base, at_small)
        gap = at_small.mean - best[1].mean
        statuses += [_yes(how == HIGHER), _yes(gap <= within)]
        parts.append(
            f"{series} at {where}: {at_small} ({baseline} {how}: {statuses[-2]}), "
            f"{fmt(gap)} above its best {best[1]} ({statuses[-1]})"
        )
    return Verdict(combine(statuses), text, _numbers(parts, f"robust error: {sweep.listing()}"))


def check_faster_in_time(results: Path, options: Mapping[str, Any]) -> Verdict:
    """Kanai et al. Figs. 3/6: EntropySGD reaches a robust accuracy in less wall-clock time."""
    opts = _options(
        "faster_in_time",
        options,
        {"pairs": (PAIRS, KANAI_PAIRS), "target": (OPTIONAL_NUMBER, None)},
    )
    target_words = (
        f"robust test accuracy {opts['target']:g}"
        if opts["target"] is not None
        else "the lower of the two methods' best robust test accuracies minus 0.02"
    )
    text = (
        f"For each pair, the first method reaches {target_words} in less wall-clock time than "
        "the second (mean over seeds, beyond 2 standard errors; never reached counts as "
        "infinite)."
    )
    runs, notes = load_runs(results, "evalcurve")
    if not runs:
        return _no_data(text, "complete /evalcurve/<model> groups", notes)

    def accuracy(run: Run) -> np.ndarray:
        return 1 - run.array("robust_error", 1)

    def best_accuracy(run: Run) -> float:
        acc = accuracy(run)
        return float(np.nanmax(acc)) if np.any(np.isfinite(acc)) else math.nan

    best = gather(runs, best_accuracy, key=by_method, exclude_collapsed=False)
    statuses, parts = [], [f"best robust accuracy: {best.listing()}"]
    for first, second in opts["pairs"]:
        if first not in best.samples or second not in best.samples:
            got, words = _pairs_judged([(first, second)], best.samples, _is(LOWER), "")
            statuses += got
            parts += words
            continue
        target = opts["target"]
        if target is None:
            target = min(best.samples[first].mean, best.samples[second].mean) - 0.02

        def time_to(run: Run, target: float = target) -> float:
            if math.isnan(best_accuracy(run)):
                return math.nan
            reached = np.flatnonzero(accuracy(run) >= target)
            return float(run.array("wall_time", 1)[reached[0]]) if reached.size else math.inf

        pair = [r for r in runs if by_method(r) in (first, second)]
        times = gather(pair, time_to, key=by_method, exclude_collapsed=False)
        got, words = _pairs_judged([(first, second)], times.samples, _is(LOWER), "faster than")
        statuses += got
        parts.append(f"target {fmt(target)}: seconds {times.listing()}; {words[0]}")
    return Verdict(combine(statuses), text, _numbers(parts, best.notes, notes))


CHECKS: dict[str, Callable[[Path, Mapping[str, Any]], Verdict]] = {
    "eigenvalues_grow": check_eigenvalues_grow,
    "gradients": check_gradients,
    "cosine_drops": check_cosine_drops,
    "connectivity": check_connectivity,
    "surface_steepens": check_surface_steepens,
    "lower_train_loss": check_lower_train_loss,
    "loss_magnitudes": check_loss_magnitudes,
    "smoothest_clean": check_smoothest_clean,
    "rows_better": check_rows_better,
    "sweep_range": check_sweep_range,
    "sweep_reference": check_sweep_reference,
    "small_models": check_small_models,
    "faster_in_time": check_faster_in_time,
    "collapse": check_collapse,
}


def verdict(results: str | Path, check: str, options: Mapping[str, Any] | None = None) -> Verdict:
    """The verdict of check `check` (a key of CHECKS) on a results file, with the recipe's options."""
    if check not in CHECKS:
        raise BadInput(f"unknown check {check!r}; choose from {', '.join(CHECKS)}")
    return CHECKS[check](Path(results), dict(options or {}))
