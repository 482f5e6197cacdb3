"""Bad input to the options for foreign models and data (--model, --model-kwargs,
--normalize, zoo --arch names): exit 2, one `Error:` line, the workspace unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_bad_input import assert_bad_input, snapshot

from landscape.checkpoint import read_checkpoint, save_checkpoint, user_spec
from landscape.foreign import forget_factories, import_factory

NET = """
from torch import nn


def make(hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))


def broken():
    raise RuntimeError("no weights\\nhere")


def not_a_module():
    return 3


value = 5
"""

DIGITS = ["--dataset", "digits"]
CASES: list[tuple[str, list[str], str]] = [
    ("model-no-colon", ["eval", "bare.pt", "--model", "net.py", *DIGITS], "must be MODULE:FACTORY"),
    ("model-no-factory", ["eval", "bare.pt", "--model", "net.py:", *DIGITS], "MODULE:FACTORY"),
    ("model-bad-name", ["eval", "bare.pt", "--model", "net.py:1x", *DIGITS], "MODULE:FACTORY"),
    (
        "model-missing-file",
        ["eval", "bare.pt", "--model", "gone.py:make"],
        "gone.py does not exist",
    ),
    ("model-missing-factory", ["eval", "bare.pt", "--model", "net.py:nope"], "has no 'nope'"),
    ("model-not-callable", ["eval", "bare.pt", "--model", "net.py:value"], "is not callable"),
    (
        "model-factory-raises",
        ["eval", "bare.pt", "--model", "net.py:broken", *DIGITS],
        "the factory raised RuntimeError: no weights here",
    ),
    (
        "model-not-a-module",
        ["eval", "bare.pt", "--model", "net.py:not_a_module", *DIGITS],
        "returned a int, not an nn.Module",
    ),
    (
        "model-module-raises",
        ["eval", "bare.pt", "--model", "boom.py:make", *DIGITS],
        "running boom.py raised ValueError: boom",
    ),
    (
        "model-missing-package",
        ["hessian", "bare.pt", "--model", "no_such_package_x.nets:make", *DIGITS],
        "cannot import 'no_such_package_x.nets'",
    ),
    (
        "model-kwargs-malformed",
        ["eval", "bare.pt", "--model", "net.py:make", "--model-kwargs", "hidden", *DIGITS],
        "'hidden' is not NAME=VALUE",
    ),
    (
        "model-kwargs-twice",
        ["eval", "bare.pt", "--model", "net.py:make", "--model-kwargs", "a=1,a=2", *DIGITS],
        "gives 'a' twice",
    ),
    (
        "model-kwargs-unknown",
        ["eval", "bare.pt", "--model", "net.py:make", "--model-kwargs", "depth=3", *DIGITS],
        "unexpected keyword argument 'depth'",
    ),
    (
        "model-kwargs-without-model",
        ["eval", "bare.pt", "--arch", "lenet", "--model-kwargs", "a=1", *DIGITS],
        "--model-kwargs needs --model",
    ),
    (
        "model-with-arch",
        ["eval", "bare.pt", "--model", "net.py:make", "--arch", "lenet", *DIGITS],
        "drop --arch and --width",
    ),
    (
        "model-state-does-not-fit",
        ["eval", "bare.pt", "--model", "net.py:make", *DIGITS],
        "does not fit the architecture",
    ),
    (
        "model-without-dataset",
        ["eval", "bare.pt", "--model", "net.py:make"],
        "--model and --dataset",
    ),
    (
        "model-spec-not-named",
        ["eval", "user.pt", *DIGITS],
        "imported only when named: add --model net.py:make",
    ),
    (
        "model-other-than-saved",
        ["eval", "user.pt", "--model", "net.py:broken"],
        "saved with model='net.py:make'",
    ),
    (
        "surface-model-malformed",
        ["surface", "bare.pt", "--model", "nets", *DIGITS],
        "must be MODULE:FACTORY",
    ),
    (
        "connect-model-raises",
        ["connect", "bare.pt", "bare.pt", "--model", "net.py:broken", *DIGITS],
        "the factory raised",
    ),
    (
        "normalize-unknown",
        ["hessian", "bare.pt", "--arch", "lenet", "--normalize", "imagenet", *DIGITS],
        "--normalize 'imagenet' must be dataset, none or MEAN/STD",
    ),
    (
        "normalize-zero-std",
        ["eval", "bare.pt", "--arch", "lenet", "--normalize", "0.5/0", *DIGITS],
        "std must be > 0",
    ),
    (
        "normalize-not-numbers",
        ["eval", "bare.pt", "--arch", "lenet", "--normalize", "a/b", *DIGITS],
        "must be dataset, none or MEAN/STD",
    ),
    (
        "normalize-channels",
        ["eval", "bare.pt", "--arch", "lenet", "--normalize", "0.1,0.2/0.3,0.4", *DIGITS],
        "2 mean values for 1-channel inputs",
    ),
    (
        "normalize-other-than-saved",
        ["eval", "final.pt", "--normalize", "none"],
        "saved with normalize",
    ),
    ("arch-bad-depth", ["eval", "bare.pt", "--arch", "wrn-12-1", *DIGITS], "must be 6n+4"),
    ("arch-wrn-no-depth", ["eval", "bare.pt", "--arch", "wrn", *DIGITS], "do not show the depth"),
    (
        "arch-wrong-zoo",
        ["eval", "bare.pt", "--arch", "wrn-10-1", *DIGITS],
        "its keys fit --arch lenet --width 1 --normalize dataset",
    ),
    ("train-wrn-no-depth", ["train", "--arch", "wrn-34"], "unknown architecture 'wrn-34'"),
    ("train-dm-wrn-bare", ["train", "--arch", "dm-wrn"], "needs its depth and widen factor"),
    ("train-wrn-width-clash", ["train", "--arch", "wrn-10-1", "--width", "2"], "disagrees"),
]


@pytest.fixture()
def workspace(tmp_path: Path, digits_run: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(digits_run / "final.pt", tmp_path / "final.pt")
    torch.save(read_checkpoint(digits_run / "final.pt")["state_dict"], tmp_path / "bare.pt")
    (tmp_path / "net.py").write_text(NET)
    (tmp_path / "boom.py").write_text("raise ValueError('boom')\n")
    monkeypatch.chdir(tmp_path)
    import_factory("net.py:make")
    spec = user_spec("net.py:make", {}, "digits")
    from landscape.checkpoint import build_from_spec

    save_checkpoint("user.pt", build_from_spec(spec), spec)
    forget_factories()
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    return tmp_path


def test_cases_are_distinct():
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("args", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(args, expect, workspace, capsys):
    before = snapshot(workspace)
    assert_bad_input(args, expect, capsys)
    assert snapshot(workspace) == before
