"""The portal's existing query still works on our documents and agrees with the export."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import HARVEST, MakeConfig, load_week, snapshot

from idb_stats import runner
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
    runner.collect(config, runner.Selection(first=HARVEST[0], last=HARVEST[-1]))
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
    response = store._request("POST", f"/{config.daily_index}/_search", query)
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
