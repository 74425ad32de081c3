"""The run lock lives in the store: two configurations with different telemetry sources that write
one store exclude each other; a search store's lease is renewed while its run lives and taken over
once its run is killed; a run killed outright is shown by status as abandoned."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from helpers import HARVEST, ROOT, MakeConfig, holding_lock, insert_rows, load_week, random_rows, run

from idb_stats import embedded
from idb_stats.collect import Selection, collect
from idb_stats.config import Config
from idb_stats.errors import LockHeld
from idb_stats.ledger import new_run
from idb_stats.stores import open_store

BOTH_STORES = pytest.mark.parametrize("store_kind", ["postgres", "opensearch"], indirect=True)


def config_file(config: Config, path: Path, **extra: Any) -> Path:
    """A configuration file naming this config's store (its indexes or schema)."""
    lines = [
        "[store]",
        f'kind = "{config.store}"',
        f'url = "{config.store_dsn if config.store == "postgres" else config.store_url}"',
        f'schema = "{config.store_schema}"',
        *(
            f'{name} = "{getattr(config, name)}"'
            for name in ("daily_index", "totals_index", "runs_index", "api_index")
            if config.store != "postgres"
        ),
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@BOTH_STORES
def test_two_configurations_with_different_sources_exclude_each_other(
    make_config: MakeConfig, dsn: str, pg_server: embedded.EmbeddedPostgres, tmp_path: Path
) -> None:
    """A replica or a copy of the telemetry, one store: the second run exits 7 naming the first."""
    load_week(dsn)
    replica = pg_server.create_database(f"replica_{uuid.uuid4().hex[:8]}")
    insert_rows(replica, [r for i, d in enumerate(HARVEST) for r in random_rows(50 + i, d, n=40, bad=False)])
    first = make_config(**{"store.url": make_config().store_dsn} if make_config().store == "postgres" else {})
    collect(first, Selection(day=HARVEST[0]))
    dump = tmp_path / "export.ndjson"
    other = config_file(first, tmp_path / "other.toml")
    env = {"IDB_STATS_SOURCE_DSN": replica, "IDB_STATS_API_DSN": replica}
    exported = run(
        "export", "--config", str(other), "--from", str(HARVEST[0]), "--to", str(HARVEST[0]), env=env
    )
    dump.write_text(exported.stdout)
    commands = {
        "collect-stats": ["collect-stats", "-d", str(HARVEST[1])],
        "forget-day": ["forget-day", str(HARVEST[0])],
        "import": ["import", str(dump)],
        "verify --repair": ["verify", "--repair"],  # the replica's rows differ: a repair is tried
        "api-stats": ["api-stats"],
    }
    with holding_lock(first, "collect-stats") as holder:
        for name, args in commands.items():
            started = time.monotonic()
            result = run(*args, "--config", str(other), "--lock-timeout", "0.5", env=env)
            assert result.returncode == 7, (name, result.stderr)
            assert f"collect-stats run {holder.run_id}" in result.stderr, (name, result.stderr)
            assert "Traceback" not in result.stderr and time.monotonic() - started < 30
    after = run(*commands["collect-stats"], "--config", str(other), env=env)
    assert after.returncode == 0, after.stderr


@BOTH_STORES
def test_a_killed_run_is_abandoned_and_its_lock_taken_over(
    make_config: MakeConfig, dsn: str, tmp_path: Path
) -> None:
    """SIGKILL a real collect-stats while it waits for its telemetry: status shows it abandoned
    (pid and host) once the store's lock is free, and the next run takes the lock."""
    load_week(dsn)
    config = make_config()
    collect(config, Selection(day=HARVEST[0]))  # the store exists; its status is readable
    path = config_file(config, tmp_path / "config.toml", lock_lease=6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDB_STATS_") and k != "JOURNAL_STREAM"}
    env["IDB_STATS_SOURCE_DSN"] = dsn
    blocker = psycopg2.connect(dsn)
    with blocker.cursor() as cur:  # the run's telemetry read waits behind this lock
        cur.execute("LOCK TABLE stats IN ACCESS EXCLUSIVE MODE")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "idb_stats.cli",
            "collect-stats",
            "-d",
            str(HARVEST[1]),
            "--config",
            str(path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while (status(path, dsn)["last_runs"].get("collect-stats") or {}).get("outcome") != "running":
            assert time.monotonic() < deadline and process.poll() is None, process.stderr
            time.sleep(0.2)
        process.kill()
        process.wait()
    finally:
        blocker.rollback()
        blocker.close()
        if process.poll() is None:
            process.kill()
    if config.store != "postgres":  # the lease outlives the run by up to store.lock_lease
        with pytest.raises(LockHeld) as caught:
            locked(config, 0)
        assert f"pid {process.pid}" in str(caught.value)
        time.sleep(6)
    info = status(path, dsn)
    last = info["last_runs"]["collect-stats"]
    assert (last["outcome"], last["pid"], last["host"]) == ("abandoned", process.pid, socket.gethostname())
    assert info["last_run"]["outcome"] == "abandoned"
    text = run("status", "--config", str(path), env={"IDB_STATS_SOURCE_DSN": dsn}).stdout
    assert f"last collect-stats:    abandoned {last['started_at']}" in text
    assert f"pid {process.pid} on host {socket.gethostname()} is gone" in text
    rerun = run(
        "collect-stats", "-d", str(HARVEST[1]), "--config", str(path), env={"IDB_STATS_SOURCE_DSN": dsn}
    )
    assert rerun.returncode == 0, rerun.stderr
    assert status(path, dsn)["last_runs"]["collect-stats"]["outcome"] == "ok"


def status(path: Path, dsn: str) -> dict[str, Any]:
    result = run("status", "--json", "--config", str(path), env={"IDB_STATS_SOURCE_DSN": dsn})
    assert result.returncode == 0, result.stderr
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def locked(config: Config, timeout: float) -> None:
    """Take and release the store's lock as a run of api-stats would."""
    with (
        open_store(config) as store,
        store.run_lock().hold(new_run("api-stats"), timeout),
    ):
        pass


@BOTH_STORES
def test_renewal_keeps_a_long_runs_lock(make_config: MakeConfig, dsn: str) -> None:
    """A run three times as long as the lease keeps its lock (search stores renew it; PostgreSQL's
    session lock needs no renewal), and frees it at its end."""
    config = make_config(**{"store.lock_lease": 3})
    with holding_lock(config, "import") as holder:
        started = time.monotonic()
        while time.monotonic() - started < 9:
            with pytest.raises(LockHeld) as caught:
                locked(config, 0)
            assert f"import run {holder.run_id}" in str(caught.value)
            time.sleep(1)
    locked(config, 0)


@pytest.mark.parametrize("store_kind", ["opensearch"], indirect=True)
def test_a_lock_document_of_a_dead_process_is_taken_over_after_its_lease(
    make_config: MakeConfig, dsn: str, tmp_path: Path
) -> None:
    """A process holding the lease document is SIGKILLed: the lock stays held until its lease
    expires, then a waiting run takes it over (one waiter, once)."""
    config = make_config(**{"store.lock_lease": 3})
    with open_store(config) as store:
        store.init()
    program = (
        "import sys, time\n"
        "from idb_stats.config import load_config\n"
        "from idb_stats.ledger import new_run\n"
        "from idb_stats.stores import open_store\n"
        "import json\n"
        "config = load_config(overrides=json.loads(sys.argv[1]), environ={})\n"
        "store = open_store(config)\n"
        "with store.run_lock().hold(new_run('forget-day'), 0):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    overrides = {
        "store.kind": "opensearch",
        "store.url": config.store_url,
        "store.runs_index": config.runs_index,
        "store.lock_lease": 3,
        "source.dsn": dsn,
    }
    holder = subprocess.Popen(
        [sys.executable, "-c", program, json.dumps(overrides)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        time.sleep(4)  # longer than the lease: renewed meanwhile
        with pytest.raises(LockHeld):
            locked(config, 0)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        locked(config, 10)
        waited = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            holder.kill()
    assert waited < 3 + 2, f"took over after {waited:.1f} s"
    locked(config, 0)  # and freed it
