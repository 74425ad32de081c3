"""The one place that wires telemetry source -> pure core -> store, for every command."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg2

from . import fingerprint, planning
from .config import Config
from .documents import build_documents
from .errors import DataQualityError, IdbStatsError, LockHeld, SourceRowsGone
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


def settled_day(config: Config) -> date:
    """The latest harvest date the catch-up may collect: its window closed collect.settle ago."""
    return planning.last_settled_day(datetime.now(config.zone).replace(tzinfo=None), config.settle)


def is_catch_up(selection: Selection) -> bool:
    return (
        selection.day is None
        and selection.first is None
        and selection.last is None
        and not selection.all_days
    )


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
            max(complete, default=None), settled_day(config), config.max_catch_up_days, selection.force_span
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
    config: Config,
    source: TelemetrySource,
    store: Store | None,
    day: date,
    run_id: str,
    reason: str = "collect",
    allow_empty: bool = False,
) -> DayStats:
    """Aggregate one harvest date and publish it (store None: dry run, nothing written).

    A day whose window has no rows is not published over documents the store holds for it,
    unless allow_empty: rows that are gone (retention, a wrong DSN) must not erase history.
    """
    started = time.monotonic()
    with source.read_day(day) as telemetry:
        report = telemetry.report
        stats = DayStats(
            day,
            run_id,
            rows=report.rows,
            skipped=report.skipped,
            skip_reasons=report.as_dict(),
            fingerprint=telemetry.fingerprint,
            reason=reason,
        )
        if report.rows == 0 and store is not None and not allow_empty and has_documents(store, day):
            raise SourceRowsGone(
                f"{day}: the telemetry has no rows for this day but the store holds its documents; "
                "nothing was written. Check source.dsn and source.stats_table, or pass --allow-empty "
                "if the rows were removed on purpose and the day should be emptied"
            )
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


def has_documents(store: Store, day: date) -> bool:
    documents = store.export(day, day)
    try:
        return next(documents, None) is not None
    finally:
        if isinstance(documents, Generator):  # ends the store's read (a PostgreSQL cursor)
            documents.close()


# Worker processes keep their own connections for the whole run (--jobs > 1).
_worker: dict[str, Any] = {}


def _init_worker(config: Config, dry_run: bool) -> None:
    _worker["config"] = config
    _worker["source"] = PostgresTelemetrySource(config)
    _worker["store"] = None if dry_run else open_store(config)


def _work(day: date, run_id: str, reason: str, allow_empty: bool) -> DayStats:
    return process_day(
        _worker["config"], _worker["source"], _worker["store"], day, run_id, reason, allow_empty
    )


@dataclass
class RunResult:
    run_id: str
    plan: planning.Plan
    days: list[DayStats]
    stale: list[fingerprint.Stale] = field(default_factory=list)


def recheck(
    config: Config, store: Store, source: TelemetrySource, planned: list[date]
) -> list[fingerprint.Stale]:
    """The last collect.recheck_days published days whose source rows changed since (one query)."""
    published = fingerprint.recent_published(store.completed_days(), config.recheck_days, planned)
    stale = fingerprint.stale_days(published, source.fingerprints(sorted(published)))
    for day in stale:
        fields = {
            "harvest_date": day.harvest_date.isoformat(),
            "reason": "rows_gone" if day.rows_gone else "late_rows",
            "row_delta": day.row_delta,
            "published_rows": day.published_rows,
            "current_rows": day.current_rows,
        }
        if day.rows_gone:
            log.warning(
                "%s: every source row of this published day is gone (published from %d rows); "
                "left as published: run `idb-stats verify` and see docs/operations.md",
                day.harvest_date,
                day.published_rows,
                extra={"fields": fields},
            )
        else:
            log.info(
                "%s: source rows changed since publication (%+d rows), republishing reason=late_rows",
                day.harvest_date,
                day.row_delta,
                extra={"fields": fields},
            )
    return stale


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
    allow_empty: bool = False,
) -> RunResult:
    """Run the selected days. A plain catch-up also republishes recently published days whose
    source rows changed (reason late_rows); a day whose rows are gone is refused (SourceRowsGone,
    raised after the other days ran) unless allow_empty. Days already published are recorded
    as re-runs (reason rerun) in the change ledger."""
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
            complete = store.completed_days()
            reasons = {d: "rerun" if d in complete else "collect" for d in day_plan.days}
            stale: list[fingerprint.Stale] = []
            if is_catch_up(selection) and config.recheck_days > 0:
                stale = recheck(config, store, source, day_plan.days)
                late = [s.harvest_date for s in stale if not s.rows_gone]
                reasons.update((d, "late_rows") for d in late)
                if late:
                    day_plan = planning.Plan(
                        sorted({*day_plan.days, *late}),
                        f"{day_plan.reason}; {len(late)} published days with changed source rows",
                    )
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
            if is_catch_up(selection):
                run["recheck"] = {
                    "stale": [
                        {
                            "harvest_date": s.harvest_date.isoformat(),
                            "row_delta": s.row_delta,
                            "rows_gone": s.rows_gone,
                        }
                        for s in stale
                    ],
                    "republished": [s.harvest_date.isoformat() for s in stale if not s.rows_gone],
                }
            if not dry_run:
                store.record_run(run)
            done: list[DayStats] = []
            refused: list[SourceRowsGone] = []

            def finished(stats: DayStats) -> None:
                done.append(stats)
                run["days"].append(stats.as_dict())
                if on_day:
                    on_day(stats, len(done), len(day_plan.days))

            def refuse(exc: SourceRowsGone) -> None:
                # Ranges and --all report such a day and go on with the others.
                if len(day_plan.days) > 1:
                    log.error("%s", exc)
                refused.append(exc)
                run.setdefault("refused", []).append(str(exc))

            try:
                if jobs > 1 and len(day_plan.days) > 1:
                    _run_parallel(
                        config, day_plan.days, run_id, dry_run, jobs, finished, refuse, reasons, allow_empty
                    )
                else:
                    for day in day_plan.days:
                        try:
                            stats = process_day(
                                config,
                                source,
                                None if dry_run else store,
                                day,
                                run_id,
                                reasons[day],
                                allow_empty,
                            )
                        except SourceRowsGone as exc:
                            refuse(exc)
                        else:
                            finished(stats)
            except (Exception, KeyboardInterrupt) as exc:
                run["outcome"], run["finished_at"] = "failed", now_iso()
                run["error"] = str(exc) if isinstance(exc, IdbStatsError) else f"{type(exc).__name__}: {exc}"
                if not dry_run:
                    with contextlib.suppress(Exception):  # the original error is the one to report
                        store.record_run(run)
                raise
            run["outcome"], run["finished_at"] = "refused" if refused else "ok", now_iso()
            if not dry_run:
                store.record_run(run)
            if len(refused) == 1:
                raise refused[0]
            if refused:
                raise SourceRowsGone(
                    f"{len(refused)} days were refused (their source rows are gone and the store holds "
                    f"their documents; see the errors above); {len(done)} other days were published"
                )
            return RunResult(run_id, day_plan, done, stale)
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
    refuse: Callable[[SourceRowsGone], None],
    reasons: dict[date, str],
    allow_empty: bool,
) -> None:
    """Days are independent; workers take them in order and a failure stops new ones."""
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(config, dry_run)) as pool:
        pending: list[Future[DayStats]] = []
        queue = list(days)
        error: BaseException | None = None
        while (queue and error is None) or pending:
            while queue and error is None and len(pending) < jobs:
                day = queue.pop(0)
                pending.append(pool.submit(_work, day, run_id, reasons[day], allow_empty))
            completed, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in completed:
                pending.remove(future)
                failure = future.exception()
                if isinstance(failure, SourceRowsGone):
                    refuse(failure)
                elif failure is not None:
                    error = error or failure
                else:
                    finished(future.result())
        if error is not None:
            raise error


def status(config: Config) -> dict[str, Any]:
    """What an operator or a monitor needs: last complete day, lag, holes, the latest runs."""
    store = open_store(config)
    try:
        complete = store.completed_days()
        current = today(config)
        last = max(complete, default=None)
        first = min(complete, default=None)
        runs = store.runs(limit=20)
        checked = next((r for r in runs if "recheck" in r and r.get("outcome") != "running"), None)
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
            # The latest catch-up's re-check of published days: found stale, and republished.
            "last_recheck": (
                {"run_id": checked["run_id"], "started_at": checked["started_at"], **checked["recheck"]}
                if checked
                else None
            ),
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


def import_documents(config: Config, documents: Iterator[dict[str, Any]]) -> list[DayStats]:
    """Load daily documents (an NDJSON export) into the store, one harvest date at a time.

    Each day of the input replaces that day in the store, so totals stay exact.
    """
    from itertools import groupby

    store = open_store(config)
    run_id = f"import-{uuid.uuid4().hex[:8]}"
    published: list[DayStats] = []
    try:
        with run_lock(config, store.identity, config.lock_timeout):
            store.init()
            for day_text, group in groupby(documents, key=lambda d: d["harvest_date"]):
                day = date.fromisoformat(day_text)
                stats = DayStats(day, run_id, reason="import")
                if any(p.harvest_date == day for p in published):
                    raise IdbStatsError(
                        f"import: documents of {day} are not contiguous; sort by harvest_date first"
                    )

                def counted(
                    docs: Iterator[dict[str, Any]], stats: DayStats = stats
                ) -> Iterator[dict[str, Any]]:
                    for doc in docs:
                        stats.recordsets += 1
                        yield doc

                store.publish_day(stats, counted(group))
                published.append(stats)
    finally:
        store.close()
    return published


def source_reachable(config: Config) -> None:
    """Raise SourceUnreachable unless the telemetry database answers."""
    conn = connect(config.source_dsn, "telemetry")
    with contextlib.suppress(psycopg2.Error):
        conn.close()
