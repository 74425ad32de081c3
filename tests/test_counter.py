"""COUNTER-style figures (docs/counting.md): both engines' one PostgreSQL query against rules.py's
row-at-a-time reference and a brute-force count, on generated days with sessions, repeats within
and beyond 30 s, chains, hour boundaries, rows without an ip and rule-breaking rows; a telemetry
table without `ip`; the figures through export and import."""

from __future__ import annotations

import json
import logging
import re
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import pytest
from helpers import (
    HARVEST,
    RECORDSETS,
    exported_documents,
    insert_rows,
    load_week,
    random_rows,
    reference_day,
    run,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idb_stats import embedded, synthetic
from idb_stats.collect import Selection, collect
from idb_stats.config import ENGINES, Config, load_config
from idb_stats.documents import day_documents
from idb_stats.engines import open_source
from idb_stats.model import COUNTER_KEY, CounterFigures, DayStats
from idb_stats.rules import TelemetryRow, counter_figures, load_json
from idb_stats.stores import open_store
from idb_stats.verify import verify

DAY = HARVEST[0] - timedelta(days=1)  # the calendar day of HARVEST[0]'s events
NINE = datetime(DAY.year, DAY.month, DAY.day, 9)
IPS = [None, "10.0.0.1", "10.0.0.2", "2001:db8::1", "'; DROP TABLE stats; --", ""]
RS = RECORDSETS[:3]
RECORDS = ["rec-a", "rec-b"]
# Moments around 09:00 and the 30 s limit: a repeat at +30 s is a double click, at +30.000001 s not;
# 08:59:45 and 09:00:10 are 25 s apart but in two hours, so two sessions.
OFFSETS = [-15, -0.000001, 0, 0, 1, 29, 30, 30.000001, 31, 45, 59, 60, 61, 90, 3599.999999, 3600]

payloads = st.one_of(
    st.dictionaries(st.sampled_from(RECORDS), st.sampled_from(RS), min_size=1, max_size=2),
    st.dictionaries(st.sampled_from(RS), st.integers(0, 5), min_size=1, max_size=2),
    st.sampled_from([{"rec-a": ""}, {"": "x"}, {"rec-a": 5}, {RS[0]: "x"}, {RS[0]: -1}, [1]]),
)
events = st.tuples(
    st.sampled_from(OFFSETS),
    st.sampled_from(["view", "view", "download", "download", "seen", "search"]),
    st.sampled_from(["records", "records", "mediarecords", "recordsets"]),
    st.sampled_from(IPS),
    payloads,
)
# Repeats of one event: each gap after the previous one, around the 30 s limit.
GAPS = [0, 1, 29, 30, 30.000001, 31, 3600]


def repeated(event: tuple[Any, ...], gaps: list[float]) -> list[tuple[Any, ...]]:
    at, *rest = event
    out = [event]
    for gap in gaps:
        at += gap
        out.append((at, *rest))
    return out


chains = st.builds(repeated, events, st.lists(st.sampled_from(GAPS), max_size=4))
days = st.lists(chains, min_size=1, max_size=6).map(lambda groups: [row for group in groups for row in group])


class CounterDay:
    """One database for every example; each example's rows replace the last one's."""

    def __init__(self, server: embedded.EmbeddedPostgres) -> None:
        self.dsn = server.create_database(f"c_{uuid.uuid4().hex[:12]}")
        self.conn = psycopg2.connect(self.dsn)
        self.conn.autocommit = True
        synthetic.create_schema(self.conn)
        with self.conn.cursor() as cur:
            cur.execute("ALTER TABLE stats ALTER COLUMN payload DROP NOT NULL")

    def replace(self, rows: list[tuple[Any, ...]]) -> None:
        with self.conn.cursor() as cur:
            cur.execute("DELETE FROM stats")
            for offset, event_type, record_type, ip, payload in rows:
                cur.execute(
                    "INSERT INTO stats (date, type, record_type, ip, payload) VALUES (%s, %s, %s, %s, %s)",
                    (NINE + timedelta(seconds=offset), event_type, record_type, ip, json.dumps(payload)),
                )

    def rows(self) -> list[TelemetryRow]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT id, type, record_type, NULL, ip_geocode::text, payload::text, date, ip FROM stats "
                "ORDER BY id"
            )
            return [
                TelemetryRow(r[0], r[1], r[2], r[3], load_json(r[4]), load_json(r[5]), r[6], r[7])
                for r in cur
            ]

    def config(self, engine: str) -> Config:
        return load_config(overrides={"source.dsn": self.dsn, "collect.engine": engine}, environ={})


@pytest.fixture(scope="module")
def counter_day(pg_server: embedded.EmbeddedPostgres) -> Iterator[CounterDay]:
    day = CounterDay(pg_server)
    yield day
    day.conn.close()


def engine_figures(config: Config) -> list[dict[str, Any]]:
    source = open_source(config)
    try:
        with source.read_day(HARVEST[0]) as telemetry:
            return list(day_documents(telemetry, HARVEST[0], DayStats(HARVEST[0])))
    finally:
        source.close()


@pytest.mark.parametrize("engine", ENGINES)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=days)
def test_engines_equal_rules_and_brute_force(
    counter_day: CounterDay, engine: str, rows: list[tuple[Any, ...]]
) -> None:
    counter_day.replace(rows)
    telemetry = counter_day.rows()
    rules = counter_figures(telemetry, UTC)
    docs = engine_figures(counter_day.config(engine))
    assert {d["recordset_id"]: d[COUNTER_KEY] for d in docs} == {
        d["recordset_id"]: rules.get(d["recordset_id"], CounterFigures()).as_block() for d in docs
    }
    # Every recordset with figures has its document (its views or downloads are counted there).
    assert set(rules) <= {d["recordset_id"] for d in docs}


def test_known_day_figures(counter_day: CounterDay) -> None:
    """A worked example, by hand: the double-click chain, the hour boundary, NULL ip."""
    a, b = RS[0], RS[1]
    counter_day.replace(
        [
            (0, "view", "records", "10.0.0.1", {"rec-a": a}),
            (30, "view", "records", "10.0.0.1", {"rec-a": a}),  # +30 s: a double click
            (55, "view", "records", "10.0.0.1", {"rec-a": a}),  # +25 s: the chain goes on: one
            (90, "view", "records", "10.0.0.1", {"rec-a": a}),  # +35 s: a second one
            (-15, "view", "records", "10.0.0.1", {"rec-a": a}),  # 08:59:45: another hour, another session
            (1, "view", "records", "10.0.0.2", {"rec-b": a}),
            (2, "download", "records", "10.0.0.2", {a: 3, b: 0}),
            (3, "download", "records", None, {a: 1}),  # no ip: a session of its own
            (4, "download", "records", None, {a: 1}),
        ]
    )
    expected = {
        # Sessions of a: 10.0.0.1 at 9 and at 8, 10.0.0.2 at 9, and each row without an ip.
        a: CounterFigures(
            investigations_total=7, investigations_unique=5, requests_total=3, requests_unique=3
        ),
        b: CounterFigures(1, 1, 1, 1),
    }
    assert counter_figures(counter_day.rows(), UTC) == expected
    for engine in ENGINES:
        docs = {d["recordset_id"]: d[COUNTER_KEY] for d in engine_figures(counter_day.config(engine))}
        assert docs == {rs: f.as_block() for rs, f in expected.items()}


def test_without_an_ip_column_figures_are_absent(
    dsn: str, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    insert_rows(dsn, random_rows(3, DAY, n=40, bad=False))
    expected = reference_day(dsn, HARVEST[0]).documents
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE stats DROP COLUMN ip")
    conn.close()
    config = load_config(overrides={"source.dsn": dsn, "collect.engine": engine}, environ={})
    with caplog.at_level(logging.WARNING, logger="idb_stats"):
        (stats,) = collect(config, Selection(day=HARVEST[0])).days
    warnings = [r.getMessage() for r in caplog.records if "COUNTER-style" in r.getMessage()]
    assert len(warnings) == 1, warnings
    with open_store(config) as store:
        daily = list(store.export(HARVEST[0], HARVEST[0]))
    assert daily and stats.recordsets == len(daily)
    assert all(COUNTER_KEY not in doc for doc in daily)
    # Everything else as the rules count it.
    assert daily == [{k: v for k, v in doc.items() if k != COUNTER_KEY} for doc in expected]


def test_a_run_of_several_processes_warns_once(dsn: str) -> None:
    """Without an `ip` column, a run of worker processes (--jobs 2) warns once, not once each."""
    load_week(dsn)
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE stats DROP COLUMN ip")
    conn.close()
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    result = run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), "--jobs", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("COUNTER-style figures") == 1, result.stderr


def test_figures_survive_export_and_import(dsn: str, tmp_path: Any) -> None:
    insert_rows(dsn, random_rows(5, DAY, n=120, bad=False))
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("collect-stats", "--date", HARVEST[0].isoformat(), env=env).returncode == 0
    exported = run("export", "--from", HARVEST[0].isoformat(), "--to", HARVEST[0].isoformat(), env=env)
    assert exported.returncode == 0, exported.stderr
    docs = exported_documents(exported.stdout)
    assert docs == reference_day(dsn, HARVEST[0]).documents
    assert any(doc[COUNTER_KEY]["investigations"]["total"] for doc in docs)
    path = tmp_path / "day.ndjson"
    path.write_text(exported.stdout)
    other = tmp_path / "imported.toml"
    other.write_text('[store]\nschema = "imported"\n')
    imported = run("import", "--config", str(other), str(path), env=env)
    assert imported.returncode == 0, imported.stderr
    day = HARVEST[0].isoformat()
    again = run("export", "--config", str(other), "--from", day, "--to", day, env=env)
    assert again.stdout == exported.stdout
    # A figure no collect could have made is refused, with the line and what is wrong.
    doc = docs[0]
    doc[COUNTER_KEY]["investigations"] = {"total": 1, "unique": 2}
    lines = exported.stdout.splitlines()
    path.write_text(
        "\n".join(
            line if json.loads(line).get("recordset_id") != doc["recordset_id"] else json.dumps(doc)
            for line in lines
        )
        + "\n"
    )
    refused = run("import", "--config", str(other), str(path), env=env)
    assert refused.returncode != 0 and "counter" in refused.stderr, refused.stderr


KNOWN_IPS = ["203.0.113.77", "2001:db8::beef", "client-ZQXJ-address"]
# A sha256 (or any 256-bit hash) in hex: no keyed hash of an address may leave PostgreSQL either.
HEX_HASH = re.compile(r"[0-9a-fA-F]{64}")


def _search_dump(url: str, index: str) -> str:
    request = urllib.request.Request(
        f"{url}/{index}/_search",
        data=json.dumps({"size": 10_000, "query": {"match_all": {}}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


@pytest.mark.parametrize("kind", ["postgres", "opensearch"])
def test_no_address_leaves_postgresql(
    dsn: str, kind: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """A day with known client addresses, through collect, verify, export, import, report, status
    and show: no address, and no 64-hex-digit hash, in any store table or index, file written or
    log line."""
    rows = random_rows(9, DAY, n=150, bad=False)
    insert_rows(dsn, rows)
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:  # every row gets one of the known addresses (or none)
        cur.execute("UPDATE stats SET ip = (ARRAY[%s, %s, %s, NULL])[1 + id %% 4]", KNOWN_IPS)
    conn.close()
    config = tmp_path / "config.toml"
    prefix = f"priv-{uuid.uuid4().hex[:8]}"
    indexes = {name: f"{prefix}-{name}" for name in ("daily", "totals", "runs", "api", "publishers")}
    if kind == "postgres":
        config.write_text('[store]\nschema = "private"\n')
    else:
        url = request.getfixturevalue("osmem_url")
        config.write_text(
            f'[store]\nkind = "opensearch"\nurl = "{url}"\n'
            + "".join(f'{name}_index = "{index}"\n' for name, index in indexes.items())
        )
    env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_CONFIG": str(config)}
    day = HARVEST[0].isoformat()
    out = tmp_path / "out"
    out.mkdir()
    commands = [
        ("init",),
        ("collect-stats", "--date", day, "-v"),
        ("verify", "--from", day, "--to", day, "-v"),
        ("export", "--from", day, "--to", day, "-o", str(out / "export.ndjson")),
        ("report", "--from", day, "--to", day, "--out", str(out / "report")),
        ("status", "--json"),
        ("show", "--from", day, "--to", day, "--json", *RECORDSETS[:3]),
        ("collect-stats", "--date", day, "--log-format", "json", "-v"),
    ]
    written = []
    for command in commands:
        result = run(*command, env=env)
        assert result.returncode == 0, (command, result.stderr)
        written += [result.stdout, result.stderr]
    exported = exported_documents((out / "export.ndjson").read_text())
    assert any(doc[COUNTER_KEY]["investigations"]["unique"] for doc in exported)
    written += [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()]
    if kind == "postgres":
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'private'")
            tables = [name for (name,) in cur.fetchall()]
            assert "daily" in tables
            for table in tables:
                cur.execute(f"SELECT coalesce(string_agg(t::text, chr(10)), '') FROM private.\"{table}\" t")
                dump = (cur.fetchone() or ("",))[0]
                assert dump or table in ("api_snapshots", "changes"), table
                written.append(dump)
        conn.close()
    else:
        dumps = {name: _search_dump(url, index) for name, index in indexes.items() if name != "api"}
        assert "investigations" in dumps["daily"] and "run_id" in dumps["runs"]
        written += dumps.values()
    everything = "\n".join(written)
    assert "recordset_id" in everything  # the dumps hold the documents
    for address in KNOWN_IPS:
        assert address not in everything
    assert not HEX_HASH.search(everything), HEX_HASH.search(everything)


FALL_BACK = datetime(2020, 11, 1, 5, 0, tzinfo=UTC)  # 01:00 EDT; 06:00Z is 01:00 EST again


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    moments=st.lists(
        st.tuples(st.integers(-60, 7260), st.sampled_from(IPS[:3]), st.sampled_from(["view", "download"])),
        min_size=1,
        max_size=10,
    )
)
def test_sessions_follow_the_zone_on_a_fall_back_day(
    counter_day: CounterDay, engine: str, moments: list[tuple[int, str | None, str]]
) -> None:
    """A timestamptz telemetry in America/New_York: the repeated hour 01:00-02:00 is two hours, so
    01:59:50 EDT and 01:00:10 EST (20 s apart) are two sessions, as rules.py says."""
    zone = "America/New_York"
    with counter_day.conn.cursor() as cur:
        cur.execute("DELETE FROM stats")
        cur.execute("ALTER TABLE stats ALTER COLUMN date TYPE timestamptz USING date AT TIME ZONE 'UTC'")
        for seconds, ip, event_type in moments:
            payload = {"rec-a": RS[0]} if event_type == "view" else {RS[0]: 1}
            cur.execute(
                "INSERT INTO stats (date, type, record_type, ip, payload) VALUES (%s, %s, 'records', %s, %s)",
                (FALL_BACK + timedelta(seconds=seconds), event_type, ip, json.dumps(payload)),
            )
    try:
        rows = counter_day.rows()
        expected = counter_figures(rows, ZoneInfo(zone))
        assert expected and len(rows) == len(moments)
        config = load_config(
            overrides={"source.dsn": counter_day.dsn, "collect.engine": engine, "source.timezone": zone},
            environ={},
        )
        source = open_source(config)
        try:
            with source.read_day(date(2020, 11, 2)) as telemetry:
                assert telemetry.counter == expected
        finally:
            source.close()
    finally:
        with counter_day.conn.cursor() as cur:
            cur.execute("DELETE FROM stats")
            cur.execute("ALTER TABLE stats ALTER COLUMN date TYPE timestamp USING date AT TIME ZONE 'UTC'")


def test_verify_compares_the_figures_where_stored(dsn: str, engine: str) -> None:
    """A stored figure changed is a difference verify names; a document stored without figures
    (adopted, imported or collected before them) is not one: absent is unknown."""
    insert_rows(dsn, random_rows(11, DAY, n=100, bad=False))
    config = load_config(overrides={"source.dsn": dsn, "collect.engine": engine}, environ={})
    collect(config, Selection(day=HARVEST[0]))
    assert verify(config).report.agrees
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT recordset_id FROM idb_stats.daily "
            "WHERE (doc->'counter'->'investigations'->>'total')::int > 0 ORDER BY recordset_id LIMIT 2"
        )
        changed, dropped = (rs for (rs,) in cur.fetchall())
        cur.execute(
            "UPDATE idb_stats.daily SET doc = jsonb_set(doc::jsonb, '{counter,investigations,unique}', "
            "to_jsonb((doc->'counter'->'investigations'->>'unique')::int + 1))::json WHERE recordset_id = %s",
            (changed,),
        )
        cur.execute(
            "UPDATE idb_stats.daily SET doc = (doc::jsonb - 'counter')::json WHERE recordset_id = %s",
            (dropped,),
        )
    conn.close()
    differences: list[Any] = []
    outcome = verify(config, on_difference=lambda d, _: differences.append(d))
    assert not outcome.report.agrees
    assert [(d.recordset_id, d.path) for d in differences] == [(changed, "counter.investigations.unique")]
