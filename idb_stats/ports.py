"""The small interfaces the use cases wire together: a telemetry source and a statistics store."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar, runtime_checkable

from .model import Cell, CounterDay, DayStats, HeldDays, SkipReport
from .runs import RunLock, RunRecord

if TYPE_CHECKING:
    from .rules import TelemetryRow

Document = dict[str, Any]


class TelemetryDay(Protocol):
    """One harvest date of telemetry, read from one consistent snapshot."""

    report: SkipReport  # rows of the day's window, and those the rules skip, by reason with example ids
    fingerprint: dict[str, Any] | None  # of the rows read (fingerprint.py; EMPTY when there are none)
    # The day's tables that cells of kind "geocodes" and "queries" name entries of (see Cell).
    geocodes: list[str]  # canonical JSON texts
    queries: list[str]
    # The day's publisher page views: (publisher, geocode JSON text, views); see publisher_documents.
    publisher_views: list[tuple[str, str, int]]
    # COUNTER-style figures by recordset (counter.py); None when the telemetry cannot give them.
    counter: CounterDay

    def cells(self) -> Iterator[Cell]:
        """The day's aggregated cells, grouped by recordset (streamed, not held in memory)."""

    def rows_around(self) -> tuple[bool, bool]:
        """Whether the telemetry has rows before the day's window, and after it (same snapshot)."""


class TelemetrySource(Protocol):
    def read_day(self, harvest_date: date) -> AbstractContextManager[TelemetryDay]:
        """Open a day for reading; its report and cells agree even while rows are being added."""

    def harvest_dates(self) -> list[date]:
        """Every harvest date whose window holds telemetry."""

    def rows_at(self, moment: date) -> list[TelemetryRow]:
        """The rows stamped exactly at the midnight that starts `moment`."""

    def fingerprints(self, days: list[date]) -> dict[date, dict[str, Any] | None]:
        """The current fingerprint of each harvest date (None when its window has no rows)."""

    def close(self) -> None: ...


class StoreBase(Protocol):
    """What every role of a store shares: its identity, its schema, and closing it."""

    @property
    def identity(self) -> str:
        """The store as its server names it (not as the URL spells it): keys the run lock."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None:
        """Close the store's connections, however the block ended."""

    def init(self) -> None:
        """Create schema, indexes or templates; safe to repeat."""

    def close(self) -> None: ...


class DayStore(StoreBase, Protocol):
    """The days: daily and publisher documents, totals, completion marks and the change ledger.

    publish_day must leave totals equal to the sum of the daily documents whatever happens:
    a failure part-way is repaired by publishing the day again.
    """

    def publish_day(
        self, stats: DayStats, documents: Iterable[Document], publishers: Sequence[Document] | None = None
    ) -> None:
        """Replace the day's documents (and, unless publishers is None, its publisher documents)
        with these, adjust totals, mark the day complete.

        Never trusts totals that disagree with the documents (they list the day without its
        document, or hold its document without listing it): those recordsets' totals are rebuilt
        from their documents instead."""

    def forget_day(self, harvest_date: date) -> int:
        """Remove the day's documents (and publisher documents), take them out of the totals and
        unmark the day; returns the daily documents removed. Safe to repeat, and repaired by
        repeating after a failure part-way; totals that disagree with the documents are rebuilt,
        as by publish_day."""

    def held_days(self) -> HeldDays:
        """What the store holds of each day, from its documents and totals (not its marks)."""

    def export(self, first: date, last: date) -> Iterator[Document]:
        """Daily documents of the range, sorted by harvest_date then recordset_id."""

    def publishers(self, first: date, last: date) -> Iterator[Document]:
        """Publisher documents between the dates, by harvest_date then publisher_id."""

    def totals(self, recordsets: Sequence[str] = ()) -> Iterator[Document]:
        """Totals documents, sorted by recordset_id; all when no recordset is named."""

    def rewrite_totals(self, documents: Sequence[Document], gone: Sequence[str]) -> None:
        """Overwrite these totals documents and delete those of the `gone` recordsets (verify --repair)."""

    def completed_days(self) -> dict[date, dict[str, Any]]:
        """Harvest dates published completely, with their figures."""

    def changes(self, since: date | None = None, recordset_id: str | None = None) -> list[dict[str, Any]]:
        """Changes to published numbers (changes.py records), changed on or after `since`, oldest first."""


class RunLedger(StoreBase, Protocol):
    """The run ledger and the run lock: what ledger.write_run needs of a store."""

    def record_run(self, run: RunRecord) -> None:
        """Insert or update a run in the ledger (keyed by run_id)."""

    def run_lock(self) -> RunLock:
        """The store's run lock (ledger.write_run takes it for every run that writes). It measures
        real time (a lease), whatever clock the use case plans with."""

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest runs, newest first."""

    def last_run(self, command: str) -> dict[str, Any] | None:
        """The latest run of one command (ledger.RUN_COMMANDS)."""


class Snapshots(StoreBase, Protocol):
    """The daily recordset size snapshots (api-stats)."""

    def write_snapshot(self, snapshot_date: date, documents: Iterable[Document]) -> int:
        """Replace the recordset size snapshot of a day; returns the documents written."""

    def snapshots(self) -> dict[date, int]:
        """Days that have a recordset size snapshot, with their number of recordsets."""


class ReadQueries(StoreBase, Protocol):
    """What `show` and `report` ask, grouped in the store."""

    def series(
        self,
        recordsets: Sequence[str],
        first: date | None,
        last: date | None,
        interval: str,
        by_recordset: bool = True,
    ) -> list[dict[str, Any]]:
        """Per interval (and recordset, unless summed): count and total of every block.

        Grouped in the store. No recordsets means all of them; rows of a sum have recordset_id None.
        """

    def top_countries(
        self,
        recordsets: Sequence[str],
        first: date | None,
        last: date | None,
        limit: int,
        by_recordset: bool = False,
    ) -> list[dict[str, Any]]:
        """Hits by country over the range, summed over all blocks' geocodes, largest first.

        by_recordset: the top `limit` of each recordset, rows with recordset_id, by recordset.
        """

    def top_terms(
        self, recordset_id: str, first: date | None, last: date | None, limit: int
    ) -> dict[str, list[dict[str, Any]]]:
        """A recordset's most frequent items and queries over the range, summed over all blocks."""


# The roles the use cases need together (a Protocol cannot be spelt as an intersection).
class Publishing(DayStore, RunLedger, Protocol):
    """Writing days in a recorded run: collect-stats, verify --repair, import, forget-day."""


class SnapshotWriting(Snapshots, RunLedger, Protocol):
    """Writing a size snapshot in a recorded run: api-stats."""


class StatusReading(DayStore, RunLedger, Snapshots, Protocol):
    """What status reads: days, the ledger and the lock's holder, snapshots."""


class Store(DayStore, RunLedger, Snapshots, ReadQueries, Protocol):
    """Every role: what each concrete store implements, and what open_store returns."""


@runtime_checkable  # adopt asks the store it opened whether it is one
class Adoption(Protocol):
    """What adopt asks of a search store beyond the Store roles (stores/search.py has it; the
    PostgreSQL and memory stores do not, and adopt into them needs none of it)."""

    def index_state(self, name: str) -> tuple[str, list[str]]:
        """("alias", [indexes]), ("index", []) or ("absent", [])."""

    def count(self, index: str) -> int: ...

    def replace_index_with_alias(
        self, name: str, target: str, api_index: str, state: str, behind: Sequence[str]
    ) -> None: ...


class SupportsClose(Protocol):
    def close(self) -> None: ...


class ClosedOnExit:
    """For stores: `with open_store(config) as store:` closes it however the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


Closable = TypeVar("Closable", bound=SupportsClose)


@contextlib.contextmanager
def given_or_opened(given: Closable | None, opener: Callable[[], Closable]) -> Iterator[Closable]:
    """The adapter a caller passed in (the caller's to close), else one opened here and closed
    when the block ends: use cases take their source and store from the caller (tests pass
    in-memory ones), or open those of the configuration."""
    if given is not None:
        yield given
        return
    with contextlib.closing(opener()) as opened:
        yield opened
