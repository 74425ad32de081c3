"""What the hostile-row tests share: their day, the skip reason of every row by SQL and by the
rules, and the day collected into a store."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import psycopg2

from idb_stats.collect import Selection, collect
from idb_stats.model import DayStats
from idb_stats.rules import TelemetryRow, load_json, skip_reason
from idb_stats.source import SKIP_REASON_SQL
from idb_stats.stores import open_store

DAY = date(2021, 6, 1)  # calendar day of the events
HARVEST = DAY + timedelta(days=1)


def sql_and_rules_reasons(dsn: str) -> tuple[dict[int, str | None], dict[int, str | None]]:
    """Each row's skip reason as SKIP_REASON_SQL and as rules.skip_reason give it."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT s.id, {SKIP_REASON_SQL}, s.type, s.record_type, s.ip_geocode::text, s.payload::text "
            "FROM stats s ORDER BY s.id"
        )
        rows = cur.fetchall()
    conn.close()
    sql = {row[0]: row[1] for row in rows}
    rules = {
        row[0]: skip_reason(TelemetryRow(row[0], row[2], row[3], None, load_json(row[4]), load_json(row[5])))
        for row in rows
    }
    return sql, rules


def collect_day(config: Any) -> list[DayStats]:
    return collect(config, Selection(day=HARVEST)).days


def store_snapshot(config: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with open_store(config) as store:
        return list(store.export(HARVEST, HARVEST)), list(store.totals())
