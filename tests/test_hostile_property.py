"""Property: hostile rows mixed into a valid day never inject, never block, and are each counted
under the reason rules.py gives them, on a real PostgreSQL.

Each example is a whole run (twice) into a store, so the suite runs a few dozen
(IDB_STATS_HOSTILE_RUN_EXAMPLES); the long search of each engine against rules.py, 10,000 examples,
is test_engine_property's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import assert_consistent, reference_day
from hostile import (
    HARVEST,
    collect_day,
    hostile_day_database,
    hostile_rows,
    sql_and_rules_reasons,
    store_snapshot,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idb_stats import embedded
from idb_stats.config import ENGINES, Config, load_config
from idb_stats.documents import day_documents, publisher_documents
from idb_stats.engines import open_source
from idb_stats.errors import DataQualityError
from idb_stats.model import PER_RECORD_TYPES, RECORDSET_PAGE_BLOCK, DayStats
from idb_stats.rules import load_json
from idb_stats.stores import open_store

EXAMPLES = int(os.environ.get("IDB_STATS_HOSTILE_RUN_EXAMPLES", "20"))
STORE_SCHEMA = "hostile"

# A generated search over hostile days on a real server: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow


class HostileDay:
    """One database for every example: the valid day stays, each example's rows are replaced."""

    def __init__(self, server: embedded.EmbeddedPostgres) -> None:
        self.dsn, self.conn = hostile_day_database(server, 7, "h")
        with self.conn.cursor() as cur:
            cur.execute("SELECT max(id) FROM stats")
            row: tuple[int] = cur.fetchone() or (0,)
            self.last_valid_id = row[0]
        self.config = self.config_with(share=1.0)
        collect_day(self.config)
        self.valid_documents = {doc["recordset_id"]: doc for doc in store_snapshot(self.config)[0]}

    def config_with(self, share: float, engine: str = "sql") -> Config:
        overrides = {
            "source.dsn": self.dsn,
            "store.schema": STORE_SCHEMA,
            "collect.max_skipped_share": share,
            "collect.engine": engine,
        }
        return load_config(overrides=overrides, environ={})

    def replace_hostile(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """Insert this example's rows instead of the last one's (and empty the store); their ids."""
        ids = []
        with self.conn.cursor() as cur:
            cur.execute("DELETE FROM stats WHERE id > %s", (self.last_valid_id,))
            cur.execute(f"DROP SCHEMA IF EXISTS {STORE_SCHEMA} CASCADE")
            for at, event_type, record_type, query_hash, geo, payload in rows:
                cur.execute(
                    "INSERT INTO stats (date, type, record_type, query_id, ip_geocode, payload) VALUES "
                    "(%s, %s, %s, (SELECT id FROM queries WHERE query_hash = %s), %s::jsonb, %s::jsonb)",
                    (at, event_type, record_type, query_hash, geo, payload),
                )
                cur.execute("SELECT lastval()")
                ids.append((cur.fetchone() or (0,))[0])
        return ids


@pytest.fixture(scope="module")
def hostile_day(pg_server: embedded.EmbeddedPostgres) -> Iterator[HostileDay]:
    day = HostileDay(pg_server)
    yield day
    day.conn.close()


@pytest.mark.parametrize("engine", ENGINES)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(rows=st.lists(hostile_rows, min_size=1, max_size=6), share=st.sampled_from([0.0, 0.1, 1.0]))
def test_hostile_rows_are_counted_or_skipped_never_injected(
    hostile_day: HostileDay, engine: str, rows: list[tuple[Any, ...]], share: float
) -> None:
    ids = hostile_day.replace_hostile(rows)
    dsn = hostile_day.dsn

    # The SQL path and rules.py agree on every row, and each engine with rules.py on the whole day.
    sql, rules = sql_and_rules_reasons(dsn)
    assert sql == rules
    expected = reference_day(dsn, HARVEST)
    expected_docs, expected_report = expected.documents, expected.report
    source = open_source(hostile_day.config_with(1.0, engine))
    try:
        with source.read_day(HARVEST) as telemetry:
            report = telemetry.report
            docs = list(day_documents(telemetry, HARVEST, DayStats(HARVEST)))
            publishers = publisher_documents(telemetry.publisher_views, HARVEST)
    finally:
        source.close()
    assert docs == expected_docs
    assert report.as_dict() == expected_report.as_dict() and report.rows == expected_report.rows
    assert report.kinds == expected_report.kinds and publishers == expected.publishers

    # A run exits ok, or refuses the day (exit 6) and writes nothing; twice gives the same store.
    config = hostile_day.config_with(share, engine)
    if report.skipped_share > share:
        with pytest.raises(DataQualityError):
            collect_day(config)
        assert store_snapshot(config)[0] == []
        return
    for _ in range(2):
        (stats,) = collect_day(config)
        assert stats.rows == report.rows and stats.skipped == report.skipped
        daily, totals = store_snapshot(config)
        assert daily == expected_docs
        assert_consistent(daily, totals)
        assert stats.kinds == report.kinds and stats.publishers == len(expected.publishers)
        with open_store(config) as store:
            assert list(store.publishers(HARVEST, HARVEST)) == expected.publishers
    # The valid rows' documents are unchanged, but for recordsets an accepted hostile row names.
    named: set[str] = set()
    for row_id, (_, event_type, record_type, _, _, payload) in zip(ids, rows, strict=True):
        if sql[row_id] is None:
            entries = load_json(payload)
            if record_type == RECORDSET_PAGE_BLOCK[0]:
                named |= set(entries)
            elif record_type in ("records", "mediarecords"):
                named |= set(entries.values()) if event_type in PER_RECORD_TYPES else set(entries)
    stored = {doc["recordset_id"]: doc for doc in daily}
    assert set(stored) == set(hostile_day.valid_documents) | named
    for recordset, doc in hostile_day.valid_documents.items():
        if recordset not in named:
            assert stored[recordset] == doc
