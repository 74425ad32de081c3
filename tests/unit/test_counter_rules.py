"""The COUNTER-style figures as rules.py states them (docs/counting.md), without a database:
against a brute-force count on generated rows, the repeated hour of a fall-back day, and what
import accepts as a `counter` block. (tests/test_counter.py holds the engines to these rules.)"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from idb_stats.model import CounterFigures
from idb_stats.ndjson import counter_problem
from idb_stats.rules import TelemetryRow, counter_figures, skip_reason

NINE = datetime(2020, 2, 17, 9)
FALL_BACK = datetime(2020, 11, 1, 5, 0, tzinfo=UTC)  # 01:00 EDT; 06:00Z is 01:00 EST again
IPS = [None, "10.0.0.1", "10.0.0.2", ""]
RS = ["rs-a", "rs-b", "rs-c"]
GAPS = [0, 1, 29, 30, 30.000001, 31, 59.5, 3600]

payloads = st.one_of(
    st.dictionaries(st.sampled_from(["rec-a", "rec-b"]), st.sampled_from(RS), min_size=1, max_size=2),
    st.dictionaries(st.sampled_from(RS), st.integers(0, 5), min_size=1, max_size=2),
    st.sampled_from([{"rec-a": ""}, {"": "x"}, {"rec-a": 5}, {RS[0]: "x"}, {RS[0]: -1}, [1], None]),
)
chains = st.tuples(
    st.floats(-120, 7200),
    st.sampled_from(["view", "download", "seen", "search", None]),
    st.sampled_from(["records", "mediarecords", "recordsets"]),
    st.sampled_from(IPS),
    payloads,
    st.lists(st.sampled_from(GAPS), max_size=5),
)


def rows_of(generated: list[tuple[Any, ...]]) -> list[TelemetryRow]:
    """Each chain as its repeats (one row each, the same event, gaps apart), ids in order."""
    rows: list[TelemetryRow] = []
    for start, event_type, record_type, ip, payload, gaps in generated:
        at = NINE + timedelta(seconds=start)
        for gap in (0, *gaps):
            at += timedelta(seconds=gap)
            rows.append(TelemetryRow(len(rows) + 1, event_type, record_type, None, None, payload, at, ip))
    return rows


def brute_force(rows: list[TelemetryRow]) -> dict[str, CounterFigures]:
    """The figures counted another way: an event counts when no repeat of it (same client, hour
    and item) follows within 30 s, once per distinct moment (COUNTER keeps the last of a double
    click); uniques are the distinct (client, hour) pairs. Naive timestamps only."""
    moments: dict[tuple[Any, ...], set[datetime]] = {}
    for row in rows:
        if skip_reason(row) is not None or row.record_type not in ("records", "mediarecords"):
            continue
        if row.type not in ("view", "download"):
            continue
        assert row.date is not None
        client = row.ip if row.ip is not None else f"row {row.id}"
        hour = row.date.replace(minute=0, second=0, microsecond=0)
        for key, value in row.payload.items():
            rs = key if row.type == "download" else value
            moments.setdefault((rs, row.type, row.record_type, key, client, hour), set()).add(row.date)
    figures: dict[str, list[Any]] = {}
    for (rs, event_type, _, _, client, hour), at in moments.items():
        kept = sum(1 for t in at if not any(t < u <= t + timedelta(seconds=30) for u in at))
        slot = figures.setdefault(rs, [0, set(), 0, set()])
        slot[0] += kept
        slot[1].add((client, hour))
        if event_type == "download":
            slot[2] += kept
            slot[3].add((client, hour))
    return {rs: CounterFigures(i, len(si), r, len(sr)) for rs, (i, si, r, sr) in figures.items()}


@settings(max_examples=300)
@given(generated=st.lists(chains, min_size=1, max_size=8))
def test_rules_equal_a_brute_force_count(generated: list[tuple[Any, ...]]) -> None:
    rows = rows_of(generated)
    assert counter_figures(rows, UTC) == brute_force(rows)


def test_a_worked_chain() -> None:
    """+30 s is a double click and the chain goes on (+25 s); +35 s starts another one."""
    rows = rows_of([(0, "view", "records", "ip", {"rec": "rs"}, [30, 25, 35])])
    assert counter_figures(rows, UTC) == {"rs": CounterFigures(2, 1, 0, 0)}
    rows = rows_of([(0, "download", "records", None, {"rs": 1}, [0, 1])])  # no ip: each row its own
    assert counter_figures(rows, UTC) == {"rs": CounterFigures(3, 3, 3, 3)}


def test_two_sessions_in_the_repeated_hour() -> None:
    """The case above by hand, against rules.py alone: 20 s apart, in the two 01:00 hours."""
    zone = ZoneInfo("America/New_York")
    rows = [
        TelemetryRow(
            1, "view", "records", None, None, {"rec-a": "rs"}, FALL_BACK + timedelta(seconds=3590), "a"
        ),
        TelemetryRow(
            2, "view", "records", None, None, {"rec-a": "rs"}, FALL_BACK + timedelta(seconds=3610), "a"
        ),
    ]
    assert counter_figures(rows, zone) == {"rs": CounterFigures(2, 2, 0, 0)}
    assert counter_figures(rows, UTC) == {"rs": CounterFigures(2, 2, 0, 0)}
    same_hour = [rows[0], dataclasses.replace(rows[1], date=FALL_BACK + timedelta(seconds=3595))]
    assert counter_figures(same_hour, zone) == {"rs": CounterFigures(1, 1, 0, 0)}


blocks = st.fixed_dictionaries(
    {
        m: st.fixed_dictionaries({f: st.integers(0, 6) for f in ("total", "unique")})
        for m in ("investigations", "requests")
    }
)


@given(block=st.one_of(blocks, st.none(), st.integers(), st.dictionaries(st.text(max_size=3), st.integers())))
def test_import_check_accepts_exactly_what_collect_can_make(block: Any) -> None:
    """counter_problem against the definition: a block is possible when requests are a part of
    investigations, each unique within its total and zero only with it, and there are no more
    chains than the document's views and downloads (here 4 views, 2 downloads)."""
    doc = {
        rt: {ty: {"count": n if rt != "recordsets" else 0} for ty, n in (("view", 2), ("download", 1))}
        for rt in ("records", "mediarecords", "recordsets")
    }
    possible = (
        isinstance(block, dict)
        and set(block) == {"investigations", "requests"}
        and all(
            isinstance(block[m], dict)
            and set(block[m]) == {"total", "unique"}
            and block[m]["unique"] <= block[m]["total"]
            and (block[m]["unique"] == 0) == (block[m]["total"] == 0)
            for m in block
        )
        and block["requests"]["total"] <= min(block["investigations"]["total"], 2)
        and block["requests"]["unique"] <= block["investigations"]["unique"]
        and block["investigations"]["total"] - block["requests"]["total"] <= 4
    )
    assert (counter_problem(block, doc) is None) == possible
