"""The collect-stats use case: which days to run, each day from telemetry through the pure core to
the store, in this process or in worker processes, and the re-check of recently published days.
Long because those four share one run (its plan, ledger entry, lock and interruption)."""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from . import WORKER_PARENT_ENV, fingerprint, interrupt, planning
from .adopt import adopted_days
from .clock import SYSTEM_CLOCK, Clock
from .config import Config
from .documents import day_documents, publisher_documents
from .engines import open_source
from .errors import DataQualityError, EmptySource, SourceRowsGone
from .ledger import write_run
from .model import PAGE_TYPES, DayStats
from .ports import DayStore, Publishing, TelemetryDay, TelemetrySource, given_or_opened
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


def last_closed(config: Config, clock: Clock) -> date:
    """The latest harvest date whose window has closed, now."""
    return planning.last_closed_day(clock.now(), config.zone, timedelta(0))


def settled_day(config: Config, clock: Clock) -> date:
    """The latest harvest date the catch-up may collect: its window closed collect.settle ago."""
    return planning.last_closed_day(clock.now(), config.zone, config.settle)


def is_catch_up(selection: Selection) -> bool:
    return (
        selection.day is None
        and selection.first is None
        and selection.last is None
        and not selection.all_days
    )


# A day refused for its data: in a range or a catch-up the other days go on, and the run fails
# with it at the end (a bad day no longer holds back every day after it).
DayRefused = SourceRowsGone | DataQualityError
DAY_REFUSALS = (SourceRowsGone, DataQualityError)


def refuse_open_days(selection: Selection, closed: date) -> None:
    """Days asked for by date whose window is still open are refused before anything is touched;
    a range that merely runs past the last closed day is cut there by `plan`."""
    if selection.day is not None:
        planning.refuse_unclosed(selection.day, closed)
    elif selection.first is not None or selection.last is not None:
        first = selection.first or selection.last
        assert first is not None
        planning.refuse_unclosed(first, closed)


def tracked_days(complete: dict[date, dict[str, Any]], days: Iterable[date] | None = None) -> set[date]:
    """The complete days (or of `days`, those) gaps are counted among: from the last adopted day
    on, when the store adopted the original collector's history (its gaps are the original's,
    not ours to fill; a damaged adopted day is repaired by re-running adopt, as the telemetry
    may not hold it)."""
    start = max(adopted_days(complete), default=None)
    return {d for d in (complete if days is None else days) if start is None or d >= start}


def day_states(store: DayStore) -> tuple[dict[date, dict[str, Any]], planning.DayStates]:
    """The store's completion marks, and each day's state judged from what the store holds."""
    marks = store.completed_days()
    return marks, planning.assess_days(marks, store.held_days())


def plan(
    config: Config,
    selection: Selection,
    store: DayStore,
    source: TelemetrySource,
    clock: Clock,
    known: tuple[dict[date, dict[str, Any]], planning.DayStates] | None = None,
) -> planning.Plan:
    """The days a run processes (from the store's day_states, read here unless known); damaged
    days count as not complete, and the plain catch-up redoes them first."""
    marks, states = known or day_states(store)
    complete = set(states.complete)
    completed = {d: m for d, m in marks.items() if d in complete}
    closed = last_closed(config, clock)
    reprocess = selection.reprocess or "all"
    if selection.day is not None:
        candidates, why = [selection.day], f"harvest date {selection.day}"
    elif selection.first is not None or selection.last is not None:
        first = selection.first or selection.last
        last = selection.last or selection.first
        assert first is not None and last is not None
        candidates, why = planning.date_range(first, last), f"range {first} to {last}"
    elif selection.all_days:
        candidates, why = source.harvest_dates(), "every day with telemetry"
        reprocess = selection.reprocess or "missing"
    else:
        return planning.catch_up(
            tracked_days(completed),
            settled_day(config, clock),
            config.max_catch_up_days,
            selection.force_span,
            tracked_days(completed, states.damaged_days),
        )
    days, not_closed = planning.split_closed(candidates, closed)
    if not_closed:
        why += (
            f"; skipping {len(not_closed)} harvest dates from {not_closed[0]} whose window is still open "
            f"(last closed: {closed})"
        )
    return planning.Plan(planning.select(days, complete, reprocess), why, not_closed)


@contextlib.contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Documents are trees of lists and dicts, freed by reference counting as soon as they are
    written; the cycle collector would only walk the millions of them a wide day builds, again and
    again as they pile up (0.5-1.5 s of collect-stats' 6-8 CPU seconds there, issue 18)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def process_day(
    config: Config,
    source: TelemetrySource,
    store: DayStore | None,
    day: date,
    run_id: str,
    reason: str = "collect",
    allow_empty: bool = False,
) -> DayStats:
    """Aggregate one harvest date and publish it (store None: dry run, nothing written).

    A day whose window has no rows is not published over documents the store holds for it,
    unless allow_empty: rows that are gone (retention, a wrong DSN) must not erase history. Nor is
    it published at all unless the source has rows before and after its window (refuse_empty).
    """
    started = time.monotonic()
    interrupt.check()
    with source.read_day(day) as telemetry:
        report = telemetry.report
        stats = DayStats(
            day,
            run_id,
            rows=report.rows,
            skipped=report.skipped,
            skip_reasons=report.as_dict(),
            kinds=dict(report.kinds),
            fingerprint=telemetry.fingerprint,
            reason=reason,
        )
        if report.rows == 0 and store is not None and not allow_empty and has_documents(store, day):
            raise SourceRowsGone(
                f"{day}: the telemetry has no rows for this day but the store holds its documents; "
                "nothing was written. Check source.dsn and source.stats_table, or pass --allow-empty "
                "if the rows were removed on purpose and the day should be emptied"
            )
        if report.rows == 0 and store is not None and not allow_empty:
            refuse_empty(telemetry, day)
        if report.skipped_share > config.max_skipped_share:
            reasons = ", ".join(
                f"{k}: {v['rows']} (e.g. ids {v['example_ids']})" for k, v in stats.skip_reasons.items()
            )
            raise DataQualityError(
                f"{day}: {report.skipped} of {report.rows} rows ({report.skipped_share:.2%}) break the "
                f"rules, more than collect.max_skipped_share {config.max_skipped_share:.2%}; "
                f"nothing was written for this day. {reasons}"
            )
        documents = day_documents(telemetry, day, stats, config.breakdown_limit)
        publishers = publisher_documents(telemetry.publisher_views, day, config.breakdown_limit)
        stats.publishers = len(publishers)

        def timed(documents: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            # A signal stops a search store's publish between documents (nothing there to cancel),
            # and the day's seconds are known before the store marks it complete.
            for doc in documents:
                interrupt.check()
                yield doc
            interrupt.check()
            stats.seconds = time.monotonic() - started

        with _without_cycle_collection():
            if store is None:
                for _ in timed(documents):
                    pass
            else:
                store.publish_day(stats, timed(documents), publishers)
    stats.seconds = time.monotonic() - started
    return stats


def refuse_empty(telemetry: TelemetryDay, day: date) -> None:
    """A day without rows is a real day (an outage of the portal) only when the telemetry has rows
    after its window, so its writer is alive, and before it, so the telemetry had begun: an empty
    or wrong source (a DSN pointing at a copy, a writer that stopped) or a backfill from before the
    telemetry would otherwise publish complete, empty days and status would stay green."""
    before, after = telemetry.rows_around()
    if before and after:
        return
    if not before and not after:
        why = "the telemetry source has no rows at all: check source.dsn and source.stats_table"
    elif not after:
        why = (
            "and none after it: the telemetry writer (the search API's stats collector) may have "
            "stopped, or source.dsn points at a copy that is no longer written; check it"
        )
    else:
        why = "and it lies before the telemetry begins: start the range at the first day with telemetry"
    raise EmptySource(
        f"{day}: the telemetry has no rows for this day {why}; nothing was written for it. "
        "If the portal really had no activity that day, publish it empty with --allow-empty"
    )


def has_documents(store: DayStore, day: date) -> bool:
    documents = store.export(day, day)
    try:
        return next(documents, None) is not None
    finally:
        if isinstance(documents, Generator):  # ends the store's read (a PostgreSQL cursor)
            documents.close()


# Worker processes keep their own connections for the whole run (--jobs > 1).
_worker: dict[str, Any] = {}


def _init_worker(config: Config, dry_run: bool) -> None:
    # A worker must not outlive its run: the kernel sends it SIGTERM when its parent dies (asked for
    # at its first import, idb_stats/__init__.py), and then it cancels its queries and leaves, so no
    # day is published after the run is gone.
    interrupt.install(worker=True)
    _worker["config"] = config
    _worker["source"] = open_source(config)
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
    config: Config, store: DayStore, source: TelemetrySource, planned: list[date]
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
    clock: Clock = SYSTEM_CLOCK,
    dry_run: bool = False,
    jobs: int | None = None,
    lock_timeout: float | None = None,
    on_plan: Callable[[planning.Plan], None] | None = None,
    on_day: DayCallback | None = None,
    allow_empty: bool = False,
    source: TelemetrySource | None = None,
    store: Publishing | None = None,
) -> RunResult:
    """Run the selected days. A plain catch-up also republishes recently published days whose
    source rows changed (reason late_rows); a day whose rows are gone is refused (SourceRowsGone,
    raised after the other days ran) unless allow_empty. Days already published are recorded
    as re-runs (reason rerun) in the change ledger.

    source and store: the caller's adapters (else the configuration's, opened and closed here);
    with them the days run in this process, as workers can only open the configuration's."""
    jobs = 1 if source is not None or store is not None else jobs or config.jobs
    refuse_open_days(selection, last_closed(config, clock))
    with (
        given_or_opened(source, lambda: open_source(config)) as source,
        given_or_opened(store, lambda: open_store(config)) as store,
        write_run(config, store, "collect-stats", lock_timeout, dry_run=dry_run) as run,
    ):
        day_plan, reasons, stale = _plan_with_recheck(config, selection, store, source, clock)
        if on_plan:
            on_plan(day_plan)
        run.plan = day_plan.reason
        if is_catch_up(selection):
            run.recheck = _recheck_record(stale)
        done: list[DayStats] = []
        refused: list[DayRefused] = []

        def finished(stats: DayStats) -> None:
            done.append(stats)
            run.days.append(stats.as_dict())
            if on_day:
                on_day(stats, len(done), len(day_plan.days))

        def refuse(exc: DayRefused) -> None:
            # Ranges and --all report such a day and go on with the others.
            if len(day_plan.days) > 1:
                log.error("%s", exc)
            refused.append(exc)
            run.refused.append(str(exc))

        if jobs > 1 and len(day_plan.days) > 1:
            _run_parallel(
                config, day_plan.days, run.run_id, dry_run, jobs, finished, refuse, reasons, allow_empty
            )
        else:
            for day in day_plan.days:
                try:
                    stats = process_day(
                        config, source, None if dry_run else store, day, run.run_id, reasons[day], allow_empty
                    )
                except DAY_REFUSALS as exc:
                    refuse(exc)
                else:
                    finished(stats)
        _raise_refusals(refused, published=len(done))
        return RunResult(run.run_id, day_plan, done, stale)


def _plan_with_recheck(
    config: Config, selection: Selection, store: DayStore, source: TelemetrySource, clock: Clock
) -> tuple[planning.Plan, dict[date, str], list[fingerprint.Stale]]:
    """The plan, each day's reason for the change ledger, and (plain catch-up) the published days
    whose source rows changed, which join the plan as late_rows."""
    marks, states = day_states(store)
    day_plan = plan(config, selection, store, source, clock, (marks, states))
    damaged = set(states.damaged_days)
    reasons = {d: "repair" if d in damaged else "rerun" if d in marks else "collect" for d in day_plan.days}
    stale: list[fingerprint.Stale] = []
    if is_catch_up(selection) and config.recheck_days > 0:
        stale = recheck(config, store, source, day_plan.days)
        late = [s.harvest_date for s in stale if not s.rows_gone]
        reasons.update((d, "late_rows") for d in late)
        if late:
            day_plan = planning.Plan(
                # Damaged days stay first.
                sorted({*day_plan.days, *late}, key=lambda d: (d not in damaged, d)),
                f"{day_plan.reason}; {len(late)} published days with changed source rows",
            )
    return day_plan, reasons, stale


def _recheck_record(stale: list[fingerprint.Stale]) -> dict[str, Any]:
    """The re-check as the run ledger keeps it (status shows the latest)."""
    return {
        "stale": [
            {"harvest_date": s.harvest_date.isoformat(), "row_delta": s.row_delta, "rows_gone": s.rows_gone}
            for s in stale
        ],
        "republished": [s.harvest_date.isoformat() for s in stale if not s.rows_gone],
    }


def _raise_refusals(refused: list[DayRefused], published: int) -> None:
    """The other days ran; the run fails with the refusal: exit 6 when a day broke the rules too
    often, else 10 (rows gone)."""
    if len(refused) == 1:
        raise refused[0]
    if refused:
        days = "; ".join(str(exc).split(":")[0] for exc in refused)
        worst = DataQualityError if any(isinstance(e, DataQualityError) for e in refused) else SourceRowsGone
        raise worst(
            f"{len(refused)} days were refused ({days}; see the errors above: fix or skip their rows, "
            f"raise collect.max_skipped_share, or --allow-empty); {published} other days were published"
        )


def _run_parallel(
    config: Config,
    days: list[date],
    run_id: str,
    dry_run: bool,
    jobs: int,
    finished: Callable[[DayStats], None],
    refuse: Callable[[DayRefused], None],
    reasons: dict[date, str],
    allow_empty: bool,
) -> None:
    """Days are independent; workers take them in order and a failure stops new ones.

    Workers are spawned, not forked: a forked worker would inherit the run lock's connection and
    keep the lock alive after the run died.
    """
    os.environ[WORKER_PARENT_ENV] = str(os.getpid())  # inherited by the workers: see idb_stats/__init__.py
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(config, dry_run),
    ) as pool:
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
                if isinstance(failure, DAY_REFUSALS):
                    refuse(failure)
                elif failure is not None:
                    error = error or failure
                else:
                    finished(future.result())
        if error is not None:
            raise error


# A published day as the run's log says it: one line, and its fields for the journal.


def day_summary(stats: DayStats) -> str:
    pages = [
        f"{stats.kinds[kind]} {kind.removesuffix('s')} page views"
        for kind in PAGE_TYPES
        if stats.kinds.get(kind)
    ]
    return (
        f"{stats.harvest_date}: {stats.rows} rows, {stats.entries} entries, {stats.recordsets} recordsets, "
        + "".join(f"{p}, " for p in pages)
        + f"{stats.skipped} skipped, {stats.seconds:.1f} s"
    )


def day_fields(stats: DayStats) -> dict[str, Any]:
    return {
        "harvest_date": stats.harvest_date.isoformat(),
        "rows": stats.rows,
        "entries": stats.entries,
        "recordsets": stats.recordsets,
        "skipped": stats.skipped,
        # Flat, so each is a journal field of its own (IDB_STATS_RECORDSETS_PAGE_VIEWS).
        **{f"{kind}_page_views": stats.kinds.get(kind, 0) for kind in PAGE_TYPES},
        "seconds": f"{stats.seconds:.3f}",
        "run_id": stats.run_id,
    }
