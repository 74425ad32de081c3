"""The import use case: an NDJSON file of daily documents (ours or the original collector's) checked
whole, then loaded into the store, each day of the input replacing that day.

The file is read once. Each line is checked as it is read (ndjson.ExportCheck: every rule
collect-stats keeps), each day's documents have their duplicates resolved and their sums checked
against what the store's numbers hold, and the resolved documents go to a private spool (an
unlinked temporary file, as large as their compact JSON). Only when the whole file has passed does
anything reach the store, and what reaches it is read back from the spool: exactly what was
checked, whatever happens to the file meanwhile (cut short, replaced or appended to while the run
waits for the lock; such a file had imported its unchecked remainder, 800 documents became 1).
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any, Self

from . import interrupt, ndjson
from .config import SEARCH_STORE_KINDS, Config
from .documents import Document
from .errors import DataQualityError, DuplicateDocuments, UsageError
from .json_text import compact
from .ledger import write_run
from .legacy import DayOutcome, DuplicatesRefused, resolve_duplicates
from .model import DayStats
from .ports import DayStore, Publishing, given_or_opened
from .stores import open_store
from .stores.search import beyond_long
from .totals import Summary, Totals, added, subtracted, summarize

log = logging.getLogger("idb_stats")

# What a store's numbers hold, as a check of a summary: the first figure beyond it, or None.
Beyond = Callable[[Summary], str | None]


@dataclass
class SpooledDay:
    outcome: DayOutcome
    start: int  # offset of its first document in the spool
    documents: int


@dataclass
class CheckedImport:
    """A file that passed every check: its days, resolved and spooled, ready to be written."""

    name: str
    export: ndjson.CheckedExport
    spool: IO[bytes]
    days: list[SpooledDay] = field(default_factory=list)
    # Per recordset, the sum of its documents in the file: the most the import adds to its totals.
    sums: dict[str, Summary] = field(default_factory=dict)

    def documents(self, day: SpooledDay) -> Iterator[Document]:
        self.spool.seek(day.start)
        for _ in range(day.documents):
            yield json.loads(self.spool.readline())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.spool.close()


def store_limit(config: Config) -> Beyond | None:
    """The search engines keep counts in `long` fields; PostgreSQL's numeric holds any sum."""
    return beyond_long if config.store in SEARCH_STORE_KINDS else None


def check_file(
    stream: IO[bytes],
    name: str,
    duplicates: str = "refuse",
    last_closed: date | None = None,
    beyond: Beyond | None = None,
) -> CheckedImport:
    """Read and check the whole file once, spooling each day's resolved documents.

    Raises UsageError (exit 2) naming the line for anything collect-stats would not have written
    or a store of this kind cannot hold, DuplicateDocuments (exit 6) under --duplicates refuse, and
    DataQualityError (exit 6) when --duplicates sum adds up to more than the store holds.
    """
    check = ndjson.ExportCheck(name, last_closed)
    checked = CheckedImport(name, check.checked, tempfile.TemporaryFile())  # noqa: SIM115 - closed by CheckedImport
    try:
        outcome: DayOutcome | None = None
        docs: list[Document] = []
        for number, raw in ndjson.numbered_lines(stream, name):
            doc = check.document(number, raw)
            if doc is None:
                continue
            if beyond is not None and (too_big := beyond(summarize(doc))):
                raise UsageError(
                    f"{name} line {number}: {too_big} is more than the store's numbers hold (2^63 - 1 "
                    "in a search engine's long fields); import it into the PostgreSQL store, which "
                    "holds such sums exactly; nothing was imported"
                )
            day = date.fromisoformat(doc["harvest_date"])
            if outcome is None or day != outcome.harvest_date:
                if outcome is not None:
                    _spool_day(checked, outcome, docs, duplicates, beyond)
                outcome, docs = DayOutcome(day), []
            outcome.read += 1
            outcome.filled_blocks += check.filled_blocks
            docs.append(doc)
        if outcome is not None:
            _spool_day(checked, outcome, docs, duplicates, beyond)
        check.finish()
        return checked
    except BaseException:
        checked.spool.close()
        raise


def _spool_day(
    checked: CheckedImport, outcome: DayOutcome, docs: list[Document], duplicates: str, beyond: Beyond | None
) -> None:
    try:
        resolved = resolve_duplicates(docs, duplicates, outcome)
    except DuplicatesRefused as exc:
        raise DuplicateDocuments(
            f"{checked.name}: more than one document for a recordset and day: {exc}; nothing was "
            "imported; choose --duplicates keep-last or --duplicates sum"
        ) from None
    outcome.written = len(resolved)
    start = checked.spool.tell()
    for doc in resolved:
        summary = summarize(doc)
        recordset_id = doc["recordset_id"]
        if beyond is not None and (too_big := beyond(summary)):  # duplicates summed
            raise DataQualityError(
                f"{checked.name}: {outcome.harvest_date} {recordset_id!r}: the sum of its duplicates "
                f"makes {too_big}, more than the store's numbers hold (2^63 - 1); nothing was imported"
            )
        previous = checked.sums.get(recordset_id)
        checked.sums[recordset_id] = summary if previous is None else added(previous, summary)
        checked.spool.write(compact(doc).encode() + b"\n")
    checked.days.append(SpooledDay(outcome, start, len(resolved)))


def check_totals(store: DayStore, checked: CheckedImport, beyond: Beyond) -> None:
    """Refuse, before the first write, an import after which a recordset's totals would hold more
    than the store's numbers do: its totals now, less the file's days they hold, plus the file's.
    The first bound (totals now plus the file) settles nearly every recordset; only those above
    it have the file's days read back from the store."""
    if not checked.sums:
        return
    current = {doc["recordset_id"]: Totals.from_doc(doc) for doc in store.totals(sorted(checked.sums))}
    suspects = {
        rs: current.get(rs, Totals(rs))
        for rs, new in checked.sums.items()
        if beyond(added(current[rs].summary, new) if rs in current else new)
    }
    if not suspects:
        return
    days = {day.outcome.harvest_date for day in checked.days}
    after = {rs: added(totals.summary, checked.sums[rs]) for rs, totals in suspects.items()}
    for doc in store.export(min(days), max(days)):
        rs, day = doc["recordset_id"], date.fromisoformat(str(doc["harvest_date"])[:10])
        if rs in suspects and day in days and suspects[rs].includes(day):
            after[rs] = subtracted(after[rs], summarize(doc))
    for rs, summary in sorted(after.items()):
        if too_big := beyond(summary):
            raise DataQualityError(
                f"{checked.name}: the totals of {rs!r} would hold {too_big}, more than the store's "
                "numbers hold (2^63 - 1); nothing was imported; use the PostgreSQL store, which holds "
                "such sums exactly"
            )


def timed(docs: Iterable[Document], stats: DayStats, started: float) -> Iterator[Document]:
    """The documents, and the day's seconds set once they are all read: before the store marks the
    day complete with its stats."""
    for doc in docs:
        interrupt.check()
        yield doc
    stats.seconds = time.monotonic() - started


def import_checked(
    config: Config,
    checked: CheckedImport,
    on_day: Callable[[DayOutcome, DayStats], None] | None = None,
    lock_timeout: float | None = None,
    store: Publishing | None = None,
) -> list[DayOutcome]:
    """Write a checked file's days: each replaces that day in the store, so totals stay exact;
    on_day hears of each once the store holds it. store: the caller's (else the
    configuration's, opened and closed here)."""
    outcomes: list[DayOutcome] = []
    beyond = store_limit(config)
    with (
        given_or_opened(store, lambda: open_store(config)) as store,
        write_run(config, store, "import", lock_timeout) as run,
    ):
        if beyond is not None:
            check_totals(store, checked, beyond)
        for day in checked.days:
            interrupt.check()
            started = time.monotonic()
            outcome = day.outcome
            stats = DayStats(outcome.harvest_date, run.run_id, recordsets=day.documents, reason="import")
            if day.documents:
                store.publish_day(stats, timed(checked.documents(day), stats, started))
            stats.seconds = time.monotonic() - started
            run.days.append({**stats.as_dict(), **outcome.as_dict()})
            outcomes.append(outcome)
            if on_day:
                on_day(outcome, stats)
    return outcomes


def stream_name(stream: IO[bytes]) -> str:
    """How messages name the input: its path, or "standard input" (also a stream without a name)."""
    given = getattr(stream, "name", "-")
    return "standard input" if given in ("<stdin>", "-") or isinstance(given, int) else str(given)


def import_file(
    config: Config,
    stream: IO[bytes],
    name: str,
    duplicates: str = "refuse",
    last_closed: date | None = None,
    on_checked: Callable[[ndjson.CheckedExport], None] | None = None,
    on_day: Callable[[DayOutcome, DayStats], None] | None = None,
    lock_timeout: float | None = None,
    store: Publishing | None = None,
) -> list[DayOutcome]:
    """Check the whole file, then write it (the `import` command); on_checked hears what the
    check found before the run takes the lock (waiting lock_timeout seconds, default
    collect.lock_timeout), on_day of each day written."""
    with check_file(stream, name, duplicates, last_closed, store_limit(config)) as checked:
        if checked.export.complete is None:
            log.warning(
                "%s has no export opening line (an older export, or another tool's): whether it is "
                "complete cannot be checked; a file cut short imports its last day partly",
                name,
            )
        if on_checked is not None:
            on_checked(checked.export)
        return import_checked(config, checked, on_day, lock_timeout, store)


def import_documents(
    config: Config,
    documents: Iterable[str | dict[str, Any]],
    duplicates: str = "refuse",
    lock_timeout: float | None = None,
    on_day: Callable[[DayOutcome, DayStats], None] | None = None,
    store: Publishing | None = None,
) -> list[DayOutcome]:
    """Daily documents (NDJSON lines or parsed, ours or the original's) through the same checks
    and writes as a file."""
    lines = io.BytesIO(
        b"".join((line if isinstance(line, str) else compact(line)).encode() + b"\n" for line in documents)
    )
    return import_file(
        config, lines, "input", duplicates, on_day=on_day, lock_timeout=lock_timeout, store=store
    )
