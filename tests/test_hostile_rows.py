"""Telemetry as an attacker would write it: every row is counted or skipped with a reason, never
injected into the store, never blocking a day. Real PostgreSQL throughout; the search stores on
osmem where the store matters."""

from __future__ import annotations

import io
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from helpers import MakeConfig, assert_consistent, insert_rows, random_rows, reference, run
from hostile import (
    AT,
    BEYOND_BIGINT,
    BEYOND_BIGINT_RECORDSET,
    DAY,
    HARVEST,
    Raw,
    collect_day,
    create_telemetry,
    insert_beyond_bigint,
    insert_raw,
    sql_and_rules_reasons,
    store_snapshot,
)

from idb_stats.config import load_config
from idb_stats.documents import day_documents
from idb_stats.errors import ConfigError, DataQualityError
from idb_stats.model import MAX_HITS, SKIP_REASONS, DayStats
from idb_stats.source import PostgresTelemetrySource, quoted_name, set_time_zone
from idb_stats.stores import open_store
from idb_stats.stores.postgres import copy_line

RS = "00000001-0000-4000-8000-000000000001"
RECORD = "00000002-0000-4000-8000-000000000001"


def entry(key: str, value_json: str) -> str:
    """A payload of one entry whose value is given as JSON text."""
    return "{" + json.dumps(key) + ": " + value_json + "}"


# (type, record_type, ip_geocode JSON, payload JSON) -> what the rules make of it (Raw in hostile.py).
CASES: list[tuple[str, Raw, str | None]] = [
    ("hits in an array", ("search", "records", None, entry(RS, "[5]")), "bad_hit_count"),
    ("hits an empty array", ("search", "records", None, entry(RS, "[]")), "bad_hit_count"),
    ("hits an object", ("search", "records", None, entry(RS, '{"n": 1}')), "bad_hit_count"),
    ("hits 1e5000", ("search", "records", None, entry(RS, "1e5000")), "bad_hit_count"),
    ("hits 1e-400", ("download", "records", None, entry(RS, "1e-400")), "bad_hit_count"),
    ("hits 2^53", ("search", "records", None, entry(RS, str(MAX_HITS + 1))), "bad_hit_count"),
    (
        "hits 2^53-1 and a half",
        ("search", "records", None, entry(RS, "9007199254740990.5")),
        "bad_hit_count",
    ),
    ("hits almost 3", ("search", "records", None, entry(RS, "3.0000000000000001")), "bad_hit_count"),
    ("hits true", ("mapping", "records", None, entry(RS, "true")), "bad_hit_count"),
    ("hits null", ("mapping", "records", None, entry(RS, "null")), "bad_hit_count"),
    ("hits -0", ("search", "records", None, entry(RS, "-0")), None),
    ("hits 3.00", ("search", "records", None, entry(RS, "3.00")), None),
    ("hits 1e2", ("search", "records", None, entry(RS, "1e2")), None),
    ("hits 2^53-1", ("search", "records", None, entry(RS, str(MAX_HITS))), None),
    ("seen value in an array", ("seen", "records", None, entry(RECORD, '["H-rs"]')), "bad_recordset_value"),
    ("view value an object", ("view", "records", None, entry(RECORD, '{"a": "b"}')), "bad_recordset_value"),
    (
        "geocode country in an array",
        ("search", "records", '{"country": ["US"]}', entry(RS, "1")),
        "bad_geocode_value",
    ),
    (
        "geocode country a number",
        ("search", "records", '{"country": 7}', entry(RS, "1")),
        "bad_geocode_value",
    ),
    (
        "geocode x 1.0",
        ("search", "records", '{"country": "US", "x": 1.0}', entry(RS, "1")),
        "bad_geocode_value",
    ),
    (
        "geocode nested",
        ("search", "records", '{"country": {"code": "US"}}', entry(RS, "1")),
        "bad_geocode_value",
    ),
    ("geocode null value", ("search", "records", '{"country": null}', entry(RS, "1")), "bad_geocode_value"),
    ("geocode an array", ("search", "records", '["US"]', entry(RS, "1")), "geocode_not_object"),
    (
        "geocode of 1,000 bytes",
        ("search", "records", json.dumps({"country": "US", "city": "x" * 987}), entry(RS, "1")),
        None,
    ),
    (
        "geocode of 1,001 bytes",
        ("search", "records", json.dumps({"country": "US", "city": "x" * 988}), entry(RS, "1")),
        "oversized_geocode",
    ),
    (
        "geocode of 496 two-byte chars and 10 more bytes",
        ("search", "records", json.dumps({"country": "US", "city": "é" * 496}), entry(RS, "1")),
        "oversized_geocode",
    ),
    (
        "geocode of many small keys",
        ("search", "records", json.dumps({f"k{i:03}": "v" * 6 for i in range(101)}), entry(RS, "1")),
        "oversized_geocode",
    ),
    ("geocode JSON null", ("search", "records", "null", entry(RS, "1")), None),
    ("geocode unicode", ("search", "records", '{"country": "Ελλάδα\\t\\\\."}', entry(RS, "1")), None),
    ("NULL type", (None, "records", None, entry(RS, "1")), "unknown_type"),
    ("NULL payload", ("search", "records", None, None), "payload_not_object"),
    ("JSON null payload", ("search", "records", None, "null"), "payload_not_object"),
    ("NULL record type", ("search", None, None, entry(RS, "1")), "unknown_record_type"),
    ("search key of 10 kB", ("search", "records", None, entry("k" * 10_000, "1")), "oversized_id"),
    ("search key of 501 bytes", ("search", "records", None, entry("k" * 501, "1")), "oversized_id"),
    ("search key of 500 bytes", ("search", "records", None, entry("k" * 500, "1")), None),
    (
        "view record of 251 two-byte chars",
        ("view", "records", None, json.dumps({"é" * 251: RS})),
        "oversized_id",
    ),
    (
        "seen recordset of 600 bytes",
        ("seen", "records", None, json.dumps({RECORD: "r" * 600})),
        "oversized_id",
    ),
    (
        "search key injecting COPY",
        ("search", "records", None, json.dumps({"X\t{}\t{}\t{1}\t{}\t{}\n2020-01-01\tVICTIM": 1})),
        None,
    ),
    ("control characters kept", ("search", "records", None, json.dumps({"rs\r\n\t\x01\x7f\\N": 2})), None),
    ("end-of-data marker", ("view", "records", None, json.dumps({"\\.": "\\.\n\\."})), None),
    (
        "quotes and unicode",
        ("seen", "records", None, json.dumps({"'\"; DROP TABLE stats;--": "💥\u2028"})),
        None,
    ),
]


def test_every_hostile_row_is_skipped_for_its_reason_or_counted(dsn: str) -> None:
    conn = create_telemetry(dsn)
    ids = insert_raw(conn, [raw for _, raw, _ in CASES])
    conn.close()
    sql, rules = sql_and_rules_reasons(dsn)
    got = {name: (sql[i], rules[i]) for (name, _, _), i in zip(CASES, ids, strict=True)}
    assert got == {name: (reason, reason) for name, _, reason in CASES}
    assert {reason for _, _, reason in CASES} - {None} == set(SKIP_REASONS) - {"empty_key"}

    # The whole day, through the store: the skip report and documents are the rules', the run is
    # ok (every skip is allowed here), totals are the sum of the daily documents, twice over.
    config = load_config(overrides={"source.dsn": dsn, "collect.max_skipped_share": 1.0}, environ={})
    expected_docs, expected_report = reference(dsn, HARVEST)
    for _ in range(2):
        (stats,) = collect_day(config)
        assert stats.skip_reasons == expected_report.as_dict()
        assert stats.rows == len(CASES)
        daily, totals = store_snapshot(config)
        assert daily == expected_docs
        assert_consistent(daily, totals)
    stored = {doc["recordset_id"] for doc in daily}
    assert "X\t{}\t{}\t{1}\t{}\t{}\n2020-01-01\tVICTIM" in stored and "rs\r\n\t\x01\x7f\\N" in stored
    assert "\\.\n\\." in stored and "k" * 500 in stored


def test_copy_injection_through_every_store(make_config: MakeConfig, dsn: str) -> None:
    """The issue's attack: a payload key that, written raw into COPY, made a second daily row
    for a day never collected. Every store keeps the id exactly; re-runs succeed."""
    attack = "X\t{}\t{}\t{1}\t{}\t{}\n2020-01-01\tVICTIM"
    conn = create_telemetry(dsn)
    insert_raw(conn, [("search", "records", None, json.dumps({attack: 4, RS: 1}))])
    conn.close()
    config = make_config()
    for _ in range(2):
        collect_day(config)
        daily, totals = store_snapshot(config)
        assert sorted(doc["recordset_id"] for doc in daily) == sorted([attack, RS])
        assert {doc["harvest_date"] for doc in daily} == {HARVEST.isoformat()}
        assert_consistent(daily, totals)
    store = open_store(config)
    try:
        assert set(store.completed_days()) == {HARVEST}
    finally:
        store.close()


def test_copy_line_round_trips_every_special_character(dsn: str) -> None:
    values = ["a\\b", "t\tt", "n\nn", "r\rr", "\\.", "\\N", "\\", "\x01\x0b\x0c\x7f", "é💥", "", "end\\"]
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE copied (a text, b text)")
        text = "".join(copy_line(value, value[::-1]) for value in values)
        cur.copy_expert("COPY copied (a, b) FROM STDIN", io.StringIO(text))
        cur.execute("SELECT a, b FROM copied")
        assert cur.fetchall() == [(value, value[::-1]) for value in values]
    conn.close()


def test_hit_sums_beyond_bigint_stay_exact(dsn: str) -> None:
    """1,100 rows of 2**53 - 1 hits add up to more than bigint holds; the day is still written and
    its total is exact (the search engines' long fields cannot hold it, so PostgreSQL only)."""
    insert_beyond_bigint(dsn)
    config = load_config(overrides={"source.dsn": dsn}, environ={})
    # A store made before counts were numeric: the run's init widens the column.
    store = open_store(config)
    store.init()
    store.close()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE idb_stats.daily ALTER COLUMN counts TYPE bigint[]")
    conn.close()
    collect_day(config)
    daily, totals = store_snapshot(config)
    assert daily == reference(dsn, HARVEST)[0]
    assert daily[0]["records"]["search"]["total"] == BEYOND_BIGINT > 2**63
    assert totals[0]["records"]["search"]["total"] == BEYOND_BIGINT
    assert_consistent(daily, totals)


@pytest.mark.parametrize("store_kind", ["opensearch", "elasticsearch"])
def test_sums_beyond_long_are_refused_by_search_stores_in_one_line(make_config: MakeConfig, dsn: str) -> None:
    """A search engine's long fields hold at most 2**63 - 1: such a day is refused (exit 6) with
    one line naming the recordset and the field, not a bulk item's parser error (exit 5)."""
    insert_beyond_bigint(dsn)
    config = make_config()
    with pytest.raises(DataQualityError) as refused:
        collect_day(config)
    message = str(refused.value)
    assert "\n" not in message
    assert f"{HARVEST} '{BEYOND_BIGINT_RECORDSET}': records.search.total = {BEYOND_BIGINT} is more" in message
    with open_store(config) as store:
        assert HARVEST not in store.completed_days()


def test_a_row_postgresql_cannot_read_is_a_data_error_not_unreachable(dsn: str, tmp_path: Path) -> None:
    """The telemetry table may be a view; one of its rows failing to convert is the data's fault
    (exit 6, nothing written), not an unreachable database (exit 4)."""
    conn = create_telemetry(dsn)
    insert_raw(conn, [("search", "records", None, entry(RS, "1"))])
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE raw_stats (LIKE stats)")
        cur.execute("ALTER TABLE raw_stats ALTER COLUMN payload TYPE text USING payload::text")
        cur.execute("INSERT INTO raw_stats SELECT * FROM stats")
        cur.execute(
            "INSERT INTO raw_stats (id, date, type, record_type, payload) "
            "VALUES (99, %s, 'search', 'records', '{oops')",
            (AT,),
        )
        cur.execute(
            "CREATE VIEW stats_view AS SELECT id, date, type, record_type, query_id, source, ip, "
            "ip_geocode, payload::jsonb AS payload FROM raw_stats"
        )
    conn.close()
    config = load_config(overrides={"source.dsn": dsn, "source.stats_table": "stats_view"}, environ={})
    with pytest.raises(DataQualityError, match="could not be processed"):
        collect_day(config)
    toml = tmp_path / "config.toml"
    toml.write_text('[source]\nstats_table = "stats_view"\n')
    result = run(
        "collect-stats", "-d", HARVEST.isoformat(), "--config", str(toml), env={"IDB_STATS_SOURCE_DSN": dsn}
    )
    assert result.returncode == 6, result.stderr
    assert "unreachable" not in result.stderr and "could not be processed" in result.stderr


def test_a_missing_table_is_a_configuration_error(dsn: str) -> None:
    create_telemetry(dsn).close()
    config = load_config(overrides={"source.dsn": dsn, "source.stats_table": "nowhere"}, environ={})
    with pytest.raises(ConfigError, match="nowhere"):
        collect_day(config)


@pytest.mark.parametrize("column", ["timestamp", "timestamptz"])
@pytest.mark.parametrize("server_zone", ["UTC", "Asia/Tokyo"])
def test_days_follow_source_timezone_whatever_the_session_zone(
    dsn: str, column: str, server_zone: str
) -> None:
    """Events every 10 minutes (UTC) over the 2021 spring-forward and fall-back days in New York:
    with a timestamptz column those days hold 138 and 150 events; with a naive timestamp column
    the values are New York wall-clock times and every day holds 144."""
    conn = psycopg2.connect(dsn)
    dbname = conn.get_dsn_parameters()["dbname"]
    with conn, conn.cursor() as cur:
        cur.execute(f"ALTER DATABASE {dbname} SET timezone = %s", (server_zone,))
    conn.close()
    conn = create_telemetry(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(f"ALTER TABLE stats ALTER COLUMN date TYPE {column}")
        for first in (date(2021, 3, 13), date(2021, 11, 6)):
            cur.execute(
                "INSERT INTO stats (date, type, record_type, payload) "
                "SELECT t, 'search', 'records', %s FROM generate_series(%s::timestamp AT TIME ZONE 'UTC', "
                "%s::timestamp AT TIME ZONE 'UTC', '10 minutes') t",
                (
                    json.dumps({RS: 1}),
                    datetime.combine(first, datetime.min.time()),
                    datetime.combine(first + timedelta(days=3), datetime.min.time()),
                ),
            )
    conn.close()
    config = load_config(overrides={"source.dsn": dsn, "source.timezone": "America/New_York"}, environ={})
    source = PostgresTelemetrySource(config)
    counts = {}
    try:
        for harvest in (date(2021, 3, 15), date(2021, 11, 8)):  # events of 14 March, 7 November
            with source.read_day(harvest) as telemetry:
                docs = list(day_documents(telemetry, harvest, DayStats(harvest)))
                counts[harvest] = (telemetry.report.rows, docs[0]["records"]["search"]["count"])
        dates = source.harvest_dates()
    finally:
        source.close()
    if column == "timestamptz":
        assert counts == {date(2021, 3, 15): (138, 138), date(2021, 11, 8): (150, 150)}
        assert date(2021, 3, 13) in dates  # 19:00 on 12 March in New York is 00:00 UTC
    else:
        assert counts == {date(2021, 3, 15): (144, 144), date(2021, 11, 8): (144, 144)}
        assert min(dates) == date(2021, 3, 14)


@pytest.mark.parametrize(
    ("stats_table", "queries_table", "store_schema"),
    [
        ("Stats", "Queries", "IdbStats"),
        ("telemetry.stats", "telemetry.queries", "idb_stats"),
        ("order", "select", "user"),
    ],
)
def test_configured_names_are_read_exactly(
    dsn: str, stats_table: str, queries_table: str, store_schema: str
) -> None:
    """Case kept, schema-qualified and reserved-word names: the configured tables are read (not a
    same-named lowercase one), and a store in such a schema works for init and every query."""
    insert_rows(dsn, random_rows(3, DAY, n=60, bad=False))
    expected = reference(dsn, HARVEST)[0]
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA telemetry")
        for name, original in ((stats_table, "stats"), (queries_table, "queries")):
            cur.execute(f"CREATE TABLE {quoted_name(name, conn)} AS SELECT * FROM {original}")
        # A decoy in the lowercase tables: reading them instead would show.
        cur.execute("DELETE FROM stats")
        cur.execute(
            "INSERT INTO stats (date, type, record_type, payload) VALUES (%s, 'search', 'records', %s)",
            (AT, json.dumps({"decoy": 1})),
        )
    conn.close()
    config = load_config(
        overrides={
            "source.dsn": dsn,
            "source.stats_table": stats_table,
            "source.queries_table": queries_table,
            "store.schema": store_schema,
        },
        environ={},
    )
    for _ in range(2):  # init runs on an existing store too
        collect_day(config)
    daily, totals = store_snapshot(config)
    assert daily == expected
    assert_consistent(daily, totals)
    store = open_store(config)
    try:
        some = daily[0]["recordset_id"]
        assert set(store.completed_days()) == {HARVEST}
        assert store.runs()[0]["outcome"] == "ok"
        assert store.series([some], None, None, "month")[0]["recordset_id"] == some
        assert store.top_countries([], None, None, 3)
        assert (
            store.top_terms(some, None, None, 3)["items"] or store.top_terms(some, None, None, 3)["queries"]
        )
        assert store.write_snapshot(HARVEST, [{"recordset_id": "a\tb\nc\\", "records_count": 1}]) == 1
        assert store.snapshots() == {HARVEST: 1}
    finally:
        store.close()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT recordset_id FROM {quoted_name(store_schema, conn)}.api_snapshots")
        assert cur.fetchall() == [("a\tb\nc\\",)]
    conn.close()


@pytest.mark.parametrize(
    ("setting", "value", "accepted"),
    [
        ("source.stats_table", "telemetry.stats", True),
        ("source.stats_table", "Stats", True),
        ("source.stats_table", "a.b.c", False),
        ("source.stats_table", 'stats"; DROP TABLE x; --', False),
        ("api.uuids_table", "ingest.uuids", True),
        ("store.schema", "Upper_Case", True),
        ("store.schema", "idb.stats", False),
        ("store.schema", "x" * 64, False),
    ],
)
def test_configured_names_are_validated_once(setting: str, value: str, accepted: bool) -> None:
    overrides = {"source.dsn": "dbname=x", setting: value}
    if accepted:
        assert load_config(overrides=overrides, environ={})
    else:
        with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
            load_config(overrides=overrides, environ={})


def test_a_zone_the_telemetry_database_does_not_know_is_a_configuration_error(dsn: str) -> None:
    # Validation asks Python's zone database; the server's may lack a zone (older tzdata).
    conn = psycopg2.connect(dsn)
    with pytest.raises(
        ConfigError, match=r"source\.timezone: the telemetry database does not know 'Mars/Olympus'"
    ):
        set_time_zone(conn, "Mars/Olympus")
    assert conn.closed


def test_ids_with_control_characters_reach_the_terminal_escaped(dsn: str) -> None:
    """Recordset ids and countries as an attacker sends them: `show`'s table and `changes` print
    them escaped, one line each; JSON keeps them exact."""
    hostile = ["rs\x1b[2Jgone", "rs\r\nforged line", "rs\tx", "rs\u2028y", "rs\u202etxt.exe", "rs\x07\x9b"]
    conn = create_telemetry(dsn)
    country = '{"country": "U\\u001b[31mS\\n"}'
    insert_raw(conn, [("search", "records", country, entry(rs, "2")) for rs in hostile])
    conn.close()
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("collect-stats", "-d", str(HARVEST), env=env).returncode == 0
    conn = create_telemetry(dsn)
    insert_raw(conn, [("search", "records", None, entry(rs, "1")) for rs in hostile])  # late rows
    conn.close()
    assert run("collect-stats", "-d", str(HARVEST), env=env).returncode == 0

    def assert_escaped(text: str) -> None:
        raw = [c for c in text if c != "\n" and (c in "\x1b\r\t\x07\x9b\u2028\u202e")]
        assert not raw, (raw, text)

    listed = run("changes", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("\n") == len(hostile)
    assert_escaped(listed.stdout)
    assert " rs\\x1b[2Jgone rerun " in listed.stdout and " rs\\r\\nforged line rerun " in listed.stdout
    # split("\n"), not splitlines(): JSON keeps U+2028 raw (valid JSON), splitlines() cuts there
    as_json = [json.loads(line) for line in run("changes", "--json", env=env).stdout.split("\n")[:-1]]
    assert sorted(r["recordset_id"] for r in as_json) == sorted(hostile)

    table = run("show", *hostile, "--interval", "day", env=env)
    assert table.returncode == 0, table.stderr
    # header, a row per recordset, the total; a blank line, the countries' header, US and unknown
    assert table.stdout.count("\n") == len(hostile) + 2 + 4, table.stdout
    assert_escaped(table.stdout)
    assert "rs\\u202etxt.exe" in table.stdout and "U\\x1b[31mS\\n" in table.stdout


def test_a_megabyte_geocode_is_not_copied_into_every_document(dsn: str) -> None:
    conn = create_telemetry(dsn)
    geocode = json.dumps({"country": "US", "city": "é" * 500_000})  # 1 MB of UTF-8
    insert_raw(conn, [("search", "records", geocode, json.dumps({f"rs{i}": 1 for i in range(200)}))])
    conn.close()
    sql, rules = sql_and_rules_reasons(dsn)
    assert sql == rules
    assert list(rules.values()) != [None], "the row is accepted and its geocode written 200 times"


def slow_telemetry(dsn: str, database_setting: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A day of 30 searches read through a view that takes 20 ms a row, in a telemetry database
    with `database_setting` (a DBA's limit); the config file and environment that collect it."""
    conn = create_telemetry(dsn)
    insert_raw(conn, [("search", "records", '{"country": "US"}', entry(RS, "2"))] * 30)
    with conn, conn.cursor() as cur:
        # xmin named as a column: the fingerprint reads it (a view has none of its own)
        cur.execute(
            "CREATE VIEW slow_stats AS SELECT s.*, s.xmin FROM stats s "
            "CROSS JOIN LATERAL pg_sleep(0.02 + 0 * s.id) z"  # a sleep per row
        )
        cur.execute(f"ALTER DATABASE {conn.get_dsn_parameters()['dbname']} SET {database_setting}")
    conn.close()
    toml = tmp_path / "config.toml"
    toml.write_text('[source]\nstats_table = "slow_stats"\n')
    return toml, {"IDB_STATS_SOURCE_DSN": dsn}


def test_an_idle_in_transaction_timeout_does_not_cut_the_day(dsn: str, tmp_path: Path) -> None:
    """The day's snapshot is held by transactions idle while the day is written, and the store's
    transaction idles while the day is aggregated: a database's idle_in_transaction_session_timeout
    ended them mid-day (the run failed with a traceback, or the store's with exit 5)."""
    toml, env = slow_telemetry(dsn, "idle_in_transaction_session_timeout = '200ms'", tmp_path)
    result = run("collect-stats", "-d", HARVEST.isoformat(), "--config", str(toml), env=env)
    assert result.returncode == 0, result.stderr
    config = load_config(overrides={"source.dsn": dsn}, environ={})
    daily, totals = store_snapshot(config)
    assert daily[0]["records"]["search"] == {
        "count": 30,
        "total": 60,
        "items": [],
        "queries": [],
        "geocodes": [{"geo": {"country": "US"}, "count": 60}],
    }
    assert_consistent(daily, totals)


def test_a_statement_timeout_of_the_telemetry_database_says_so(dsn: str, tmp_path: Path) -> None:
    """A DBA's statement_timeout cancels the day's queries every run: a configuration problem of the
    telemetry database (exit 3, naming the setting), not a database that went away (exit 4)."""
    toml, env = slow_telemetry(dsn, "statement_timeout = '200ms'", tmp_path)
    result = run("collect-stats", "-d", HARVEST.isoformat(), "--config", str(toml), env=env)
    assert result.returncode == 3, result.stderr
    assert "cancelled the query at its statement_timeout" in result.stderr
    assert "went away" not in result.stderr and "Traceback" not in result.stderr


def test_a_view_over_the_telemetry_is_collected(dsn: str) -> None:
    conn = create_telemetry(dsn)
    insert_raw(conn, [("search", "records", '{"country": "US"}', entry(RS, "2"))] * 3)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE VIEW stats_view AS SELECT * FROM stats")
    conn.close()
    over_view = load_config(overrides={"source.dsn": dsn, "source.stats_table": "stats_view"}, environ={})
    collect_day(over_view)
    daily, _ = store_snapshot(load_config(overrides={"source.dsn": dsn}, environ={}))
    assert daily == reference(dsn, HARVEST)[0]
    # A view has no xmin: its fingerprint hashes the rows' columns, so a change in place is seen.
    source = PostgresTelemetrySource(over_view)
    try:
        before = source.fingerprints([HARVEST])[HARVEST]
        with psycopg2.connect(dsn) as changed, changed.cursor() as cur:
            cur.execute(
                'UPDATE stats SET ip_geocode = \'{"country": "FR"}\' WHERE id = (SELECT min(id) FROM stats)'
            )
        after = source.fingerprints([HARVEST])[HARVEST]
    finally:
        source.close()
    assert before is not None and after is not None
    assert before["rows"] == after["rows"] and before["hash"] != after["hash"]
