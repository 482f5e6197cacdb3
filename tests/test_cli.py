import json

import pytest

from landscape.cli import main


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
