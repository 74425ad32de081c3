"""The forget-day use case: one harvest date taken out of the store, so the catch-up redoes it."""

from __future__ import annotations

from datetime import date

from .config import Config
from .ledger import write_run
from .ports import Publishing, given_or_opened
from .stores import open_store


def forget_day(
    config: Config, day: date, lock_timeout: float | None = None, store: Publishing | None = None
) -> int | None:
    """Take a harvest date out of the store: documents, totals and completion marker, so it is
    missing again (the next catch-up redoes it once its window has closed). Returns the documents
    removed, or None when the store holds nothing of that day (no document, completion mark,
    totals listing it, or unfinished publish or forget of it): then nothing is locked or written
    (forgetting it again, or a day never published, is a no-op, so a retried forget-day succeeds).
    A day damaged in any of those ways is forgotten, totals rebuilt where they disagree.
    store: the caller's (else the configuration's, opened and closed here)."""
    with given_or_opened(store, lambda: open_store(config)) as store:
        held = store.held_days()
        if day not in store.completed_days() and not any(
            day in kept for kept in (held.documents, held.listed, held.unfinished)
        ):
            return None
        with write_run(config, store, "forget-day", lock_timeout, plan=f"forget harvest date {day}") as run:
            removed = store.forget_day(day)
            run.days.append({"harvest_date": day.isoformat(), "recordsets": removed})
        return removed
