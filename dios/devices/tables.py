"""The generator's value tables: the only values a console offers for kV, mA, ms and mAs.

Real radiography consoles do not accept arbitrary technique values: the operator steps
through fixed tables, and every value sent to the generator is one of their entries.

* **kV**: 1 kV steps over the generator's limits (40, 41, ... 150).
* **mA**: the Renard R'10 series (IEC 60601-2-54 practice; ten steps per decade, ratio
  about 1.25): 10, 12.5, 16, 20, 25, 32, 40, 50, 63, 80, 100, 125, ... 1000.
* **ms** and **mAs**: the Renard R'20 series (twenty steps per decade, ratio about 1.12):
  1, 1.1, 1.25, 1.4, 1.6, 1.8, 2, 2.2, 2.5, 2.8, 3.2, 3.6, 4, 4.5, 5, 5.6, 6.3, 7.1, 8, 9,
  10, ... .

The rounded (primed) Renard values are used, as console tables print them (3.2 rather
than 3.15, 6.3 rather than 6.30, 12.5 rather than 12.6). R'20 contains every R'10 value, so
techniques taken from R'10 tables (80 mA, 40 ms, 3.2 mAs; 125 mA, 100 ms, 12.5 mAs) are
exact on every table.

Snapping rules:

* :meth:`ValueTable.nearest` picks the closest entry; on a geometric (Renard) table
  "closest" is measured as a ratio (``|log v - log entry|``), on a linear table as a
  difference. A tie goes to the lower entry (the safer one for dose and load).
* :meth:`ValueTable.floor` picks the largest entry not above the value: used for ceilings
  (power, focus current), so a limit is never exceeded by snapping.
* :meth:`ValueTable.ceil` picks the smallest entry not below the value.
* :meth:`ValueTable.step` moves ``n`` entries up (``n > 0``) or down from the entry
  nearest to the value, stopping at the ends of the table.
* :meth:`ValueTable.within` restricts a table to ``[lo, hi]`` (a clamp by limits).

>>> t = renard_table("mA", 10, 1000, 10)
>>> t.nearest(130), t.floor(533.3), t.step(125, 2), t.step(1000, 1)
(125.0, 500.0, 200.0, 1000.0)
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from dios.devices.backends import GeneratorLimits

#: Rounded Renard series mantissas (one decade, 1 <= m < 10), as console tables print them.
RENARD: dict[int, tuple[float, ...]] = {
    10: (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0),
    20: (1.0, 1.1, 1.25, 1.4, 1.6, 1.8, 2.0, 2.2, 2.5, 2.8,
         3.2, 3.6, 4.0, 4.5, 5.0, 5.6, 6.3, 7.1, 8.0, 9.0),
}

_EPS = 1e-9


@dataclass(frozen=True)
class ValueTable:
    """An ascending table of allowed values.

    Parameters
    ----------
    name : str
        What the table holds (``kV``, ``mA``, ``ms``, ``mAs``), used in messages.
    values : tuple of float
        Strictly ascending entries.
    geometric : bool
        True for Renard tables: nearness is a ratio, not a difference.
    """

    name: str
    values: tuple[float, ...]
    geometric: bool = False

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f"{self.name} table is empty")
        if any(b <= a for a, b in zip(self.values, self.values[1:], strict=False)):
            raise ValueError(f"{self.name} table must be strictly ascending")
        if self.geometric and self.values[0] <= 0:
            raise ValueError(f"{self.name} geometric table needs positive values")

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int | float):
            return False
        i = bisect.bisect_left(self.values, value - _EPS)
        return i < len(self.values) and abs(self.values[i] - value) <= _EPS * max(1.0, abs(value))

    @property
    def lo(self) -> float:
        """The smallest entry."""
        return self.values[0]

    @property
    def hi(self) -> float:
        """The largest entry."""
        return self.values[-1]

    def _distance(self, a: float, b: float) -> float:
        if self.geometric:
            return abs(math.log(a) - math.log(b)) if a > 0 and b > 0 else math.inf
        return abs(a - b)

    def index(self, value: float) -> int:
        """Index of the entry nearest to ``value`` (ties go to the lower entry)."""
        vals = self.values
        i = bisect.bisect_left(vals, value)
        if i <= 0:
            return 0
        if i >= len(vals):
            return len(vals) - 1
        lower, upper = vals[i - 1], vals[i]
        if abs(upper - value) <= _EPS * max(1.0, abs(value)):
            return i
        return i - 1 if self._distance(value, lower) <= self._distance(value, upper) + _EPS else i

    def nearest(self, value: float) -> float:
        """The entry nearest to ``value`` (clamped to the table's ends)."""
        return self.values[self.index(value)]

    def floor(self, value: float) -> float | None:
        """The largest entry not above ``value``; None if every entry is above it."""
        i = bisect.bisect_right(self.values, value + _EPS * max(1.0, abs(value)))
        return self.values[i - 1] if i > 0 else None

    def ceil(self, value: float) -> float | None:
        """The smallest entry not below ``value``; None if every entry is below it."""
        i = bisect.bisect_left(self.values, value - _EPS * max(1.0, abs(value)))
        return self.values[i] if i < len(self.values) else None

    def step(self, value: float, n: int) -> float:
        """Move ``n`` entries (negative = down) from the entry nearest to ``value``.

        Stops at the first and last entries.
        """
        i = min(max(self.index(value) + int(n), 0), len(self.values) - 1)
        return self.values[i]

    def within(self, lo: float, hi: float) -> ValueTable:
        """The entries in ``[lo, hi]`` (a table clamped by limits); ValueError if none."""
        vals = tuple(v for v in self.values
                     if v >= lo - _EPS * max(1.0, abs(lo)) and v <= hi + _EPS * max(1.0, abs(hi)))
        if not vals:
            raise ValueError(f"no {self.name} table entry within [{lo:g}, {hi:g}]")
        return ValueTable(self.name, vals, self.geometric)

    def clamp(self, value: float) -> float:
        """``value`` limited to ``[lo, hi]`` of the table (not snapped)."""
        return min(max(value, self.lo), self.hi)


def linear_table(name: str, lo: float, hi: float, step: float) -> ValueTable:
    """Entries ``lo, lo + step, ...`` up to ``hi`` (``lo`` rounded up to a step multiple)."""
    if step <= 0 or hi < lo:
        raise ValueError(f"bad {name} table: [{lo:g}, {hi:g}] step {step:g}")
    first = math.ceil(lo / step - _EPS)
    last = math.floor(hi / step + _EPS)
    return ValueTable(name, tuple(round(k * step, 6) for k in range(first, last + 1)))


def renard_table(name: str, lo: float, hi: float, series: int) -> ValueTable:
    """The rounded Renard R'``series`` entries within ``[lo, hi]`` (``series`` 10 or 20)."""
    if series not in RENARD:
        raise ValueError(f"Renard series R{series} not supported (use 10 or 20)")
    if not 0 < lo <= hi:
        raise ValueError(f"bad {name} table range [{lo:g}, {hi:g}]")
    values = []
    for decade in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in RENARD[series]:
            v = float(f"{m * 10.0 ** decade:.6g}")
            if lo - _EPS * lo <= v <= hi + _EPS * hi:
                values.append(v)
    return ValueTable(name, tuple(sorted(set(values))), geometric=True)


@dataclass(frozen=True)
class GeneratorTables:
    """The four technique tables of one generator, clamped by its limits."""

    kv: ValueTable
    ma: ValueTable
    ms: ValueTable
    mas: ValueTable

    @classmethod
    def for_limits(cls, limits: GeneratorLimits) -> GeneratorTables:
        """kV in 1 kV steps, mA on R'10, ms and mAs on R'20, all within ``limits``."""
        return cls(
            kv=linear_table("kV", limits.kv_min, limits.kv_max, 1.0),
            ma=renard_table("mA", limits.ma_min, limits.ma_max, 10),
            ms=renard_table("ms", limits.ms_min, limits.ms_max, 20),
            mas=renard_table("mAs", limits.mas_min, limits.mas_max, 20),
        )

    def table(self, param: str) -> ValueTable:
        """The table for ``KV``, ``MA``, ``MS`` or ``MAS`` (case-insensitive)."""
        return getattr(self, param.lower())


def fmt(value: float) -> str:
    """A table value as consoles print it: ``70``, ``12.5``, ``0.125``, ``10000``."""
    return f"{value:.6g}"
