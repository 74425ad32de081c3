"""Progress arithmetic: elapsed, rate and ETA (pure), and the tracker with a clock passed in."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idb_stats.logs import ProgressBar, setup_logging
from idb_stats.progress import Estimate, Tracker, describe, duration_text, rate_text


@given(
    total=st.integers(1, 10_000),
    done_share=st.floats(0.0001, 1.0),
    elapsed=st.floats(0.001, 1e6, allow_nan=False),
)
def test_eta_is_what_is_left_at_the_average_rate(total: int, done_share: float, elapsed: float) -> None:
    done = max(1, int(total * done_share))
    estimate = Estimate(done, total, elapsed)
    assert estimate.rate == pytest.approx(done / elapsed)
    assert estimate.remaining is not None
    # Finishing the rest at the same rate takes the whole run's time scaled to the remainder.
    assert estimate.elapsed + estimate.remaining == pytest.approx(elapsed * total / done)
    if done == total:
        assert estimate.remaining == 0


@pytest.mark.parametrize(
    ("estimate", "rate", "remaining"),
    [
        (Estimate(0, 30, 12.0), None, None),  # nothing done yet: no rate, no guess
        (Estimate(5, 30, 0.0), None, None),  # no time has passed
        (Estimate(3, 0, 9.0), 1 / 3, None),  # no total (import of a file without counts)
        (Estimate(30, 30, 60.0), 0.5, 0.0),
        (Estimate(12, 30, 120.0), 0.1, 180.0),
    ],
)
def test_rate_and_remaining_edges(estimate: Estimate, rate: float | None, remaining: float | None) -> None:
    assert estimate.rate == (pytest.approx(rate) if rate is not None else None)
    assert estimate.remaining == (pytest.approx(remaining) if remaining is not None else None)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.0 s"),
        (4.24, "4.2 s"),
        (59.96, "1 min 00 s"),
        (149, "2 min 29 s"),
        (3720, "1 h 02 min"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 04 h"),
    ],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_rate_in_the_unit_that_shows_it() -> None:
    assert rate_text(2.5, "days") == "2.5 days/s"
    assert rate_text(5.5 / 60, "days") == "5.5 days/min"
    assert rate_text(2 / 3600, "days") == "2.0 days/h"
    assert rate_text(1 / 86400, "days") == "1.0 days/d"


def test_description_of_a_backfill_has_elapsed_rate_and_eta() -> None:
    text = describe(Estimate(12, 30, 130.0), "days", ["1.2M rows"])
    assert text == "12/30 days, 1.2M rows, 2 min 10 s elapsed, 5.5 days/min, ETA 3 min 15 s"
    finished = describe(Estimate(30, 30, 300.0), "days")
    assert "ETA" not in finished and finished.startswith("30/30 days, 5 min 00 s elapsed")


def test_tracker_hands_each_estimate_to_its_sinks_with_the_clock_it_was_given() -> None:
    now = [100.0]
    seen: list[tuple[Estimate, str]] = []
    tracker = Tracker(sinks=[lambda e, label: seen.append((e, label))], clock=lambda: now[0])
    now[0] = 110.0
    tracker.update(1, "2020-02-18", total=4)
    now[0] = 130.0
    last = tracker.update(2, "2020-02-19")
    assert [(e.done, e.total, e.elapsed, label) for e, label in seen] == [
        (1, 4, 10.0, "2020-02-18"),
        (2, 4, 30.0, "2020-02-19"),
    ]
    assert last.remaining == pytest.approx(30.0) and tracker.elapsed() == 30.0
    assert re.search(r"ETA 30\.0 s$", describe(last, "days"))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_bar_shows_the_estimate_and_stays_off_under_json_logs() -> None:
    screen = Terminal()
    bar = ProgressBar("days", stream=screen)
    bar(Estimate(1, 3, 20.0), "2020-02-18")
    bar(Estimate(3, 3, 60.0), "2020-02-20")
    first, last = screen.getvalue().split("\r")[1:]
    bar_part, _, rest = first.partition("] ")
    assert bar_part == "[" + "#" * 10 + "." * 20
    assert rest == "1/3 days, 20.0 s elapsed, 3.0 days/min, ETA 40.0 s  2020-02-18\x1b[K"
    assert last.startswith("[##############################] 3/3 days, 1 min 00 s elapsed") and last.endswith(
        "\n"
    )
    try:
        setup_logging(log_format="json")
        quiet = Terminal()
        ProgressBar("days", stream=quiet)(Estimate(1, 3, 20.0), "")
        assert quiet.getvalue() == ""  # stderr carries only JSON lines
    finally:
        setup_logging()
