"""Shared fixtures: tiny trained digits models, made once per session."""

from __future__ import annotations

import pytest
import torch

# The suite's models are tiny: a second intra-op thread only adds synchronization, which
# stalls badly whenever the machine is busy.
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="Device of the fixtures that take `device` (cpu, cuda); the rest stay on the CPU.",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With `--device cuda`, run only the tests that use the device (directly or through a
    fixture such as `digits_run`): the others would repeat the CPU run."""
    if config.getoption("--device") == "cpu":
        return
    off = [item for item in items if "device" not in getattr(item, "fixturenames", ())]
    if off:
        config.hook.pytest_deselected(items=off)
        items[:] = [item for item in items if item not in off]


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """The `--device` the suite was started with (bench/gpu_check.sh passes cuda)."""
    return request.config.getoption("--device")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, device):
    """A LeNet w=1 trained 2 epochs at eps 0.1 on digits (on `--device`): its output folder."""
    from landscape.train import TrainConfig, train

    out = tmp_path_factory.mktemp("digits_run")
    train(
        TrainConfig(arch="lenet", width=1, epochs=2, eps=0.1, save_epochs=(1,)), out, device=device
    )
    return out
