"""Where `landscape figures` runs its task graph: in this process, on Ray, or on SLURM.

The graph (`figures.plan_graph`) holds one task per model to train, shared by config
hash, and one task per recipe that depends on the trainings of its models. The engine
schedules it; nothing here queues or polls:

* `local`: the tasks in order, in this process.
* `ray`: a Ray cluster (`ray_address`, or one started on this machine). A recipe task
  takes its trainings' ObjectRefs as arguments, so Ray starts it when they are done.
  Each task asks for one GPU when the cluster has GPUs and the device is not `cpu`; a
  task whose worker dies is retried `retries` times (`max_retries`).
* `slurm`: one sbatch job per task through submitit, a recipe's job held by
  `--dependency=afterok:<its trainings>`. Jobs are checkpointable: on preemption or
  timeout submitit requeues them up to `retries` times, and the retry resumes (training
  from `resume.pt`, grids from their sidecars). `slurm_local` runs the jobs as
  processes here through submitit's LocalExecutor, which has no queue: there the
  driver waits for a recipe's trainings before it submits the recipe.

Two workers that ask for one model train it once (`figures.model_lock`), and only a
recipe's own task writes its results file, so tasks may run in any order the engine
picks. The engines are the optional `cluster` extra (`pip install 'adv-landscape[cluster]'`).
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .util import BadInput

if TYPE_CHECKING:
    from .figures import Graph, RecipeOutcome, Settings

LAUNCHERS = ("local", "ray", "slurm")
DEFAULT_SLURM_MINUTES = 24 * 60


@dataclass(frozen=True)
class LaunchOptions:
    """How to run the graph; `None` means the launcher's default."""

    launcher: str = "local"
    retries: int = 3
    ray_address: str | None = None
    slurm_partition: str | None = None
    slurm_time: int | None = None
    slurm_gpus: int | None = None
    slurm_local: bool = False

    def check(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise BadInput(
                f"{{arg}} {self.launcher!r} is not known; use {', '.join(LAUNCHERS)}",
                argument="launcher",
            )
        if self.retries < 0:
            raise BadInput(f"{{arg}} {self.retries} must be >= 0", argument="retries")
        given = {
            "ray_address": self.ray_address is not None,
            "slurm_partition": self.slurm_partition is not None,
            "slurm_time": self.slurm_time is not None,
            "slurm_gpus": self.slurm_gpus is not None,
            "slurm_local": self.slurm_local,
        }
        for name, is_given in given.items():
            if is_given and not name.startswith(self.launcher + "_"):
                raise BadInput(
                    f"{{arg}} is for the {name.split('_')[0]} launcher, not {self.launcher}",
                    argument=name,
                )
        for name in ("slurm_time", "slurm_gpus"):
            value = getattr(self, name)
            if value is not None and value < (1 if name == "slurm_time" else 0):
                raise BadInput(f"{{arg}} {value} is out of range", argument=name)


def require(module: str, launcher: str) -> ModuleType:
    """Import an optional engine, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BadInput(
            f"--launcher {launcher} needs {module}, which is not installed; "
            "install the cluster extra: pip install 'adv-landscape[cluster]'"
        ) from exc


def launch_graph(
    graph: Graph, settings: Settings, options: LaunchOptions, log: Callable[[str], None]
) -> list[RecipeOutcome]:
    """Run every task of `graph`; returns the recipes' outcomes in the graph's order."""
    runners = {"local": run_local, "ray": run_ray, "slurm": run_slurm}
    return runners[options.launcher](graph, settings, options, log)


def run_local(
    graph: Graph, settings: Settings, options: LaunchOptions, log: Callable[[str], None]
) -> list[RecipeOutcome]:
    """Each recipe after its not yet trained models, in this process; stops at an error."""
    from .figures import recipe_task, train_task

    trained: dict[str, str] = {}
    outcomes = []
    for recipe, keys in graph.recipes:
        log(f"{recipe.name}: {recipe.paper}")
        for key in keys:
            if key not in trained:
                trained[key] = train_task(settings, graph.trainings[key], log)
        outcomes.append(recipe_task(settings, recipe, *(trained[k] for k in keys), log=log))
        if outcomes[-1].error:
            break
    return outcomes


def uses_gpu(settings: Settings, gpus_available: float) -> bool:
    """One GPU per task where there are GPUs, unless the device is the CPU."""
    if settings.device.startswith("cuda") and gpus_available < 1:
        raise BadInput(f"device {settings.device!r} asked for, but the workers have no GPU")
    return settings.device != "cpu" and gpus_available >= 1


def run_ray(
    graph: Graph, settings: Settings, options: LaunchOptions, log: Callable[[str], None]
) -> list[RecipeOutcome]:
    ray = require("ray", "ray")
    from .figures import recipe_task, train_task

    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=options.ray_address, include_dashboard=False)
        except ConnectionError as exc:
            raise BadInput(f"{{arg}} {options.ray_address}: {exc}", argument="ray_address") from exc
    try:
        gpus = 1 if uses_gpu(settings, ray.cluster_resources().get("GPU", 0)) else 0
        task: dict[str, Any] = {
            "num_gpus": gpus,
            "max_retries": options.retries,
            "retry_exceptions": False,
        }
        train = ray.remote(**task)(train_task)
        recipe = ray.remote(**task)(recipe_task)
        refs = {key: train.remote(settings, t) for key, t in graph.trainings.items()}
        pending = [
            recipe.remote(settings, r, *(refs[k] for k in keys)) for r, keys in graph.recipes
        ]
        log(
            f"ray: {len(refs)} trainings and {len(pending)} recipes on "
            f"{ray.cluster_resources().get('CPU', 0):g} CPUs, {gpus} GPU per task"
        )
        return ray.get(pending)
    finally:
        if started:
            ray.shutdown()


class Requeueable:
    """A task that submitit requeues (same arguments) on preemption or timeout.

    The task resumes by itself: training from `resume.pt`, analyses from their cache.
    """

    def __init__(self, task: Callable[..., Any]) -> None:
        self.task = task

    def __call__(self, *args: Any) -> Any:
        return self.task(*args)

    def checkpoint(self, *args: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args)


def slurm_parameters(
    settings: Settings, options: LaunchOptions, after: list[str]
) -> dict[str, Any]:
    """submitit's AutoExecutor parameters of one job that waits for the jobs `after`."""
    gpus = options.slurm_gpus if options.slurm_gpus is not None else int(settings.device != "cpu")
    params: dict[str, Any] = {
        "name": "landscape-figures",
        "timeout_min": options.slurm_time or DEFAULT_SLURM_MINUTES,
        "gpus_per_node": gpus,
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if not options.slurm_local:
        params["slurm_partition"] = options.slurm_partition
        params["slurm_dependency"] = f"afterok:{':'.join(after)}" if after else None
        # A failed training cancels its recipes instead of leaving them pending forever.
        params["slurm_additional_parameters"] = {"kill_on_invalid_dep": "yes"}
    return params


def run_slurm(
    graph: Graph, settings: Settings, options: LaunchOptions, log: Callable[[str], None]
) -> list[RecipeOutcome]:
    submitit = require("submitit", "slurm")
    from .figures import recipe_task, train_task

    if not options.slurm_local and shutil.which("sbatch") is None:
        raise BadInput(
            "--launcher slurm: no SLURM here (sbatch not found); run on a login node, "
            "or test without a cluster with --slurm-local"
        )
    folder = Path(settings.cwd) / settings.runs / "submitit"

    def submit(task: Callable[..., Any], after: list[Any], *args: Any) -> Any:
        # One executor per job: submitit keeps parameters, and a dependency cannot be unset.
        executor = submitit.AutoExecutor(
            folder=folder,
            cluster="local" if options.slurm_local else "slurm",
            slurm_max_num_timeout=options.retries,
            local_max_num_timeout=options.retries,
        )
        executor.update_parameters(
            **slurm_parameters(settings, options, [job.job_id for job in after])
        )
        return executor.submit(Requeueable(task), settings, *args)

    jobs = {key: submit(train_task, [], t) for key, t in graph.trainings.items()}
    recipe_jobs = []
    for recipe, keys in graph.recipes:
        needed = [jobs[k] for k in keys]
        if options.slurm_local:
            # The local executor has no queue to hold a job: wait here, and pass the results.
            recipe_jobs.append(submit(recipe_task, [], recipe, *(j.result() for j in needed)))
        else:
            recipe_jobs.append(submit(recipe_task, needed, recipe))
    log(f"slurm: {len(jobs)} training jobs and {len(recipe_jobs)} recipe jobs (logs in {folder})")
    return [job.result() for job in recipe_jobs]
