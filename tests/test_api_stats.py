"""api-stats: the recordset size snapshot, on every store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg2
from helpers import MakeConfig

from idb_stats import status as store_status
from idb_stats.apistats import api_stats
from idb_stats.stores import open_store


def fill_uuids(dsn: str) -> dict[str, tuple[int, int]]:
    """Recordsets with records, media records, deleted rows, orphans and unknown types."""
    conn = psycopg2.connect(dsn)
    expected: dict[str, tuple[int, int]] = {}
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE uuids (id uuid PRIMARY KEY, type text NOT NULL, parent uuid, "
            "deleted boolean NOT NULL DEFAULT false)"
        )
        for i in range(5):
            rs = str(uuid.UUID(int=1000 + i))
            cur.execute("INSERT INTO uuids VALUES (%s, 'recordset', NULL, false)", (rs,))
            records, media = 3 * i, i % 2
            rows = [("record", False)] * records + [("mediarecord", False)] * media
            rows += [("record", True), ("mediarecord", True), ("publisher", False)]
            for kind, deleted in rows:
                cur.execute(
                    "INSERT INTO uuids VALUES (%s, %s, %s, %s)", (str(uuid.uuid4()), kind, rs, deleted)
                )
            if records or media:
                expected[rs] = (records, media)
        cur.execute("INSERT INTO uuids VALUES (%s, 'record', NULL, false)", (str(uuid.uuid4()),))
    conn.close()
    return expected


def snapshot_docs(config: Any) -> list[dict[str, Any]]:
    store: Any = open_store(config)
    try:
        if config.store == "postgres":
            with store._transaction("test") as cur:
                cur.execute("SELECT doc FROM idb_stats.api_snapshots ORDER BY recordset_id")
                return [doc for (doc,) in cur]
        hits = store._scan(config.api_index, {"match_all": {}}, [{"recordset_id": "asc"}])
        return [{k: v for k, v in h["_source"].items() if k != "snapshot_date"} for h in hits]
    finally:
        store.close()


def test_snapshot_counts_and_replaces_same_day(make_config: MakeConfig, dsn: str) -> None:
    expected = fill_uuids(dsn)
    config = make_config(**{"api.dsn": dsn})
    first = api_stats(config)
    # A recordset loses its records: the same day's second run replaces the snapshot.
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        gone = max(expected)
        cur.execute("UPDATE uuids SET deleted = true WHERE parent = %s", (gone,))
    conn.close()
    del expected[gone]
    second = api_stats(config)
    assert first["snapshot_date"] == second["snapshot_date"] == datetime.now(UTC).date().isoformat()
    docs = snapshot_docs(config)
    assert {d["recordset_id"]: (d["records_count"], d["mediarecords_count"]) for d in docs} == expected
    assert all(d["harvest_date"].startswith(second["snapshot_date"]) for d in docs)
    status = store_status.status(config).as_dict()
    assert status["last_snapshot"] == second["snapshot_date"] and status["snapshot_missing_today"] is False
    assert status["snapshot_recordsets"] == len(expected)
