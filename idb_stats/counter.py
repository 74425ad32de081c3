"""COUNTER-style figures of a day, computed inside PostgreSQL so no client address leaves it.

One query, run by both engines in the day's snapshot, states rules.counter_figures in SQL: a
session is a keyed hash of the row's `ip` and the hour of its `date` (in the session's time zone,
source.timezone); repeats of one item by one session at most 30 s apart count once; uniques are
distinct sessions. The key is random for each query, never stored or logged, so the hashes name
no client beyond the query and only counts per recordset come back. docs/counting.md, section
"COUNTER-style figures", states the definitions.
"""

from __future__ import annotations

import logging
import multiprocessing
import secrets
from typing import Any

import psycopg2
from psycopg2 import sql

from .model import (
    DOUBLE_CLICK_SECONDS,
    INVESTIGATION_EVENT,
    RECORD_TYPES,
    REQUEST_EVENT,
    CounterFigures,
)

log = logging.getLogger("idb_stats")

# The column the sessions are made of (s.ip below); a telemetry table without it gives no figures.
IP_COLUMN = "ip"
KEY_BYTES = 32

# Each event is one payload entry of an accepted view (item: the record, for the recordset its
# value names) or download (item: the recordset, its key) of records or media records.
# client: the keyed hash of the ip's text; a row without an ip is a client of its own (its id),
# as rules.counter_events says. An event ends its chain when the same session's next event on
# the same item is more than 30 s later, or there is none: each chain counts once.
COUNTER_SQL = sql.SQL(
    """
SELECT rs,
       count(*) FILTER (WHERE chain_end),
       count(DISTINCT (client, lone_row, hour)),
       count(*) FILTER (WHERE chain_end AND request),
       count(DISTINCT (client, lone_row, hour)) FILTER (WHERE request)
FROM (
  SELECT rs, request, client, lone_row, hour,
         coalesce(lead(at) OVER (PARTITION BY client, lone_row, hour, request, record_type, rs, item
                                 ORDER BY at) - at > {double_click}, true) AS chain_end
  FROM (
    SELECT s.date AS at, s.type = {request_event} AS request, s.record_type,
           sha256({key} || convert_to(s.ip::text, 'UTF8')) AS client,
           CASE WHEN s.ip IS NULL THEN s.id END AS lone_row,
           date_trunc('hour', s.date) AS hour,
           CASE WHEN s.type = {request_event} THEN e.key ELSE e.value END COLLATE "C" AS rs,
           e.key AS item
    FROM {stats} s CROSS JOIN LATERAL jsonb_each_text(s.payload) e
    WHERE s.date >= %(start)s AND s.date < %(end)s
      AND s.record_type IN ({record_types}) AND s.type IN ({event_types}) AND {accepted}
  ) events
) chains
GROUP BY rs"""
)

# A column idb-stats' role may not read (column privileges) is as good as absent: reading it would
# fail the whole day.
HAS_IP_SQL = sql.SQL(
    "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%(stats)s) AND attname = %(ip)s "
    "AND attnum > 0 AND NOT attisdropped AND has_column_privilege(attrelid, attnum, 'SELECT'))"
)


def has_ip(cur: Any, stats: str) -> bool:
    """Whether the telemetry table (its quoted name) has the `ip` column the sessions are made of,
    readable by this role."""
    cur.execute(HAS_IP_SQL, {"stats": stats, "ip": IP_COLUMN})
    (found,) = cur.fetchone() or (False,)
    return bool(found)


def warn_without_ip(stats: str) -> None:
    """Once per run: a worker process (collect.jobs > 1) opens its own source, and leaves the
    warning to the run's main process."""
    if multiprocessing.parent_process() is not None:
        return
    log.warning(
        "source: %s has no %s column that idb-stats may read: the daily documents get no "
        "COUNTER-style figures (readers show them as unknown); add the column to the telemetry "
        "(or GRANT SELECT on it) to have them",
        stats,
        IP_COLUMN,
    )


def counter_sql(stats: str | sql.Composable, accepted: str | sql.Composable) -> sql.Composed:
    """The query for a telemetry table (its quoted name) and the SQL condition keeping the rows
    the rules accept (both made by source.py, never from input; as text or composed)."""
    return COUNTER_SQL.format(
        stats=stats if isinstance(stats, sql.Composable) else sql.SQL(stats),
        accepted=accepted if isinstance(accepted, sql.Composable) else sql.SQL(accepted),
        key=sql.Placeholder("key"),
        double_click=sql.Literal(f"{DOUBLE_CLICK_SECONDS} seconds") + sql.SQL("::interval"),
        request_event=sql.Literal(REQUEST_EVENT),
        record_types=sql.SQL(", ").join(map(sql.Literal, RECORD_TYPES)),
        event_types=sql.SQL(", ").join(map(sql.Literal, (INVESTIGATION_EVENT, REQUEST_EVENT))),
    )


def read_figures(cur: Any, query: sql.Composed, window: dict[str, Any]) -> dict[str, CounterFigures]:
    """The day's figures by recordset, read in the cursor's transaction (the day's snapshot).
    The key is made here, for this query alone."""
    cur.execute(query, {**window, "key": psycopg2.Binary(secrets.token_bytes(KEY_BYTES))})
    return {rs: CounterFigures(*(int(n) for n in figures)) for rs, *figures in cur}
