"""A statistics store kept in Python structures, held to the same contract as the PostgreSQL store
(tests/test_store_contract.py runs it beside the others).

It exists so the use cases (collect, verify, import, forget-day, api-stats, status) can be tested
in milliseconds without a server (tests/unit). It is not a production backend, and the
configuration file cannot name it (store.kind refuses "memory"): what it holds is gone when the
process ends, and it cannot be shared with worker processes (`--jobs`) or with another run, so its
run lock only keeps out runs of this process. Library code and tests reach it by building a
`MemoryStore` directly, or through `open_store` with a Config whose store is "memory" (made with
dataclasses.replace, which load_config never returns): every store opened for the same
store.url and store.schema in one process shares one set of data, as two connections to one
database do.

Each day is published or forgotten as one step (the documents are read in full before anything
changes), as the PostgreSQL store does in one transaction: a failure part-way changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .. import changes
from ..config import Config
from ..documents import add_terms, by_count
from ..errors import ConfigError, LockHeld, StoreError
from ..json_text import compact
from ..model import BLOCKS, COUNT_FIELDS, DayStats, HeldDays
from ..ports import ClosedOnExit, Document
from ..runs import LockHolder, RunRecord
from ..totals import Summary, Totals, day_ranges, listed_days, rebuilt, replace_day, summarize

KIND = "memory"


@dataclass
class _Stored:
    """A daily document as the store keeps it: its JSON text (so a caller changing the dict it
    published or read changes nothing here, as with a database) and what totals need of it."""

    text: str
    summary: Summary


@dataclass
class MemoryData:
    """Everything one memory store holds; shared by every MemoryStore opened on it."""

    initialized: bool = False
    daily: dict[date, dict[str, _Stored]] = field(default_factory=dict)
    totals: dict[str, str] = field(default_factory=dict)  # recordset -> totals document text
    marks: dict[date, str] = field(default_factory=dict)  # harvest date -> DayStats text
    runs: dict[str, str] = field(default_factory=dict)  # run_id -> ledger entry text, in insert order
    change_records: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[date, dict[str, str]] = field(default_factory=dict)
    publishers: dict[date, dict[str, str]] = field(default_factory=dict)
    lock: threading.Condition = field(default_factory=threading.Condition)
    holder: RunRecord | None = None


# Stores opened through open_store, by store.url and store.schema: one process's "database".
_NAMED: dict[str, MemoryData] = {}


def open_memory(config: Config) -> MemoryStore:
    """The memory store named by config (store.url and store.schema), created when first opened."""
    if multiprocessing.parent_process() is not None:
        # A worker process would open an empty store of its own and publish into it unseen.
        raise ConfigError(["store.kind = memory: the store lives in one process; run with --jobs 1"])
    name = f"{config.store_url or ''}/{config.store_schema}"
    return MemoryStore(_NAMED.setdefault(name, MemoryData()), name)


def discard(config: Config) -> None:
    """Forget the data of the memory store config names (a test's teardown)."""
    _NAMED.pop(f"{config.store_url or ''}/{config.store_schema}", None)


class MemoryRunLock:
    """The memory store's run lock: one holder at a time among this process's threads."""

    def __init__(self, data: MemoryData):
        self._data = data

    @contextlib.contextmanager
    def hold(self, run: RunRecord, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        with self._data.lock:
            while self._data.holder is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LockHeld(
                        "another idb-stats run holds the lock for this store "
                        f"({_describe(self._data.holder)}; waited {timeout:g} s): wait for it to finish, "
                        "or raise --lock-timeout to wait longer"
                    )
                self._data.lock.wait(left)
            self._data.holder = run
        try:
            yield
        finally:
            with self._data.lock:
                self._data.holder = None
                self._data.lock.notify_all()

    def holder(self) -> LockHolder | None:
        with self._data.lock:
            run = self._data.holder
        return None if run is None else LockHolder(run.run_id, _describe(run))


def _describe(run: RunRecord) -> str:
    return f"{run.command} run {run.run_id} on {run.host} pid {run.pid} since {run.started_at}"


def _period(day: date, interval: str) -> date:
    """The first day of the interval holding `day`, as PostgreSQL's date_trunc gives it."""
    if interval == "day":
        return day
    if interval == "week":  # ISO weeks start on Monday
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    if interval == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    if interval == "year":
        return day.replace(month=1, day=1)
    raise StoreError(f"querying failed: unknown interval {interval!r}")


class MemoryStore(ClosedOnExit):
    """The Store protocol over MemoryData (see the module's docstring for what it is for)."""

    def __init__(self, data: MemoryData | None = None, name: str = "memory"):
        self._data = data if data is not None else MemoryData()
        self.identity = f"{KIND}:{name}"
        self._closed = False

    # --- the schema ---------------------------------------------------------------------------

    def init(self) -> None:
        self._open()
        self._data.initialized = True

    def _open(self) -> MemoryData:
        if self._closed:
            raise StoreError("the statistics store was closed")
        return self._data

    def _schema(self) -> MemoryData:
        """The data, which must have been initialised, as PostgreSQL's tables must exist."""
        data = self._open()
        if not data.initialized:
            raise StoreError("the memory store does not exist yet: run `idb-stats init`")
        return data

    def _initialized(self) -> bool:
        return self._open().initialized

    # --- days ---------------------------------------------------------------------------------

    def publish_day(
        self, stats: DayStats, documents: Iterable[Document], publishers: Sequence[Document] | None = None
    ) -> None:
        data = self._schema()
        day = stats.harvest_date
        new: dict[str, _Stored] = {}
        for doc in documents:  # all read before anything changes: a failure here changes nothing
            recordset_id = doc["recordset_id"]
            if doc["harvest_date"] != day.isoformat():
                raise StoreError(
                    f"publishing {day} failed and was rolled back: a document of {doc['harvest_date']}"
                )
            if recordset_id in new:
                raise StoreError(
                    f"publishing {day} failed and was rolled back: two documents of {recordset_id!r}"
                )
            new[recordset_id] = _Stored(compact(doc), summarize(doc))
        kept_publishers = None
        if publishers is not None:  # None (import, adopt): the day's publisher documents stay
            kept_publishers = {doc["publisher_id"]: compact(doc) for doc in publishers}
        old = data.daily.get(day, {})
        totals = self._swapped_totals(data, day, old, new)
        if day in data.marks:  # a day published for the first time changes nothing
            changed_at = datetime.now(UTC).isoformat(sep=" ")
            data.change_records += changes.diff_day(
                day,
                {rs: s.summary for rs, s in old.items()},
                {rs: s.summary for rs, s in new.items()},
                stats.reason,
                stats.run_id,
                changed_at,
            )
        if kept_publishers is not None:
            data.publishers[day] = kept_publishers
        if new:
            data.daily[day] = new
        else:
            data.daily.pop(day, None)
        self._apply_totals(data, totals)
        data.marks[day] = json.dumps(stats.as_dict())

    def forget_day(self, harvest_date: date) -> int:
        data = self._schema()
        old = data.daily.get(harvest_date, {})
        totals = self._swapped_totals(data, harvest_date, old, {})
        data.daily.pop(harvest_date, None)
        self._apply_totals(data, totals)
        data.publishers.pop(harvest_date, None)
        data.marks.pop(harvest_date, None)
        return len(old)

    def _swapped_totals(
        self, data: MemoryData, day: date, old: dict[str, _Stored], new: dict[str, _Stored]
    ) -> dict[str, Totals]:
        """Each affected recordset's totals with the day's old contribution swapped for the new
        one; totals that disagree with the documents (they list the day without its document, or
        hold a document they do not list, or are missing while other days have documents) are
        summed again from the documents, the day's new ones included."""
        current = {rs: Totals.from_doc(json.loads(text)) for rs, text in data.totals.items()}
        listing = {rs for rs, totals in current.items() if totals.includes(day)}
        affected = sorted(old.keys() | new.keys() | listing)
        merged: dict[str, Totals] = {}
        untrusted = []
        for rs in affected:
            totals = current.get(rs, Totals(rs))
            old_summary = old[rs].summary if rs in old else None
            new_summary = new[rs].summary if rs in new else None
            swapped = replace_day(totals, day, old_summary, new_summary)
            if swapped is None or (totals.empty and self._elsewhere(data, rs, day)):
                untrusted.append(rs)
            else:
                merged[rs] = swapped
        for rs in untrusted:
            days = [(d, docs[rs].summary) for d, docs in data.daily.items() if d != day and rs in docs]
            if rs in new:
                days.append((day, new[rs].summary))
            merged[rs] = rebuilt(rs, sorted(days, key=lambda pair: pair[0]))
        return merged

    @staticmethod
    def _elsewhere(data: MemoryData, recordset_id: str, day: date) -> bool:
        return any(recordset_id in docs for d, docs in data.daily.items() if d != day)

    @staticmethod
    def _apply_totals(data: MemoryData, totals: dict[str, Totals]) -> None:
        for rs, merged in totals.items():
            if merged.empty:
                data.totals.pop(rs, None)
            else:
                data.totals[rs] = compact(merged.to_doc())

    def held_days(self) -> HeldDays:
        if not self._initialized():
            return HeldDays()
        data = self._data
        documents = {day: len(docs) for day, docs in data.daily.items() if docs}
        listed = listed_days(
            day_ranges(json.loads(text).get("harvest_dates", [])) for text in data.totals.values()
        )
        return HeldDays(documents, listed)

    def completed_days(self) -> dict[date, dict[str, Any]]:
        if not self._initialized():
            return {}
        return {day: json.loads(text) for day, text in self._data.marks.items()}

    def export(self, first: date, last: date) -> Iterator[Document]:
        data = self._schema()
        days = sorted(d for d in data.daily if first <= d <= last)
        # A list, not a generator over the live dicts: a publish while the caller reads must not
        # change what it reads (PostgreSQL's cursor reads one snapshot).
        texts = [data.daily[d][rs].text for d in days for rs in sorted(data.daily[d])]
        return (json.loads(text) for text in texts)

    def publishers(self, first: date, last: date) -> Iterator[Document]:
        data = self._schema()
        days = sorted(d for d in data.publishers if first <= d <= last)
        texts = [data.publishers[d][p] for d in days for p in sorted(data.publishers[d])]
        return (json.loads(text) for text in texts)

    def totals(self, recordsets: Sequence[str] = ()) -> Iterator[Document]:
        data = self._schema()
        wanted = sorted(set(recordsets) & data.totals.keys() if recordsets else data.totals)
        texts = [data.totals[rs] for rs in wanted]
        return (json.loads(text) for text in texts)

    def rewrite_totals(self, documents: Sequence[Document], gone: Sequence[str]) -> None:
        data = self._schema()
        for doc in documents:
            data.totals[doc["recordset_id"]] = compact(doc)
        for rs in gone:
            data.totals.pop(rs, None)

    def changes(self, since: date | None = None, recordset_id: str | None = None) -> list[dict[str, Any]]:
        if not self._initialized():
            return []
        copied: list[dict[str, Any]] = json.loads(  # a copy, as a real store's read is
            json.dumps(changes.selected(self._data.change_records, since, recordset_id))
        )
        return copied

    # --- the run ledger -----------------------------------------------------------------------

    def record_run(self, run: RunRecord) -> None:
        data = self._schema()
        data.runs[run.run_id] = json.dumps(run.as_dict())

    def run_lock(self) -> MemoryRunLock:
        return MemoryRunLock(self._open())

    def _ledger(self) -> list[dict[str, Any]]:
        """Runs newest first: by start, and of runs started in the same millisecond the later
        recorded first."""
        entries = [json.loads(text) for text in self._data.runs.values()]
        ordered = sorted(enumerate(entries), key=lambda pair: (pair[1]["started_at"], pair[0]), reverse=True)
        return [entry for _, entry in ordered]

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        if not self._initialized():
            return []
        return self._ledger()[:limit]

    def last_run(self, command: str) -> dict[str, Any] | None:
        if not self._initialized():
            return None
        return next((run for run in self._ledger() if run.get("command") == command), None)

    # --- snapshots ----------------------------------------------------------------------------

    def write_snapshot(self, snapshot_date: date, documents: Iterable[Document]) -> int:
        data = self._schema()
        snapshot: dict[str, str] = {}
        for doc in documents:
            if doc["recordset_id"] in snapshot:
                raise StoreError(
                    "writing the snapshot failed and was rolled back: "
                    f"two documents of {doc['recordset_id']!r}"
                )
            snapshot[doc["recordset_id"]] = compact(doc)
        if snapshot:
            data.snapshots[snapshot_date] = snapshot
        else:
            data.snapshots.pop(snapshot_date, None)
        return len(snapshot)

    def snapshots(self) -> dict[date, int]:
        if not self._initialized():
            return {}
        return {day: len(docs) for day, docs in self._data.snapshots.items()}

    # --- read queries (show, report) -----------------------------------------------------------

    def _in_range(
        self, recordsets: Sequence[str], first: date | None, last: date | None
    ) -> Iterator[tuple[date, str, _Stored]]:
        data = self._schema()
        wanted = set(recordsets)
        for day in sorted(data.daily):
            if (first is None or day >= first) and (last is None or day <= last):
                for rs in sorted(data.daily[day]):
                    if not wanted or rs in wanted:
                        yield day, rs, data.daily[day][rs]

    def series(
        self,
        recordsets: Sequence[str],
        first: date | None,
        last: date | None,
        interval: str,
        by_recordset: bool = True,
    ) -> list[dict[str, Any]]:
        sums: dict[tuple[date, str | None], dict[str, int]] = {}
        for day, rs, stored in self._in_range(recordsets, first, last):
            row = sums.setdefault(
                (_period(day, interval), rs if by_recordset else None),
                {".".join(name): 0 for name in COUNT_FIELDS},
            )
            for rt, ty in BLOCKS:
                count, total = stored.summary.counts.get((rt, ty), (0, 0))
                row[f"{rt}.{ty}.count"] += count
                row[f"{rt}.{ty}.total"] += total
        return [
            {"period": period, "recordset_id": rs, **figures}
            for (period, rs), figures in sorted(sums.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
        ]

    def top_countries(
        self,
        recordsets: Sequence[str],
        first: date | None,
        last: date | None,
        limit: int,
        by_recordset: bool = False,
    ) -> list[dict[str, Any]]:
        hits: dict[str | None, dict[str, int]] = {}
        for _, rs, stored in self._in_range(recordsets, first, last):
            by_country = hits.setdefault(rs if by_recordset else None, {})
            for countries in stored.summary.countries.values():
                for country, n in countries.items():
                    by_country[country] = by_country.get(country, 0) + n
        rows = [
            {"recordset_id": rs, "country": country, "hits": n}
            for rs in sorted(hits, key=lambda rs: rs or "")
            for country, n in by_count(hits[rs])[:limit]
        ]
        return rows if by_recordset else [{"country": r["country"], "hits": r["hits"]} for r in rows]

    def top_terms(
        self, recordset_id: str, first: date | None, last: date | None, limit: int
    ) -> dict[str, list[dict[str, Any]]]:
        sums: dict[str, dict[str, int]] = {"items": {}, "queries": {}}
        for _, _, stored in self._in_range([recordset_id], first, last):
            add_terms(json.loads(stored.text), sums)
        return {
            kind: [{"term": term, "count": n} for term, n in by_count(counts)[:limit]]
            for kind, counts in sums.items()
        }

    def close(self) -> None:
        self._closed = True
