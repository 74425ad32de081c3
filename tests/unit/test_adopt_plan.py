"""adopt's plan of one legacy day (pure), and verify's list comparison and midnight subtraction,
on generated days: whatever the mix of types, duplicates, orders and ids, the plan accounts for
every hit, keeps the last written, and a dry run's counts are the run's."""

from __future__ import annotations

import base64
import copy
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idb_stats.adopt import plan_day
from idb_stats.legacy import DuplicatesRefused
from idb_stats.model import BLOCKS
from idb_stats.stores.legacy_reader import LegacyHit, _generated_id_order
from idb_stats.verify import diff, without_events

DAY = date(2020, 2, 18)
RECORDSETS = [f"rs-{i}" for i in range(4)]


def daily(recordset: str, seen: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"recordset_id": recordset, "harvest_date": f"{DAY}T00:00:00"}
    for rt, ty in BLOCKS:
        doc.setdefault(rt, {})[ty] = {"count": 0.0, "total": 0.0, "items": [], "queries": [], "geocodes": []}
    doc["records"]["seen"] = {
        "count": float(seen),
        "total": float(seen),
        "items": [],
        "queries": [],
        "geocodes": [{"geo": None, "count": float(seen)}],
    }
    return doc


hit_specs = st.lists(
    st.tuples(
        st.sampled_from(["search", "api", "digest", "_doc", None]),
        st.sampled_from(RECORDSETS),
        st.integers(0, 50),
    ),
    max_size=30,
)


def as_hits(specs: list[tuple[str | None, str, int]], order: list[int]) -> list[LegacyHit]:
    hits = []
    for position, (kind, recordset, n) in zip(order, specs, strict=True):
        if kind in ("api", "digest") or (kind is None and n % 2):
            source = {
                "recordset_id": recordset,
                "records_count": n,
                "mediarecords_count": 1,
                "harvest_date": f"{DAY}T01:00:00.1",
            }
        else:
            source = daily(recordset, n)
        hits.append(LegacyHit((position, 0, str(position)), kind, source))
    return hits


@given(hit_specs, st.randoms())
def test_a_planned_day_accounts_for_every_hit_and_keeps_the_last_written(specs: Any, rnd: Any) -> None:
    order = list(range(len(specs)))
    hits = as_hits(specs, order)
    shuffled = hits[:]
    rnd.shuffle(shuffled)  # the scroll's order is not the writing order
    plan = plan_day(DAY, shuffled, "keep-last")
    outcome = plan.outcome
    kinds = {"search": "daily", "_doc": None, None: None, "api": "snapshot", "digest": "type_digest"}
    is_snapshot = [
        (k == "api") or (k in ("_doc", None) and "records_count" in h.source)
        for (k, _, _), h in zip(specs, hits, strict=True)
    ]
    snapshots = [h for h, s in zip(hits, is_snapshot, strict=True) if s]
    dailies = [
        h
        for (k, _, _), h, s in zip(specs, hits, is_snapshot, strict=True)
        if not s and kinds[k] != "type_digest"
    ]
    assert outcome.read == len(hits)
    assert outcome.rejected == (
        {"type_digest": sum(k == "digest" for k, _, _ in specs)}
        if any(k == "digest" for k, _, _ in specs)
        else {}
    )
    assert outcome.snapshots == len({h.source["recordset_id"] for h in snapshots})
    assert outcome.superseded_snapshots == len(snapshots) - outcome.snapshots
    assert outcome.written == len({h.source["recordset_id"] for h in dailies})
    # keep-last: each recordset's document is its last written one.
    for doc in plan.documents:
        last = max(
            (h for h in dailies if h.source["recordset_id"] == doc["recordset_id"]), key=lambda h: h.order
        )
        assert doc["records"]["seen"]["total"] == int(last.source["records"]["seen"]["total"])
    for snap in plan.snapshots:
        last = max(
            (h for h in snapshots if h.source["recordset_id"] == snap["recordset_id"]), key=lambda h: h.order
        )
        assert snap["records_count"] == last.source["records_count"]
    # refuse raises exactly when a recordset has two daily documents.
    duplicated = len(dailies) != outcome.written
    if duplicated:
        with pytest.raises(DuplicatesRefused):
            plan_day(DAY, shuffled, "refuse")
    else:
        assert plan_day(DAY, shuffled, "refuse").documents == plan.documents


@given(st.integers(0, 2**48 - 1), st.integers(0, 2**24 - 1))
def test_ids_elasticsearch_2_generated_order_by_time_then_sequence(millis: int, sequence: int) -> None:
    raw = millis.to_bytes(6, "big") + bytes(6) + sequence.to_bytes(3, "big")
    doc_id = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert _generated_id_order(doc_id) == (millis, sequence)
    assert _generated_id_order("a-made-up-id") == (0, 0)


entries = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 9)), max_size=6, unique_by=lambda e: e[0]
)


@given(entries, st.randoms())
def test_lists_compare_as_multisets_and_a_null_geo_is_the_empty_one(pairs: Any, rnd: Any) -> None:
    terms = [{"term": t, "count": n} for t, n in pairs]
    geos = [{"geo": {"country": t} if t else {}, "count": n} for t, n in pairs]
    shuffled_terms, shuffled_geos = terms[:], [dict(g, geo=g["geo"] or None) for g in geos]
    rnd.shuffle(shuffled_terms)
    rnd.shuffle(shuffled_geos)
    assert (
        list(
            diff({"queries": terms, "geocodes": geos}, {"queries": shuffled_terms, "geocodes": shuffled_geos})
        )
        == []
    )
    if terms:
        changed = copy.deepcopy(shuffled_terms)
        changed[0]["count"] += 1
        assert len(list(diff({"queries": terms}, {"queries": changed}))) == 1
        as_float = copy.deepcopy(shuffled_terms)
        as_float[0]["count"] = float(as_float[0]["count"])
        assert len(list(diff({"queries": terms}, {"queries": as_float}))) == 1  # exact: 1 != 1.0


def test_without_events_subtracts_and_drops_what_only_they_made() -> None:
    doc = daily("rs-0", 5)
    for rt, ty in BLOCKS:
        block = doc[rt][ty]
        block["count"], block["total"] = int(block["count"]), int(block["total"])
        block["geocodes"] = [{"geo": {}, "count": int(e["count"])} for e in block["geocodes"]]
    events = copy.deepcopy(doc)
    events["records"]["seen"].update(count=2, total=2, geocodes=[{"geo": {}, "count": 2}])
    left = without_events(doc, events)
    assert left is not None and left["records"]["seen"]["total"] == 3
    assert left["records"]["seen"]["geocodes"] == [{"geo": {}, "count": 3}]
    assert without_events(doc, doc) is None
    assert without_events(doc, None) is doc
