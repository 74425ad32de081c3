"""The forget-day use case: one harvest date taken out of the store, so the catch-up redoes it."""

from __future__ import annotations

from datetime import date

from .config import Config
from .ledger import ledger_entry, new_run
from .pg import run_lock
from .stores import open_store


def forget_day(config: Config, day: date, lock_timeout: float | None = None) -> int | None:
    """Take a harvest date out of the store: documents, totals and completion marker, so it is
    missing again (the next catch-up redoes it once its window has closed). Returns the documents
    removed, or None when the store holds nothing of that day (no document, completion mark,
    totals listing it, or unfinished publish or forget of it): then nothing is locked or written
    (forgetting it again, or a day never published, is a no-op, so a retried forget-day succeeds).
    A day damaged in any of those ways is forgotten, totals rebuilt where they disagree."""
    run = new_run("forget-day", plan=f"forget harvest date {day}")
    timeout = config.lock_timeout if lock_timeout is None else lock_timeout
    with open_store(config) as store:
        held = store.held_days()
        if day not in store.completed_days() and not any(
            day in kept for kept in (held.documents, held.listed, held.unfinished)
        ):
            return None
    with open_store(config) as store, run_lock(config, store.identity, timeout, run, store):
        store.init()
        with ledger_entry(store, run):
            removed = store.forget_day(day)
            run["days"].append({"harvest_date": day.isoformat(), "recordsets": removed})
        return removed
