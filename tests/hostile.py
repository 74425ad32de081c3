"""What the hostile-row tests share: their day, the skip reason of every row by SQL and by the
rules, and the day collected into a store."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import psycopg2
from helpers import QUERIES, insert_rows, random_rows
from hypothesis import strategies as st
from psycopg2 import sql

from idb_stats import embedded, synthetic
from idb_stats.collect import Selection, collect
from idb_stats.model import MAX_HITS, DayStats
from idb_stats.rules import TelemetryRow, load_json, skip_reason
from idb_stats.source import SKIP_REASON_SQL
from idb_stats.stores import open_store

DAY = date(2021, 6, 1)  # calendar day of the events
HARVEST = DAY + timedelta(days=1)
AT = datetime(2021, 6, 1, 12, 0)  # an instant of DAY

# A telemetry row as (type, record_type, ip_geocode JSON, payload JSON). JSON is given as text, so
# values Python's json cannot write (1e5000) and SQL NULLs (None) can be stored too.
Raw = tuple[str | None, str | None, str | None, str | None]


def create_telemetry(dsn: str, nullable: bool = True) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn)
    synthetic.create_schema(conn)
    if nullable:  # a table as loose as the source contract allows
        with conn, conn.cursor() as cur:
            cur.execute(
                "ALTER TABLE stats ALTER COLUMN type DROP NOT NULL, ALTER COLUMN payload DROP NOT NULL"
            )
    return conn


def insert_raw(conn: psycopg2.extensions.connection, rows: list[Raw], at: datetime = AT) -> list[int]:
    with conn, conn.cursor() as cur:
        ids = []
        for event_type, record_type, geo, payload in rows:
            cur.execute(
                "INSERT INTO stats (date, type, record_type, ip_geocode, payload) "
                "VALUES (%s, %s, %s, %s::jsonb, %s::jsonb) RETURNING id",
                (at, event_type, record_type, geo, payload),
            )
            (row_id,) = cur.fetchone() or (0,)
            ids.append(row_id)
    return ids


BEYOND_BIGINT_RECORDSET = "00000001-0000-4000-8000-000000000001"
BEYOND_BIGINT = 1100 * MAX_HITS  # > 2**63 - 1
BEYOND_BIGINT_QUERY = "q-beyond-bigint"


def insert_beyond_bigint(dsn: str) -> None:
    """A day of 1,100 searches of 2**53 - 1 hits (each the most a row may carry) for one
    recordset in the US, all of one query: its records.search total, its US hits and its query's
    hits are BEYOND_BIGINT."""
    conn = create_telemetry(dsn)
    payload = '{"' + BEYOND_BIGINT_RECORDSET + '": ' + str(MAX_HITS) + "}"
    insert_raw(conn, [("search", "records", '{"country": "US"}', payload)] * 1100)
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO queries (query_hash, query) VALUES (%s, '{}') RETURNING id", (BEYOND_BIGINT_QUERY,)
        )
        cur.execute("UPDATE stats SET query_id = %s", cur.fetchone())
    conn.close()


def sql_and_rules_reasons(dsn: str) -> tuple[dict[int, str | None], dict[int, str | None]]:
    """Each row's skip reason as SKIP_REASON_SQL and as rules.skip_reason give it."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT s.id, {}, s.type, s.record_type, s.ip_geocode::text, s.payload::text "
                "FROM stats s ORDER BY s.id"
            ).format(SKIP_REASON_SQL)
        )
        rows = cur.fetchall()
    conn.close()
    by_sql = {row[0]: row[1] for row in rows}
    rules = {
        row[0]: skip_reason(TelemetryRow(row[0], row[2], row[3], None, load_json(row[4]), load_json(row[5])))
        for row in rows
    }
    return by_sql, rules


def collect_day(config: Any) -> list[DayStats]:
    return collect(config, Selection(day=HARVEST)).days


def store_snapshot(config: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with open_store(config) as store:
        return list(store.export(HARVEST, HARVEST)), list(store.totals())


# Hostile rows as Hypothesis strategies, for the property tests (test_hostile_property: whole runs
# into a store; test_engine_property: each engine's day against rules.py, many more examples).
MIDNIGHT = datetime(DAY.year, DAY.month, DAY.day)

# Text an attacker would try: COPY and SQL metacharacters, control characters, unicode beyond
# the BMP, ids on either side of the size limit. NUL is left out: no jsonb can hold it.
SPECIAL = [
    "\\.", "\\N", "\\", "\t", "\n", "\r", "\r\n", "'", '"', "'; DROP TABLE stats; --", "\\x00",
    "X\t{}\t{}\t{1}\t{}\t{}\n2020-01-01\tVICTIM", "\u2028", "\ufeff", "💥", "é" * 250, "é" * 251,
    "k" * 500, "k" * 501, "k" * 5000, "__other__", "",
]  # fmt: skip
texts = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12),
)
# Numbers as JSON text, so PostgreSQL sees literals Python's json would not write (1e5000).
NUMBER_LITERALS = [
    "0", "-0", "1", "3.0", "3.00", "1e2", "1E+2", "-1", "0.5", "1e-400", "1e5000", "-1e5000",
    str(MAX_HITS), str(MAX_HITS + 1), str(MAX_HITS) + ".0", "9007199254740990.5", "3.0000000000000001",
]  # fmt: skip
numbers = st.one_of(
    st.sampled_from(NUMBER_LITERALS),
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
scalars = st.one_of(numbers, texts.map(json.dumps), st.sampled_from(["true", "false", "null"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(texts, inner), max_size=3).map(lambda pairs: json_object(pairs)),
    ),
    max_leaves=6,
)


def json_object(pairs: list[tuple[str, str]]) -> str:
    """A JSON object from keys and values already written as JSON text."""
    return "{" + ",".join(json.dumps(key) + ":" + value for key, value in pairs) + "}"


hit_values = st.one_of(numbers, json_values)
id_values = st.one_of(texts.map(json.dumps), json_values)
payloads = st.one_of(
    st.lists(st.tuples(texts, hit_values), max_size=4).map(json_object),
    st.lists(st.tuples(texts, id_values), max_size=4).map(json_object),
    st.lists(st.tuples(texts, st.sampled_from(["1", "2", '"rs-a"', '"rs-b"'])), max_size=4).map(json_object),
    json_values,
    st.none(),
)
geocodes = st.one_of(
    st.none(),
    st.just("null"),
    st.lists(
        st.tuples(st.sampled_from(["country", "region", "city", "x"]), texts.map(json.dumps)), max_size=3
    ).map(json_object),
    json_values,
)
moments = st.sampled_from(
    [MIDNIGHT, MIDNIGHT + timedelta(hours=9), MIDNIGHT + timedelta(days=1, microseconds=-1)]
)
hostile_rows = st.one_of(
    st.tuples(
        moments,
        st.sampled_from(["search", "seen", "mapping", "view", "download", "facet", None]),
        # Page views (recordsets, publishers) with types no page has, and record types nobody knows.
        st.sampled_from(["records", "mediarecords", "recordsets", "publishers", "_all", None]),
        st.sampled_from([None, *QUERIES[:2]]),
        geocodes,
        payloads,
    ),
    # Page views as the search API logs them, with hostile keys, values and geocodes.
    st.tuples(
        moments,
        st.just("view"),
        st.sampled_from(["recordsets", "publishers"]),
        st.sampled_from([None, *QUERIES[:2]]),
        geocodes,
        payloads,
    ),
)


def hostile_day_database(server: embedded.EmbeddedPostgres, seed: int, prefix: str) -> tuple[str, Any]:
    """A new database holding a valid day of 40 rows whose `type` and `payload` may be NULL (as
    hostile rows have them), and an autocommit connection to it: the two hostile properties'
    common ground."""
    dsn = server.create_database(f"{prefix}_{uuid.uuid4().hex[:12]}")
    insert_rows(dsn, random_rows(seed, DAY, n=40, bad=False))
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE stats ALTER COLUMN type DROP NOT NULL, ALTER COLUMN payload DROP NOT NULL")
    return dsn, conn
