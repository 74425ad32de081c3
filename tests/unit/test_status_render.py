"""status as a Nagios check and as Prometheus text, rendered from typed status records: the
states each situation maps to, the plugin line's shape, and the exposition parsed by the official
Prometheus client's parser."""

from __future__ import annotations

import math
import re
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from idb_stats.errors import ExitCode
from idb_stats.ledger import RUN_COMMANDS
from idb_stats.monitoring import NagiosState, nagios_check, nagios_unknown, prometheus_down, prometheus_text
from idb_stats.status import RunState, Status, as_text, lag_error

CLOSED = date(2026, 12, 5)
OUTCOMES = ("ok", "failed", "interrupted", "abandoned", "running")


def run_state(command: str, outcome: str, seconds: float | None = 12.5) -> RunState:
    record = {"run_id": f"r-{command}", "outcome": outcome, "started_at": "2026-12-06T00:31:02.123+00:00"}
    return RunState.from_record(command, {**record, "seconds": seconds})


def make_status(
    lag: int | None = 0,
    missing: int = 0,
    damaged: int = 0,
    runs: dict[str, str] | None = None,
    last_day: dict[str, Any] | None = None,
) -> Status:
    through = CLOSED - timedelta(days=lag) if lag is not None else None
    return Status(
        store="postgres",
        last_closed=CLOSED,
        last_complete=through,
        complete_through=through,
        lag_days=lag,
        complete_days=0 if lag is None else 40,
        missing_days=[CLOSED - timedelta(days=lag or 0) + timedelta(days=1 + i) for i in range(missing)],
        not_closed_days=[],
        last_day=last_day
        if last_day is not None
        else ({"rows": 123456, "seconds": 41.25} if lag is not None else None),
        last_run=None,
        last_runs={
            c: run_state(c, o) for c, o in (runs if runs is not None else {"collect-stats": "ok"}).items()
        },
        last_recheck=None,
        not_rechecked={},
        recheck_days=7,
        last_snapshot=None,
        snapshot_missing_today=False,
        snapshot_recordsets=None,
        damaged_days=[date(2026, 11, 1) + timedelta(days=i) for i in range(damaged)],
    )


PERFDATA = re.compile(r"^[a-z_]+=(U|\d+(\.\d+)?s?);\d*;\d*;0$")


def test_a_store_up_to_date_is_ok_with_its_perfdata() -> None:
    check = nagios_check(make_status(lag=0), warn_lag=2, crit_lag=3)
    assert check.state == NagiosState.OK
    assert check.line() == (
        "IDB-STATS OK - complete through 2026-12-05, lag 0 days | lag_days=0;2;3;0 complete_days=40;;;0 "
        "missing_days=0;;;0 damaged_days=0;;0;0 last_day_rows=123456;;;0 last_day_seconds=41.25s;;;0"
    )


@pytest.mark.parametrize(
    ("status", "state", "said"),
    [
        (make_status(lag=2), NagiosState.OK, "lag 2 days"),
        (make_status(lag=3), NagiosState.WARNING, "lag 3 days (complete through 2026-12-02) > 2"),
        (make_status(lag=4), NagiosState.CRITICAL, "lag 4 days (complete through 2026-12-01) > 3"),
        (make_status(lag=9, missing=2), NagiosState.CRITICAL, "missing 2026-11-27, 2026-11-28"),
        (make_status(lag=None), NagiosState.CRITICAL, "no complete harvest date yet"),
        (make_status(damaged=1), NagiosState.CRITICAL, "damaged 2026-11-01"),
        (make_status(runs={"collect-stats": "failed"}), NagiosState.CRITICAL, "last collect-stats failed"),
        (make_status(runs={"import": "abandoned"}), NagiosState.CRITICAL, "last import abandoned"),
        (make_status(runs={"api-stats": "interrupted"}), NagiosState.WARNING, "last api-stats interrupted"),
        (make_status(runs={"collect-stats": "running"}), NagiosState.OK, "lag 0 days"),
        # The worst condition decides; every condition is named.
        (
            make_status(lag=3, runs={"collect-stats": "failed"}),
            NagiosState.CRITICAL,
            "last collect-stats failed 2026-12-06T00:31:02.123+00:00; lag 3 days",
        ),
    ],
)
def test_states(status: Status, state: NagiosState, said: str) -> None:
    check = nagios_check(status, warn_lag=2, crit_lag=3)
    assert check.state == state and said in check.line()


@given(
    lag=st.none() | st.integers(0, 400),
    missing=st.integers(0, 12),
    damaged=st.integers(0, 3),
    outcomes=st.dictionaries(st.sampled_from(RUN_COMMANDS), st.sampled_from(OUTCOMES)),
    warn=st.integers(0, 10),
    extra=st.integers(0, 10),
)
def test_any_status_is_one_plugin_line_and_the_worst_condition_wins(
    lag: int | None, missing: int, damaged: int, outcomes: dict[str, str], warn: int, extra: int
) -> None:
    status = make_status(lag=lag, missing=missing, damaged=damaged, runs=outcomes)
    check = nagios_check(status, warn_lag=warn, crit_lag=warn + extra)
    line = check.line()
    assert "\n" not in line and line.startswith(f"IDB-STATS {check.state.name} - ")
    _, _, perfdata = line.partition(" | ")
    assert all(PERFDATA.match(item) for item in perfdata.split(" ")), perfdata
    critical = (
        lag is None
        or lag > warn + extra
        or damaged > 0
        or any(o in ("failed", "abandoned") for o in outcomes.values())
    )
    warning = (lag is not None and lag > warn) or "interrupted" in outcomes.values()
    expected = NagiosState.CRITICAL if critical else NagiosState.WARNING if warning else NagiosState.OK
    assert check.state == expected, line


def test_unknown_is_one_line_whatever_the_error_says() -> None:
    check = nagios_unknown("invalid configuration:\n  - store.url: refused\n")
    assert check.state == NagiosState.UNKNOWN == 3
    assert check.line() == "IDB-STATS UNKNOWN - invalid configuration: - store.url: refused"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families = list(text_string_to_metric_families(text))
    assert all(f.type == "gauge" and f.documentation for f in families)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_prometheus_text_parses_and_says_the_status() -> None:
    status = make_status(lag=3, missing=2, damaged=1, runs={"collect-stats": "failed", "api-stats": "ok"})
    parsed = samples(prometheus_text(status))
    store = (("store", "postgres"),)
    assert parsed[("idb_stats_up", store)] == 1
    assert parsed[("idb_stats_lag_days", store)] == 3
    # Midnight UTC of 2026-12-02.
    assert parsed[("idb_stats_last_complete_day_timestamp_seconds", store)] == 1796169600
    assert parsed[("idb_stats_complete_days", store)] == 40
    assert parsed[("idb_stats_missing_days", store)] == 2
    assert parsed[("idb_stats_damaged_days", store)] == 1
    assert parsed[("idb_stats_last_day_rows", store)] == 123456
    assert parsed[("idb_stats_last_day_seconds", store)] == 41.25
    for command, outcome in (("collect-stats", "failed"), ("api-stats", "ok")):
        labels = {"store": "postgres", "command": command}
        states = {
            o: parsed[("idb_stats_last_run_outcome", tuple(sorted({**labels, "outcome": o}.items())))]
            for o in OUTCOMES
        }
        assert states == {o: float(o == outcome) for o in OUTCOMES}
        assert parsed[("idb_stats_last_run_seconds", tuple(sorted(labels.items())))] == 12.5
        started = parsed[("idb_stats_last_run_start_timestamp_seconds", tuple(sorted(labels.items())))]
        assert started == pytest.approx(1796517062.123)
    assert not any(
        name == "idb_stats_last_run_outcome" and ("command", "import") in labels for name, labels in parsed
    )


def test_what_is_not_known_is_left_out_not_made_up() -> None:
    parsed = samples(prometheus_text(make_status(lag=None, runs={})))
    names = {name for name, _ in parsed}
    assert names == {
        "idb_stats_up",
        "idb_stats_complete_days",
        "idb_stats_missing_days",
        "idb_stats_damaged_days",
    }
    assert not any(math.isnan(v) for v in parsed.values())


def test_store_down_is_a_parsable_file_saying_so() -> None:
    assert samples(prometheus_down("opensearch")) == {("idb_stats_up", (("store", "opensearch"),)): 0}


@given(outcome=st.text(min_size=1, max_size=30), seconds=st.none() | st.floats(0, 1e7))
def test_any_outcome_the_ledger_holds_round_trips_through_the_parser(
    outcome: str, seconds: float | None
) -> None:
    status = make_status(runs={"collect-stats": outcome})
    status.last_runs["collect-stats"] = run_state("collect-stats", outcome, seconds)
    parsed = samples(prometheus_text(status))
    labels = {"store": "postgres", "command": "collect-stats", "outcome": outcome}
    assert parsed[("idb_stats_last_run_outcome", tuple(sorted(labels.items())))] == 1
    current = [k for k, v in parsed.items() if k[0] == "idb_stats_last_run_outcome" and v == 1]
    assert len(current) == 1
    if seconds is not None:
        key = ("idb_stats_last_run_seconds", (("command", "collect-stats"), ("store", "postgres")))
        assert parsed[key] == pytest.approx(seconds)


@given(
    lag=st.none() | st.integers(0, 400),
    missing=st.integers(0, 3),
    damaged=st.integers(0, 3),
    max_lag=st.integers(0, 400),
)
def test_max_lag_refuses_exactly_a_store_behind_or_damaged(
    lag: int | None, missing: int, damaged: int, max_lag: int
) -> None:
    """status --max-lag, moved out of the command: exit 8 when the store lags more than the limit,
    has no complete day, or holds a damaged day; each message says what to run."""
    info = make_status(lag=lag, missing=missing, damaged=damaged)
    error = lag_error(info, max_lag)
    behind = lag is None or lag > max_lag or damaged > 0
    assert (error is not None) == behind
    if error is not None:
        assert error.exit_code == ExitCode.LAGGING
        assert "idb-stats collect-stats" in str(error) and f"--max-lag {max_lag}" in str(error)
        if damaged:
            assert str(info.damaged_days[0]) in str(error)


def test_status_text_says_each_fact_on_its_own_line() -> None:
    info = make_status(lag=3, missing=2, damaged=1, runs={"collect-stats": "abandoned", "api-stats": "ok"})
    lines = as_text(info).splitlines()
    assert lines[0] == "store:                 postgres"
    assert "lag:                   3 days" in lines
    assert "missing days:          2026-12-03, 2026-12-04" in lines
    assert "damaged days:          2026-11-01 (idb-stats collect-stats redoes them)" in lines
    abandoned = next(line for line in lines if line.startswith("last collect-stats:"))
    assert abandoned.startswith("last collect-stats:    abandoned 2026-12-06T00:31:02.123+00:00 (12.5 s)")
    assert abandoned.endswith("is gone; its lock is free)")
    assert lines[-1] == "last size snapshot:    none"
    assert "last run:              none" in as_text(make_status(runs={})).splitlines()
