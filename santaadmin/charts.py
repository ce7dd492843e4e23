"""Server-rendered charts: the geometry is computed here, the template only emits SVG elements.

Nothing here produces markup. Every number a template writes into the SVG is a plain float or
int (rounded), every text is a plain string that the template escapes like any other value.
Colours are given as presentation attributes (fill=...), so the page needs no style attribute
and no script, and the chart reads the same without CSS.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Series:
    """One stacked quantity: its key in the data, its legend label and its colour."""

    key: str
    label: str
    color: str


@dataclass(frozen=True)
class Segment:
    series: Series
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Bar:
    day: datetime.date
    title: str  # the tooltip: "2026-05-01: 3 blocked, 1 would be blocked"
    values: tuple[tuple[Series, int], ...]  # every series, in stacking order, zeros included
    total: int
    segments: tuple[Segment, ...]  # only the non-zero values, bottom first
    x: float
    width: float
    hit_y: float  # an invisible full-height rectangle carries the tooltip of empty days too
    hit_height: float


@dataclass(frozen=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True)
class XLabel:
    text: str
    x: float


@dataclass(frozen=True)
class StackedBarChart:
    width: int
    height: int
    left: float
    top: float
    right: float  # x of the plot's right edge
    bottom: float  # y of the baseline
    series: tuple[Series, ...]
    bars: tuple[Bar, ...]
    y_ticks: tuple[Tick, ...]
    x_labels: tuple[XLabel, ...]
    y_max: int
    totals: tuple[tuple[Series, int], ...]

    @property
    def total(self) -> int:
        return sum(value for _, value in self.totals)

    @property
    def first_day(self) -> datetime.date | None:
        return self.bars[0].day if self.bars else None

    @property
    def last_day(self) -> datetime.date | None:
        return self.bars[-1].day if self.bars else None

    @property
    def busiest(self) -> Bar | None:
        """The day with the most events (the latest on a tie), None when all are empty."""
        best = max(self.bars, key=lambda bar: (bar.total, bar.day), default=None)
        return best if best is not None and best.total else None

    # Where the axis texts go: tick values left of the plot, day labels under the baseline,
    # the x-axis title at the bottom and the y-axis title rotated along the left edge.
    @property
    def tick_label_x(self) -> float:
        return self.left - 6

    @property
    def day_label_y(self) -> float:
        return self.bottom + 16

    @property
    def x_title(self) -> tuple[float, float]:
        return round((self.left + self.right) / 2, 2), float(self.height - 6)

    @property
    def y_title(self) -> tuple[float, float]:
        return 14.0, round((self.top + self.bottom) / 2, 2)


def nice_step(value: float) -> int:
    """The smallest 1, 2 or 5 x 10^n (an integer, at least 1) not below `value`."""
    if value <= 1:
        return 1
    exponent = math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        step = factor * 10**exponent
        if step >= value:
            return int(step)
    return int(10 ** (exponent + 1))  # pragma: no cover - the loop always returns


def axis_scale(largest: int, ticks: int = 4) -> tuple[int, int]:
    """(top of the axis, step) for values up to `largest`, with about `ticks` steps."""
    step = nice_step(max(largest, 1) / ticks)
    top = step * max(1, math.ceil(largest / step))
    return top, step


def last_days(today: datetime.date, count: int) -> list[datetime.date]:
    """The `count` days ending with `today`, oldest first."""
    return [today - datetime.timedelta(days=offset) for offset in range(count - 1, -1, -1)]


def stacked_bars(
    days: Sequence[datetime.date],
    series: Sequence[Series],
    values: Mapping[tuple[datetime.date, str], int],
    *,
    width: int = 1000,
    height: int = 240,
    margin_left: int = 56,
    margin_right: int = 12,
    margin_top: int = 12,
    margin_bottom: int = 44,
    label_every: int = 7,
    describe=None,
) -> StackedBarChart:
    """One bar per day, stacking `series` bottom-up; `values[(day, series.key)]` (missing: 0).

    X labels go under every `label_every`-th bar counted back from the last one, so the most
    recent day is always labelled. `describe(day, [(series, value), ...])` makes each bar's
    tooltip (default: "YYYY-MM-DD: 3 blocked, 1 would be blocked").
    """
    describe = describe or _describe
    left, top = float(margin_left), float(margin_top)
    right, bottom = float(width - margin_right), float(height - margin_bottom)
    plot_height = bottom - top
    totals_per_day = [sum(values.get((day, s.key), 0) for s in series) for day in days]
    y_max, step = axis_scale(max(totals_per_day, default=0))
    slot = (right - left) / max(len(days), 1)
    bar_width = round(slot * 0.72, 2)
    gap = (slot - bar_width) / 2

    bars = []
    for index, day in enumerate(days):
        x = round(left + index * slot + gap, 2)
        day_values = tuple((s, int(values.get((day, s.key), 0))) for s in series)
        segments, stacked = [], 0
        for s, value in day_values:
            if value <= 0:
                continue
            y_low = bottom - plot_height * stacked / y_max
            stacked += value
            y_high = bottom - plot_height * stacked / y_max
            segments.append(
                Segment(
                    series=s,
                    value=value,
                    x=x,
                    y=round(y_high, 2),
                    width=bar_width,
                    height=round(y_low - y_high, 2),
                )
            )
        bars.append(
            Bar(
                day=day,
                title=describe(day, day_values),
                values=day_values,
                total=stacked,
                segments=tuple(segments),
                x=x,
                width=bar_width,
                hit_y=top,
                hit_height=round(plot_height, 2),
            )
        )

    y_ticks = tuple(
        Tick(value=value, y=round(bottom - plot_height * value / y_max, 2))
        for value in range(0, y_max + 1, step)
    )
    last = len(days) - 1
    x_labels = tuple(
        XLabel(text=day.strftime("%m-%d"), x=round(left + index * slot + slot / 2, 2))
        for index, day in enumerate(days)
        if (last - index) % label_every == 0
    )
    totals = tuple((s, sum(values.get((day, s.key), 0) for day in days)) for s in series)
    return StackedBarChart(
        width=width,
        height=height,
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        series=tuple(series),
        bars=tuple(bars),
        y_ticks=y_ticks,
        x_labels=x_labels,
        y_max=y_max,
        totals=totals,
    )


def _describe(day: datetime.date, values) -> str:
    parts = ", ".join(f"{value} {s.label.lower()}" for s, value in values)
    return f"{day.isoformat()}: {parts}"
