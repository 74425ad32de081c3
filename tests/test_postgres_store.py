"""What only the PostgreSQL store has: its schema upgrade, its compression."""

from __future__ import annotations

import json
from typing import Any

import psycopg2
import pytest
from helpers import HARVEST, MakeConfig, published, query, reference
from hostile import HARVEST as HOSTILE_HARVEST
from hostile import collect_day, create_telemetry, insert_raw, store_snapshot

from idb_stats.errors import StoreError
from idb_stats.stores import open_store


def read_side(config: Any, recordsets: list[str]) -> list[Any]:
    store = open_store(config)
    try:
        return [
            store.series(recordsets, None, None, "week"),
            store.series([], HARVEST[1], None, "day", by_recordset=False),
            store.top_countries(recordsets, None, None, 10, by_recordset=True),
            [store.top_terms(rs, None, None, 1000) for rs in recordsets],
        ]
    finally:
        store.close()


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_init_upgrades_a_store_made_before_the_read_columns(make_config: MakeConfig, dsn: str) -> None:
    config, daily = published(make_config, dsn)
    recordsets = sorted({d["recordset_id"] for d in daily})
    expected = read_side(config, recordsets)
    assert expected[0] and expected[2] and any(terms["items"] for terms in expected[3])

    conn = psycopg2.connect(config.store_dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            f"ALTER TABLE {config.store_schema}.daily "
            "DROP COLUMN counts, DROP COLUMN countries, DROP COLUMN terms"
        )
    conn.close()
    with pytest.raises(StoreError, match="older idb-stats: run `idb-stats init`"):
        read_side(config, recordsets)

    store = open_store(config)
    store.init()
    store.init()  # a second init finds the schema current and changes nothing
    store.close()
    assert read_side(config, recordsets) == expected


@pytest.mark.parametrize("store_kind", ["postgres"])
@pytest.mark.parametrize("lz4_offered", [True, False], ids=["lz4", "no-lz4"])
def test_documents_are_compressed_with_lz4_only_where_the_server_offers_it(
    make_config: MakeConfig, dsn: str, lz4_offered: bool
) -> None:
    # A server without lz4 (built without it, or before PostgreSQL 14) does not list it among
    # default_toast_compression's values: shown here by a pg_settings ahead of pg_catalog on the
    # store's search_path. The setting is then left alone and the day is written as before.
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        if cur.fetchone() != (True,):
            pytest.skip("this server has no lz4")
        cur.execute("CREATE SCHEMA older_server")
        cur.execute(
            "CREATE VIEW older_server.pg_settings AS SELECT name, "
            "array_remove(enumvals, 'lz4') AS enumvals FROM pg_catalog.pg_settings"
        )
    conn.close()
    search_path = "" if lz4_offered else " options='-csearch_path=older_server,pg_catalog,public'"
    # A recordset seen with 400 records: a document well beyond the 2 kB that TOAST compresses.
    record_ids = [f"00000002-0000-4000-8000-{i:012d}" for i in range(400)]
    insert_raw(
        create_telemetry(dsn), [("view", "records", None, json.dumps(dict.fromkeys(record_ids, "rs")))]
    )
    config = make_config(**{"store.url": dsn + search_path})
    collect_day(config)
    [(methods,)] = query(
        dsn, f"SELECT array_agg(DISTINCT pg_column_compression(doc)) FROM {config.store_schema}.daily"
    )
    assert methods == (["lz4"] if lz4_offered else ["pglz"])
    assert store_snapshot(config)[0] == reference(dsn, HOSTILE_HARVEST)[0]
