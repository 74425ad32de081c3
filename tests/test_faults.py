"""Crash safety, concurrency and transport faults, injected through real sockets."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from helpers import (
    HARVEST,
    MakeConfig,
    assert_consistent,
    holding_lock,
    insert_rows,
    load_week,
    other_store,
    random_rows,
    request_lost,
    run_process,
    snapshot,
)
from proxies import ElasticsearchProxy, TcpCutProxy

import idb_stats.collect
from idb_stats import synthetic
from idb_stats.collect import RunResult, Selection
from idb_stats.config import ENGINES
from idb_stats.errors import IdbStatsError, LockHeld

DAY = HARVEST[1]


def collect(config: Any, **selection: Any) -> RunResult:
    return idb_stats.collect.collect(config, Selection(**selection))


def prepare(dsn: str, config: Any) -> None:
    """Days 0..3 published, then late rows for DAY so a re-run really changes it."""
    load_week(dsn)
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    insert_rows(dsn, random_rows(99, DAY - timedelta(days=1), n=40, bad=False))


def clean_run(make_config: MakeConfig) -> Any:
    """What one clean run of every day gives, in a store of its own."""
    clean = other_store(make_config, "clean")
    collect(clean, first=HARVEST[0], last=HARVEST[-1])
    return snapshot(clean)


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_postgres_connection_cut_at_every_stage_then_rerun(make_config: MakeConfig, dsn: str) -> None:
    params = psycopg2.extensions.parse_dsn(dsn)
    proxy = TcpCutProxy(params["host"], int(params["port"]))
    via_proxy = dsn.replace(f"port={params['port']}", f"port={proxy.port}")
    config = make_config(**{"store.url": via_proxy})
    prepare(dsn, config)
    # Measure what a whole publish of the day sends, then cut at points spread across it.
    proxy.client_bytes = 0
    collect(config, day=DAY)
    full = proxy.client_bytes
    for fraction in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95):
        insert_rows(dsn, random_rows(int(fraction * 100), DAY - timedelta(days=1), n=5, bad=False))
        proxy.client_bytes, proxy.cut_after = 0, int(full * fraction)
        with pytest.raises(IdbStatsError):
            collect(config, day=DAY)
        proxy.cut_after = None
        assert_consistent(*snapshot(config))  # one transaction: never half a day
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    got = snapshot(config)
    proxy.close()
    assert got == clean_run(make_config)
    assert_consistent(*got)


@pytest.mark.parametrize("store_kind", ["elasticsearch"], indirect=True)
def test_search_store_request_dropped_at_every_step_then_rerun(
    make_config: MakeConfig, dsn: str, es_proxy: ElasticsearchProxy
) -> None:
    config = make_config(**{"store.bulk_max_retries": 0})
    prepare(dsn, config)
    # The first re-run publishes the late rows and records the change; later re-runs find the
    # same numbers and record none, so count the requests of one of those.
    collect(config, day=DAY)
    es_proxy.requests.clear()
    collect(config, day=DAY)
    steps = len(es_proxy.requests)
    assert steps > 8
    # The last request frees the run lock: the run has recorded its end by then, so losing it
    # fails nothing; the lock left behind expires with its lease (below).
    method, path = es_proxy.requests[-1]
    assert method == "DELETE" and "/_doc/run-lock" in path
    for step in range(steps - 1):
        with request_lost(es_proxy, step), pytest.raises(IdbStatsError):
            collect(config, day=DAY)
    short_lease = make_config(**{"store.bulk_max_retries": 0, "store.lock_lease": 3})
    es_proxy.fault = lambda method, path, body: (
        "drop" if "/_doc/run-lock" in path and method == "DELETE" else None
    )
    try:
        collect(short_lease, day=DAY)
    finally:
        es_proxy.fault = None
    with pytest.raises(LockHeld):
        idb_stats.collect.collect(short_lease, Selection(day=DAY), lock_timeout=0)
    idb_stats.collect.collect(short_lease, Selection(day=DAY), lock_timeout=10)  # taken over
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    got = snapshot(config)
    assert got == clean_run(make_config)
    assert_consistent(*got)


@pytest.mark.parametrize("store_kind", ["elasticsearch"], indirect=True)
def test_bulk_throttling_and_dropped_bulks_lose_and_double_nothing(
    make_config: MakeConfig, dsn: str, es_proxy: ElasticsearchProxy
) -> None:
    config = make_config(**{"store.bulk_max_retries": 8, "store.bulk_chunk_bytes": 2000})
    load_week(dsn)
    calls = [0]

    def fault(method: str, path: str, body: bytes) -> Any:
        if path.startswith("/_bulk"):
            calls[0] += 1
            return {
                1: ("status", 429),
                2: ("status", 503),
                4: "drop_after",
                6: "drop",
                7: ("status", 504),
            }.get(calls[0] % 8)
        return None

    es_proxy.fault = fault
    try:
        collect(config, first=HARVEST[0], last=HARVEST[-1])
    finally:
        es_proxy.fault = None
    assert calls[0] > 16
    got = snapshot(config)
    assert got == clean_run(make_config)


@pytest.mark.parametrize("store_kind", ["elasticsearch"], indirect=True)
def test_totals_conflict_is_reread_and_merged(
    make_config: MakeConfig, dsn: str, es_proxy: ElasticsearchProxy, osmem_url: str
) -> None:
    """Another writer touches a totals document between our read and our write: the server answers
    409 for it, we re-read and merge again."""
    import json
    import urllib.request

    config = make_config()
    load_week(dsn)
    collect(config, day=HARVEST[0])
    conflicts = [0]

    def fault(method: str, path: str, body: bytes) -> Any:
        text = body.decode()
        if (
            path.startswith("/_bulk")
            and config.totals_index in text
            and "if_seq_no" in text
            and conflicts[0] < 3
        ):
            conflicts[0] += 1
            meta = json.loads(text.splitlines()[0])
            action = next(iter(meta.values()))
            url = f"{osmem_url}/{config.totals_index}/_doc/{action['_id']}"
            current = json.loads(urllib.request.urlopen(url).read())["_source"]
            request = urllib.request.Request(
                url,
                data=json.dumps(current).encode(),
                method="PUT",
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request).read()  # same content, new seq_no: a concurrent writer
        return None

    es_proxy.fault = fault
    try:
        collect(config, first=HARVEST[1], last=HARVEST[-1])
    finally:
        es_proxy.fault = None
    assert conflicts[0] == 3
    got = snapshot(config)
    assert got == clean_run(make_config)


def test_two_runs_at_once_serialize_on_the_lock(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    idb_stats.collect.collect(config, Selection(day=HARVEST[0]))  # init
    errors: list[BaseException] = []

    def run() -> None:
        try:
            collect(config, first=HARVEST[0], last=HARVEST[-1])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert snapshot(config) == clean_run(make_config)


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_second_run_exits_with_lock_code_when_it_cannot_wait(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    with holding_lock(config), pytest.raises(LockHeld) as caught:
        idb_stats.collect.collect(config, Selection(day=HARVEST[0]), lock_timeout=0.3)
    assert caught.value.exit_code == 7
    collect(config, day=HARVEST[0])  # the lock is free again


def test_parallel_days_equal_serial(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    idb_stats.collect.collect(config, Selection(first=HARVEST[0], last=HARVEST[-1]), jobs=2)
    assert snapshot(config) == clean_run(make_config)


PLAN = f"harvest date {DAY} (1 day)"


@pytest.mark.parametrize("engine", ENGINES)
def test_telemetry_connection_cut_while_streaming_exits_4_and_writes_nothing(
    dsn: str, engine: str, tmp_path: Path
) -> None:
    # A wide day (every stream sends lists of 1,600 recordsets, fetched a batch ahead from a
    # thread per stream; or one COPY of the day's rows): wherever the telemetry connections are
    # cut, the run ends with exit 4 in one line, the published day is untouched, and nothing hangs
    # (run_process() times out at 300 s). The runs are processes of their own: psycopg2 holds the
    # GIL in PQcancel, so a run in this process cancelling a stream through the proxy (whose
    # threads need the GIL to forward the cancel request) waited forever.
    config = tmp_path / "config.toml"
    config.write_text(f'[collect]\nengine = "{engine}"\n')
    conn = psycopg2.connect(dsn)
    spec = synthetic.Spec(first_day=DAY - timedelta(days=1), days=1, rows_per_day=3_000, shape=synthetic.WIDE)
    synthetic.load(conn, spec)
    conn.close()
    params = psycopg2.extensions.parse_dsn(dsn)
    proxy = TcpCutProxy(params["host"], int(params["port"]))
    env = {
        "IDB_STATS_SOURCE_DSN": dsn.replace(f"port={params['port']}", f"port={proxy.port}"),
        "IDB_STATS_STORE": "postgres",
        "IDB_STATS_STORE_URL": dsn,
    }
    try:
        collect = ("collect-stats", "--config", str(config), "--date", str(DAY))
        assert run_process(*collect, env=env).returncode == 0
        published = run_process("export", "--from", str(DAY), "--to", str(DAY), env=env).stdout
        full = proxy.client_bytes
        for fraction in (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99):
            proxy.client_bytes, proxy.cut_after = 0, int(full * fraction)
            cut = run_process(*collect, env=env)
            proxy.cut_after = None
            assert cut.returncode == 4, (fraction, cut.stderr)
            error = [line for line in cut.stderr.splitlines() if not line.endswith("INFO    plan: " + PLAN)]
            assert len(error) == 1 and "telemetry database went away" in error[0], cut.stderr
            assert run_process("export", "--from", str(DAY), "--to", str(DAY), env=env).stdout == published
    finally:
        proxy.close()
