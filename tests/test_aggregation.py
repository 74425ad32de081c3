"""Each aggregation engine's day (collect.engine: the SQL one, source.py, and the streaming one,
stream.py) equals the plain statement of the rules (idb_stats.rules)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from datetime import date, datetime
from typing import Any

import pytest
from helpers import (
    RECORDSETS,
    engine_config,
    insert_rows,
    query,
    random_rows,
    reference,
    reference_day,
    sql_documents,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idb_stats import source as source_module
from idb_stats.config import ENGINES
from idb_stats.documents import day_documents, publisher_documents
from idb_stats.engines import open_source
from idb_stats.errors import ConfigError
from idb_stats.model import MAX_HITS, SKIP_REASONS, DayStats

DAY = date(2020, 2, 17)  # events of this calendar day have harvest date 2020-02-18
HARVEST_DATE = date(2020, 2, 18)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [0, 2])
@pytest.mark.parametrize("skipped_ids_cap", [50_000, 1], ids=["skip-by-id", "skip-by-rule"])
def test_sql_matches_rules(
    dsn: str, engine: str, seed: int, limit: int, skipped_ids_cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Few skipped rows are excluded by id; beyond the cap the cell queries re-check the rules.
    if engine == "stream" and skipped_ids_cap == 1:
        pytest.skip("the cap is the SQL engine's; the stream engine leaves every skipped row to rules.py")
    monkeypatch.setattr(source_module, "SKIPPED_IDS_CAP", skipped_ids_cap)
    insert_rows(dsn, random_rows(seed, DAY) + random_rows(seed + 100, date(2020, 2, 18), bad=False))
    source = open_source(engine_config(dsn, engine))
    try:
        for harvest in (date(2020, 2, 18), date(2020, 2, 19)):
            expected = reference_day(dsn, harvest, limit)
            expected_docs, expected_report = expected.documents, expected.report
            stats = DayStats(harvest)
            with source.read_day(harvest) as telemetry:
                report = telemetry.report
                docs = list(day_documents(telemetry, harvest, stats, limit))
                publishers = publisher_documents(telemetry.publisher_views, harvest, limit)
            assert docs == expected_docs
            assert report.rows == expected_report.rows
            assert report.as_dict() == expected_report.as_dict()
            assert report.kinds == expected_report.kinds
            assert publishers == expected.publishers
            assert stats.recordsets == len(expected_docs) > 0
            # The page rows are there, and counted: recordset page views in their block, publishers'.
            assert report.kinds.keys() == {"records", "mediarecords", "recordsets", "publishers"}
            assert any(d["recordsets"]["view"]["count"] for d in docs) and publishers
    finally:
        source.close()


def test_every_skip_reason_is_counted_with_examples(dsn: str, engine: str) -> None:
    insert_rows(dsn, random_rows(1, DAY))
    source = open_source(engine_config(dsn, engine))
    with source.read_day(date(2020, 2, 18)) as telemetry:
        report = telemetry.report
    source.close()
    assert set(report.reasons) == set(SKIP_REASONS)
    assert report.reasons["bad_hit_count"].rows == 4
    assert report.reasons["unknown_record_type"].rows == 2
    assert report.reasons["unknown_type"].rows == 2  # a publisher page searched is no page view
    assert all(r.example_ids for r in report.reasons.values())


def test_midnight_belongs_to_the_next_harvest_date(dsn: str, engine: str) -> None:
    from datetime import datetime

    rs = "rs-midnight"
    insert_rows(
        dsn,
        [
            (datetime(2020, 2, 17, 0, 0), "search", "records", None, None, {rs: 1}),
            (datetime(2020, 2, 17, 23, 59, 59, 999999), "search", "records", None, None, {rs: 10}),
            (datetime(2020, 2, 18, 0, 0), "search", "records", None, None, {rs: 100}),
        ],
    )
    source = open_source(engine_config(dsn, engine))
    totals = {}
    for harvest in (date(2020, 2, 18), date(2020, 2, 19)):
        with source.read_day(harvest) as telemetry:
            docs = list(day_documents(telemetry, harvest, DayStats(harvest)))
        totals[harvest] = docs[0]["records"]["search"]["total"]
    source.close()
    assert totals == {date(2020, 2, 18): 11, date(2020, 2, 19): 100}


def test_geocodes_that_would_read_the_same_are_skipped_by_both(dsn: str, engine: str) -> None:
    # Two geocodes PostgreSQL keeps apart (jsonb numerics are exact) that read as the same object
    # in JSON (both 0.1 as a double) could merge two geocode cells into one. Geocodes of strings
    # only are accepted (bad_geocode_value), so neither path ever sees them.
    from datetime import datetime

    import psycopg2

    rs = "rs-geo"
    insert_rows(
        dsn,
        [
            (datetime(2020, 2, 17, 1), "search", "records", None, {"lat": 0.1}, {rs: 2}),
            (datetime(2020, 2, 17, 2), "search", "records", None, {"lat": 0.1}, {rs: 5}),
            (datetime(2020, 2, 17, 3), "search", "records", None, {"country": "US"}, {rs: 1}),
        ],
    )
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("""UPDATE stats SET ip_geocode = '{"lat": 0.10000000000000001}' WHERE id = 2""")
    conn.close()
    harvest = date(2020, 2, 18)
    expected_docs, expected_report = reference(dsn, harvest)
    source = open_source(engine_config(dsn, engine))
    with source.read_day(harvest) as telemetry:
        report = telemetry.report
        docs = list(day_documents(telemetry, harvest, DayStats(harvest)))
    source.close()
    assert report.as_dict() == expected_report.as_dict()
    assert report.as_dict()["bad_geocode_value"]["example_ids"] == [1, 2]
    assert docs[0]["records"]["search"]["geocodes"] == [{"geo": {"country": "US"}, "count": 1}]
    assert docs == expected_docs


@pytest.mark.parametrize("shape", ["today", "wide"])
def test_sql_matches_rules_on_every_shape_of_day(dsn: str, shape: str, engine: str) -> None:
    # The benchmark's shapes of day, small: on the wide one a search hits many recordsets, pages
    # mix recordsets and thousands of geocodes each make a cell of their own.
    import psycopg2

    from idb_stats import synthetic

    spec = synthetic.Spec(
        first_day=date(2020, 2, 17), days=1, rows_per_day=1_500, shape=synthetic.SHAPES[shape]
    )
    conn = psycopg2.connect(dsn)
    synthetic.load(conn, spec)
    conn.close()
    harvest = date(2020, 2, 18)
    expected_docs, _ = reference(dsn, harvest)
    source = open_source(engine_config(dsn, engine))
    with source.read_day(harvest) as telemetry:
        docs = list(day_documents(telemetry, harvest, DayStats(harvest)))
    source.close()
    geocodes = {
        json.dumps(g["geo"]) for d in docs for block in d["records"].values() for g in block["geocodes"]
    }
    assert len(geocodes) > (500 if shape == "wide" else 3)
    assert docs == expected_docs


def test_query_ids_sharing_a_hash_are_one_query(dsn: str, engine: str) -> None:
    # The rules key queries by hash. A queries table that does not make hashes unique (the source
    # contract asks only for the columns) gave each query id its own rank: two entries of one term.
    from hostile import AT, HARVEST, create_telemetry, insert_raw

    conn = create_telemetry(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE queries DROP CONSTRAINT queries_query_hash_key")
        cur.execute("INSERT INTO queries (query_hash, query) VALUES ('h', '{}'), ('h', '{}'), ('g', '{}')")
    ids = insert_raw(conn, [("search", "records", None, '{"rs": 2}')] * 3, at=AT)
    with conn, conn.cursor() as cur:
        for row_id, query_id in zip(ids, (1, 2, 3), strict=True):
            cur.execute("UPDATE stats SET query_id = %s WHERE id = %s", (query_id, row_id))
    conn.close()
    docs, _ = sql_documents(dsn, HARVEST, engine=engine)
    assert docs[0]["records"]["search"]["queries"] == [{"term": "h", "count": 4}, {"term": "g", "count": 2}]
    assert docs == reference(dsn, HARVEST)[0]


# Ids that order differently by code point, by an en-US collation and by WIN1252 bytes.
ORDERED_IDS = [
    "a", "A", "B", "z", "Z", "é", "€", "ß", "\x01", "\uff5a", "💥", "k" * 200 + "b", "k" * 200 + "a",
]  # fmt: skip


def insert_ordered_day(dsn: str) -> None:
    """Recordsets, records, query hashes and countries of ORDERED_IDS, all with equal counts, so
    every list's order is its tie order."""
    from hostile import AT, Raw, create_telemetry, insert_raw

    conn = create_telemetry(dsn)
    rows: list[Raw] = []
    for text in ORDERED_IDS:
        geo = json.dumps({"country": text, "city": text * 2})
        rows += [
            ("search", "records", geo, json.dumps({"rs" + text: 3, "rs": 3})),
            ("view", "records", None, json.dumps({"r" + text: "rs" + text, text: "rs"})),
        ]
    ids = insert_raw(conn, rows, at=AT)
    with conn, conn.cursor() as cur:
        for text, row_id in zip(ORDERED_IDS, ids[::2], strict=True):
            cur.execute("INSERT INTO queries (query_hash, query) VALUES (%s, '{}') RETURNING id", (text,))
            cur.execute("UPDATE stats SET query_id = %s WHERE id = %s", (*(cur.fetchone() or ()), row_id))
    conn.close()


@pytest.mark.parametrize(
    "locale",
    [
        "LC_COLLATE 'C.utf8' LC_CTYPE 'C.utf8'",
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.utf8'",
    ],
    ids=["C.utf8", "icu-en-US"],
)
def test_documents_equal_the_rules_whatever_the_database_collation(
    pg_server: Any, locale: str, engine: str
) -> None:
    # Recordset, record and query order is bytewise (COLLATE "C") wherever PostgreSQL sorts them,
    # so a portal database with a linguistic default collation gives the same documents.
    import psycopg2
    from hostile import HARVEST

    name = f"collation_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_server.dsn())
    admin.autocommit = True
    with admin.cursor() as cur:
        try:
            cur.execute(f"CREATE DATABASE {name} TEMPLATE template0 {locale}")
        except psycopg2.Error as exc:  # a server built without ICU, a system without C.utf8
            pytest.skip(f"this server cannot make such a database: {exc}")
    admin.close()
    dsn = pg_server.dsn(name)
    insert_ordered_day(dsn)
    for limit in (0, 3):
        docs, report = sql_documents(dsn, HARVEST, limit, engine)
        expected_docs, expected_report = reference(dsn, HARVEST, limit)
        assert docs == expected_docs
        assert report.as_dict() == expected_report.as_dict()
    assert len(docs) == len(ORDERED_IDS) + 1


@pytest.mark.parametrize("encoding", ["WIN1252", "LATIN1", "SQL_ASCII"])
def test_a_telemetry_database_not_in_utf8_is_refused(pg_server: Any, encoding: str, engine: str) -> None:
    # The rules measure ids in UTF-8 and order them by code point, PostgreSQL measures and orders
    # the database's bytes: in WIN1252 a recordset's cells came apart into two documents (the
    # streams' order is not Python's), in LATIN1 "é" * 251 passed as an id of 251 bytes.
    import psycopg2
    from helpers import run
    from hostile import HARVEST

    name = f"encoding_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_server.dsn())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING '{encoding}' LOCALE 'C'")
    admin.close()
    dsn = pg_server.dsn(name)
    insert_rows(dsn, random_rows(1, DAY, n=20, bad=False))
    with pytest.raises(ConfigError, match=f"is encoded in {encoding}; idb-stats reads telemetry from UTF8"):
        open_source(engine_config(dsn, engine))
    result = run("collect-stats", "-d", HARVEST.isoformat(), env={"IDB_STATS_SOURCE_DSN": dsn})
    assert result.returncode == 3, result.stderr
    assert f"encoded in {encoding}" in result.stderr
    assert "idb_stats" not in {row[0] for row in query(dsn, "SELECT nspname FROM pg_namespace")}


# The suite runs a dozen examples; IDB_STATS_ORDER_EXAMPLES=1000 runs a long search.
ORDER_EXAMPLES = int(os.environ.get("IDB_STATS_ORDER_EXAMPLES", "12"))
# Text for ids, query hashes and geocodes where byte, code point and JSON-escaped orders part ways:
# control characters, characters beyond the BMP, "\\" and '"' (escaped in JSON), ids alike up to
# byte 200. NUL and lone surrogates are left out: no jsonb or text can hold them.
ORDER_TEXTS = st.one_of(
    st.sampled_from(["a", "B", "é", "€", "\x01", "\x7f", "\u2028", "💥", "\\", '"', "k" * 200, "__other__"]),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=4),
)
ordered_ids = st.builds(lambda *parts: "".join(parts), ORDER_TEXTS, ORDER_TEXTS)
# Few hit values, so lists are full of ties; MAX_HITS so sums pass 2**53, 2**63 and 2**64.
ordered_hits = st.sampled_from(["0", "1", "1", "3.0", "1e2", str(MAX_HITS)])
ordered_geocodes = st.one_of(
    st.none(),
    st.dictionaries(ORDER_TEXTS, ORDER_TEXTS, max_size=3).map(
        lambda geo: json.dumps(geo, ensure_ascii=len(geo) % 2 == 0)  # both spellings of non-ASCII
    ),
)
NO_QUERY_ROW, NULL_HASH = 0, 1  # stand-ins for a query that is not a hash
ordered_rows = st.tuples(
    st.sampled_from(["search", "seen", "view", "download"]),
    st.sampled_from(["records", "mediarecords"]),
    # the query: none, a hash (often shared), a query id without a queries row, a row without a hash
    st.one_of(st.none(), st.sampled_from(["é", "\x01", NO_QUERY_ROW, NULL_HASH]), ORDER_TEXTS),
    ordered_geocodes,
    # (record, recordset, hits): recordsets often shared, so rows meet in one document's lists
    st.lists(
        st.tuples(ordered_ids, st.one_of(st.just("rs"), ordered_ids), ordered_hits), min_size=1, max_size=4
    ),
)


@pytest.fixture(scope="module")
def ordering_dsn(pg_server: Any) -> str:
    """One loose database for every example: query hashes may repeat or be NULL, and a row's
    query id need not name a query."""
    from hostile import create_telemetry

    dsn = pg_server.create_database(f"ordering_{uuid.uuid4().hex[:8]}")
    conn = create_telemetry(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE queries DROP CONSTRAINT queries_query_hash_key")
        cur.execute("ALTER TABLE queries ALTER COLUMN query_hash DROP NOT NULL")
        cur.execute("ALTER TABLE stats DROP CONSTRAINT stats_query_id_fkey")
    conn.close()
    return dsn


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=ORDER_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ordered_rows, min_size=1, max_size=12), limit=st.sampled_from([0, 2]))
def test_every_order_and_tie_equals_the_rules(
    ordering_dsn: str, engine: str, rows: list[Any], limit: int
) -> None:
    # Ties are ordered by term in code point order: the source orders recordsets and query hashes
    # bytewise in PostgreSQL, ranks geocodes by canonical JSON and items by term in Python.
    import psycopg2
    from hostile import AT, HARVEST

    with contextlib.closing(psycopg2.connect(ordering_dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute("TRUNCATE stats, queries RESTART IDENTITY")
        for event_type, record_type, query_hash, geo, entries in rows:
            if event_type in ("view", "seen"):
                payload = {record: recordset for record, recordset, _ in entries}
                payload_text = json.dumps(payload)
            else:  # hit counts as JSON literals (3.0, 1e2)
                payload_text = "{" + ",".join(f"{json.dumps(rs)}: {hits}" for _, rs, hits in entries) + "}"
            query_id = None
            if query_hash == NO_QUERY_ROW:
                query_id = 10**9
            elif query_hash is not None:  # every row its own query id: ids of one hash are one query
                cur.execute(
                    "INSERT INTO queries (query_hash, query) VALUES (%s, '{}') RETURNING id",
                    (None if query_hash == NULL_HASH else query_hash,),
                )
                (query_id,) = cur.fetchone() or (None,)
            cur.execute(
                "INSERT INTO stats (date, type, record_type, query_id, ip_geocode, payload) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb)",
                (AT, event_type, record_type, query_id, geo, payload_text),
            )
    docs, report = sql_documents(ordering_dsn, HARVEST, limit, engine)
    expected_docs, expected_report = reference(ordering_dsn, HARVEST, limit)
    assert report.as_dict() == expected_report.as_dict()
    assert docs == expected_docs


def test_spellings_postgresql_reads_alike_are_one_geocode_one_item(dsn: str, engine: str) -> None:
    # jsonb reads escapes, spacing and repeated keys (the last wins, as in Python) into one value:
    # the day's geocode table and the item lists see one geocode and one record per value.
    from hostile import HARVEST, create_telemetry, insert_raw

    geocodes = [
        '{"country":"é","city":"💥"}',
        '{ "city" : "\\ud83d\\udca5", "country" : "\\u00e9" }',
        '{"country":"x","city":"💥","country":"é"}',
        "{}",
        "null",
        None,
    ]
    records = ['{"ré": "rs"}', '{"r\\u00e9": "r\\u0073"}', '{"r\\u00e9": "x", "ré": "rs"}']
    conn = create_telemetry(dsn)
    insert_raw(conn, [("search", "records", geo, '{"rs": 2}') for geo in geocodes])
    insert_raw(conn, [("view", "records", None, payload) for payload in records])
    conn.close()
    docs, _ = sql_documents(dsn, HARVEST, engine=engine)
    assert docs == reference(dsn, HARVEST)[0]
    assert docs[0]["records"]["search"]["geocodes"] == [
        {"geo": {"city": "💥", "country": "é"}, "count": 6},
        {"geo": {}, "count": 6},
    ]
    assert docs[0]["records"]["view"]["items"] == [{"term": "ré", "count": 3}]


@pytest.mark.parametrize("line_bytes", [200, None], ids=["200-bytes", "1-MB"])
def test_rows_the_stream_engine_leaves_to_the_rules(
    dsn: str, line_bytes: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows longer than the engine's CSV line limit never reach DuckDB: they are read again by id
    # and given to rules.py, with the skipped ones and the hit counts written 3.0; a page of
    # 30,000 records is longer than the 1 MB limit, and at 200 bytes most rows are.
    from idb_stats import stream

    if line_bytes is not None:
        monkeypatch.setattr(stream, "MAX_LINE_BYTES", line_bytes)
    start = datetime(DAY.year, DAY.month, DAY.day, 12)
    page = {f"r{i:06d}": RECORDSETS[0] for i in range(30_000)}
    insert_rows(
        dsn,
        [
            *random_rows(3, DAY),
            (start, "seen", "records", "q0001", {"country": "US"}, page),
            (start, "search", "records", None, None, {RECORDSETS[0]: 3.0}),
        ],
    )
    expected_docs, expected_report = reference(dsn, HARVEST_DATE)
    docs, report = sql_documents(dsn, HARVEST_DATE, engine="stream")
    assert docs == expected_docs
    assert report.as_dict() == expected_report.as_dict() and report.rows == expected_report.rows
    assert any(len(d["records"]["seen"]["items"]) >= 30_000 for d in docs)
