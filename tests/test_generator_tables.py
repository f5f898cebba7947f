"""The generator's value tables: Renard series, snapping, stepping and clamping."""

from __future__ import annotations

import math

import pytest

from dios.devices.backends import GeneratorLimits
from dios.devices.tables import (
    GeneratorTables,
    ValueTable,
    fmt,
    linear_table,
    renard_table,
)


@pytest.fixture(scope="module")
def tables() -> GeneratorTables:
    return GeneratorTables.for_limits(GeneratorLimits())


def test_kv_table_is_1kv_steps_over_the_limits(tables: GeneratorTables) -> None:
    assert tables.kv.values == tuple(float(k) for k in range(40, 151))


def test_ma_table_is_r10_over_the_limits(tables: GeneratorTables) -> None:
    assert tables.ma.values == (10, 12.5, 16, 20, 25, 32, 40, 50, 63, 80, 100, 125, 160, 200,
                                250, 320, 400, 500, 630, 800, 1000)


def test_ms_and_mas_tables_are_r20(tables: GeneratorTables) -> None:
    decade = (1, 1.1, 1.25, 1.4, 1.6, 1.8, 2, 2.2, 2.5, 2.8, 3.2, 3.6, 4, 4.5, 5, 5.6, 6.3, 7.1, 8, 9)
    assert tables.ms.values[:20] == decade
    assert tables.ms.values[-21:] == tuple(v * 1000 for v in decade) + (10000,)
    assert len(tables.ms) == 81 and tables.ms.hi == 10000
    assert tables.mas.values[:3] == (0.1, 0.11, 0.125)
    assert tables.mas.lo == 0.1 and tables.mas.hi == 1000 and len(tables.mas) == 81
    # ratio between neighbours stays close to 10 ** (1/20)
    ratios = [b / a for a, b in zip(tables.ms.values, tables.ms.values[1:], strict=False)]
    assert all(abs(math.log10(r) - 0.05) < 0.012 for r in ratios)


def test_seed_techniques_are_on_the_tables(tables: GeneratorTables) -> None:
    for kv, ma, ms, mas in ((55, 80, 40, 3.2), (70, 125, 100, 12.5)):
        assert kv in tables.kv and ma in tables.ma and ms in tables.ms and mas in tables.mas


def test_nearest_is_ratio_based_on_renard_and_difference_based_on_linear(tables: GeneratorTables) -> None:
    # 14.2 is 1.7 above 12.5 and 1.8 below 16, but closer to 16 as a ratio
    assert tables.ma.nearest(14.2) == 16
    assert linear_table("x", 0, 100, 12.5).nearest(14.2) == 12.5
    assert tables.kv.nearest(70.4) == 70 and tables.kv.nearest(70.6) == 71
    assert tables.kv.nearest(70.5) == 70  # a tie goes to the lower entry
    assert tables.ma.nearest(5) == 10 and tables.ma.nearest(5000) == 1000


def test_floor_and_ceil_never_cross_the_value(tables: GeneratorTables) -> None:
    assert tables.ma.floor(533.33) == 500
    assert tables.ma.floor(500) == 500
    assert tables.ma.floor(9.9) is None
    assert tables.ms.ceil(112) == 125
    assert tables.ms.ceil(125) == 125
    assert tables.ms.ceil(20000) is None


def test_step_moves_along_the_table_and_stops_at_the_ends(tables: GeneratorTables) -> None:
    assert tables.kv.step(70, 1) == 71
    assert tables.kv.step(70, -5) == 65
    assert tables.ma.step(125, 1) == 160
    assert tables.ma.step(125, -2) == 80
    assert tables.ms.step(100, 3) == 140
    assert tables.ma.step(1000, 1) == 1000
    assert tables.ma.step(10, -3) == 10
    assert tables.kv.step(149, 50) == 150


def test_within_clamps_a_table_by_limits(tables: GeneratorTables) -> None:
    sub = tables.ma.within(50, 400)
    assert sub.values == (50, 63, 80, 100, 125, 160, 200, 250, 320, 400)
    assert sub.geometric
    with pytest.raises(ValueError, match="no mA table entry"):
        tables.ma.within(510, 620)
    assert tables.kv.clamp(200) == 150 and tables.kv.clamp(10) == 40


def test_tables_follow_custom_limits() -> None:
    lim = GeneratorLimits(kv_min=50, kv_max=125, ma_min=25, ma_max=630, ms_min=2, ms_max=5000,
                          mas_min=0.5, mas_max=500)
    t = GeneratorTables.for_limits(lim)
    assert (t.kv.lo, t.kv.hi) == (50, 125)
    assert (t.ma.lo, t.ma.hi) == (25, 630)
    assert (t.ms.lo, t.ms.hi) == (2, 5000)
    assert (t.mas.lo, t.mas.hi) == (0.5, 500)
    assert t.table("MAS") is t.mas


def test_bad_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        ValueTable("x", ())
    with pytest.raises(ValueError, match="ascending"):
        ValueTable("x", (1.0, 1.0))
    with pytest.raises(ValueError, match="R40"):
        renard_table("x", 1, 10, 40)
    with pytest.raises(ValueError, match="range"):
        renard_table("x", 0, 10, 10)
    with pytest.raises(ValueError, match="step"):
        linear_table("x", 10, 1, 1)


def test_values_print_as_consoles_show_them() -> None:
    assert [fmt(v) for v in (70.0, 12.5, 0.125, 10000.0, 3.2)] == ["70", "12.5", "0.125", "10000", "3.2"]


# --- the generator's nearest-feasible search against an exhaustive reference -----------------------
def _exhaustive_fit(gen, t, field: str, requested: float):
    """Reference: check every table entry, keep the nearest feasible (ties to the lower)."""
    import dataclasses

    from dios.codes import OUT_OF_RANGE, DiosError

    table = gen.tables.table(field)
    options = [v for v in table.values
               if gen.feasible(gen._derive(dataclasses.replace(t, **{field: v})))]
    if not options:
        raise DiosError(OUT_OF_RANGE, "nothing fits")
    best = min(options, key=lambda v: (table._distance(v, requested), v))
    return gen._derive(dataclasses.replace(t, **{field: best}))


@pytest.mark.parametrize("limits", [
    GeneratorLimits(),
    GeneratorLimits(max_power_kw=20.0, focus_ma_max=(160.0, 400.0), mas_min=1.0, mas_max=200.0),
    GeneratorLimits(kv_min=50, kv_max=125, ma_min=25, ma_max=500, ms_min=2, ms_max=2000,
                    max_power_kw=32.0, focus_ma_max=(100.0, 320.0)),
])
def test_outward_fit_matches_the_exhaustive_search(limits: GeneratorLimits) -> None:
    import random

    from dios.codes import DiosError
    from dios.devices.backends import Technique
    from dios.devices.generator import Generator
    from dios.events import EventHub
    from simulators.generator import SimGeneratorBackend

    gen = Generator("DIOS/DEVICE/Generator", EventHub(), SimGeneratorBackend(limits=limits))
    gen.limits, gen.tables = limits, GeneratorTables.for_limits(limits)
    rng = random.Random(11)
    checked = refused = 0
    for _ in range(1500):
        t = gen._derive(Technique(
            kv=rng.choice(gen.tables.kv.values), ma=rng.choice(gen.tables.ma.values),
            ms=rng.choice(gen.tables.ms.values), mas=rng.choice(gen.tables.mas.values),
            mode=rng.randrange(3), focus=rng.randrange(2)))
        field = rng.choice(("ma", "ms", "mas"))
        values = gen.tables.table(field).values
        pick = rng.random()
        if pick < 0.3:  # an entry
            requested = rng.choice(values)
        elif pick < 0.6:  # half way between two entries (ties)
            i = rng.randrange(len(values) - 1)
            a, b = values[i], values[i + 1]
            requested = math.sqrt(a * b) if rng.random() < 0.5 else (a + b) / 2
        else:  # anywhere, also beyond the table's ends
            requested = math.exp(rng.uniform(math.log(values[0] / 3), math.log(values[-1] * 3)))
        try:
            want = _exhaustive_fit(gen, t, field, requested)
        except DiosError as err:
            with pytest.raises(DiosError) as exc:
                gen._fit(t, field, requested)
            assert exc.value.code is err.code
            refused += 1
            continue
        assert gen._fit(t, field, requested) == want, (t, field, requested)
        checked += 1
    assert checked > 500 and refused > 0
