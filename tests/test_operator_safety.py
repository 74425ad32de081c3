"""Operator mistakes and interruptions never stop collection silently: days not over yet,
failed days, forgetting a day, the lock's key and holder, store timeouts, the ledger in status."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
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
    query,
    random_rows,
    run,
    run_process,
    snapshot,
)

from idb_stats import embedded
from idb_stats.collect import Selection, collect, process_day
from idb_stats.config import load_config
from idb_stats.errors import LockHeld
from idb_stats.forget import forget_day
from idb_stats.model import DayStats
from idb_stats.source import PostgresTelemetrySource
from idb_stats.stores import open_store

ROOT = Path(__file__).resolve().parent.parent
TODAY = datetime.now(UTC).date()  # the last closed harvest date in UTC (the tests' time zone)


# --- 1. only closed harvest dates are published ----------------------------------------------


def test_a_day_not_over_is_refused_before_any_lock_or_write(dsn: str) -> None:
    insert_rows(dsn, random_rows(1, TODAY, n=30, bad=False))  # today's events: tomorrow's harvest date
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    for args in (["-d", str(TODAY + timedelta(days=1))], ["--from", "2099-01-01", "--to", "2099-01-02"]):
        result = run("collect-stats", *args, env=env)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "not over yet" in lines[0] and str(TODAY) in lines[0]
    # Nothing was touched: not even the store's schema exists.
    assert query(dsn, "SELECT to_regclass('idb_stats.days')") == [(None,)]


def test_ranges_and_all_skip_days_not_over_and_say_so(dsn: str) -> None:
    insert_rows(dsn, random_rows(2, TODAY - timedelta(days=1), n=30, bad=False))
    insert_rows(dsn, random_rows(3, TODAY, n=30, bad=False))
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    ranged = run(
        "collect-stats",
        "--from",
        str(TODAY - timedelta(days=1)),
        "--to",
        str(TODAY + timedelta(days=3)),
        env=env,
    )
    assert ranged.returncode == 0, ranged.stderr
    assert "window is still open" in ranged.stderr and str(TODAY + timedelta(days=1)) in ranged.stderr
    days = [d for (d,) in query(dsn, "SELECT harvest_date FROM idb_stats.days ORDER BY 1")]
    assert days == [TODAY - timedelta(days=1), TODAY]
    every = run("collect-stats", "--all", "--reprocess", "all", env=env)
    assert every.returncode == 0, every.stderr
    assert "window is still open" in every.stderr
    assert max(d for (d,) in query(dsn, "SELECT harvest_date FROM idb_stats.days")) == TODAY


# --- 3. a failed day stays missing: the catch-up redoes it, status --max-lag sees it -----------


def test_failed_day_in_a_parallel_run_is_retried_and_fails_max_lag(dsn: str, tmp_path: Path) -> None:
    days = [TODAY - timedelta(days=i) for i in (3, 2, 1, 0)]
    insert_rows(
        dsn,
        [
            row
            for i, d in enumerate(days)
            for row in random_rows(20 + i, d - timedelta(days=1), n=40, bad=False)
        ],
    )
    bad_day = days[1]  # one row that breaks the rules fails it under max_skipped_share = 0
    bad_at = datetime.combine(bad_day - timedelta(days=1), datetime.min.time()) + timedelta(hours=3)
    insert_rows(dsn, [(bad_at, "search", "records", None, None, {"rs": -1})])
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    strict = tmp_path / "strict.toml"
    strict.write_text("[collect]\nmax_skipped_share = 0.0\n")
    assert run("collect-stats", "-d", str(days[0]), env=env).returncode == 0
    parallel = run("collect-stats", "--config", str(strict), "--jobs", "2", env=env)
    assert parallel.returncode == 6, parallel.stderr
    complete = {d for (d,) in query(dsn, "SELECT harvest_date FROM idb_stats.days")}
    assert bad_day not in complete and days[2] in complete  # the later day, run beside it, succeeded
    assert json.loads(run("status", "--json", env=env).stdout)["missing_days"] == [str(bad_day)]
    lagging = run("status", "--max-lag", "1", env=env)
    assert lagging.returncode == 8 and str(bad_day) in lagging.stderr
    query(dsn, "DELETE FROM stats WHERE payload = '{\"rs\": -1}' RETURNING id")
    retried = run("collect-stats", "--config", str(strict), env=env)
    assert retried.returncode == 0, retried.stderr
    assert {d for (d,) in query(dsn, "SELECT harvest_date FROM idb_stats.days")} == set(days)
    assert run("status", "--max-lag", "0", env=env).returncode == 0


# --- 2. forget-day, on every store -----------------------------------------------------------


def test_forget_day_removes_documents_totals_and_mark(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, Selection(first=HARVEST[0], last=HARVEST[-1]))
    before, _ = snapshot(config)
    assert forget_day(config, HARVEST[1]) == len([d for d in before if d["harvest_date"] == str(HARVEST[1])])
    daily, totals = snapshot(config)
    assert daily == [d for d in before if d["harvest_date"] != str(HARVEST[1])]
    assert_consistent(daily, totals)  # totals are exactly the sum of the days left
    store = open_store(config)
    try:
        assert set(store.completed_days()) == set(HARVEST) - {HARVEST[1]}
        run = store.last_run("forget-day")
        assert (
            run is not None and run["outcome"] == "ok" and run["days"][0]["harvest_date"] == str(HARVEST[1])
        )
    finally:
        store.close()
    assert forget_day(config, HARVEST[1]) is None  # safe to repeat: not published any more
    collect(config, Selection(day=HARVEST[1]))
    clean = other_store(make_config, "clean")
    collect(clean, Selection(first=HARVEST[0], last=HARVEST[-1]))
    assert snapshot(config) == snapshot(clean)


def test_forget_day_undoes_a_day_published_before_it_was_over(dsn: str) -> None:
    """What an older version did: publish tomorrow's date. status shows it; forget-day removes it."""
    insert_rows(dsn, random_rows(5, TODAY, n=30, bad=False))
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    config = load_config(overrides={"source.dsn": dsn}, environ={})
    tomorrow = TODAY + timedelta(days=1)
    store = open_store(config)
    store.init()
    source = PostgresTelemetrySource(config)
    process_day(config, source, store, tomorrow, "older-version")  # bypasses the planner
    source.close()
    store.close()
    status = json.loads(run("status", "--json", env=env).stdout)
    assert status["not_closed_days"] == [str(tomorrow)]
    forgot = run("forget-day", str(tomorrow), env=env)
    assert forgot.returncode == 0, forgot.stderr
    assert query(dsn, "SELECT count(*) FROM idb_stats.daily") == [(0,)]
    assert query(dsn, "SELECT count(*) FROM idb_stats.totals") == [(0,)]
    assert json.loads(run("status", "--json", env=env).stdout)["not_closed_days"] == []


def test_forget_day_of_a_day_never_published_says_so_and_writes_nothing(dsn: str) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("collect-stats", "-d", str(HARVEST[0]), env=env).returncode == 0
    runs_before = query(dsn, "SELECT count(*) FROM idb_stats.runs")
    never = run("forget-day", "2001-01-01", env=env)
    assert never.returncode == 0, never.stderr
    assert never.stdout == (
        "2001-01-01 is not published (no documents, no completion mark): nothing to forget "
        "(`idb-stats status` shows the complete days)\n"
    )
    assert query(dsn, "SELECT count(*) FROM idb_stats.runs") == runs_before  # no ledger entry
    forgot = run("forget-day", str(HARVEST[0]), env=env)
    assert forgot.returncode == 0 and forgot.stdout.startswith(f"forgot {HARVEST[0]}: "), forgot.stderr
    assert "is not published" in run("forget-day", str(HARVEST[0]), env=env).stdout


# --- 5. the lock's key is the store's identity, and a held lock names its holder ---------------


def spellings(pg_server: embedded.EmbeddedPostgres, dsn: str) -> list[str]:
    """The same database reached in several ways: 127.0.0.1, localhost, hostaddr=, the socket."""
    params = psycopg2.extensions.parse_dsn(dsn)
    rest = f"port={params['port']} user={params['user']} dbname={params['dbname']}"
    found = [f"host=127.0.0.1 {rest}", f"host=localhost {rest}", f"hostaddr=127.0.0.1 {rest}"]
    socket_dir = pg_server.data_dir.parent
    if (socket_dir / f".s.PGSQL.{params['port']}").exists():
        try:
            psycopg2.connect(f"host={socket_dir} {rest}").close()
            found.append(f"host={socket_dir} {rest}")
        except psycopg2.Error:
            pass  # the server runs as another account whose socket this one cannot open
    return found


def test_lock_key_does_not_depend_on_how_the_dsn_is_spelled(
    pg_server: embedded.EmbeddedPostgres, dsn: str
) -> None:
    load_week(dsn)
    configs = [load_config(overrides={"source.dsn": d}, environ={}) for d in spellings(pg_server, dsn)]
    identities = set()
    for config in configs:
        store = open_store(config)
        identities.add(store.identity)
        store.close()
    assert len(identities) == 1
    first, *others = configs
    with holding_lock(first) as holder:
        for other in others:
            with pytest.raises(LockHeld) as caught:
                collect(other, Selection(day=HARVEST[0]), lock_timeout=0.2)
            message = str(caught.value)
            assert f"api-stats run {holder.run_id}" in message and "connected from" in message


@pytest.mark.parametrize("store_kind", ["opensearch"], indirect=True)
def test_search_store_lock_key_does_not_depend_on_the_url(make_config: MakeConfig, osmem_url: str) -> None:
    identities = set()
    for url in (osmem_url, osmem_url.replace("127.0.0.1", "localhost"), osmem_url + "/"):
        store = open_store(make_config(**{"store.url": url}))
        identities.add(store.identity)
        store.close()
    assert len(identities) == 1
    elsewhere = open_store(other_store(make_config, "other"))
    assert elsewhere.identity not in identities  # other indexes: another store
    elsewhere.close()


# --- 6. timeouts on every store session --------------------------------------------------------


def test_a_session_holding_a_store_lock_fails_collect_with_exit_5(dsn: str, tmp_path: Path) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("collect-stats", "-d", str(HARVEST[0]), env=env).returncode == 0
    config = tmp_path / "config.toml"
    config.write_text("[store]\nlock_wait_timeout = 1\nstatement_timeout = 60\n")
    blocker = psycopg2.connect(dsn)
    with blocker.cursor() as cur:  # idle in transaction, holding the lock, as a forgotten psql would
        cur.execute("LOCK TABLE idb_stats.days IN ACCESS EXCLUSIVE MODE")
    try:
        started = time.monotonic()
        # A process: a run that waited on the lock for ever would hang the test; run_process times out.
        result = run_process("collect-stats", "--config", str(config), "-d", str(HARVEST[1]), env=env)
        elapsed = time.monotonic() - started
    finally:
        blocker.rollback()
        blocker.close()
    assert result.returncode == 5, result.stderr
    assert "lock_wait_timeout" in result.stderr and elapsed < 60
    assert run("collect-stats", "--config", str(config), "-d", str(HARVEST[1]), env=env).returncode == 0


# --- 7. the ledger: every command's last run, true seconds and completion times -----------------


def test_status_shows_each_commands_last_run(dsn: str, tmp_path: Path) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), env=env).returncode == 0
    dump = tmp_path / "export.ndjson"
    run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), "-o", str(dump), env=env)
    assert run("import", str(dump), env=env).returncode == 0
    # A failed collect, then a successful command of another kind: the failure still shows.
    insert_rows(dsn, [(datetime(2020, 2, 19, 5), "search", "records", None, None, {"rs": -1})] * 3)
    assert run("collect-stats", "-d", str(HARVEST[2]), env=env).returncode == 6
    assert run("forget-day", str(HARVEST[1]), env=env).returncode == 0
    status = json.loads(run("status", "--json", env=env).stdout)
    runs = status["last_runs"]
    assert (
        runs["collect-stats"]["outcome"] == "failed" and "max_skipped_share" in runs["collect-stats"]["error"]
    )
    assert runs["import"]["outcome"] == "ok" and [d["harvest_date"] for d in runs["import"]["days"]] == [
        str(HARVEST[0]),
        str(HARVEST[1]),
    ]
    assert runs["forget-day"]["outcome"] == "ok"
    assert all(run["seconds"] is not None and run["seconds"] >= 0 for run in runs.values())
    text = run("status", env=env).stdout
    for command, outcome in (("collect-stats", "failed"), ("import", "ok"), ("forget-day", "ok")):
        assert re.search(rf"^last {command}: +{outcome} ", text, re.MULTILINE), text
    assert status["last_day"]["seconds"] > 0  # the day's own duration, not 0.0


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_completed_at_is_when_publishing_finished(make_config: MakeConfig, dsn: str) -> None:
    config = make_config()
    store = open_store(config)
    store.init()

    def slow_documents() -> Any:
        yield from ()
        time.sleep(1.5)

    started = datetime.now(UTC)
    store.publish_day(DayStats(HARVEST[0], "slow"), slow_documents())
    store.close()
    [(completed_at,)] = query(dsn, "SELECT completed_at FROM idb_stats.days")
    assert (completed_at - started).total_seconds() >= 1.5


def test_status_says_which_published_days_the_recheck_cannot_compare(dsn: str, tmp_path: Path) -> None:
    """Imported days carry no source fingerprint, so the catch-up's re-check skips them: status
    says how many of the re-check window's days that is, and why, in one line."""
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[3]), env=env).returncode == 0
    dump = tmp_path / "export.ndjson"
    run("export", "--from", str(HARVEST[1]), "--to", str(HARVEST[2]), "-o", str(dump), env=env)
    assert run("import", str(dump), env=env).returncode == 0
    shown = run("status", env=env)
    assert shown.returncode == 0, shown.stderr
    wanted = (
        "not re-checkable:      2 days of the last 7 published carry no source fingerprint, so late "
        f"rows there go unnoticed (imported: {HARVEST[1]}, {HARVEST[2]})"
    )
    assert wanted in shown.stdout.splitlines(), shown.stdout
    as_json = json.loads(run("status", "--json", env=env).stdout)
    assert as_json["not_rechecked"] == {"imported": [str(HARVEST[1]), str(HARVEST[2])]}
    # Out of the window (recheck_days 1: only the last day, which collect-stats published): silent.
    (tmp_path / "narrow.toml").write_text("[collect]\nrecheck_days = 1\n")
    narrow = run("status", "--config", str(tmp_path / "narrow.toml"), env=env)
    assert narrow.returncode == 0, narrow.stderr
    assert "not re-checkable" not in narrow.stdout, narrow.stdout
