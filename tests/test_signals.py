"""SIGTERM, SIGINT and SIGKILL sent to a real `idb-stats collect-stats` in the middle of a big day:
exit code, the ledger, no query left on the server, the lock free, no day marked complete."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from helpers import query

from idb_stats import embedded, synthetic
from idb_stats.config import ENGINES, load_config
from idb_stats.pg import lock_name
from idb_stats.stores import open_store

ROOT = Path(__file__).resolve().parent.parent
FIRST_EVENTS = date(2024, 3, 1)
HARVEST = [FIRST_EVENTS + timedelta(days=1), FIRST_EVENTS + timedelta(days=2)]
ROWS_PER_DAY = 60_000  # a few seconds of aggregation a day: long enough to be stopped mid-flight

# Real processes on days big enough to be mid-flight when signalled: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_dsn(pg_server: embedded.EmbeddedPostgres) -> str:
    """Two busy days of telemetry, shared (read only) by the tests here; each writes its own schema."""
    dsn = pg_server.create_database(f"signals_{uuid.uuid4().hex[:8]}")
    conn = psycopg2.connect(dsn)
    synthetic.load(conn, synthetic.Spec(FIRST_EVENTS, days=2, rows_per_day=ROWS_PER_DAY))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ANALYZE")
    conn.close()
    return dsn


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def idb_sessions(dsn: str) -> list[tuple[Any, ...]]:
    return query(
        dsn,
        "SELECT pid, application_name, state, left(query, 60) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'idb-stats%%' "
        "AND pid <> pg_backend_pid()",
    )


def aggregating(dsn: str) -> int:
    """Telemetry cell streams (the SQL engine) or the day's COPY (the stream engine) running on
    the server, told by the phase each names itself by (pg.name_phase)."""
    return sum(
        1
        for _, app, state, _ in idb_sessions(dsn)
        if app.startswith(("idb-stats telemetry: aggregating", "idb-stats telemetry: copying"))
        and state == "active"
    )


def publishing(dsn: str) -> bool:
    """The store's transaction publishing the day is open (its documents are streaming in)."""
    return any(
        app.startswith("idb-stats statistics store: publishing")
        and state in ("active", "idle in transaction")
        for _, app, state, _ in idb_sessions(dsn)
    )


def start(
    dsn: str, tmp_path: Path, schema: str, *args: str, engine: str = "stream"
) -> tuple[subprocess.Popen[str], Any]:
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[store]\nschema = "{schema}"\n[collect]\nengine = "{engine}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDB_STATS_") and k != "JOURNAL_STREAM"}
    env["IDB_STATS_SOURCE_DSN"] = dsn
    process = subprocess.Popen(
        [sys.executable, "-m", "idb_stats.cli", "collect-stats", "--config", str(config_file), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    config = load_config(config_file, {"source.dsn": dsn}, environ={})
    return process, config


def lock_is_free(config: Any) -> bool:
    store = open_store(config)
    identity = store.identity
    store.close()
    conn = psycopg2.connect(config.source_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock_name(identity),))
            return cur.fetchone() == (True,)
    finally:
        conn.close()


def completed(dsn: str, schema: str) -> list[tuple[Any, ...]]:
    if query(dsn, "SELECT to_regclass(%s)", (f"{schema}.days",)) == [(None,)]:
        return []
    return query(dsn, f"SELECT harvest_date, completed_at FROM {schema}.days")


def last_run(dsn: str, schema: str) -> dict[str, Any]:
    [(doc,)] = query(dsn, f"SELECT doc FROM {schema}.runs ORDER BY started_at DESC LIMIT 1")
    return dict(doc)


@pytest.mark.parametrize(
    ("signum", "code", "phase"),
    [
        (signal.SIGTERM, 143, "aggregating"),
        (signal.SIGINT, 130, "aggregating"),
        (signal.SIGTERM, 143, "publishing"),
    ],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_signal_mid_day_cancels_records_and_releases(
    big_dsn: str, tmp_path: Path, signum: int, code: int, phase: str, engine: str
) -> None:
    schema = f"sig_{signum}_{phase}_{uuid.uuid4().hex[:6]}"
    process, config = start(big_dsn, tmp_path, schema, "-d", str(HARVEST[0]), engine=engine)
    try:
        if phase == "aggregating":
            wait_for(lambda: aggregating(big_dsn) > 0, 120, "the day's aggregation running on the server")
        else:
            wait_for(lambda: publishing(big_dsn), 120, "the day's publish transaction open")
        time.sleep(0.3)
        process.send_signal(signum)
        stopped = time.monotonic()
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr
    assert time.monotonic() - stopped < 15, "the signal waited for the query to finish"
    assert signal.Signals(signum).name in stderr and "Traceback" not in stderr
    wait_for(lambda: not idb_sessions(big_dsn), 5, f"idb-stats sessions gone: {idb_sessions(big_dsn)}")
    assert completed(big_dsn, schema) == []
    assert query(big_dsn, f"SELECT count(*) FROM {schema}.daily") == [(0,)]  # rolled back whole
    run = last_run(big_dsn, schema)
    assert run["outcome"] == "interrupted" and signal.Signals(signum).name in run["error"]
    assert lock_is_free(config)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_parallel_workers_die_with_their_parent(big_dsn: str, tmp_path: Path, signum: int) -> None:
    schema = f"jobs_{signum}_{uuid.uuid4().hex[:6]}"
    process, config = start(
        big_dsn, tmp_path, schema, "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), "--jobs", "2"
    )
    try:
        wait_for(lambda: aggregating(big_dsn) >= 2, 120, "both workers aggregating")
        time.sleep(0.3)
        [(killed_at,)] = query(big_dsn, "SELECT clock_timestamp()")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    if signum != signal.SIGKILL:
        assert process.returncode == 128 + signum, stderr
        assert "Traceback" not in stderr
        assert last_run(big_dsn, schema)["outcome"] == "interrupted"
    # The workers went with it: their queries cancelled, their connections closed, the lock free.
    wait_for(lambda: not idb_sessions(big_dsn), 8, f"idb-stats sessions gone: {idb_sessions(big_dsn)}")
    wait_for(lambda: lock_is_free(config), 5, "the run lock free")
    time.sleep(1)
    assert [day for day, at in completed(big_dsn, schema) if at >= killed_at] == []


def descendants(pid: int) -> set[int]:
    """Every living process below pid, from /proc (workers, multiprocessing's resource tracker)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":  # a zombie has ended; only its exit status is left
                parents[int(entry)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        children = {p for p, pp in parents.items() if pp == parent}
        found |= children
        todo += children
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                living.add(pid)
    return living


def importing_workers(pid: int) -> int:
    """Workers past their first import of idb_stats (psycopg2's library is mapped: imported after
    it) and still importing the rest. The interpreter's own start-up before that import is the one
    moment not covered: nothing of ours runs there yet."""
    count = 0
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            if (
                "spawn_main" in Path(f"/proc/{child}/cmdline").read_text()
                and "_psycopg" in Path(f"/proc/{child}/maps").read_text()
            ):
                count += 1
    return count


@pytest.mark.parametrize("moment", ["starting", "aggregating"])
def test_workers_are_gone_within_a_second_of_a_sigkill(big_dsn: str, tmp_path: Path, moment: str) -> None:
    """SIGKILL of the run, three times: while its workers import (1-2 s before they asked to die
    with their parent, in the pool's initializer), or while they aggregate. Every process it
    started is gone within a second."""
    for attempt in range(3):
        schema = f"gone_{moment}_{attempt}_{uuid.uuid4().hex[:6]}"
        process, _ = start(
            big_dsn, tmp_path, schema, "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), "--jobs", "2"
        )
        try:
            if moment == "starting":
                workers = lambda pid=process.pid: importing_workers(pid) >= 2  # noqa: E731
                wait_for(workers, 120, "the workers importing")
            else:
                wait_for(lambda: aggregating(big_dsn) >= 2, 120, "both workers aggregating")
            started = descendants(process.pid)
            process.kill()
            process.wait()
            killed = time.monotonic()
            while alive(started) and time.monotonic() - killed < 1:
                time.sleep(0.02)
            left = alive(started)
        finally:
            if process.poll() is None:
                process.kill()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"attempt {attempt}: still alive 1 s after the run's SIGKILL: {sorted(left)}"
