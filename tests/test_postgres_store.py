"""What only the PostgreSQL store has: its schema upgrade."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest
from helpers import HARVEST, MakeConfig, published

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
