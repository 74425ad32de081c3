"""The portal's existing query still works on our documents and agrees with the export."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import HARVEST, MakeConfig, load_week, snapshot

from idb_stats.collect import Selection, collect
from idb_stats.stores import open_store

FIELDS = [
    "records.seen.total",
    "records.search.total",
    "records.download.total",
    "records.view.total",
    "mediarecords.view.total",
    "records.search.count",
    "records.download.count",
]


@pytest.mark.parametrize("store_kind", ["opensearch", "elasticsearch"], indirect=True)
def test_portal_date_histogram_matches_export(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, Selection(first=HARVEST[0], last=HARVEST[-1]))
    daily, _ = snapshot(config)
    query = {
        "size": 0,
        "aggs": {
            "over_time": {
                "date_histogram": {
                    "field": "harvest_date",
                    "calendar_interval": "day",
                    "format": "yyyy-MM-dd",
                },
                "aggs": {
                    "by_recordset": {
                        "terms": {"field": "recordset_id", "size": 10000},
                        "aggs": {f: {"sum": {"field": f}} for f in FIELDS},
                    }
                },
            }
        },
    }
    store: Any = open_store(config)
    response = store.http.request("POST", f"/{config.daily_index}/_search", query)
    store.close()
    got = {
        (day["key_as_string"], rs["key"], f): int(rs[f]["value"])
        for day in response["aggregations"]["over_time"]["buckets"]
        for rs in day["by_recordset"]["buckets"]
        for f in FIELDS
    }

    def value(doc: dict[str, Any], path: str) -> int:
        rt, ty, name = path.split(".")
        return int(doc[rt][ty][name])

    expected = {(d["harvest_date"], d["recordset_id"], f): value(d, f) for d in daily for f in FIELDS}
    assert got == expected
    assert len(got) > 50


# The portal's stats page (t=fields): its aggregation names and the fields they sum.
PORTAL_SUMS = {
    "seen": "records.seen.total",
    "search": "records.search.total",
    "download": "records.download.total",
    "viewed_records": "records.view.total",
    "viewed_media": "mediarecords.view.total",
    "search_count": "records.search.count",
    "download_count": "records.download.count",
}


def portal_stats_query(
    min_date: str, max_date: str, interval: str, recordset: str | None, inverted: bool
) -> dict[str, Any]:
    """The body the portal's search API (summary stats, t=fields) builds, as a current cluster
    needs it: bool.filter for its `and`, calendar_interval for its `interval`."""
    internal = {name: {"sum": {"field": field}} for name, field in PORTAL_SUMS.items()}
    clauses: list[dict[str, Any]] = [{"range": {"harvest_date": {"gte": min_date, "lte": max_date}}}]
    if recordset:
        clauses.append({"term": {"recordset_id": recordset}})
    histogram = {"field": "harvest_date", "calendar_interval": interval, "format": "yyyy-MM-dd"}
    terms = {"field": "recordset_id", "size": 10000}
    inner: dict[str, Any]
    if inverted:
        inner = {"rs": {"terms": terms, "aggs": {"dh": {"date_histogram": histogram, "aggs": internal}}}}
    else:
        inner = {"dh": {"date_histogram": histogram, "aggs": {"rs": {"terms": terms, "aggs": internal}}}}
    return {"size": 0, "aggs": {"fdh": {"filter": {"bool": {"filter": clauses}}, "aggs": inner}}}


@pytest.mark.parametrize("store_kind", ["opensearch", "elasticsearch"], indirect=True)
@pytest.mark.parametrize("inverted", [False, True])
@pytest.mark.parametrize("one_recordset", [False, True])
def test_portal_stats_page_query_with_iso_bounds(
    make_config: MakeConfig, dsn: str, inverted: bool, one_recordset: bool
) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, Selection(first=HARVEST[0], last=HARVEST[-1]))
    daily, _ = snapshot(config)
    recordset = daily[0]["recordset_id"] if one_recordset else None
    # As the stats page sends it: a local midnight in UTC. 2020-02-18 (stored as that day's
    # midnight UTC) falls before 04:00 and is left out.
    query = portal_stats_query("2020-02-18T04:00:00.000Z", "now", "month", recordset, inverted)
    store: Any = open_store(config)
    response = store.http.request("POST", f"/{config.daily_index}/_search", query)
    store.close()
    fdh = response["aggregations"]["fdh"]
    # (period, recordset, the bucket holding the sums)
    cells = (
        [(dh["key_as_string"], rs["key"], dh) for rs in fdh["rs"]["buckets"] for dh in rs["dh"]["buckets"]]
        if inverted
        else [
            (dh["key_as_string"], rs["key"], rs) for dh in fdh["dh"]["buckets"] for rs in dh["rs"]["buckets"]
        ]
    )
    got = {
        (period, rs, name): int(bucket[name]["value"]) for period, rs, bucket in cells for name in PORTAL_SUMS
    }
    expected: dict[tuple[str, str, str], int] = {}
    for doc in daily:
        if doc["harvest_date"] < "2020-02-19" or (recordset and doc["recordset_id"] != recordset):
            continue
        for name, path in PORTAL_SUMS.items():
            rt, ty, field = path.split(".")
            key = (doc["harvest_date"][:7] + "-01", doc["recordset_id"], name)
            expected[key] = expected.get(key, 0) + int(doc[rt][ty][field])
    assert got == expected
    assert expected and all(k[0] == "2020-02-01" for k in expected)
