"""The store contract, written once and run against every store (PostgreSQL, OpenSearch on osmem,
Elasticsearch through the proxy, the in-memory store of the unit tests, and real clusters when
configured)."""

from __future__ import annotations

import json
import random
from datetime import datetime
from typing import Any

import pytest
from helpers import (
    HARVEST,
    MakeConfig,
    assert_consistent,
    collect,
    insert_rows,
    load_week,
    other_store,
    published,
    reference,
    snapshot,
    store_params,
)

from idb_stats.importing import import_documents
from idb_stats.model import BLOCKS
from idb_stats.stores import open_store

pytestmark = pytest.mark.parametrize("store_kind", store_params(memory=True), indirect=True)


def test_published_days_equal_the_rules(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    result = collect(config, first=HARVEST[0], last=HARVEST[-1])
    assert [s.harvest_date for s in result.days] == HARVEST
    daily, totals = snapshot(config)
    expected = [doc for h in HARVEST for doc in reference(dsn, h)[0]]
    assert daily == expected
    assert_consistent(daily, totals)
    store = open_store(config)
    assert set(store.completed_days()) == set(HARVEST)
    assert store.runs(1)[0]["outcome"] == "ok"
    store.close()


def test_reruns_in_any_order_equal_one_clean_run(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    clean = snapshot(config)
    for _ in range(2):
        collect(config, day=HARVEST[1])
    order = HARVEST[:]
    random.Random(3).shuffle(order)
    for day in order:
        collect(config, day=day)
    assert snapshot(config) == clean


def test_rerun_after_late_rows_adjusts_totals_exactly(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    late_rs = "late-recordset"
    insert_rows(
        dsn, [(datetime(2020, 2, 18, 12), "download", "records", "q-late", {"country": "NZ"}, {late_rs: 5})]
    )
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    daily, totals = snapshot(config)
    assert daily == [doc for h in HARVEST for doc in reference(dsn, h)[0]]
    assert_consistent(daily, totals)
    late = next(t for t in totals if t["recordset_id"] == late_rs)
    assert late["records"]["download"] == {
        "count": 1,
        "total": 5,
        "countries": [{"country": "NZ", "count": 5}],
    }


def test_recordset_gone_from_a_day_disappears(make_config: MakeConfig, dsn: str) -> None:
    insert_rows(
        dsn,
        [
            (datetime(2020, 2, 17, 9), "search", "records", "q1", None, {"rs-a": 3, "rs-b": 4}),
            (datetime(2020, 2, 18, 9), "search", "records", "q1", None, {"rs-a": 1}),
        ],
    )
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[1])
    # A rule change or a correction makes rs-b vanish from the first day.
    conn = __import__("psycopg2").connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("""UPDATE stats SET payload = '{"rs-a": 3}' WHERE date < '2020-02-18'""")
    conn.close()
    collect(config, day=HARVEST[0])
    daily, totals = snapshot(config)
    assert [(d["recordset_id"], d["harvest_date"]) for d in daily] == [
        ("rs-a", "2020-02-18"),
        ("rs-a", "2020-02-19"),
    ]
    assert [t["recordset_id"] for t in totals] == ["rs-a"]
    assert_consistent(daily, totals)


def test_export_import_round_trip(make_config: MakeConfig, dsn: str, tmp_path: Any) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    daily, totals = snapshot(config)
    target = other_store(make_config, "restored")
    published = import_documents(target, iter(json.loads(json.dumps(d)) for d in daily))
    assert [p.harvest_date for p in published] == HARVEST
    assert snapshot(target) == (daily, totals)


def test_breakdown_limit_keeps_sums_exact(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config(**{"collect.breakdown_limit": 1})
    collect(config, day=HARVEST[0])
    daily, totals = snapshot(config)
    assert daily == reference(dsn, HARVEST[0], limit=1)[0]
    for doc in daily:
        for rt, ty in BLOCKS:
            block = doc[rt][ty]
            assert len(block["geocodes"]) <= 2
            assert sum(g["count"] for g in block["geocodes"]) == block["total"]
    assert_consistent(daily, totals)


def test_series_and_countries_are_grouped_in_the_store(make_config: MakeConfig, dsn: str) -> None:
    config, daily = published(make_config, dsn)
    recordsets = sorted({d["recordset_id"] for d in daily})[:3]
    store = open_store(config)
    rows = store.series(recordsets, HARVEST[0], HARVEST[-1], "week")
    countries = store.top_countries(recordsets, None, None, 10)
    store.close()
    wanted = [d for d in daily if d["recordset_id"] in recordsets]
    assert sum(r["records.seen.total"] for r in rows) == sum(d["records"]["seen"]["total"] for d in wanted)
    assert sum(r["mediarecords.search.count"] for r in rows) == sum(
        d["mediarecords"]["search"]["count"] for d in wanted
    )
    assert {r["recordset_id"] for r in rows} == set(recordsets)
    all_hits = sum(d[rt][ty]["total"] for d in wanted for rt, ty in BLOCKS)
    assert sum(c["hits"] for c in countries) == all_hits
    assert countries == sorted(countries, key=lambda c: (-c["hits"], c["country"]))


def test_series_summed_over_all_recordsets(make_config: MakeConfig, dsn: str) -> None:
    config, daily = published(make_config, dsn)
    store = open_store(config)
    summed = store.series([], HARVEST[1], HARVEST[-1], "day", by_recordset=False)
    per_recordset = store.series([], None, None, "month")
    countries = store.top_countries([], None, None, 1000)
    store.close()
    in_range = [d for d in daily if d["harvest_date"] >= HARVEST[1].isoformat()]
    assert [r["period"] for r in summed] == HARVEST[1:]
    assert {r["recordset_id"] for r in summed} == {None}
    for rt, ty in BLOCKS:
        for field in ("count", "total"):
            name = f"{rt}.{ty}.{field}"
            assert sum(r[name] for r in summed) == sum(d[rt][ty][field] for d in in_range)
            assert sum(r[name] for r in per_recordset) == sum(d[rt][ty][field] for d in daily)
    assert {r["recordset_id"] for r in per_recordset} == {d["recordset_id"] for d in daily}
    assert sum(c["hits"] for c in countries) == sum(d[rt][ty]["total"] for d in daily for rt, ty in BLOCKS)


def test_top_terms_sum_items_and_queries_over_the_range(make_config: MakeConfig, dsn: str) -> None:
    config, daily = published(make_config, dsn)
    recordset = max(daily, key=lambda d: d["records"]["seen"]["count"])["recordset_id"]
    expected: dict[str, dict[str, int]] = {"items": {}, "queries": {}}
    for doc in daily:
        if doc["recordset_id"] == recordset and doc["harvest_date"] <= HARVEST[2].isoformat():
            for rt, ty in BLOCKS:
                for kind, sums in expected.items():
                    for entry in doc[rt][ty][kind]:
                        sums[entry["term"]] = sums.get(entry["term"], 0) + entry["count"]
    store = open_store(config)
    top = store.top_terms(recordset, None, HARVEST[2], 5)
    everything = store.top_terms(recordset, None, HARVEST[2], 100_000)
    store.close()
    for kind, sums in expected.items():
        assert {e["term"]: e["count"] for e in everything[kind]} == sums
        assert len(top[kind]) == min(5, len(sums))
        counts = [e["count"] for e in top[kind]]
        assert counts == sorted(sums.values(), reverse=True)[: len(counts)]
    assert top["items"] and top["queries"]


def test_top_countries_of_each_recordset_in_one_query(make_config: MakeConfig, dsn: str) -> None:
    config, daily = published(make_config, dsn)
    recordsets = sorted({d["recordset_id"] for d in daily})[:5]
    store = open_store(config)
    try:
        grouped = store.top_countries(recordsets, HARVEST[1], None, 2, by_recordset=True)
        one_by_one = {rs: store.top_countries([rs], HARVEST[1], None, 2) for rs in recordsets}
    finally:
        store.close()
    assert [r["recordset_id"] for r in grouped] == sorted(r["recordset_id"] for r in grouped)
    for rs in recordsets:
        mine = [{"country": r["country"], "hits": r["hits"]} for r in grouped if r["recordset_id"] == rs]
        assert mine == one_by_one[rs] and 0 < len(mine) <= 2
