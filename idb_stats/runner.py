"""The one place that wires telemetry source -> pure core -> store, for every command."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg2

from . import planning
from .config import Config
from .documents import build_documents
from .errors import DataQualityError, IdbStatsError, LockHeld
from .legacy import DayOutcome
from .model import DayStats
from .ports import Store, TelemetrySource
from .source import PostgresTelemetrySource, connect
from .stores import open_store

log = logging.getLogger("idb_stats")

DayCallback = Callable[[DayStats, int, int], None]


@dataclass(frozen=True)
class Selection:
    """Which days a collect-stats run covers, as the operator asked."""

    day: date | None = None
    first: date | None = None
    last: date | None = None
    all_days: bool = False
    reprocess: str | None = None  # None: "all" for explicit days, "missing" for --all
    force_span: bool = False


def today(config: Config) -> date:
    return datetime.now(config.zone).date()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def plan(config: Config, selection: Selection, store: Store, source: TelemetrySource) -> planning.Plan:
    complete = set(store.completed_days())
    if selection.day is not None:
        candidates, why = [selection.day], f"harvest date {selection.day}"
    elif selection.first is not None or selection.last is not None:
        first = selection.first or selection.last
        last = selection.last or selection.first
        assert first is not None and last is not None
        candidates, why = planning.date_range(first, last), f"range {first} to {last}"
    elif selection.all_days:
        candidates, why = source.harvest_dates(), "every day with telemetry"
        return planning.Plan(planning.select(candidates, complete, selection.reprocess or "missing"), why)
    else:
        return planning.catch_up(
            max(complete, default=None), today(config), config.max_catch_up_days, selection.force_span
        )
    return planning.Plan(planning.select(candidates, complete, selection.reprocess or "all"), why)


@contextlib.contextmanager
def run_lock(config: Config, store_identity: str, timeout: float) -> Iterator[None]:
    """One run per store: an advisory lock held by a source connection, freed if the run dies."""
    conn = connect(config.source_dsn, "lock")
    conn.autocommit = True
    try:
        deadline = time.monotonic() + timeout
        with conn.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"idb-stats {store_identity}",)
                )
                if cur.fetchone() == (True,):
                    break
                if time.monotonic() >= deadline:
                    raise LockHeld(
                        f"another idb-stats run holds the lock for this store (waited {timeout:g} s; "
                        "raise --lock-timeout to wait longer)"
                    )
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        yield
    finally:
        conn.close()


def process_day(
    config: Config, source: TelemetrySource, store: Store | None, day: date, run_id: str
) -> DayStats:
    """Aggregate one harvest date and publish it (store None: dry run, nothing written)."""
    started = time.monotonic()
    with source.read_day(day) as telemetry:
        report = telemetry.report
        stats = DayStats(day, run_id, rows=report.rows, skipped=report.skipped, skip_reasons=report.as_dict())
        if report.skipped_share > config.max_skipped_share:
            reasons = ", ".join(
                f"{k}: {v['rows']} (e.g. ids {v['example_ids']})" for k, v in stats.skip_reasons.items()
            )
            raise DataQualityError(
                f"{day}: {report.skipped} of {report.rows} rows ({report.skipped_share:.2%}) break the "
                f"rules, more than collect.max_skipped_share {config.max_skipped_share:.2%}; "
                f"nothing was written for this day. {reasons}"
            )
        documents = build_documents(telemetry.cells(), day, stats, config.breakdown_limit)
        if store is None:
            for _ in documents:
                pass
        else:
            store.publish_day(stats, documents)
    stats.seconds = time.monotonic() - started
    return stats


# Worker processes keep their own connections for the whole run (--jobs > 1).
_worker: dict[str, Any] = {}


def _init_worker(config: Config, dry_run: bool) -> None:
    _worker["config"] = config
    _worker["source"] = PostgresTelemetrySource(config)
    _worker["store"] = None if dry_run else open_store(config)


def _work(day: date, run_id: str) -> DayStats:
    return process_day(_worker["config"], _worker["source"], _worker["store"], day, run_id)


@dataclass
class RunResult:
    run_id: str
    plan: planning.Plan
    days: list[DayStats]


def collect(
    config: Config,
    selection: Selection,
    *,
    dry_run: bool = False,
    jobs: int | None = None,
    lock_timeout: float | None = None,
    on_plan: Callable[[planning.Plan], None] | None = None,
    on_day: DayCallback | None = None,
    command: str = "collect-stats",
) -> RunResult:
    jobs = jobs or config.jobs
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    source = PostgresTelemetrySource(config)
    store = open_store(config)
    try:
        lock = (
            contextlib.nullcontext()
            if dry_run
            else run_lock(
                config, store.identity, config.lock_timeout if lock_timeout is None else lock_timeout
            )
        )
        with lock:
            if not dry_run:
                store.init()
            day_plan = plan(config, selection, store, source)
            if on_plan:
                on_plan(day_plan)
            run: dict[str, Any] = {
                "run_id": run_id,
                "command": command,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": now_iso(),
                "finished_at": None,
                "outcome": "running",
                "dry_run": dry_run,
                "plan": day_plan.reason,
                "days": [],
                "error": None,
            }
            if not dry_run:
                store.record_run(run)
            done: list[DayStats] = []

            def finished(stats: DayStats) -> None:
                done.append(stats)
                run["days"].append(stats.as_dict())
                if on_day:
                    on_day(stats, len(done), len(day_plan.days))

            try:
                if jobs > 1 and len(day_plan.days) > 1:
                    _run_parallel(config, day_plan.days, run_id, dry_run, jobs, finished)
                else:
                    for day in day_plan.days:
                        finished(process_day(config, source, None if dry_run else store, day, run_id))
            except (Exception, KeyboardInterrupt) as exc:
                run["outcome"], run["finished_at"] = "failed", now_iso()
                run["error"] = str(exc) if isinstance(exc, IdbStatsError) else f"{type(exc).__name__}: {exc}"
                if not dry_run:
                    with contextlib.suppress(Exception):  # the original error is the one to report
                        store.record_run(run)
                raise
            run["outcome"], run["finished_at"] = "ok", now_iso()
            if not dry_run:
                store.record_run(run)
            return RunResult(run_id, day_plan, done)
    finally:
        source.close()
        store.close()


def _run_parallel(
    config: Config,
    days: list[date],
    run_id: str,
    dry_run: bool,
    jobs: int,
    finished: Callable[[DayStats], None],
) -> None:
    """Days are independent; workers take them in order and a failure stops new ones."""
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(config, dry_run)) as pool:
        pending: list[Future[DayStats]] = []
        queue = list(days)
        error: BaseException | None = None
        while (queue and error is None) or pending:
            while queue and error is None and len(pending) < jobs:
                pending.append(pool.submit(_work, queue.pop(0), run_id))
            completed, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in completed:
                pending.remove(future)
                if future.exception() is not None:
                    error = error or future.exception()
                else:
                    finished(future.result())
        if error is not None:
            raise error


def status(config: Config) -> dict[str, Any]:
    """What an operator or a monitor needs: last complete day, lag, holes, the latest runs."""
    from .adopt import adopted_days

    store = open_store(config)
    try:
        complete = store.completed_days()
        current = today(config)
        last = max(complete, default=None)
        # Adopted history has the original's gaps: count missing days from where collection took over.
        first = max(adopted_days(complete), default=min(complete, default=None))
        runs = store.runs(limit=1)
        snapshots = store.snapshots()
        last_snapshot = max(snapshots, default=None)
        return {
            "store": config.store,
            "today": current.isoformat(),
            "last_complete_harvest_date": last.isoformat() if last else None,
            "lag_days": (current - last).days if last else None,
            "complete_days": len(complete),
            "missing_days": [
                d.isoformat() for d in planning.missing_days(set(complete), first, last or current)
            ],
            "last_day": complete[last] if last else None,
            "last_run": runs[0] if runs else None,
            "last_snapshot": last_snapshot.isoformat() if last_snapshot else None,
            "snapshot_missing_today": bool(snapshots) and last_snapshot != datetime.now(UTC).date(),
            "snapshot_recordsets": snapshots.get(last_snapshot) if last_snapshot else None,
        }
    finally:
        store.close()


def api_stats(config: Config, lock_timeout: float | None = None) -> dict[str, Any]:
    """Take today's recordset size snapshot; a second run the same (UTC) day replaces it."""
    from .apistats import snapshot_documents

    taken_at = datetime.now(UTC)
    run_id = f"{taken_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    store = open_store(config)
    try:
        timeout = config.lock_timeout if lock_timeout is None else lock_timeout
        with run_lock(config, store.identity, timeout):
            store.init()
            run: dict[str, Any] = {
                "run_id": run_id,
                "command": "api-stats",
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": now_iso(),
                "finished_at": None,
                "outcome": "running",
                "days": [],
                "error": None,
            }
            store.record_run(run)
            started = time.monotonic()
            try:
                written = store.write_snapshot(taken_at.date(), snapshot_documents(config, taken_at))
            except Exception as exc:
                run.update(outcome="failed", finished_at=now_iso(), error=str(exc))
                with contextlib.suppress(Exception):
                    store.record_run(run)
                raise
            summary = {
                "snapshot_date": taken_at.date().isoformat(),
                "recordsets": written,
                "seconds": round(time.monotonic() - started, 3),
                "run_id": run_id,
            }
            run.update(outcome="ok", finished_at=now_iso(), snapshot=summary)
            store.record_run(run)
            return summary
    finally:
        store.close()


def import_documents(
    config: Config,
    documents: Iterable[Any],
    duplicates: str = "refuse",
    on_rejected: Callable[[int, str], None] | None = None,
) -> list[DayOutcome]:
    """Load daily documents (NDJSON lines or parsed, ours or the original's) into the store.

    Each day of the input replaces that day in the store, so totals stay exact; legacy shapes are
    normalised and duplicates resolved by adopt.normalised_import, which accounts for every line.
    """
    from .adopt import normalised_import

    store = open_store(config)
    run_id = f"import-{uuid.uuid4().hex[:8]}"
    outcomes: list[DayOutcome] = []
    try:
        with run_lock(config, store.identity, config.lock_timeout):
            store.init()
            for outcome, docs in normalised_import(documents, duplicates, on_rejected or (lambda n, r: None)):
                if docs:
                    store.publish_day(
                        DayStats(outcome.harvest_date, run_id, recordsets=len(docs)), iter(docs)
                    )
                outcomes.append(outcome)
    finally:
        store.close()
    return outcomes


def source_reachable(config: Config) -> None:
    """Raise SourceUnreachable unless the telemetry database answers."""
    conn = connect(config.source_dsn, "telemetry")
    with contextlib.suppress(psycopg2.Error):
        conn.close()
