"""The rules as stated in rules.py, on rows written by hand: what each event type adds, and why
a row is skipped. (tests/test_aggregation.py checks the SQL in source.py against these rules.)"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idb_stats.documents import term_list
from idb_stats.model import MAX_GEOCODE_BYTES, MAX_ID_BYTES, OTHER_TERM, SKIP_REASONS
from idb_stats.rules import TelemetryRow, aggregate, aggregate_day, skip_reason

DAY = date(2020, 2, 18)
US = {"country": "US"}


def row(
    type_: str, payload: Any, *, record_type: Any = "records", query: str | None = None, geo: Any = US
) -> TelemetryRow:
    return TelemetryRow(
        id=1, type=type_, record_type=record_type, query_hash=query, ip_geocode=geo, payload=payload
    )


def block(rows: list[TelemetryRow], recordset: str, record_type: str, event_type: str) -> dict[str, Any]:
    docs, _ = aggregate(rows, DAY)
    (doc,) = [d for d in docs if d["recordset_id"] == recordset]
    result: dict[str, Any] = doc[record_type][event_type]
    return result


def test_a_search_adds_its_hits_to_the_recordsets_it_names() -> None:
    rows = [row("search", {"rs1": 7, "rs2": 3}, query="q1"), row("search", {"rs1": 2.0}, geo=None)]
    searched = block(rows, "rs1", "records", "search")
    assert (searched["count"], searched["total"]) == (2, 9)
    assert searched["queries"] == [{"term": "q1", "count": 7}]  # the row without a query adds none
    assert searched["geocodes"] == [{"geo": US, "count": 7}, {"geo": {}, "count": 2}]
    assert searched["items"] == []


def test_seen_and_view_count_one_per_record_and_views_have_no_queries() -> None:
    rows = [
        row("seen", {"r1": "rs1", "r2": "rs1", "r3": "rs2"}, query="q1", record_type="mediarecords"),
        row("view", {"r1": "rs1"}, query="q1"),
    ]
    seen = block(rows, "rs1", "mediarecords", "seen")
    assert (seen["count"], seen["total"]) == (2, 2)
    assert seen["items"] == [{"term": "r1", "count": 1}, {"term": "r2", "count": 1}]
    assert seen["queries"] == [{"term": "q1", "count": 2}]
    viewed = block(rows, "rs1", "records", "view")
    assert (viewed["count"], viewed["items"], viewed["queries"]) == (1, [{"term": "r1", "count": 1}], [])


def test_a_recordset_page_view_is_a_block_of_that_recordsets_document() -> None:
    # As the search API logs /v2/view/recordsets/:uuid: keyed by the page's uuid, the value the
    # viewed document's `recordset` field (which a recordset lacks): never read, whatever it is.
    rows = [
        row("view", {"rs1": None}, record_type="recordsets", query="view"),
        row("view", {"rs1": "x", "rs2": {"a": [1]}}, record_type="recordsets", geo=None),
        row("search", {"rs1": 4}, query="q1"),
    ]
    pages = block(rows, "rs1", "recordsets", "view")
    assert pages == {
        "count": 2,
        "total": 2,
        "items": [],
        "queries": [],
        "geocodes": [{"geo": US, "count": 1}, {"geo": {}, "count": 1}],
    }
    assert block(rows, "rs2", "recordsets", "view")["count"] == 1
    assert block(rows, "rs2", "records", "search")["count"] == 0
    assert block(rows, "rs1", "records", "search")["total"] == 4


def test_a_publisher_page_view_makes_a_publisher_document_not_a_recordset_one() -> None:
    rows = [
        row("view", {"p1": None}, record_type="publishers"),
        row("view", {"p1": None, "p2": None}, record_type="publishers", geo=None),
        row("view", {}, record_type="publishers"),  # the page's uuid dropped: a row, no view
    ]
    day = aggregate_day(rows, DAY)
    assert day.documents == [] and day.report.skipped == 0
    assert day.report.kinds == {"publishers": 3}
    assert day.publishers == [
        {
            "publisher_id": "p1",
            "harvest_date": DAY.isoformat(),
            "publishers": {
                "view": {
                    "count": 2,
                    "total": 2,
                    "geocodes": [{"geo": US, "count": 1}, {"geo": {}, "count": 1}],
                }
            },
        },
        {
            "publisher_id": "p2",
            "harvest_date": DAY.isoformat(),
            "publishers": {"view": {"count": 1, "total": 1, "geocodes": [{"geo": {}, "count": 1}]}},
        },
    ]


@pytest.mark.parametrize("record_type", ["recordsets", "publishers"])
def test_page_rows_are_held_to_the_rules_of_ids_and_geocodes(record_type: str) -> None:
    # Recognised, not exempt: a page is only viewed, and its id and geocode obey the same limits.
    page = {"record_type": record_type}
    assert skip_reason(row("search", {"p": 1}, **page)) == "unknown_type"
    assert skip_reason(row("view", {"p" * (MAX_ID_BYTES + 1): None}, **page)) == "oversized_id"
    assert skip_reason(row("view", {"p": "x" * (MAX_ID_BYTES + 1)}, **page)) is None
    assert skip_reason(row("view", {"": None}, **page)) == "empty_key"
    assert skip_reason(row("view", None, **page)) == "payload_not_object"
    assert skip_reason(row("view", {"p": None}, geo={"country": 7}, **page)) == "bad_geocode_value"


# One row breaking each rule, in the order skip_reason checks them.
BROKEN = {
    "unknown_record_type": row("search", {"rs": 1}, record_type="_all"),
    "unknown_type": row("facet", {"rs": 1}),
    "geocode_not_object": row("search", {"rs": 1}, geo="US"),
    "bad_geocode_value": row("search", {"rs": 1}, geo={"country": 7}),
    "oversized_geocode": row(
        "search", {"rs": 1}, geo={"country": "US", "city": "x" * (MAX_GEOCODE_BYTES - 8)}
    ),
    "payload_not_object": row("view", ["r1", "rs"]),
    "empty_key": row("search", {"": 1}),
    "bad_recordset_value": row("seen", {"r1": 5}),
    "bad_hit_count": row("search", {"rs": 1.5}),
    "oversized_id": row("search", {"r" * (MAX_ID_BYTES + 1): 1}),
}


def test_every_skip_reason_has_a_row_that_breaks_it() -> None:
    assert set(BROKEN) == set(SKIP_REASONS)


@pytest.mark.parametrize("reason", sorted(BROKEN))
def test_a_broken_row_is_skipped_whole_with_its_reason(reason: str) -> None:
    assert skip_reason(BROKEN[reason]) == reason
    docs, report = aggregate([BROKEN[reason], row("search", {"rs": 1})], DAY)
    assert report.rows == 2 and report.skipped == 1 and report.as_dict()[reason]["example_ids"] == [1]
    assert [(d["recordset_id"], d["records"]["search"]["total"]) for d in docs] == [("rs", 1)]


@given(st.dictionaries(st.text(max_size=3), st.integers(min_value=0, max_value=10**6)), st.integers(0, 6))
def test_a_breakdown_limit_keeps_the_top_terms_and_the_sum(counts: dict[str, int], limit: int) -> None:
    listed = term_list(counts, limit)
    assert sum(entry["count"] for entry in listed) == sum(counts.values())
    named = [entry for entry in listed if entry["term"] != OTHER_TERM]
    assert len(named) == (min(limit, len(counts)) if limit else len(counts))
    assert [e["count"] for e in named] == sorted((e["count"] for e in named), reverse=True)
