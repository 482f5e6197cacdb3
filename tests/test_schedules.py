import math

import pytest

from landscape.schedules import EpsSchedule, LrSchedule, Periods, Schedule
from landscape.util import BadInput


def test_constant_eps():
    s = EpsSchedule("constant", 0.3)
    assert [s(d) for d in (0, 10, 99.5)] == [0.3, 0.3, 0.3]


def test_cosine_eps_against_eq5():
    # MNIST setting of C.1: eps_min 0, eps_max 0.6, target 0.4, D = 100.
    s = EpsSchedule("cosine", 0.4, eps_min=0.0, eps_max=0.6, warmup=100)
    assert s(0) == 0.0
    assert math.isclose(s(25), 0.5 * (1 - math.cos(0.25 * math.pi)) * 0.6)
    assert math.isclose(s(50), 0.3)
    # Clipped at the target once eq. (5) passes it, and held after D.
    assert s(75) == 0.4 and s(100) == 0.4 and s(150) == 0.4


def test_linear_eps_against_eq5():
    s = EpsSchedule("linear", 0.4, eps_min=-0.1, eps_max=0.8, warmup=100)
    assert s(0) == 0.0  # eps_min < 0 is clipped to 0
    assert math.isclose(s(20), 0.9 * 0.2 - 0.1)
    assert math.isclose(s(50), 0.35)
    assert s(60) == 0.4


def test_eps_max_defaults_to_target():
    s = EpsSchedule("linear", 0.2, warmup=10)
    assert math.isclose(s(5), 0.1) and s(10) == 0.2


def test_step_lr_divides_at_milestones():
    s = LrSchedule("step", 0.1, milestones=(100, 150))
    assert s(0) == 0.1 and s(99.9) == 0.1
    assert (
        math.isclose(s(100), 0.01) and math.isclose(s(150), 0.001) and math.isclose(s(199), 0.001)
    )


def test_exponential_lr_vgg_schedule():
    s = LrSchedule("exponential", 1e-3, lr_final=1e-4, decay_window=(100, 150))
    assert s(50) == 1e-3
    assert math.isclose(s(125), 1e-3 * 0.1**0.5)
    assert math.isclose(s(150), 1e-4) and math.isclose(s(199), 1e-4)


def test_cosine_lr_anneals_between_two_epochs():
    s = LrSchedule("cosine", 0.1, decay_window=(0, 100))
    assert s(0) == 0.1 and math.isclose(s(50), 0.05) and s(100) == 0.0 and s(150) == 0.0
    assert math.isclose(s(25), 0.05 * (1 + math.cos(math.pi / 4)))
    t = LrSchedule("cosine", 0.1, lr_final=0.01, decay_window=(20, 60))
    assert t(10) == 0.1 and math.isclose(t(40), 0.055) and math.isclose(t(60), 0.01)


def test_changes_tells_whether_a_reset_restarts_anything():
    const_lr, step_lr = LrSchedule("constant", 0.1), LrSchedule("step", 0.1, milestones=(5,))
    const_eps, warm_eps = EpsSchedule("constant", 0.1), EpsSchedule("linear", 0.1, warmup=10)
    none = Periods(10)
    assert Schedule(const_eps, const_lr, none).changes(10) == (False, False)
    assert Schedule(warm_eps, const_lr, none).changes(10) == (False, True)
    assert Schedule(const_eps, step_lr, none).changes(10) == (True, False)
    # A milestone after the run's end, or an LR warmup alone, decays nothing.
    late = LrSchedule("step", 0.1, milestones=(12,))
    assert Schedule(const_eps, late, none).changes(10) == (False, False)
    warm_lr = LrSchedule("constant", 0.1, warmup=2)
    assert Schedule(const_eps, warm_lr, none).changes(10)[0] is False


def test_compressed_milestones_fall_on_their_batch():
    """6 epochs in periods of 2, 6 batches an epoch: the step milestone at local epoch 4
    falls on d = 4 + 8/6 exactly as on d = 8/6, despite the float error of d - 4."""
    sched = Schedule(
        EpsSchedule("constant", 0.0),
        LrSchedule("step", 0.1, milestones=(2, 4)),
        Periods(6, (2, 4)),
    )
    first = [sched.lr_at(0 + k / 6) for k in range(12)]
    third = [sched.lr_at(4 + k / 6) for k in range(12)]
    assert first == third and first[8] == first[11] != first[7]


def test_lr_warmup_is_linear_from_zero():
    s = LrSchedule("constant", 1e-3, warmup=10)
    assert s(0) == 0.0 and math.isclose(s(5), 5e-4) and s(10) == 1e-3 and s(50) == 1e-3


def test_periodic_resets_scale_each_period():
    # Liu et al. sec. 5: 200 epochs, resets at 100 and 150; the schedule is compressed into each period.
    periods = Periods(200, (100, 150))
    sched = Schedule(
        EpsSchedule("linear", 8 / 255, eps_max=16 / 255, warmup=200),
        LrSchedule("step", 0.1, milestones=(100, 150)),
        periods,
    )
    assert sched.lr_at(0) == 0.1 and math.isclose(sched.lr_at(99), 0.001)
    assert sched.lr_at(100) == 0.1  # reset
    assert math.isclose(sched.lr_at(125), 0.01)  # 25 of 50 epochs = the 100/200 milestone
    assert math.isclose(sched.lr_at(137.5), 0.001)
    assert sched.lr_at(150) == 0.1
    assert sched.eps_at(100) == 0.0 and sched.eps_at(150) == 0.0
    assert math.isclose(sched.eps_at(112.5), (16 / 255) * 0.25)
    assert periods.ends() == [100.0, 150.0, 200.0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: EpsSchedule("quadratic", 0.1),
        lambda: EpsSchedule("cosine", 0.1, warmup=0),
        lambda: LrSchedule("cyclic", 0.1),
        lambda: LrSchedule("constant", 0.0),
        lambda: LrSchedule("exponential", 0.1),
        lambda: LrSchedule("exponential", 0.1, lr_final=0.01, decay_window=(5, 5)),
        lambda: LrSchedule("exponential", 0.1, lr_final=0.0, decay_window=(5, 6)),
        lambda: LrSchedule("cosine", 0.1),
        lambda: LrSchedule("cosine", 0.1, lr_final=-1.0, decay_window=(0, 5)),
        lambda: LrSchedule("step", 0.1, milestones=(150, 100)),
        lambda: Periods(100, (50, 40)),
        lambda: Periods(100, (100,)),
    ],
)
def test_bad_schedules(make):
    with pytest.raises(BadInput):
        make()
