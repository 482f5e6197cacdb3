import json

import h5py
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


def error_cases(tmp_path, digits_run):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1]
    ckpt = str(digits_run / "final.pt")
    return {
        "eps-div-zero": ["train", "--eps", "8/0"],
        "eps-negative": ["train", "--eps", "-1"],
        "eps-text": ["train", "--eps", "abc"],
        "eps-nan": ["train", "--eps", "nan"],
        "eps-inf": ["train", "--eps", "inf"],
        "unknown-dataset": ["train", "--dataset", "imagenet"],
        "missing-dataset-files": [
            "train",
            "--dataset",
            "mnist",
            "--data-root",
            str(tmp_path / "nowhere"),
        ],
        "unknown-arch": ["train", "--arch", "alexnet"],
        "unknown-activation": ["train", "--activation", "gelu2"],
        "zero-epochs": ["train", "--epochs", "0"],
        "bad-milestones": ["train", "--lr-schedule", "step", "--lr-milestones", "a,b"],
        "exp-without-final": ["train", "--lr-schedule", "exponential"],
        "bad-device": ["train", "--device", "tpu"],
        "missing-checkpoint": ["eval", str(tmp_path / "nope.pt")],
        "empty-checkpoint": ["eval", str(tmp_path / "empty.pt")],
        "not-a-checkpoint": ["eval", str(tmp_path / "text.pt")],
        "mismatched-arch": ["eval", ckpt, "--arch", "vgg"],
        "foreign-results": ["info", str(foreign)],
        "plot-foreign": ["plot", str(foreign)],
        "bad-format": ["plot", str(digits_run / "trace.h5"), "--format", "gif"],
        "unknown-command": ["frobnicate"],
    }


@pytest.mark.parametrize(
    "case",
    [
        "eps-div-zero",
        "eps-negative",
        "eps-text",
        "eps-nan",
        "eps-inf",
        "unknown-dataset",
        "missing-dataset-files",
        "unknown-arch",
        "unknown-activation",
        "zero-epochs",
        "bad-milestones",
        "exp-without-final",
        "bad-device",
        "missing-checkpoint",
        "empty-checkpoint",
        "not-a-checkpoint",
        "mismatched-arch",
        "foreign-results",
        "plot-foreign",
        "bad-format",
        "unknown-command",
    ],
)
def test_bad_input_exits_2_with_one_error_line(case, tmp_path, digits_run, capsys, monkeypatch):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    out_dir = tmp_path / "out"
    args = error_cases(tmp_path, digits_run)[case]
    if args[0] == "train":
        args = [*args, "--out", str(out_dir)]
    if args[0] == "plot":
        args = [*args, "--out", str(out_dir)]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial output
