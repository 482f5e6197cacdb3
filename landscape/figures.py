"""Paper recipes (`landscape/recipes/*.toml`) run end to end: train, analyse, collect, render, index.

A recipe names the models it needs (by id, from `recipes/models.toml` or its own
`[<mode>.models]` table), then a list of steps. A step is either an analysis run
through the library (`analysis = "hessian"`, its `options` and `data` tables and a run
`name`, optionally `each = [ids]` to run it once per model with `{ckpt}`, `{dir}`,
`{id}`, `{eps}` substituted, or pairs of ids for `connect`, whose `curve` table trains
the curve first) or a `collect` step that gathers what the trainer wrote (traces, per-epoch
evaluations, final metrics) into the recipe's results file. Every step is cached: models
are trained into folders named by the hash of their config (shared across recipes), and
the analyses skip groups that are stored complete with the same config, so a
rerun computes nothing and an interrupted run resumes.

The recipes to run form a graph (`plan_graph`): one task per model to train, shared by
config hash, and one task per recipe that depends on its models' trainings and alone
writes the recipe's results file. `launchers` runs that graph in this process, on Ray or
on SLURM; `train_task` and `recipe_task` are the two kinds of task, the same everywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import store
from .util import SEED_SUFFIX, BadInput, resolve_device

MODES = ("quick", "mnist", "full")
# A tier's default dataset, which `--dataset` swaps (the mnist tier runs on a full MNIST too).
TIER_DATASETS = {"quick": "digits", "mnist": "mnist5k", "full": "mnist"}

# Shipped inside the package (package data), so an installed wheel finds them too.
RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
LOCK_NAME = "train.lock"
VERDICT_NAME = "verdict.json"


@dataclass(frozen=True)
class Recipe:
    """One figure or table of a paper; `check` names the `verdicts` check of its claim,
    `check_options` its options (a mode's own `check_options` table adds to them)."""

    name: str
    paper: str
    claim: str
    note: str
    modes: dict[str, dict[str, Any]]
    check: str = ""
    check_options: dict[str, Any] = field(default_factory=dict)

    def plan(self, mode: str) -> dict[str, Any]:
        if mode not in self.modes:
            raise BadInput(f"recipe {self.name} has no [{mode}] settings")
        return self.modes[mode]

    def options(self, mode: str) -> dict[str, Any]:
        return {**self.check_options, **self.modes.get(mode, {}).get("check_options", {})}

    def note_for(self, mode: str) -> str:
        """The mode's own `note` (its setting), else the recipe's, which describes the
        quick tier."""
        return self.modes.get(mode, {}).get("note", self.note if mode == "quick" else "")


@dataclass
class RecipeOutcome:
    name: str
    files: list[Path] = field(default_factory=list)
    check: str = ""
    seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Training:
    """One model to train: its folder's name (the config hash), TrainConfig fields, a label."""

    key: str
    fields: dict[str, Any]
    label: str


@dataclass(frozen=True)
class Graph:
    """The trainings by key, and each recipe with the keys of the models it reads."""

    trainings: dict[str, Training]
    recipes: list[tuple[Recipe, tuple[str, ...]]]


def load_recipes(folder: str | Path = RECIPE_DIR) -> dict[str, Recipe]:
    """Every `*.toml` recipe in `folder` except `models.toml`, by name."""
    recipes: dict[str, Recipe] = {}
    for path in sorted(Path(folder).glob("*.toml")):
        if path.name == "models.toml":
            continue
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise BadInput(f"recipe {path} is not valid TOML: {exc}") from exc
        modes = {m: raw[m] for m in MODES if m in raw}
        recipes[raw["name"]] = Recipe(
            raw["name"],
            raw.get("paper", ""),
            raw.get("claim", ""),
            raw.get("note", ""),
            modes,
            raw.get("check", ""),
            raw.get("check_options", {}),
        )
    return recipes


def load_models(folder: str | Path, mode: str) -> dict[str, dict[str, Any]]:
    path = Path(folder) / "models.toml"
    if not path.exists():
        return {}
    return dict(tomllib.loads(path.read_text()).get(mode, {}))


def model_dir(runs: Path, config: Mapping[str, Any]) -> Path:
    """Folders are named by the config's hash, so recipes that need the same model share it."""
    digest = hashlib.sha256(store.canonical_config(config).encode()).hexdigest()[:12]
    return runs / "checkpoints" / digest


def train_config(fields: Mapping[str, Any], label: str) -> Any:
    """The checked `TrainConfig` of a recipe's model (TOML lists become tuples), so a bad
    model is refused when the graph is planned, before any work."""
    from .data import dataset_info
    from .train import TrainConfig

    try:
        config = TrainConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        )
        config.validate()
        dataset_info(config.dataset)
    except (TypeError, BadInput) as exc:
        raise BadInput(f"recipe model {label}: {exc}") from exc
    return config


@contextlib.contextmanager
def model_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder/train.lock` while the model there is trained or read.

    `fcntl.flock` on a file opened for writing, so two processes (or two nodes) asking for
    one model train it once: the second waits, then finds `final.pt` and reuses it. The
    kernel releases the lock when its holder exits or is killed, so a killed worker leaves
    no stale lock and the next one resumes from `resume.pt`. Limits: POSIX systems only;
    on NFS, Linux turns flock into POSIX byte-range locks, which hold across clients only
    when the share is mounted with locking (not `nolock` nor `local_lock=flock|all`), and a
    crashed client's lock lasts until the server's lease runs out (about 90 s on NFSv4).
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class Runner:
    """Runs recipes for one mode into `runs/` (checkpoints, results) and `out/` (figures)."""

    def __init__(
        self,
        mode: str,
        *,
        runs: Path,
        out: Path,
        device: str,
        data_root: str | None,
        folder: Path = RECIPE_DIR,
        log: Callable[[str], None] = print,
        dataset: str | None = None,
        overwrite: bool = False,
    ):
        if mode not in MODES:
            raise BadInput(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        self.dataset = dataset
        # Replace results whose recipe settings changed and drop the groups a recipe no
        # longer makes.
        self.overwrite = overwrite
        self.chance_errors: dict[str, float] = {}
        self.mode, self.runs, self.out, self.device, self.data_root = (
            mode,
            runs,
            out,
            device,
            data_root,
        )
        self.folder = folder
        self.shared_models = load_models(folder, mode)
        self.log = log

    def model_fields(self, plan: Mapping[str, Any], model_id: str) -> Mapping[str, Any]:
        """The TrainConfig fields of model `model_id` (the recipe's table, then models.toml).

        `<id>-s<seed>` is model `<id>` trained with that seed, so seeds need no table rows.
        """
        table = {**self.shared_models, **plan.get("models", {})}
        base, seed = split_seed(model_id)
        if base not in table:
            raise BadInput(
                f"model id {model_id!r} is defined neither in the recipe nor in models.toml"
            )
        fields = dict(table[base])
        if seed is not None:
            fields["seed"] = seed
        return fields

    def model(self, plan: Mapping[str, Any], model_id: str) -> Path:
        """Train (or reuse) the model `model_id`; returns its folder."""
        return self.trained(self.model_fields(plan, model_id), model_id)

    def trained(self, fields: Mapping[str, Any], label: str) -> Path:
        """Train (or reuse, or resume) the model of these TrainConfig fields; returns its folder.

        Under the model's lock (`model_lock`), so concurrent workers train it once.
        """
        from .train import train

        config, folder = self.located(fields, label)
        with model_lock(folder):
            if not (folder / "final.pt").exists():
                self.log(f"  train {label} -> {folder}")
            train(
                config,
                folder,
                device=resolve_device(self.device),
                data_root=self.data_root,
                command=f"landscape figures ({label})",
            )
        return folder

    def trainings(self, recipe: Recipe) -> dict[str, Training]:
        """Every model the recipe's steps train or read, by folder name, in first-use order."""
        from .analysis import analyses

        plan = recipe.plan(self.mode)
        wanted: list[tuple[Mapping[str, Any], str]] = []
        for step in plan.get("steps", []):
            if step.get("analysis") not in analyses() and step.get("collect") not in COLLECTORS:
                raise BadInput(
                    f"recipe {recipe.name}: a step needs `analysis` (one of "
                    f"{', '.join(analyses())}) or `collect` (one of {', '.join(COLLECTORS)})"
                )
            for model_id in step_model_ids(step):
                wanted.append((self.model_fields(plan, model_id), model_id))
            wanted += STEP_MODELS.get(step.get("collect", ""), lambda s: [])(step)
        out: dict[str, Training] = {}
        for fields, label in wanted:
            key = self.located(fields, label)[1].name
            out.setdefault(key, Training(key, self.on_dataset(fields), label))
        return out

    def on_dataset(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A model's fields with the tier's default dataset swapped for `dataset` when one
        is set: for every model, those `each` names and those of sweeps and tables alike."""
        if self.dataset and fields.get("dataset") == TIER_DATASETS.get(self.mode):
            return {**fields, "dataset": self.dataset}
        return dict(fields)

    def located(self, fields: Mapping[str, Any], label: str) -> tuple[Any, Path]:
        """The TrainConfig of these fields (on the tier's dataset) and its model's folder."""
        config = train_config(self.on_dataset(fields), label)
        return config, model_dir(self.runs, config.as_dict())

    def substitutions(self, plan: Mapping[str, Any], item: str | Sequence[str]) -> dict[str, str]:
        ids = [item] if isinstance(item, str) else list(item)
        subs: dict[str, str] = {}
        for i, model_id in enumerate(ids):
            folder = self.model(plan, model_id)
            eps = str(_final_metrics(folder)["config"]["eps"])
            suffix = "" if i == 0 else str(i)
            subs.update(
                {
                    f"ckpt{suffix}": str(folder / "final.pt"),
                    f"dir{suffix}": str(folder),
                    f"id{suffix}": model_id,
                    f"eps{suffix}": eps,
                }
            )
        if len(ids) > 1:
            subs["ckpt0"], subs["id0"] = subs["ckpt"], subs["id"]
        return subs

    def analysis_step(
        self, plan: Mapping[str, Any], step: Mapping[str, Any], results: Path
    ) -> set[str]:
        """Run an analysis step once per `each` item through the library, into the recipe's
        results file: the inputs loaded by `analysis.load_inputs` (or, for a pair, a curve
        trained first), the analysis built from the step's `options` (eps: the model's
        training eps unless given), its files read (`with_files`), then `analysis.run`.
        Returns the groups it stored or found stored."""
        from .analysis import analyses, load_inputs, run

        kind = analyses()[step["analysis"]]
        data = dict(step.get("data", {}))
        groups: set[str] = set()
        for item in step_items(step) or [None]:
            subs = self.substitutions(plan, item) if item is not None else {}
            subs.update(results=str(results), runs=str(self.runs))
            options = {k: _filled(v, subs) for k, v in step.get("options", {}).items()}
            name = _filled(step.get("name", "{id}"), subs)
            if kind.takes == "nothing":
                inputs = None
                job = kind.from_options({"device": self.device, **options})
            elif kind.takes == "pair":
                job, inputs = self.curve(step, options, data, subs, results, name)
            else:
                inputs = load_inputs(
                    subs["ckpt"], device=self.device, data_root=self.data_root, **data
                )
                options.setdefault("eps", float(subs["eps"]))
                job = kind.from_options(options, family=inputs.family)
                job = job.with_files(inputs, results)
            self.log(f"  {kind.name} {name}")
            stored = run(job, inputs, out=results, name=name, overwrite=self.overwrite)
            if stored is not None:
                groups.add(stored.group)
        return groups

    def curve(
        self,
        step: Mapping[str, Any],
        options: dict[str, Any],
        data: Mapping[str, Any],
        subs: Mapping[str, str],
        results: Path,
        name: str,
    ) -> tuple[Any, Any]:
        """A pair step (`connect`): its analysis, and its inputs with the Bezier curve
        between the two models trained first (`train_curve`, with the step's `curve`
        options and file), unless the run is stored already."""
        from .analysis import stored_state
        from .connect import Connect, CurveConfig, curve_inputs, load_endpoints, train_curve

        device = resolve_device(self.device)
        ends = load_endpoints(subs["ckpt"], subs["ckpt1"], device)
        options.setdefault("eps", float(subs["eps"]))
        attack = {
            k: options[k] for k in ("eps", "norm", "pgd_steps", "pgd_step_size") if k in options
        }
        training = CurveConfig(**attack, **step.get("curve", {}))
        inputs = curve_inputs(ends, training, data_root=self.data_root, device=device, **data)
        job = Connect.from_options(options, family=inputs.family)
        _, stored = stored_state(job, inputs, out=results, name=name, overwrite=self.overwrite)
        if not stored:
            path = Path(_filled(step.get("curve_out", "{runs}/curves/{id}.curve.pt"), subs))
            self.log(f"  curve {name} -> {path}")
            trained = train_curve(
                ends,
                training,
                path,
                device=device,
                data_root=self.data_root,
                overwrite=self.overwrite,
            )
            inputs = inputs.with_curve(trained)
        return job, inputs

    def record_models(self, plan: Mapping[str, Any], results: Path) -> set[str]:
        """`/models/<id>` per model the steps name: its test errors, the constant
        classifier's error and the sha256 of its `final.pt`, which the analyses' groups
        record, so a verdict can tell a collapsed model (Liu et al. Thm. 1) from the rest.
        Returns those groups."""
        ids = {model_id for step in plan.get("steps", []) for model_id in step_model_ids(step)}
        if not ids:
            return set()
        from .checkpoint import sha256_file

        stored = {g for g, _ in store.list_groups(results)} if results.exists() else set()
        for model_id in sorted(ids):
            folder = self.model(plan, model_id)
            final = folder / "final.pt"
            sha = sha256_file(final)
            group = f"/models/{model_id}"
            if (
                group in stored
                and store.read_group(results, group)[1].get("checkpoint_sha256") == sha
            ):
                continue
            train = _final_metrics(folder)
            metrics = train["metrics"]
            attrs = _provenance("landscape figures (models)", train["config"])
            attrs.update(
                checkpoint=str(final),
                checkpoint_sha256=sha,
                chance_error=self.chance_error(train["config"]["dataset"]),
            )
            errors = np.array([metrics["test_clean_error"], metrics["test_robust_error"]])
            store.write_group(results, group, {"test_error": errors}, attrs, overwrite=True)
        return {f"/models/{model_id}" for model_id in ids}

    def chance_error(self, dataset: str) -> float:
        """The test error of the best constant classifier, read once per dataset."""
        from .data import load_dataset
        from .train import constant_classifier_error

        if dataset not in self.chance_errors:
            _, y = load_dataset(dataset, "test", self.data_root, "cpu")
            self.chance_errors[dataset] = constant_classifier_error(y)
        return self.chance_errors[dataset]

    def run(self, recipe: Recipe) -> RecipeOutcome:
        from .plots import render_file

        t0 = time.perf_counter()
        plan = recipe.plan(self.mode)
        results = self.runs / f"{recipe.name}.h5"
        made: set[str] = set()  # the groups this recipe stores now
        for step in plan.get("steps", []):
            if "analysis" in step:
                made |= self.analysis_step(plan, step, results)
            else:  # a known collector: `trainings` checked every step when planning
                made |= COLLECTORS[step["collect"]](self, plan, step, results)
        made |= self.record_models(plan, results)
        if self.overwrite and results.exists():
            stale = [g for g, _ in store.list_groups(results) if g not in made]
            if stale:
                self.log(f"  dropped {', '.join(stale)} (no longer in the recipe)")
                store.drop_groups(results, stale)
        outcome = RecipeOutcome(recipe.name)
        if results.exists():
            target = self.out / recipe.name
            outcome.files = render_file(
                results,
                target,
                formats=tuple(plan.get("formats", ["png"])),
                figures=tuple(plan.get("figures", [])),
            )
            if recipe.check:
                from .verdicts import verdict

                found = verdict(results, recipe.check, recipe.options(self.mode))
                outcome.check = found.status
                (target / VERDICT_NAME).write_text(json.dumps(asdict(found), indent=1) + "\n")
        outcome.seconds = time.perf_counter() - t0
        return outcome


def split_seed(model_id: str) -> tuple[str, int | None]:
    """`e01-s2` -> (`e01`, 2); an id without a seed suffix -> (id, None)."""
    match = re.fullmatch("(.+)" + SEED_SUFFIX.pattern, model_id)
    return (match[1], int(match[2])) if match else (model_id, None)


def step_items(step: Mapping[str, Any]) -> list[str | list[str]]:
    """A step's `each`; `seeds = [0, 1, 2]` runs every model id once per seed (`<id>-s<seed>`)."""
    items = list(step.get("each", []))
    seeds = step.get("seeds")
    if seeds is None:
        return items
    if any(not isinstance(item, str) for item in items):
        raise BadInput("`seeds` applies to single models; name the pairs' seeds (`<id>-s<seed>`)")
    return [f"{item}-s{seed}" for item in items for seed in seeds]


def step_model_ids(step: Mapping[str, Any]) -> list[str]:
    """Every model id a step's `each` names, both ends of a pair included."""
    return [m for item in step_items(step) for m in ([item] if isinstance(item, str) else item)]


def _filled(value: Any, subs: Mapping[str, str]) -> Any:
    """A step's option with `{ckpt}`, `{id}`, `{eps}`, `{results}`, `{runs}` filled in."""
    if isinstance(value, str):
        return value.format(**subs)
    if isinstance(value, list):
        return [_filled(v, subs) for v in value]
    return value


def _final_metrics(folder: Path) -> dict[str, Any]:
    from .checkpoint import read_checkpoint

    return read_checkpoint(folder / "final.pt")["train"]


def _provenance(command: str, config: Mapping[str, Any]) -> dict[str, Any]:
    return store.provenance(command=command, config=config)


def _copy_trainer_groups(
    runner: Runner,
    plan: Mapping[str, Any],
    step: Mapping[str, Any],
    results: Path,
    source: str,
    target: str,
    extra: Callable[[str], dict[str, Any]],
    dims: Callable[[dict[str, Any]], dict[str, tuple[str, ...]] | None] = lambda arrays: None,
) -> set[str]:
    """Copy group `source` of each model's trace.h5 into `/<target>/<id>`, plus `extra` attrs;
    returns those groups.

    A group already holding the same source (same `created` stamp and extra attrs) is
    left alone, so a cached rerun does not rewrite the results file.
    """
    present = {g for g, _ in store.list_groups(results)} if results.exists() else set()
    groups = set()
    for model_id in step_items(step):
        folder = runner.model(plan, model_id)
        arrays, attrs = store.read_group(folder / "trace.h5", source)
        attrs = {**attrs, **extra(model_id)}
        group = f"/{target}/{model_id}"
        groups.add(group)
        if group in present:
            stored = store.read_group(results, group)[1]
            if all(
                stored.get(k) == v for k, v in attrs.items() if k in ("created", *extra(model_id))
            ):
                continue
        store.write_group(results, group, arrays, attrs, overwrite=True, dims=dims(arrays))
    return groups


def collect_traces(
    runner: Runner, plan: Mapping[str, Any], step: Mapping[str, Any], results: Path
) -> set[str]:
    """Each model's per-batch trace into `/trace/<id>` (Liu Fig. 1, 8, 11)."""
    window = {"window": int(step["window"])} if "window" in step else {}
    return _copy_trainer_groups(
        runner,
        plan,
        step,
        results,
        "/trace",
        "trace",
        lambda model_id: window,
        dims=lambda arrays: {k: ("step",) for k in arrays if k != "step"},
    )


def collect_evals(
    runner: Runner, plan: Mapping[str, Any], step: Mapping[str, Any], results: Path
) -> set[str]:
    """Per-epoch test metrics and wall time into `/evalcurve/<id>` (Kanai Fig. 3, 6)."""
    labels = step.get("labels", {})
    return _copy_trainer_groups(
        runner,
        plan,
        step,
        results,
        "/eval",
        "evalcurve",
        lambda model_id: {"label": labels.get(model_id, model_id)},
    )


def sweep_points(
    step: Mapping[str, Any],
) -> Iterator[tuple[str, int, int, dict[str, Any], str]]:
    """(series, value index, seed index, TrainConfig fields, label) of each model of a sweep."""
    key, values, seeds = step["x"], list(step["values"]), list(step.get("seeds", [0]))
    for series, overrides in step["series"].items():
        for i, value in enumerate(values):
            for j, seed in enumerate(seeds):
                fields = {**step["base"], **overrides, key: value, "seed": seed}
                yield series, i, j, fields, f"{step['name']}/{series}/{key}={value}/seed={seed}"


def collect_sweep(
    runner: Runner, plan: Mapping[str, Any], step: Mapping[str, Any], results: Path
) -> set[str]:
    """Final test errors of model series against one setting (Liu Fig. 4, 13, 14).

    Each series is `base` plus its overrides, trained at every value of `x` (a
    TrainConfig field such as `lr` or `width`) for every seed; seeds give mean and std.
    `reference` names a series drawn as a line at its best mean (Liu Fig. 13).
    """
    key, values, seeds = step["x"], list(step["values"]), list(step.get("seeds", [0]))
    arrays: dict[str, Any] = {"x": np.array(values, dtype=float)}
    errors = {s: np.full((len(values), len(seeds), 2), np.nan) for s in step["series"]}
    for series, i, j, fields, label in sweep_points(step):
        m = _final_metrics(runner.trained(fields, label))["metrics"]
        errors[series][i, j] = (m["test_clean_error"], m["test_robust_error"])
    for series, table in errors.items():
        for k, metric in enumerate(("clean_error", "robust_error")):
            arrays[f"{series}_{metric}_mean"] = table[:, :, k].mean(1)
            arrays[f"{series}_{metric}_std"] = table[:, :, k].std(1, ddof=min(1, len(seeds) - 1))
    attrs = _provenance(
        "landscape figures (sweep)", {k: v for k, v in step.items() if k != "collect"}
    )
    attrs["x_key"], attrs["series"] = key, json.dumps(list(step["series"]))
    if "reference" in step:  # drawn as the paper's horizontal line (Liu Fig. 13)
        attrs["reference"] = json.dumps(step["reference"])
    return {store.write_group(results, f"/sweep/{step['name']}", arrays, attrs, overwrite=True)}


def table_rows(
    step: Mapping[str, Any],
) -> Iterator[tuple[str, Mapping[str, Any], dict[str, Any], str]]:
    """(row name, row, TrainConfig fields, label) of each row of a table step, once per seed
    of its `seeds` list (default: the row's own seed)."""
    for name, row in step["rows"].items():
        fields = {k: v for k, v in {**step.get("base", {}), **row}.items() if k != "ensemble"}
        if "seeds" not in step:
            yield name, row, fields, f"{step['name']}/{name}"
            continue
        for seed in step["seeds"]:
            yield name, row, {**fields, "seed": seed}, f"{step['name']}/{name}/seed={seed}"


def collect_table(
    runner: Runner, plan: Mapping[str, Any], step: Mapping[str, Any], results: Path
) -> set[str]:
    """Clean and robust test error per row under one attack (Liu Table 1; Kanai Tables 1, 3).

    A row is `base` plus overrides; `ensemble = "period_*"` in a row evaluates the
    snapshot ensemble of those checkpoints instead of `final.pt`; `checkpoint = "best.pt"`
    evaluates early stopping's model (Kanai et al. E). `eps`, `norm` and `pgd_steps` set the
    attack. With `seeds`, every row is trained once per seed: the errors are the means,
    `*_std` their standard deviations (ddof 1) and `*_seeds` the values per seed.
    """
    from .attacks import attack_config, evaluate
    from .checkpoint import load_checkpoint
    from .data import dataset_info, load_dataset
    from .util import resolve_device

    config = {k: v for k, v in step.items() if k != "collect"}
    group = f"/table/{step['name']}"
    if results.exists() and store.find_complete(results, group, config, overwrite=True):
        return {group}
    device = resolve_device(runner.device)
    errors: dict[str, list[tuple[float, float]]] = {}
    for label, row, fields, train_label in table_rows(step):
        folder = runner.trained(fields, train_label)
        chosen = folder / step.get("checkpoint", "final.pt")
        paths = sorted(folder.glob(row["ensemble"])) if "ensemble" in row else [chosen]
        loaded = [load_checkpoint(p, device) for p in paths]
        dataset = loaded[0][1]["dataset"]
        X, y = load_dataset(dataset, "test", runner.data_root, device)
        n = int(step.get("samples", X.shape[0]))
        cfg = attack_config(
            float(step["eps"]),
            family=dataset_info(dataset).family,
            norm=step.get("norm", "linf"),
            steps=step.get("pgd_steps"),
        )
        ev = evaluate([m for m, _ in loaded], X[:n], y[:n], cfg)
        errors.setdefault(label, []).append((ev.clean_error, ev.adv_error))
    per_seed = np.array(list(errors.values()))  # (rows, seeds, clean/robust)
    arrays = {"index": np.arange(len(errors)), "row": np.array(list(errors))}
    for k, metric in enumerate(("clean_error", "robust_error")):
        arrays[metric] = per_seed[:, :, k].mean(1)
        if "seeds" in step:
            arrays[f"{metric}_std"] = per_seed[:, :, k].std(1, ddof=min(1, per_seed.shape[1] - 1))
            arrays[f"{metric}_seeds"] = per_seed[:, :, k]
    if "seeds" in step:
        arrays["seeds"] = np.full(len(errors), per_seed.shape[1])
    return {
        store.write_group(
            results, group, arrays, _provenance("landscape figures (table)", config), overwrite=True
        )
    }


def collect_schedules(
    runner: Runner, plan: Mapping[str, Any], step: Mapping[str, Any], results: Path
) -> set[str]:
    """Schedules against the epoch into `/schedule/<name>`: eq. (5)'s eps curves for the
    settings of C.1 (Liu Fig. 7: `curves = {label = {kind, target, eps_max, warmup}}`), or
    the learning rate of whole training configs, periodic resets included (Liu Fig. 6:
    `lr_curves = {label = {TrainConfig fields}}`); attr `quantity` says which."""
    from .schedules import EpsSchedule

    epochs = float(step["epochs"])
    d = np.linspace(0, epochs, int(step.get("points", 401)))
    arrays: dict[str, Any] = {"epoch": d}
    for label, c in step.get("curves", {}).items():
        sched = EpsSchedule(
            c["kind"],
            float(c["target"]),
            float(c.get("eps_min", 0.0)),
            c.get("eps_max"),
            float(c.get("warmup", epochs)),
        )
        arrays[label] = np.array([sched(v) for v in d])
    for label, fields in step.get("lr_curves", {}).items():
        schedule = train_config({**fields, "epochs": int(epochs)}, label).schedule()
        arrays[label] = np.array([schedule.lr_at(v) for v in d])
    attrs = _provenance("landscape figures (schedules)", step)
    attrs["quantity"] = "lr" if "lr_curves" in step else "eps"
    return {store.write_group(results, f"/schedule/{step['name']}", arrays, attrs, overwrite=True)}


# Each collector writes its groups into the results file and returns their names.
COLLECTORS: dict[str, Callable[[Runner, Mapping[str, Any], Mapping[str, Any], Path], set[str]]] = {
    "traces": collect_traces,
    "evals": collect_evals,
    "sweep": collect_sweep,
    "table": collect_table,
    "schedules": collect_schedules,
}
# The models a collect step trains besides those its `each` names.
STEP_MODELS: dict[str, Callable[[Mapping[str, Any]], list[tuple[dict[str, Any], str]]]] = {
    "sweep": lambda step: [(fields, label) for *_, fields, label in sweep_points(step)],
    "table": lambda step: [(fields, label) for *_, fields, label in table_rows(step)],
}


def natural_key(name: str) -> list[Any]:
    """`liu-fig2` before `liu-fig11`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def stored_verdict(folder: Path) -> dict[str, str] | None:
    """The verdict a recipe's last run computed (`verdict.json` beside its figures)."""
    path = folder / VERDICT_NAME
    return json.loads(path.read_text()) if path.exists() else None


def verdict_markdown(found: Mapping[str, str]) -> str:
    return f"**Verdict: {found['status']}.** {found['check']} Measured: {found['numbers']}"


def write_index(out: Path, recipes: Sequence[Recipe], mode: str) -> Path:
    """`<out>/index.md`: a table of verdicts, then per recipe the verdict computed from its
    numbers, the paper's claim, the setting and the files.

    Built from what is on disk, so a run with `--only` keeps the other recipes' entries.
    """
    shown = []
    for recipe in sorted(recipes, key=lambda r: natural_key(r.name)):
        folder = out / recipe.name
        files = (
            sorted(p for p in folder.glob("*") if p.suffix in (".png", ".html", ".pdf", ".svg"))
            if folder.is_dir()
            else []
        )
        if files:
            shown.append((recipe, files, stored_verdict(folder)))
    lines = [
        f"# Figures ({mode} tier)",
        "",
        f"Regenerate with `landscape figures --{mode}`. Each entry opens with its verdict: a",
        "check of the paper's claim computed from this run's numbers (`landscape.verdicts`),",
        "then the claim as the paper states it, the setting, and the files.",
        "",
        "| recipe | paper | verdict |",
        "|---|---|---|",
    ]
    for recipe, _, found in shown:
        status = found["status"] if found else "not judged (no trained model)"
        item = recipe.paper.split(":")[0]
        lines.append(f"| [{recipe.name}](#{recipe.name}) | {item} | {status} |")
    lines.append("")
    for recipe, files, found in shown:
        lines += [f"## {recipe.name}", "", f"*{recipe.paper}*", ""]
        if found:
            lines += [verdict_markdown(found), ""]
        lines += [f"**Claim.** {recipe.claim}", ""]
        note = recipe.note_for(mode)
        if note:
            lines += [f"**Setting.** {note}", ""]
        for path in files:
            rel = path.relative_to(out).as_posix()
            lines.append(
                f"![{recipe.name}: {path.stem}]({rel})"
                if path.suffix == ".png"
                else f"- [{rel}]({rel})"
            )
        lines.append("")
    target = out / "index.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines))
    return target


@dataclass(frozen=True)
class Settings:
    """What a task needs to rebuild the Runner in any process: plain, picklable values.

    `cwd` is the driver's working folder; tasks run there, so relative `runs`, `out` and
    `data_root` (and the configs that name them) are the same under every launcher.
    `argv` is the driver's command line, which the analyses record as their provenance.
    """

    mode: str
    runs: Path
    out: Path
    device: str
    data_root: str | None
    folder: Path
    cwd: str
    argv: tuple[str, ...] = ()
    dataset: str | None = None
    overwrite: bool = False

    def runner(self, log: Callable[[str], None]) -> Runner:
        os.chdir(self.cwd)
        if self.argv:
            sys.argv[:] = self.argv
        return Runner(
            self.mode,
            runs=self.runs,
            out=self.out,
            device=self.device,
            data_root=self.data_root,
            folder=self.folder,
            log=log,
            dataset=self.dataset,
            overwrite=self.overwrite,
        )


def plan_graph(runner: Runner, recipes: Sequence[Recipe]) -> Graph:
    """The task graph of `recipes`: each model once, each recipe after its models."""
    trainings: dict[str, Training] = {}
    needs = []
    for recipe in recipes:
        own = runner.trainings(recipe)
        for key, training in own.items():
            trainings.setdefault(key, training)
        needs.append((recipe, tuple(own)))
    return Graph(trainings, needs)


def log_stderr(line: str) -> None:
    """A worker's log: stderr, which the engines forward or keep, away from `--json` output."""
    print(line, file=sys.stderr, flush=True)


def train_task(
    settings: Settings, training: Training, log: Callable[[str], None] = log_stderr
) -> str:
    """Task: train, resume or reuse one model. Returns '' or the bad-input message."""
    try:
        settings.runner(log).trained(training.fields, training.label)
    except BadInput as exc:
        return str(exc)
    return ""


def recipe_task(
    settings: Settings,
    recipe: Recipe,
    *training_errors: str,
    log: Callable[[str], None] = log_stderr,
) -> RecipeOutcome:
    """Task: run one recipe's steps and write its results file (its only writer) and figures.

    `training_errors` are the results of the trainings it waits for (the engine passes
    them once they are done); the first message fails the recipe without running it.
    """
    failed = [e for e in training_errors if e]
    if failed:
        return RecipeOutcome(recipe.name, error=failed[0])
    try:
        return settings.runner(log).run(recipe)
    except BadInput as exc:
        return RecipeOutcome(recipe.name, error=str(exc))


def run_figures(
    mode: str = "quick",
    *,
    only: Sequence[str] = (),
    runs: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    data_root: str | None = None,
    folder: str | Path = RECIPE_DIR,
    log: Callable[[str], None] = print,
    launch: Any = None,
    dataset: str | None = None,
    overwrite: bool = False,
) -> list[RecipeOutcome]:
    """Run the recipes (all, or `only`) in `mode`; returns what each wrote.

    `dataset` replaces the tier's own dataset (`TIER_DATASETS`) in every model, so the
    mnist tier runs on a full MNIST under `data_root` as it does on mnist5k. `overwrite`
    recomputes the results whose recipe settings changed and drops the groups a recipe no
    longer makes; without it a changed recipe is refused, so no result is lost unasked.

    `launch` is a `launchers.LaunchOptions` (default: this process). `device` is resolved
    where each task runs (`auto` picks that worker's GPU).
    """
    from .launchers import LaunchOptions, launch_graph

    options = launch or LaunchOptions()
    options.check()
    recipes = load_recipes(folder)
    if not recipes:
        raise BadInput(f"{folder} holds no recipe (*.toml file)")
    unknown = [n for n in only if n not in recipes]
    if unknown:
        raise BadInput(f"unknown recipe {', '.join(unknown)}; choose from {', '.join(recipes)}")
    if options.launcher == "local":
        resolve_device(device)
    # A tier runs the recipes that have settings for it (`--only` names them one by one).
    chosen = [recipes[n] for n in only] or [r for r in recipes.values() if mode in r.modes]
    settings = Settings(
        mode,
        runs=Path(runs or f"runs/{mode}"),
        out=Path(out or ("figures" if mode == "quick" else f"figures/{mode}")),
        dataset=dataset,
        device=device,
        data_root=data_root,
        folder=Path(folder),
        cwd=os.getcwd(),
        argv=tuple(sys.argv),
        overwrite=overwrite,
    )
    graph = plan_graph(settings.runner(log), chosen)
    outcomes = launch_graph(graph, settings, options, log)
    write_index(settings.out, list(recipes.values()), mode)
    failed = [o for o in outcomes if o.error]
    if failed:
        raise BadInput(f"recipe {failed[0].name}: {failed[0].error}")
    return outcomes
