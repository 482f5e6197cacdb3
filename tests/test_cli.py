import json
import subprocess
import sys
import types

import pytest

import landscape
from landscape.cli import main
from landscape.util import BadInput


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_train_json_summary(tmp_path, capsys):
    code, out, err = run(
        [
            "train",
            "--arch",
            "mlp",
            "--width",
            "1",
            "--epochs",
            "1",
            "--eps",
            "8/255",
            "--out",
            str(tmp_path / "r"),
            "--device",
            "cpu",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs"] == 1 and 0 <= summary["test_clean_error"] <= 1
    assert (tmp_path / "r" / "final.pt").exists()


def test_info_checkpoint_and_results(digits_run, tmp_path, capsys):
    code, out, _ = run(["info", str(digits_run / "final.pt"), "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["spec"]["arch"] == "lenet" and len(info["sha256"]) == 64
    assert info["config"]["eps"] == 0.1
    code, out, _ = run(["info", str(digits_run / "trace.h5"), "--json"], capsys)
    assert code == 0 and "/trace" in json.loads(out)


def test_eval_single_and_ensemble(digits_run, capsys):
    code, out, _ = run(
        ["eval", str(digits_run / "final.pt"), "--json", "--device", "cpu", "--samples", "100"],
        capsys,
    )
    single = json.loads(out)
    assert code == 0 and single["attack"]["eps"] == 0.1 and not single["ensemble"]
    code, out, _ = run(
        [
            "eval",
            str(digits_run / "final.pt"),
            str(digits_run / "epoch_001.pt"),
            "--eps",
            "0",
            "--json",
            "--samples",
            "100",
        ],
        capsys,
    )
    ens = json.loads(out)
    assert code == 0 and ens["ensemble"] and ens["adv_error"] == ens["clean_error"]


# ------------------------------------------------------------------ startup: nothing heavy

HEAVY = ("torch", "numpy", "scipy", "matplotlib", "plotly", "h5py", "rich", "sklearn", "pandas")

PROBE = """
import json, sys
import click
import landscape, landscape.cli
from landscape.cli import cli, main

version = landscape.__version__
group = click.Context(cli, info_name="landscape")
helps = [cli.get_help(group)]
helps += [c.get_help(click.Context(c, info_name=n, parent=group)) for n, c in cli.commands.items()]
codes = []
for args in (["--help"], ["surface", "--help"], ["train", "--epoch", "3"], ["train", "--eps", "8/0"]):
    try:
        main(args)
    except SystemExit as exc:
        codes.append(exc.code)
print(json.dumps({
    "version": version,
    "commands": sorted(cli.commands),
    "helps": len(helps),
    "codes": codes,
    "modules": sorted(m.split(".")[0] for m in sys.modules),
    "landscape": sorted(m for m in sys.modules if m.startswith("landscape")),
}))
"""


def test_cli_help_imports_nothing_heavy():
    """Building every command's help, answering --help and usage errors: no torch, numpy,
    scipy, matplotlib, plotly, h5py or rich, and of landscape only the CLI and util."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["version"] == landscape.__version__
    assert seen["helps"] == len(seen["commands"]) + 1 and "hessian" in seen["commands"]
    assert seen["codes"] == [0, 0, 2, 2]
    assert [m for m in HEAVY if m in seen["modules"]] == []
    assert {m for m in seen["landscape"] if not m.startswith("landscape.cli")} == {
        "landscape",
        "landscape._version",
        "landscape.util",
    }


def test_help_of_every_command_exits_0():
    from landscape.cli import cli

    for args in ([], *([name] for name in cli.commands)):
        done = subprocess.run(
            [sys.executable, "-m", "landscape", *args, "--help"], capture_output=True, text=True
        )
        assert done.returncode == 0 and "Usage: " in done.stdout, (args, done.stderr)
    done = subprocess.run(
        [sys.executable, "-m", "landscape", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and landscape.__version__ in done.stdout


def test_package_exports_are_lazy_and_the_analyses_stay_functions():
    """`landscape.hessian` is the function even after `import landscape.hessian` (which binds
    the module on the package); the module stays reachable by import."""
    import importlib

    import landscape.hessian
    import landscape.train

    assert sorted([*landscape._EXPORTS, "__version__"]) == sorted(landscape.__all__)
    for name in landscape._EXPORTS:
        value = getattr(landscape, name)
        assert value is getattr(sys.modules[f"landscape.{landscape._EXPORTS[name]}"], name)
    assert landscape.hessian.__module__ == "landscape.hessian" and callable(landscape.train)
    assert isinstance(importlib.import_module("landscape.hessian"), types.ModuleType)
    assert landscape.distributed.world().is_main  # submodules load on access too
    with pytest.raises(AttributeError):
        landscape.no_such_name  # noqa: B018


# --------------------------------------------- library errors name arguments, the CLI flags


def test_library_error_names_the_argument_and_the_cli_the_flag(tmp_path, capsys):
    from landscape.toy import toy_options

    with pytest.raises(BadInput) as exc:
        toy_options("kanai-fig2", gamma=-1.0)
    assert (
        exc.value.argument == "gamma" and str(exc.value) == "gamma -1.0 must be a finite number > 0"
    )
    out = tmp_path / "never.h5"
    code, _, err = run(["toy", "kanai-fig2", "--gamma", "-1", "--out", str(out)], capsys)
    assert code == 2 and err == "Error: --gamma -1.0 must be a finite number > 0\n"
    assert not out.exists()


def test_error_message_maps_arguments_to_the_running_commands_flags():
    from landscape.attacks import attack_config
    from landscape.cli import cli, error_message, flag_for
    from landscape.connect import check_evaluation
    from landscape.surface import parse_range

    with pytest.raises(BadInput) as exc:
        check_evaluation(3, "adv", attack_config(0.0))
    assert str(exc.value) == "bn_inputs adv needs eps > 0"
    assert (
        error_message(exc.value, ["connect", "a.pt", "b.pt"]) == "--bn-inputs adv needs --eps > 0"
    )
    with pytest.raises(BadInput) as exc:
        parse_range("1:-1:5", "yrange")
    assert str(exc.value).startswith("yrange '1:-1:5' is inverted")
    assert error_message(exc.value, ["surface", "--dim", "2"]).startswith("--yrange '1:-1:5'")
    assert error_message(exc.value, []).startswith("yrange")  # no command: the argument
    surface, smoothness = cli.commands["surface"], cli.commands["smoothness"]
    assert flag_for(surface, "xrange") == "--range"  # the option's name
    assert flag_for(surface, "range") == "--range"  # the option's flag
    assert flag_for(surface, "kind") == "--dirs"  # the documented mapping
    assert flag_for(smoothness, "directions") == "--dirs"
    assert flag_for(smoothness, "count") == "--directions"
    assert flag_for(cli.commands["toy"], "eps") == "--eps"  # option `eps_list`
    assert flag_for(surface, "checkpoint") == "CHECKPOINT"
    assert flag_for(surface, "no_such_argument") == "no_such_argument"
