"""AutoAttack through the optional `pyautoattack` package: `autoattack_error` and
`landscape eval --attack autoattack|apgd-ce`, on 16 digits test images."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from landscape.attacks import Ensemble, attack_config, autoattack_error, evaluate
from landscape.checkpoint import build_from_spec, model_spec, save_checkpoint
from landscape.cli import main
from landscape.data import load_dataset
from landscape.models import build_model
from landscape.util import BadInput

EPS = 0.05  # where PGD and AutoAttack leave some but not all of the 16 examples robust


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """A LeNet w=1 fitted on digits (5 epochs of Adam, clean test error ~16%), saved as a
    checkpoint, with the first 16 test images."""
    torch.manual_seed(0)
    spec = model_spec("lenet", "digits", width=1)
    model = build_from_spec(spec)
    X_train, y_train = load_dataset("digits", "train")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        for batch in torch.randperm(len(y_train)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(X_train[batch]), y_train[batch]).backward()
            opt.step()
    path = save_checkpoint(tmp_path_factory.mktemp("lenet") / "lenet.pt", model.eval(), spec)
    X, y = load_dataset("digits", "test")
    return path, model, X[:16], y[:16]


def pgd20_error(model, X, y, seed):
    cfg = attack_config(EPS, steps=20, step_size=EPS / 4)
    return evaluate(model, X, y, cfg, seed=seed)


@pytest.mark.slow
def test_standard_autoattack_from_the_cli_is_at_least_as_strong_as_pgd(lenet, capsys):
    pytest.importorskip("pyautoattack")
    path, model, X, y = lenet
    code, out, err = run(
        ["eval", str(path), "--attack", "autoattack", "--eps", str(EPS)]
        + ["--samples", "16", "--device", "cpu", "--json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == "autoattack" and result["n"] == 16
    assert result["attack"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    after = result["adv_error_after"]
    # Four attacks ran (some examples stayed robust), each on what the previous ones left.
    assert list(after) == result["attack"]["attacks_run"] == result["attack"]["attacks"]
    assert list(after.values()) == sorted(after.values())
    assert result["adv_error"] == after["square"] < 1
    pgd = [pgd20_error(model, X, y, seed) for seed in range(3)]
    assert result["clean_error"] == pytest.approx(pgd[0].clean_error)
    assert result["adv_error"] > result["clean_error"]
    # AutoAttack is the stronger attack: at most one example (1/16) below the best PGD-20 run.
    assert result["adv_error"] >= max(ev.adv_error for ev in pgd) - 1 / 16


def test_apgd_ce_examples_are_valid_and_reproducible(lenet):
    pytest.importorskip("pyautoattack")
    _, model, X, y = lenet
    rng_before = torch.get_rng_state()
    result = autoattack_error(model, X, y, eps=EPS, version="apgd-ce", seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert result.attacks_run == ("apgd-ce",) and result.n == 16 and result.warnings == ()
    # The examples lie in the eps ball and the pixel box, and their error is the reported one.
    delta = (result.x_adv - X).flatten(1).abs().amax(1)
    assert delta.max() <= EPS * (1 + 1e-5)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    with torch.no_grad():
        wrong = model(result.x_adv).argmax(1) != y
        clean_wrong = model(X).argmax(1) != y
    assert result.adv_error == wrong.double().mean().item()
    assert result.clean_error == clean_wrong.double().mean().item()
    assert result.adv_error > result.clean_error
    # An example left robust is returned unperturbed; a misclassified one stays misclassified.
    assert torch.equal(result.x_adv[~wrong], X[~wrong]) and bool(wrong[clean_wrong].all())
    again = autoattack_error(model, X, y, eps=EPS, version="apgd-ce", seed=0)
    assert again == result and torch.equal(again.x_adv, result.x_adv)


def test_autoattack_on_an_ensemble_attacks_it_as_one_model(lenet):
    pytest.importorskip("pyautoattack")
    _, model, X, y = lenet
    torch.manual_seed(1)
    other = build_from_spec(model_spec("lenet", "digits", width=1)).eval()
    as_list = autoattack_error([model, other], X, y, eps=EPS, version="apgd-ce", seed=3)
    as_module = autoattack_error(Ensemble([model, other]), X, y, eps=EPS, version="apgd-ce", seed=3)
    assert as_list == as_module and torch.equal(as_list.x_adv, as_module.x_adv)
    assert as_list.adv_error >= as_list.clean_error


def test_eps_zero_runs_no_attack(lenet):
    pytest.importorskip("pyautoattack")
    _, model, X, y = lenet
    result = autoattack_error(model, X, y, eps=0.0, seed=0)
    assert result.attacks_run == () and result.adv_error == result.clean_error
    assert torch.equal(result.x_adv, X)


def test_autoattack_rejects_what_it_cannot_attack(lenet):
    pytest.importorskip("pyautoattack")
    _, model, X, y = lenet
    with pytest.raises(BadInput, match=r"raw pixels in \[0, 1\]"):
        autoattack_error(model, X * 2 - 0.5, y, eps=EPS)
    with pytest.raises(BadInput, match="unknown AutoAttack version 'plus'"):
        autoattack_error(model, X, y, eps=EPS, version="plus")
    with pytest.raises(BadInput, match="unknown norm 'l1'"):
        autoattack_error(model, X, y, eps=EPS, norm="l1")
    # The targeted DLR loss needs 4 classes; APGD-CE alone works with 3.
    torch.manual_seed(0)
    three = build_model(
        "linear", input_shape=(1, 8, 8), num_classes=3, mean=(0.3,), std=(0.37,)
    ).eval()
    y3 = y % 3
    with pytest.raises(BadInput, match="at least 4 classes, the model has 3"):
        autoattack_error(three, X, y3, eps=EPS)
    assert autoattack_error(three, X, y3, eps=EPS, version="apgd-ce").attacks_run == ("apgd-ce",)


def test_apgd_ce_from_the_cli_on_an_ensemble(lenet, capsys):
    pytest.importorskip("pyautoattack")
    path, _, _, _ = lenet
    code, out, err = run(
        ["eval", str(path), str(path), "--attack", "apgd-ce", "--eps", str(EPS)]
        + ["--samples", "16", "--device", "cpu", "--seed", "2", "--json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["ensemble"] and result["method"] == "apgd-ce"
    assert result["attack"]["attacks_run"] == ["apgd-ce"] and result["attack"]["seed"] == 2
    assert result["clean_error"] <= result["adv_error"] == result["adv_error_after"]["apgd-ce"]


def one_error_line(code, out, err, *pieces):
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("Error: ")
    for piece in pieces:
        assert piece in lines[0]


@pytest.mark.parametrize("attack", ["autoattack", "apgd-ce"])
def test_missing_extra_is_one_error_line(lenet, monkeypatch, capsys, attack):
    path, model, X, y = lenet
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # `import pyautoattack` now fails
    code, out, err = run(["eval", str(path), "--attack", attack, "--samples", "16"], capsys)
    one_error_line(code, out, err, "pyautoattack", 'pip install "adv-landscape[autoattack]"')
    with pytest.raises(BadInput, match="adv-landscape"):
        autoattack_error(model, X, y, eps=EPS)


@pytest.mark.parametrize(
    "args,piece",
    [
        (["--attack", "apgd-ce", "--pgd-steps", "5"], "--pgd-steps and --pgd-step-size"),
        (["--attack", "autoattack", "--pgd-step-size", "0.01"], "apply to --attack pgd"),
        (["--attack", "cw"], "'cw' is not one of"),
    ],
)
def test_eval_attack_options_are_checked(lenet, capsys, args, piece):
    path = lenet[0]
    code, out, err = run(["eval", str(path), *args], capsys)
    one_error_line(code, out, err, piece)
