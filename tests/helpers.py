"""Test helpers shared by the test modules (which never import each other): write telemetry rows,
compute what the rules say they aggregate to, the collected test week, and the CLI as a process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from click.testing import CliRunner

import idb_stats.collect
from idb_stats import cli, logs, synthetic
from idb_stats.clock import SYSTEM_CLOCK, Clock
from idb_stats.collect import RunResult, Selection
from idb_stats.config import Config, load_config
from idb_stats.documents import day_documents
from idb_stats.engines import open_source
from idb_stats.ledger import new_run
from idb_stats.model import BLOCKS, DayStats
from idb_stats.rules import RulesDay, TelemetryRow, aggregate_day, load_json
from idb_stats.runs import RunRecord
from idb_stats.stores import open_store
from idb_stats.synthetic import fake_uuid

ROOT = Path(__file__).resolve().parent.parent
# The store matrix: every test that takes make_config runs on each kind. The memory store
# (stores/memory.py) joins it where a test module asks for it (store_params(memory=True)): it
# lives in the test's process, so tests that run the CLI as a process cannot reach it.
STORE_KINDS = ["postgres", "opensearch", "elasticsearch"]
REAL_CLUSTERS = {"opensearch": "IDB_STATS_TEST_OPENSEARCH_URL", "elasticsearch": "IDB_STATS_TEST_ES_URL"}
MakeConfig = Callable[..., Config]

Row = tuple[datetime, str, Any, Any, Any, Any]  # date, type, record_type, query hash, geocode, payload


def store_params(memory: bool = False) -> list[Any]:
    """The store kinds of the matrix, and real clusters (skipped unless their URL is set)."""
    params: list[Any] = [*STORE_KINDS, *(["memory"] if memory else [])]
    for kind, variable in REAL_CLUSTERS.items():
        params.append(
            pytest.param(
                f"real-{kind}",
                marks=pytest.mark.skipif(
                    not os.environ.get(variable), reason=f"{variable} not set: no real {kind} cluster"
                ),
            )
        )
    return params


def insert_rows(dsn: str, rows: list[Row]) -> None:
    """Insert telemetry; a query hash is created in `queries` on first use. Payloads and geocodes
    are written as given (JSON values of any type), so bad rows can be made too."""
    conn = psycopg2.connect(dsn)
    synthetic.create_schema(conn)
    with conn, conn.cursor() as cur:
        for at, event_type, record_type, query_hash, geo, payload in rows:
            query_id = None
            if query_hash is not None:
                cur.execute(
                    "INSERT INTO queries (query_hash, query) VALUES (%s, '{}') ON CONFLICT (query_hash) "
                    "DO UPDATE SET query_hash = EXCLUDED.query_hash RETURNING id",
                    (query_hash,),
                )
                (query_id,) = cur.fetchone() or (None,)
            cur.execute(
                "INSERT INTO stats (date, type, record_type, query_id, source, ip, ip_geocode, payload) "
                "VALUES (%s, %s, %s, %s, 'api', '127.0.0.1', %s, %s)",
                (
                    at,
                    event_type,
                    record_type,
                    query_id,
                    None if geo is None else json.dumps(geo),
                    json.dumps(payload),
                ),
            )
    conn.close()


def reference(dsn: str, harvest_date: date, limit: int = 0) -> tuple[list[dict[str, Any]], Any]:
    """Documents and skip report of a day by the plain statement of the rules (idb_stats.rules)."""
    day = reference_day(dsn, harvest_date, limit)
    return day.documents, day.report


def reference_day(dsn: str, harvest_date: date, limit: int = 0) -> RulesDay:
    """A day by the plain statement of the rules: documents, skip report, publisher documents."""
    start, end = harvest_date - timedelta(days=1), harvest_date
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT s.id, s.type, s.record_type, q.query_hash, s.ip_geocode::text, s.payload::text, "
            "s.date, s.ip::text FROM stats s LEFT JOIN queries q ON q.id = s.query_id "
            "WHERE s.date >= %s AND s.date < %s ORDER BY s.id",
            (start, end),
        )
        rows = [
            TelemetryRow(r[0], r[1], r[2], r[3], load_json(r[4]), load_json(r[5]), r[6], r[7]) for r in cur
        ]
    conn.close()
    # The telemetry's `date` is a naive timestamp here: sessions' hours are its wall-clock hours.
    return aggregate_day(rows, harvest_date, limit, zone=UTC)


RECORDSETS = [fake_uuid(1, i) for i in range(12)]
PUBLISHERS = [fake_uuid(3, i) for i in range(4)]
QUERIES = [f"q{i:04d}" for i in range(8)]
GEOS: list[Any] = [{"country": "US", "region": "FL"}, {"country": "BR"}, {}, None, {"city": "Nowhere"}]


def random_rows(seed: int, day: date, n: int = 150, bad: bool = True) -> list[Row]:
    """Rows for the calendar day `day`, with edge cases: exact midnights (this day's and the next
    day's), NULL geocodes, rows without a query, and (bad=True) every kind of rule-breaking row."""
    rng = random.Random(seed)
    start = datetime(day.year, day.month, day.day)
    rows: list[Row] = []
    for i in range(n):
        at = rng.choice(
            [
                start,
                start + timedelta(days=1),
                start + timedelta(seconds=rng.uniform(0, 86399)),
                start - timedelta(microseconds=1),
            ]
        )
        event_type = rng.choice(["search", "seen", "mapping", "view", "download"])
        record_type = rng.choice(["records", "records", "mediarecords"])
        if i % 7 == 5:
            # A page view as the search API logs it (/v2/view/recordsets|publishers/:uuid): keyed by
            # the page, valued by the viewed document's absent `recordset` field, or nothing at all.
            record_type = rng.choice(["recordsets", "publishers"])
            pages = RECORDSETS if record_type == "recordsets" else PUBLISHERS
            rows.append(
                (
                    rng.choice([start + timedelta(seconds=rng.uniform(0, 86399)), start]),
                    "view",
                    record_type,
                    rng.choice([None, QUERIES[0]]),
                    rng.choice(GEOS),
                    {
                        rng.choice(pages): rng.choice([None, "", 5, [1]])
                        for _ in range(rng.choice([0, 1, 1, 2]))
                    },
                )
            )
            continue
        query = rng.choice([None, *QUERIES])
        geo = rng.choice(GEOS)
        if event_type in ("view", "seen"):
            payload: Any = {
                fake_uuid(2, rng.randrange(40)): rng.choice(RECORDSETS)
                for _ in range(rng.randint(0 if i % 17 == 0 else 1, 6))
            }
        else:
            payload = {
                # Integral floats (3.0) are valid hit counts too. Sums stay below 2**53: the search
                # engines sum in doubles, exact only up to there.
                rng.choice(RECORDSETS): rng.choice([0, 1, 2, 7, 150, 10**9, 3.0, 2**40])
                for _ in range(rng.randint(1, 5))
            }
        rows.append((at, event_type, record_type, query, geo, payload))
    if bad:
        some_rs = RECORDSETS[0]
        rows += [
            (start + timedelta(hours=1), "search", "_all", None, None, {some_rs: 1}),
            (start + timedelta(hours=1), "search", "publishers", None, None, {some_rs: 1}),
            (start + timedelta(hours=1), "search", None, None, None, {some_rs: 1}),
            (start + timedelta(hours=2), "facet", "records", None, None, {some_rs: 1}),
            (start + timedelta(hours=3), "search", "records", None, "US", {some_rs: 1}),
            (start + timedelta(hours=4), "view", "records", None, None, ["not", "an", "object"]),
            (start + timedelta(hours=5), "search", "records", "q0001", {}, {"": 3}),
            (start + timedelta(hours=6), "seen", "records", None, None, {fake_uuid(2, 1): 5}),
            (start + timedelta(hours=6), "view", "records", None, None, {fake_uuid(2, 1): ""}),
            (start + timedelta(hours=7), "search", "records", None, None, {some_rs: -1}),
            (start + timedelta(hours=7), "download", "records", None, None, {some_rs: 1.5}),
            (start + timedelta(hours=8), "mapping", "mediarecords", None, None, {some_rs: "12"}),
            (start + timedelta(hours=8), "search", "records", None, None, {some_rs: [5]}),
            (start + timedelta(hours=8), "seen", "records", None, None, {fake_uuid(2, 1): [some_rs]}),
            (start + timedelta(hours=9), "search", "records", None, {"country": 7}, {some_rs: 1}),
            (start + timedelta(hours=9), "search", "records", None, {"city": "x" * 1_000}, {some_rs: 1}),
            (start + timedelta(hours=9), "view", "records", None, None, {"r" * 501: some_rs}),
            (start + timedelta(hours=9), "view", "publishers", None, None, {"p" * 501: None}),
            (start + timedelta(hours=9), "view", "recordsets", None, {"country": 7}, {some_rs: None}),
        ]
    return rows


DAYS = [date(2020, 2, 17) + timedelta(days=i) for i in range(4)]  # calendar days of events
HARVEST = [d + timedelta(days=1) for d in DAYS]


def load_week(dsn: str) -> None:
    rows = []
    for i, day in enumerate(DAYS):
        rows += random_rows(10 + i, day, n=80, bad=False)
    insert_rows(dsn, rows)


def snapshot(config: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    store = open_store(config)
    try:
        return list(store.export(HARVEST[0], HARVEST[-1] + timedelta(days=1))), list(store.totals())
    finally:
        store.close()


def totals_from_daily(daily: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The invariant, computed the slow way: totals are the sum of the daily documents."""
    out: dict[str, dict[str, Any]] = {}
    for doc in daily:
        t = out.setdefault(doc["recordset_id"], {"days": set(), "blocks": {b: [0, 0] for b in BLOCKS}})
        t["days"].add(doc["harvest_date"])
        for rt, ty in BLOCKS:
            # A document written before a block existed (an older version's) reads it as zeros.
            block = doc.get(rt, {}).get(ty, {"count": 0, "total": 0})
            t["blocks"][(rt, ty)][0] += block["count"]
            t["blocks"][(rt, ty)][1] += block["total"]
    return out


def assert_consistent(daily: list[dict[str, Any]], totals: list[dict[str, Any]]) -> None:
    expected = totals_from_daily(daily)
    assert sorted(t["recordset_id"] for t in totals) == sorted(expected)
    for t in totals:
        e = expected[t["recordset_id"]]
        assert t["days"] == len(e["days"])
        assert t["first_harvest_date"] == min(e["days"]) and t["last_harvest_date"] == max(e["days"])
        for rt, ty in BLOCKS:
            block = t.get(rt, {}).get(ty, {"count": 0, "total": 0, "countries": []})
            assert [block["count"], block["total"]] == e["blocks"][(rt, ty)]
            assert sum(c["count"] for c in block["countries"]) == e["blocks"][(rt, ty)][1]


def collect(config: Any, clock: Clock = SYSTEM_CLOCK, **selection: Any) -> RunResult:
    return idb_stats.collect.collect(config, Selection(**selection), clock=clock)


def published(make_config: MakeConfig, dsn: str) -> tuple[Any, list[dict[str, Any]]]:
    """The test week collected into the test's store: its config and the daily documents."""
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    return config, snapshot(config)[0]


def other_store(make_config: MakeConfig, name: str) -> Config:
    """A second, empty store of the same kind beside the test's own (another schema or indexes)."""
    base = make_config()
    return make_config(
        **{
            "store.schema": name,
            **{
                f"store.{index}": f"{getattr(base, index)}-{name}"
                for index in ("daily_index", "totals_index", "runs_index", "api_index", "publishers_index")
            },
        }
    )


@contextlib.contextmanager
def holding_lock(config: Config, command: str = "api-stats") -> Iterator[RunRecord]:
    """The store's run lock, held by a run of `command` as a real run holds it (the run is not
    recorded in the ledger)."""
    holder = new_run(command)
    with open_store(config) as store, store.run_lock().hold(holder, 0):
        yield holder


def _inherited(name: str) -> bool:
    """What a command under test must not see of the test run's own environment."""
    return name.startswith("IDB_STATS_") or name == "JOURNAL_STREAM"


def run(
    *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`idb-stats ARGS` in this process through click's CliRunner: the same `cli.run` the entry
    point calls (exit codes, error lines, logging set up by the command), its standard streams and
    environment swapped for the call. A process start costs about 1 s of imports; tests that check
    what only a process shows (signals, kills, locks between processes, a closed pipe, the entry
    point itself) use `run_process`."""
    logger = logging.getLogger("idb_stats")
    saved = (list(logger.handlers), logger.level, logger.propagate, dict(logs._chosen))
    cwd = os.getcwd()
    environment: dict[str, str | None] = {k: None for k in os.environ if _inherited(k)}
    with CliRunner().isolation(input=input, env={**environment, **(env or {})}) as (out, err, _):
        os.chdir(ROOT)
        try:
            code = cli.run(list(args))
        except SystemExit as exc:  # sys.exit in a command (nagios checks, notify-failure)
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        finally:
            os.chdir(cwd)
            sys.stdout.flush()
            sys.stderr.flush()
            logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
            logs._chosen.update(saved[3])
    return subprocess.CompletedProcess(
        ["idb-stats", *args], code, out.getvalue().decode(), err.getvalue().decode("utf-8", "replace")
    )


def run_process(
    *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m idb_stats.cli ARGS` as a process of its own (the entry point, signals, pipes)."""
    base = {k: v for k, v in os.environ.items() if not _inherited(k)}
    return subprocess.run(
        [sys.executable, "-m", "idb_stats.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        input=input,
        cwd=ROOT,
        timeout=300,
    )


def exported_documents(text: str) -> list[dict[str, Any]]:
    """The daily documents of `idb-stats export`'s output, between its opening and closing lines."""
    lines = [json.loads(line) for line in text.split("\n") if line]
    assert "idb_stats_export" in lines[0] and "idb_stats_export_end" in lines[-1], text[:200]
    return lines[1:-1]


def execute(dsn: str, sql: str, params: Any = None) -> int:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(sql, params)
        changed = cur.rowcount
    conn.close()
    return changed


def window(harvest_date: date) -> dict[str, datetime]:
    start = datetime.combine(harvest_date - timedelta(days=1), datetime.min.time())
    return {"start": start, "end": start + timedelta(days=1)}


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


@contextlib.contextmanager
def request_lost(proxy: Any, step: int) -> Iterator[None]:
    """Through the Elasticsearch proxy, lose request number `step` (from 0): alternately the
    request itself, or the server's answer after it applied the request."""
    seen = [0]

    def fault(method: str, path: str, body: bytes) -> Any:
        seen[0] += 1
        return ("drop" if step % 2 else "drop_after") if seen[0] == step + 1 else None

    proxy.fault = fault
    try:
        yield
    finally:
        proxy.fault = None


def engine_config(dsn: str, engine: str = "sql") -> Config:
    """The telemetry database `dsn` read by an aggregation engine (collect.engine)."""
    return load_config(overrides={"source.dsn": dsn, "collect.engine": engine}, environ={})


def sql_documents(
    dsn: str, harvest_date: date, limit: int = 0, engine: str = "sql"
) -> tuple[list[dict[str, Any]], Any]:
    """Documents and skip report of a day as collect-stats computes them with `engine`."""
    source = open_source(engine_config(dsn, engine))
    try:
        with source.read_day(harvest_date) as telemetry:
            documents = list(day_documents(telemetry, harvest_date, DayStats(harvest_date), limit))
            return documents, telemetry.report
    finally:
        source.close()
