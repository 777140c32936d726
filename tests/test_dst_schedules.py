"""Density schedules (GraNet cubic, CHTss sigmoid), ζ schedules and method validation."""

import math

import pytest

from cht.dst import (ConstantDensity, CubicDensity, EvolutionSchedule, ExtraDensity, MagnitudeRemoval, Method,
                     RandomRegrowth, SigmoidDensity, get_method)


def reference_cubic_density(progress: float, start: float, target: float, begin: float, end: float) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i − s_f)(1 − (t − t0)/(n Δt))³, written for density."""
    if progress <= begin:
        return start
    if progress >= end:
        return target
    return target + (start - target) * (1 - (progress - begin) / (end - begin)) ** 3


def reference_s_shape_density(step: int, total: int, start: float, target: float, k: float = 6.0) -> float:
    """The CHTss authors' s-shaped pruning schedule, in their step units (sparsity → density)."""
    mid = total / 2
    rate = k / mid
    a0 = 1 / (1 + math.exp(-rate * (0 - mid)))
    a1 = 1 / (1 + math.exp(-rate * (total - mid)))
    x = 1 / (1 + math.exp(-rate * (min(step, total) - mid)))
    shaped = (x - 0.5) / (a1 - a0) + 0.5
    start_sparsity, target_sparsity = 1 - start, 1 - target
    return 1 - ((target_sparsity - start_sparsity) * shaped + start_sparsity)


def density_at(schedule, progress: float, target: float) -> float:
    start = schedule.start_density(target)
    return target + (start - target) * schedule.remaining(progress)


@pytest.mark.parametrize("begin,end", [(0.0, 0.75), (0.1, 0.5), (0.2, 1.0)])
def test_cubic_density_matches_zhu_gupta(begin: float, end: float) -> None:
    schedule = CubicDensity(start=0.5, begin=begin, end=end)
    for progress in [i / 40 for i in range(41)]:
        expected = reference_cubic_density(progress, 0.5, 0.01, begin, end)
        assert density_at(schedule, progress, 0.01) == pytest.approx(expected, abs=1e-12)


def test_chtss_sigmoid_density_curve() -> None:
    schedule = SigmoidDensity(start=0.5, end=0.8)
    total_steps, pruning_steps = 1000, 800
    for step in range(0, total_steps + 1, 25):
        expected = reference_s_shape_density(step, pruning_steps, 0.5, 0.01)
        assert density_at(schedule, step / total_steps, 0.01) == pytest.approx(expected, abs=1e-12)
    assert density_at(schedule, 0.0, 0.01) == pytest.approx(0.5)
    assert density_at(schedule, 0.4, 0.01) == pytest.approx((0.5 + 0.01) / 2)
    assert density_at(schedule, 0.8, 0.01) == 0.01
    assert density_at(schedule, 0.95, 0.01) == 0.01
    values = [density_at(schedule, p / 100, 0.01) for p in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_progress_a_rounding_error_short_of_the_end_reaches_the_target() -> None:
    assert SigmoidDensity(end=0.8).remaining(0.8 - 1e-12) == 0.0
    assert CubicDensity(end=0.75).remaining(0.75 - 1e-12) == 0.0


def test_initial_density_of_methods() -> None:
    assert get_method("set").initial_density(0.01) == 0.01
    assert get_method("granet").initial_density(0.01) == 0.5
    assert get_method("chtss").initial_density(0.01) == 0.5
    # A target above the schedule's start never makes the network start sparser than its target.
    assert get_method("chtss").initial_density(0.7) == 0.7
    assert ConstantDensity().remaining(0.3) == 0.0


@pytest.mark.parametrize("factory,message", [
    (lambda: CubicDensity(start=0.0), "start density"),
    (lambda: CubicDensity(begin=0.5, end=0.5), "begin < end"),
    (lambda: SigmoidDensity(end=1.5), "end"),
    (lambda: SigmoidDensity(steepness=0), "steepness"),
])
def test_density_schedules_reject_bad_values(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


def test_evolution_must_outlast_the_density_schedule() -> None:
    with pytest.raises(ValueError, match="end_fraction ≥ 0.75"):
        get_method("granet").with_schedule(end_fraction=0.5)
    assert get_method("granet").with_schedule(end_fraction=0.8).schedule.end_fraction == 0.8


def test_method_needs_both_rules_or_neither() -> None:
    with pytest.raises(ValueError, match="both a removal and a regrowth"):
        Method("half", "removal only", removal=MagnitudeRemoval())
    with pytest.raises(ValueError, match="density schedule needs a sparse method"):
        Method("dense_pruning", "dense", sparse=False, density=CubicDensity())
    assert Method("ok", "set-like", removal=MagnitudeRemoval(), regrowth=RandomRegrowth()).evolves
    assert Method("pruning", "no rules, a density schedule", density=CubicDensity()).evolves
    assert not Method("static", "no rules, constant density").evolves


def test_rigl_defaults() -> None:
    rigl = get_method("rigl")
    assert rigl.needs_dense_grad and rigl.schedule.zeta_decay == "cosine"
    assert rigl.schedule.end_fraction == 0.75 and rigl.schedule.unit == "epoch"
    assert [c for c in range(1, 21) if rigl.schedule.is_update(c, 20)] == list(range(1, 16))
    assert EvolutionSchedule(zeta=0.3, zeta_decay="cosine", end_fraction=0.75).fraction(0.9) == pytest.approx(0.0)


def test_cht_recipes() -> None:
    cht, iclr = get_method("cht"), get_method("cht_iclr")
    for method in (cht, iclr):
        assert (method.topology_init, method.weight_init, method.percolation) == ("csti", "swi", True)
        assert isinstance(method.removal, MagnitudeRemoval)
        assert method.early_stop.threshold == 0.9
    assert (cht.regrowth.rule, cht.regrowth.selection, cht.early_stop.sticky) == ("CH3-L3", "top_n", False)
    assert (iclr.regrowth.selection, iclr.early_stop.sticky) == ("iclr", True)
    assert get_method("chts").regrowth.rule == "CH3-L3n"
    assert get_method("chtss").density.end == 0.8


def test_extra_density_follows_the_released_em_s_phases() -> None:
    schedule = ExtraDensity(extra=0.05, half_at=0.45, end=0.75)
    assert schedule.start_density(0.01) == pytest.approx(0.06) and schedule.start_density(0.98) == 1.0
    assert [schedule.remaining(p) for p in (0.0, 0.3, 0.45, 0.46, 0.74, 0.75, 1.0)] == [1, 1, 1, 0.5, 0.5, 0, 0]
    for bad in (dict(extra=0.0), dict(extra=1.0), dict(half_at=0.8, end=0.75), dict(end=1.5)):
        with pytest.raises(ValueError, match="ExtraDensity"):
            ExtraDensity(**bad)


def test_surplus_removal_fraction_is_left_to_the_engine() -> None:
    schedule = EvolutionSchedule(zeta=0.3, zeta_decay="surplus")
    assert schedule.fraction(0.0) == schedule.fraction(0.9) == 0.3
