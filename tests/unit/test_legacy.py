"""The original collector's document shapes, normalised (pure code; hostile input by Hypothesis)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idb_stats.legacy import (
    DayOutcome,
    DuplicatesRefused,
    NotADailyDocument,
    legacy_day,
    missing_blocks,
    normalise,
    resolve_duplicates,
)
from idb_stats.model import BLOCKS

RS = "00000001-0000-4000-8000-000000000000"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def original(day: str = "2016-05-03", **blocks: Any) -> dict[str, Any]:
    return {"recordset_id": RS, "harvest_date": day, **blocks}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2016-05-03", date(2016, 5, 3)),
        ("2016-05-03T00:00:00", date(2016, 5, 3)),
        ("2016-05-03T00:00:00.000Z", date(2016, 5, 3)),
        ("2016-05-03T22:30:00-04:00", date(2016, 5, 4)),  # its UTC day, the portal's bucket
        (1462233600000, date(2016, 5, 3)),
    ],
)
def test_harvest_dates_as_the_original_stored_them(value: Any, expected: date) -> None:
    assert legacy_day(value) == expected


@pytest.mark.parametrize("value", [None, "", "yesterday", "2016-13-01", True, "2016-05"])
def test_unreadable_harvest_dates_are_refused_with_a_reason(value: Any) -> None:
    with pytest.raises(NotADailyDocument) as refused:
        legacy_day(value)
    assert refused.value.reason == "bad_harvest_date"


def test_missing_blocks_are_zeros_doubles_integers_and_nulls_kept() -> None:
    raw = original(
        "2016-05-03T00:00:00",
        records={
            "search": {
                "count": 2.0,
                "total": 7.0,
                "queries": [{"term": None, "count": 3.0}, {"term": "q1", "count": 4.0}],
                "geocodes": [{"geo": None, "count": 7.0}],
            }
        },
    )
    doc = normalise(raw)
    assert doc["harvest_date"] == "2016-05-03"
    assert doc["records"]["search"] == {
        "count": 2,
        "total": 7,
        "items": [],
        "queries": [{"term": "q1", "count": 4}, {"term": None, "count": 3}],
        "geocodes": [{"geo": None, "count": 7}],
    }
    assert doc["mediarecords"]["view"] == {"count": 0, "total": 0, "items": [], "queries": [], "geocodes": []}
    assert missing_blocks(raw) == len(BLOCKS) - 1


@pytest.mark.parametrize("count", [float("inf"), float("nan"), -1, 1.5, "3", True])
def test_counts_that_are_not_whole_numbers_are_refused(count: Any) -> None:
    with pytest.raises(NotADailyDocument) as refused:
        normalise(original(records={"view": {"count": count}}))
    assert refused.value.reason == "bad_count"


def test_size_snapshots_are_told_apart() -> None:
    with pytest.raises(NotADailyDocument) as refused:
        normalise({"recordset_id": RS, "records_count": 3, "harvest_date": "2016-05-03T06:00:00"})
    assert refused.value.reason == "size_snapshot"


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_is_normalised_or_refused_with_a_reason(value: Any) -> None:
    for candidate in (value, original(records=value), original(records={"view": value}), original(value)):
        try:
            doc = normalise(candidate)
        except NotADailyDocument as refused:
            assert refused.reason
        else:
            assert all(isinstance(doc[rt][ty]["count"], int) for rt, ty in BLOCKS)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from(["a", "b", None])), min_size=1, max_size=6))
def test_sum_policy_keeps_every_count(entries: list[tuple[int, str | None]]) -> None:
    docs = [
        normalise(
            original(records={"search": {"count": n, "total": n, "queries": [{"term": t, "count": n}]}})
        )
        for n, t in entries
    ]
    outcome = DayOutcome(date(2016, 5, 3))
    (summed,) = resolve_duplicates(docs, "sum", outcome)
    block = summed["records"]["search"]
    assert block["count"] == block["total"] == sum(n for n, _ in entries)
    assert sum(q["count"] for q in block["queries"]) == sum(n for n, _ in entries)
    assert outcome.duplicates == ({RS: len(entries)} if len(entries) > 1 else {})
    (last,) = resolve_duplicates(docs, "keep-last", DayOutcome(date(2016, 5, 3)))
    assert last["records"]["search"]["count"] == entries[-1][0]
    if len(entries) > 1:
        with pytest.raises(DuplicatesRefused, match=RS):
            resolve_duplicates(docs, "refuse", DayOutcome(date(2016, 5, 3)))
