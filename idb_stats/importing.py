"""The import use case: daily documents (ours or the original collector's) loaded into the store,
each day of the input replacing that day."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import interrupt
from .adopt import normalised_import
from .config import Config
from .documents import Document
from .ledger import ledger_entry, new_run
from .legacy import DayOutcome
from .model import DayStats
from .pg import run_lock
from .stores import open_store


def timed(docs: Iterable[Document], stats: DayStats, started: float) -> Iterator[Document]:
    """The documents, and the day's seconds set once they are all read: before the store marks the
    day complete with its stats."""
    for doc in docs:
        interrupt.check()
        yield doc
    stats.seconds = time.monotonic() - started


def import_documents(
    config: Config,
    documents: Iterable[Any],
    duplicates: str = "refuse",
    on_rejected: Callable[[int, str], None] | None = None,
    lock_timeout: float | None = None,
    on_day: Callable[[DayOutcome, DayStats], None] | None = None,
) -> list[DayOutcome]:
    """Load daily documents (NDJSON lines or parsed, ours or the original's) into the store.

    Each day of the input replaces that day in the store, so totals stay exact; legacy shapes are
    normalised and duplicates resolved by adopt.normalised_import, which accounts for every line.
    """
    run = new_run("import")
    outcomes: list[DayOutcome] = []
    timeout = config.lock_timeout if lock_timeout is None else lock_timeout
    with open_store(config) as store, run_lock(config, store.identity, timeout, run, store):
        store.init()
        with ledger_entry(store, run):
            for outcome, docs in normalised_import(documents, duplicates, on_rejected or (lambda n, r: None)):
                interrupt.check()
                started = time.monotonic()
                stats = DayStats(outcome.harvest_date, run["run_id"], recordsets=len(docs), reason="import")
                if docs:
                    store.publish_day(stats, timed(docs, stats, started))
                stats.seconds = time.monotonic() - started
                run["days"].append({**stats.as_dict(), **outcome.as_dict()})
                outcomes.append(outcome)
                if on_day:
                    on_day(outcome, stats)
    return outcomes
