"""`landscape figures --launcher`: the task graph, the model lock, a killed run resuming,
and the same arrays from the local, Ray and SLURM (submitit local executor) launchers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from landscape.cli import main
from landscape.figures import RECIPE_DIR, Runner, load_recipes, plan_graph, run_figures
from landscape.launchers import LaunchOptions, Requeueable, slurm_parameters

TINY = 'dataset = "digits", arch = "mlp", width = 1, batch_size = 256, eps = 0.1'

RECIPES = {
    "trained": f"""
name = "trained"
[quick.models]
a = {{ {TINY}, epochs = 1 }}
[[quick.steps]]
collect = "traces"
each = ["a"]
[[quick.steps]]
analysis = "hessian"
each = ["a"]
options = {{ top = 2, random_samples = 1 }}
data = {{ samples = 64 }}
""",
    # the same model under another id, a toy figure and a collected schedule
    "shares": f"""
name = "shares"
[quick.models]
same = {{ {TINY}, epochs = 1 }}
[[quick.steps]]
analysis = "toy"
name = "liu-fig5"
options = {{ figure = "liu-fig5" }}
[[quick.steps]]
collect = "schedules"
name = "s"
epochs = 4
curves = {{ linear = {{ kind = "linear", target = 0.2, eps_max = 0.4 }} }}
[[quick.steps]]
analysis = "surface"
each = ["same"]
options = {{ xrange = "-1:1:3" }}
data = {{ samples = 32 }}
""",
}


def write_recipes(folder: Path, recipes: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in recipes.items():
        (folder / f"{name}.toml").write_text(text)
    return folder


def cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        main(args)
    return stop.value.code, capsys.readouterr().err


# --- the graph -------------------------------------------------------------------------


def test_graph_trains_each_shared_model_once(tmp_path):
    recipes = load_recipes()
    runner = Runner("quick", runs=tmp_path, out=tmp_path, device="cpu", data_root=None)
    # kanai-fig7 and kanai-table1 read kanai-fig3's models (the table as base + rows, per seed):
    # five methods x three seeds, and the table adds its two second-order EnSGD rows
    kanai = plan_graph(runner, [recipes[n] for n in ("kanai-fig3", "kanai-fig7", "kanai-table1")])
    fig3, fig7, table = (set(keys) for _, keys in kanai.recipes)
    assert len(fig3) == 15 and fig7 < fig3 and len(fig7) == 12
    assert len(table) == 18 and len(table & fig3) == 12
    assert len(kanai.trainings) == 15 + 6
    # liu-fig13's eps-warmup series is liu-fig4's cosine series (three LRs, three seeds)
    sweeps = plan_graph(runner, [recipes["liu-fig4"], recipes["liu-fig13"]])
    assert [len(keys) for _, keys in sweeps.recipes] == [27, 18]
    assert len(sweeps.trainings) == 27 + 18 - 9
    # the pairs of liu-fig15 name both endpoints: seeds 0-1 and 1-2 at four eps
    (connect,) = plan_graph(runner, [recipes["liu-fig15"]]).recipes
    assert len(connect[1]) == 12


def test_unknown_step_is_refused_before_any_work(tmp_path, capsys):
    folder = write_recipes(tmp_path / "r", {"bad": 'name = "bad"\n[[quick.steps]]\ncollect = "x"'})
    code, err = cli(["figures", "--recipes", str(folder), "--runs", str(tmp_path / "runs")], capsys)
    assert code == 2 and err.count("Error:") == 1 and "a step needs" in err
    assert not (tmp_path / "runs").exists()


def test_a_bad_model_is_refused_before_any_work(tmp_path, capsys):
    recipe = 'name = "nodata"\n[quick.models]\nm = { dataset = "nope", arch = "mlp" }\n'
    recipe += '[[quick.steps]]\ncollect = "traces"\neach = ["m"]\n'
    folder = write_recipes(tmp_path / "r", {"nodata": recipe})
    args = ["figures", "--recipes", str(folder), "--device", "cpu"]
    code, err = cli([*args, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)], capsys)
    assert code == 2 and err.count("Error:") == 1, err
    assert "recipe model m: unknown dataset 'nope'" in err
    assert not (tmp_path / "runs").exists()


def test_a_task_error_is_one_error_line(tmp_path, capsys):
    # the model is valid, but its dataset file is not in --data-root: the task fails
    recipe = f'name = "nofile"\n[quick.models]\nm = {{ {TINY.replace("digits", "mnist")} }}\n'
    recipe += '[[quick.steps]]\ncollect = "traces"\neach = ["m"]\n'
    folder = write_recipes(tmp_path / "r", {"nofile": recipe})
    args = ["figures", "--recipes", str(folder), "--device", "cpu"]
    args += ["--data-root", str(tmp_path), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]
    code, err = cli(args, capsys)
    assert code == 2 and err.count("Error:") == 1 and "Error: recipe nofile: " in err, err
    assert not (tmp_path / "runs" / "nofile.h5").exists()


# --- options and missing engines -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--launcher", "slurm", "--ray-address", "auto"], "--ray-address is for the ray launcher"),
        (["--slurm-partition", "gpu"], "--slurm-partition is for the slurm launcher, not local"),
        (["--launcher", "ray", "--slurm-local"], "--slurm-local is for the slurm launcher"),
        (["--launcher", "dask"], "'dask' is not one of"),
    ],
)
def test_options_of_another_launcher_are_refused(tmp_path, capsys, args, message):
    code, err = cli(["figures", "--runs", str(tmp_path / "runs"), *args], capsys)
    assert code == 2 and err.count("Error:") == 1 and message in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("launcher", ["ray", "slurm"])
def test_missing_engine_names_the_extra(tmp_path, capsys, monkeypatch, launcher):
    monkeypatch.setitem(sys.modules, {"ray": "ray", "slurm": "submitit"}[launcher], None)
    args = ["figures", "--launcher", launcher, "--only", "liu-fig7", "--device", "cpu"]
    code, err = cli([*args, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)], capsys)
    assert code == 2 and err.count("Error:") == 1, err
    assert "pip install 'adv-landscape[cluster]'" in err
    assert not (tmp_path / "runs").exists()


def test_slurm_without_a_cluster_is_bad_input(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    args = ["figures", "--launcher", "slurm", "--only", "liu-fig7", "--device", "cpu"]
    code, err = cli([*args, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)], capsys)
    assert code == 2 and err.count("Error:") == 1 and "--slurm-local" in err, err
    assert not (tmp_path / "runs").exists()


def test_slurm_jobs_wait_for_their_trainings_and_requeue(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from landscape.figures import Settings

    # submitit's SLURM executor looks for srun; this one is never called
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    settings = Settings("quick", Path("runs"), Path("figs"), "auto", None, RECIPE_DIR, "/")
    options = LaunchOptions(launcher="slurm", slurm_partition="gpu", slurm_time=90)

    def script(after: list[str]) -> str:
        executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
        executor.update_parameters(**slurm_parameters(settings, options, after))
        return executor._executor._make_submission_file_text("true", "uid")

    waiting = script(["11", "12"])
    for line in (
        "#SBATCH --dependency=afterok:11:12",
        "#SBATCH --kill-on-invalid-dep=yes",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=90",
        "#SBATCH --signal=USR2@",  # submitit's warning before the limit: checkpoint, requeue
    ):
        assert line in waiting, waiting
    assert "--dependency" not in script([])
    # a requeued job is the same task with the same arguments
    task = Requeueable(print)
    again = task.checkpoint(settings, "x")
    assert again.function is task and again.args == (settings, "x")


# --- the model lock --------------------------------------------------------------------

LOCKED = {"dataset": "digits", "arch": "mlp", "width": 1, "batch_size": 256, "epochs": 5}


def ask_for_model(runs: str, barrier, queue) -> None:
    """One worker: load the data, wait for the other, then ask for the shared model."""
    import torch

    from landscape.data import load_dataset

    torch.set_num_threads(1)
    lines: list[str] = []
    runner = Runner("quick", runs=Path(runs), out=Path(runs), device="cpu", data_root=None)
    runner.log = lines.append
    load_dataset("digits", "train", None, "cpu")
    barrier.wait()
    asked = time.time()
    folder = runner.trained(LOCKED, "shared")
    queue.put((str(folder), asked, lines))


@pytest.mark.slow
def test_two_workers_asking_for_one_model_train_it_once(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    barrier, queue = spawn.Barrier(2), spawn.Queue()
    workers = [
        spawn.Process(target=ask_for_model, args=(str(tmp_path), barrier, queue)) for _ in range(2)
    ]
    for w in workers:
        w.start()
    answers = [queue.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
        assert w.exitcode == 0
    (folder,) = {f for f, _, _ in answers}
    trained = [lines for _, _, lines in answers if any("train shared" in x for x in lines)]
    assert len(trained) == 1, answers
    # the other one asked while the model was being trained, waited, and reused it
    final = Path(folder) / "final.pt"
    waiter = next(asked for _, asked, lines in answers if not lines)
    assert waiter < final.stat().st_mtime
    with h5py.File(Path(folder) / "trace.h5", "r") as f:
        assert f["trace/step"][()].tolist() == list(range(5 * 6))  # 5 epochs of 6 batches


# --- a killed run resumes ----------------------------------------------------------------


@pytest.mark.slow
def test_killed_local_run_resumes_its_training(tmp_path):
    recipe = f'name = "long"\n[quick.models]\na = {{ {TINY}, epochs = 10 }}\n'
    recipe += '[[quick.steps]]\ncollect = "traces"\neach = ["a"]\n'
    folder = write_recipes(tmp_path / "recipes", {"long": recipe})
    args = [sys.executable, "-m", "landscape", "figures", "--recipes", str(folder)]
    args += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "figs"), "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "runs" / "checkpoints"
    while not list(checkpoints.glob("*/resume.pt")):
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    (model,) = checkpoints.iterdir()
    assert not (model / "final.pt").exists()
    started = (model / "init.pt").stat().st_mtime_ns

    again = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert "train a" in again.stderr  # it went on training, under the lock the kill released
    assert (model / "init.pt").stat().st_mtime_ns == started  # resumed, not restarted
    with h5py.File(tmp_path / "runs" / "long.h5", "r") as f:
        assert f["trace/a/step"][()].tolist() == list(range(10 * 6))


# --- every launcher gives the same arrays ------------------------------------------------


def arrays_of(results: Path) -> dict[str, np.ndarray]:
    """Every dataset of a results file, and each group's recorded command line."""
    out: dict[str, np.ndarray] = {}

    def visit(name: str, obj: h5py.Dataset | h5py.Group) -> None:
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]
        elif "command" in obj.attrs:
            out[f"{name}@command"] = np.array(obj.attrs["command"])

    with h5py.File(results, "r") as f:
        f.visititems(visit)
    return out


def run_with(launcher: LaunchOptions, root: Path) -> Path:
    runs = root / launcher.launcher
    outcomes = run_figures(
        "quick",
        runs=runs,
        out=root / f"figs-{launcher.launcher}",
        device="cpu",
        folder=write_recipes(root / "recipes", RECIPES),
        log=lambda line: None,
        launch=launcher,
    )
    assert [o.name for o in outcomes] == sorted(RECIPES) and not any(o.error for o in outcomes)
    # "trained" and "shares" name one model under two ids: one folder, trained once
    assert len(list((runs / "checkpoints").iterdir())) == 1
    return runs


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    return run_with(LaunchOptions(), tmp_path_factory.mktemp("launch"))


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def assert_same_arrays(runs: Path, reference: Path) -> None:
    for name in RECIPES:
        ours, theirs = arrays_of(runs / f"{name}.h5"), arrays_of(reference / f"{name}.h5")
        assert sorted(ours) == sorted(theirs)
        for key, value in theirs.items():
            if value.dtype.kind in "fc":
                assert np.array_equal(ours[key], value, equal_nan=True), (name, key)
            else:
                assert np.array_equal(ours[key], value), (name, key)


@pytest.mark.slow
def test_ray_gives_the_local_arrays(local_run, ray_session, tmp_path):
    runs = run_with(LaunchOptions(launcher="ray"), tmp_path)
    assert_same_arrays(runs, local_run)


@pytest.mark.slow
def test_slurm_gives_the_local_arrays(local_run, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as in this process and in Ray's workers
    runs = run_with(LaunchOptions(launcher="slurm", slurm_local=True), tmp_path)
    assert_same_arrays(runs, local_run)
    assert list((runs / "submitit").glob("*_log.out"))  # the jobs ran through submitit
