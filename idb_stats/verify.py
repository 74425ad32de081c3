"""verify: recompute published days from the source and compare them with the store, exactly.

Three checks:
  - documents: each day's documents, recomputed from the source, field by field against the
    store's (the data is deterministic, so any difference is real);
  - totals: every recordset's totals document against the sum of its daily documents;
  - ledger: a day marked complete holds as many documents as its figures say, and documents
    exist only for marked days.
A day whose source rows are gone cannot be recomputed: it is "unverifiable" and never touched.
Lists (items, queries, geocodes) are compared as multisets of (term or geo, count): their order
among equal counts is no statistic, and an adopted document's `geo: null` means what `{}` does.
An adopted day (the original collector's) that differs only by the events stamped exactly at the
midnight opening its window (the original's open window left them out of every day, see
docs/migrating.md) is "midnight_only", not a difference; --repair leaves adopted days alone
unless they are named.

Memory stays bounded: the recomputed documents and the store's export of a day are both ordered
by recordset and compared as they stream; the totals check keeps one running Totals per
recordset; differences go to a callback as they are found.
Long because its three checks share one streamed pass over the store.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .adopt import ADOPT_RUN_PREFIX
from .collect import process_day
from .config import Config
from .documents import day_documents, with_every_block
from .engines import open_source
from .errors import IdbStatsError, SourceRowsGone, VerifyDifferences
from .ledger import write_run
from .model import BLOCKS, COUNTER_KEY, DayStats
from .ports import DayStore, Document, Publishing, TelemetrySource, given_or_opened
from .rules import aggregate
from .runs import RunRecord
from .stores import open_store
from .totals import ONE_DAY, Totals, summarize, with_day, with_every_total

log = logging.getLogger("idb_stats")

# The whole store, for the totals check: no harvest date lies outside these.
EARLIEST, LATEST = date(1970, 1, 1), date(2999, 12, 31)


class _Missing:
    """Stands for a field or document present on one side only."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


# The breakdown lists of a block and the key of their entries.
LISTS = {"items": "term", "queries": "term", "geocodes": "geo"}


def entry_key(entry: Any, key: str) -> str:
    """An entry's term or geo as text; a null geo is the empty one (both: country unknown)."""
    value = entry.get(key) if isinstance(entry, dict) else entry
    if key == "geo" and value is None:
        value = {}
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _by_key(entries: list[Any], key: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for entry in entries:
        out.setdefault(entry_key(entry, key), []).append(
            entry.get("count", MISSING) if isinstance(entry, dict) else MISSING
        )
    return out


def _exact(value: Any) -> tuple[str, str]:
    # 1 and 1.0 are equal and hash alike in Python; as statistics they are not the same value.
    return type(value).__name__, repr(value)


def _list_diff(expected: list[Any], actual: list[Any], key: str, path: str) -> Iterator[tuple[str, Any, Any]]:
    """Two breakdown lists as multisets of (term or geo, count): one difference per term whose
    counts differ."""
    wanted, have = _by_key(expected, key), _by_key(actual, key)
    for term in sorted(wanted.keys() | have.keys()):
        a, b = wanted.get(term, []), have.get(term, [])
        if sorted(map(_exact, a)) != sorted(map(_exact, b)):
            yield f"{path}[{term}]", _one(a), _one(b)


def _one(counts: list[Any]) -> Any:
    return MISSING if not counts else counts[0] if len(counts) == 1 else counts


def diff(expected: Any, actual: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every leaf where two JSON values differ, as (path, expected, actual); exact, so 1 != 1.0.
    A breakdown list differs by term (multisets, see _list_diff), any other list element by element."""
    name = path.rsplit(".", 1)[-1]
    if name in LISTS and isinstance(expected, list) and isinstance(actual, list):
        yield from _list_diff(expected, actual, LISTS[name], path)
    elif isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(expected.keys() | actual.keys()):
            yield from diff(
                expected.get(key, MISSING), actual.get(key, MISSING), f"{path}.{key}" if path else key
            )
    elif isinstance(expected, list) and isinstance(actual, list):
        for i in range(max(len(expected), len(actual))):
            yield from diff(
                expected[i] if i < len(expected) else MISSING,
                actual[i] if i < len(actual) else MISSING,
                f"{path}[{i}]",
            )
    elif type(expected) is not type(actual) or expected != actual:
        yield path, expected, actual


def by_recordset(
    expected: Iterable[Document], actual: Iterable[Document]
) -> Iterator[tuple[str, Document | None, Document | None]]:
    """Pair two streams sorted by recordset_id (code point order on both sides)."""
    left, right = iter(expected), iter(actual)
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a["recordset_id"] < b["recordset_id"]):
            assert a is not None
            yield a["recordset_id"], a, None
            a = next(left, None)
        elif a is None or b["recordset_id"] < a["recordset_id"]:
            yield b["recordset_id"], None, b
            b = next(right, None)
        else:
            yield a["recordset_id"], a, b
            a, b = next(left, None), next(right, None)


@dataclass(frozen=True)
class Difference:
    check: str  # documents, totals or ledger
    harvest_date: str | None
    recordset_id: str | None
    path: str
    expected: Any
    actual: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "harvest_date": self.harvest_date,
            "recordset_id": self.recordset_id,
            "path": self.path,
            "expected": repr(self.expected) if self.expected is MISSING else self.expected,
            "actual": repr(self.actual) if self.actual is MISSING else self.actual,
        }


@dataclass
class DayResult:
    harvest_date: date
    outcome: str = "agrees"  # agrees, differs, midnight_only or unverifiable
    documents: int = 0  # in the store
    differences: int = 0
    adopted: bool = False  # published by adopt (the original collector's numbers)
    midnight_differences: int = 0  # explained by the events at the opening midnight

    def as_dict(self) -> dict[str, Any]:
        return {
            "harvest_date": self.harvest_date.isoformat(),
            "outcome": self.outcome,
            "documents": self.documents,
            "differences": self.differences,
            "adopted": self.adopted,
            "midnight_differences": self.midnight_differences,
        }


@dataclass
class Report:
    days: list[DayResult] = field(default_factory=list)
    totals_checked: int = 0
    totals_differing: list[str] = field(default_factory=list)
    differences: int = 0

    @property
    def differing_days(self) -> list[date]:
        return [d.harvest_date for d in self.days if d.outcome == "differs"]

    @property
    def midnight_days(self) -> list[date]:
        return [d.harvest_date for d in self.days if d.outcome == "midnight_only"]

    @property
    def unverifiable_days(self) -> list[date]:
        return [d.harvest_date for d in self.days if d.outcome == "unverifiable"]

    @property
    def agrees(self) -> bool:
        return self.differences == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "days": [d.as_dict() for d in self.days],
            "totals_checked": self.totals_checked,
            "totals_differing": self.totals_differing,
            "differences": self.differences,
            "differing_days": [d.isoformat() for d in self.differing_days],
            "unverifiable_days": [d.isoformat() for d in self.unverifiable_days],
            "midnight_only_days": [d.isoformat() for d in self.midnight_days],
        }


# Called with every difference as it is found, and whether it was found after a repair.
OnDifference = Callable[[Difference, bool], None]
# Called with each day once checked, how many of how many are done, and whether after a repair.
OnDay = Callable[[DayResult, int, int, bool], None]


@dataclass
class _Sums:
    """One pass over every daily document: the totals they add up to and documents per day."""

    totals: dict[str, Totals] = field(default_factory=dict)
    per_day: Counter[date] = field(default_factory=Counter)


def _sum_store(store: DayStore) -> _Sums:
    sums = _Sums()
    for doc in store.export(EARLIEST, LATEST):
        day, recordset_id = date.fromisoformat(doc["harvest_date"]), doc["recordset_id"]
        sums.totals[recordset_id] = with_day(
            sums.totals.get(recordset_id) or Totals(recordset_id), day, summarize(doc)
        )
        sums.per_day[day] += 1
    return sums


def _divergent_totals(store: DayStore, sums: _Sums) -> Iterator[tuple[str, Document | None, Document | None]]:
    """(recordset, expected, stored) of every totals document that is not the sum of its days."""
    expected = (sums.totals[rs].to_doc() for rs in sorted(sums.totals))
    # Documents written before a block existed read it as zeros, as the day's recomputed ones have it.
    for recordset_id, wanted, stored in by_recordset(expected, map(with_every_total, store.totals())):
        if wanted != stored:
            yield recordset_id, wanted, stored


class Verifier:
    def __init__(
        self,
        config: Config,
        store: DayStore,
        source: TelemetrySource,
        on_difference: OnDifference,
        after_repair: bool = False,
        on_day: OnDay | None = None,
    ):
        self.config = config
        self.store = store
        self.source = source
        self.on_difference = on_difference
        self.after_repair = after_repair
        self.on_day = on_day

    def run(self, first: date | None, last: date | None, sample: int | list[date] | None) -> Report:
        """Check totals, and the days of the range (all, a random sample of `sample` days, or
        exactly the days listed)."""
        report = Report()
        sums = _sum_store(self.store)
        self._check_totals(sums, report)
        marked = self.store.completed_days()
        days = sorted(
            d
            for d in marked.keys() | sums.per_day.keys()
            if (first is None or d >= first) and (last is None or d <= last)
        )
        if isinstance(sample, list):
            days = sorted(set(sample))
        elif sample is not None and sample < len(days):
            days = sorted(random.sample(days, sample))
        for done, day in enumerate(days, 1):
            result = self._check_day(day, marked.get(day), sums.per_day.get(day, 0))
            report.days.append(result)
            report.differences += result.differences
            if self.on_day:
                self.on_day(result, done, len(days), self.after_repair)
        return report

    def _report(self, difference: Difference) -> None:
        self.on_difference(difference, self.after_repair)

    def _check_totals(self, sums: _Sums, report: Report) -> None:
        report.totals_checked = len(sums.totals)
        for recordset_id, wanted, stored in _divergent_totals(self.store, sums):
            report.totals_differing.append(recordset_id)
            for path, expected, actual in diff(wanted or MISSING, stored or MISSING):
                report.differences += 1
                self._report(Difference("totals", None, recordset_id, path, expected, actual))

    def _check_day(self, day: date, marker: dict[str, Any] | None, stored: int) -> DayResult:
        adopted = marker is not None and str(marker.get("run_id", "")).startswith(ADOPT_RUN_PREFIX)
        result = DayResult(day, documents=stored, adopted=adopted)
        iso = day.isoformat()

        def found(check: str, recordset_id: str | None, path: str, expected: Any, actual: Any) -> None:
            result.differences += 1
            self._report(Difference(check, iso, recordset_id, path, expected, actual))

        if marker is None:
            found("ledger", None, "marked complete", True, False)
        elif int(marker.get("recordsets", 0)) != stored:
            found("ledger", None, "recordsets", int(marker.get("recordsets", 0)), stored)
        with self.source.read_day(day) as telemetry:
            if telemetry.report.rows == 0:
                if stored or (marker and marker.get("recordsets")):
                    result.outcome = "unverifiable"
                    return result
                pending: list[Difference] = []
            else:
                pending = list(
                    self._document_differences(
                        day, day_documents(telemetry, day, DayStats(day), self.config.breakdown_limit)
                    )
                )
        residual = self._as_the_original_counted(day) if pending and adopted else None
        if residual == []:
            # The original's numbers as it counted them: listed as such, no difference.
            result.midnight_differences = len(pending)
            for difference in pending:
                self._report(Difference("midnight", *astuple_tail(difference)))
        else:
            # On an adopted day with midnight events, what differs from the original's own count.
            for difference in pending if residual is None else residual:
                found(
                    difference.check,
                    difference.recordset_id,
                    difference.path,
                    difference.expected,
                    difference.actual,
                )
        if result.differences:
            result.outcome = "differs"
        elif result.midnight_differences:
            result.outcome = "midnight_only"
        return result

    def _document_differences(
        self, day: date, recomputed: Iterable[Document], stored: Iterable[Document] | None = None
    ) -> Iterator[Difference]:
        iso = day.isoformat()
        stored = map(with_every_block, self.store.export(day, day)) if stored is None else stored
        for recordset_id, wanted, have in by_recordset(recomputed, stored):
            if wanted is None or have is None:
                yield Difference(
                    "documents", iso, recordset_id, "document", wanted is not None, have is not None
                )
            else:
                if COUNTER_KEY not in have:
                    # Stored without COUNTER-style figures (adopted, imported or collected before
                    # them, or without an ip column): unknown, so not compared.
                    wanted = {k: v for k, v in wanted.items() if k != COUNTER_KEY}
                for path, expected, actual in diff(wanted, have):
                    yield Difference("documents", iso, recordset_id, path, expected, actual)

    def _as_the_original_counted(self, day: date) -> list[Difference] | None:
        """The differences between the store's documents of the day and the recomputed ones
        without the events stamped exactly at the midnight that opens the day's window (None
        when there are no such events)."""
        rows = self.source.rows_at(day - ONE_DAY)
        if not rows:
            return None
        events = {doc["recordset_id"]: doc for doc in aggregate(rows, day)[0]}
        with self.source.read_day(day) as telemetry:
            recomputed = day_documents(telemetry, day, DayStats(day), self.config.breakdown_limit)
            original = (
                left
                for doc in recomputed
                if (left := without_events(doc, events.get(doc["recordset_id"]))) is not None
            )
            # Less the midnight events, a term they alone brought is gone while one that other rows
            # brought with 0 hits stays (both are 0 hits after subtracting): zero entries are left
            # out on both sides.
            stored = (without_zero_entries(with_every_block(doc)) for doc in self.store.export(day, day))
            return list(self._document_differences(day, original, stored))


def without_zero_entries(doc: Document) -> Document:
    out = copy.deepcopy(doc)
    for rt, ty in BLOCKS:
        for name in LISTS:
            out[rt][ty][name] = [e for e in out[rt][ty][name] if e.get("count") != 0]
    return out


def astuple_tail(difference: Difference) -> tuple[str | None, str | None, str, Any, Any]:
    return (
        difference.harvest_date,
        difference.recordset_id,
        difference.path,
        difference.expected,
        difference.actual,
    )


def without_events(doc: Document, events: Document | None) -> Document | None:
    """A daily document less the events of another of the same recordset and day (pure); None
    when nothing is left (the original wrote no document for it)."""
    if events is None:
        return doc
    out = copy.deepcopy(doc)
    for rt, ty in BLOCKS:
        block, less = out[rt][ty], events[rt][ty]
        block["count"] -= less["count"]
        block["total"] -= less["total"]
        for name, key in LISTS.items():
            sums: dict[str, list[Any]] = {entry_key(e, key): [e[key], e["count"]] for e in block[name]}
            for entry in less[name]:
                sums.setdefault(entry_key(entry, key), [entry[key], 0])[1] -= entry["count"]
            block[name] = [{key: value, "count": n} for value, n in sums.values()]
    if all(out[rt][ty]["count"] == 0 and out[rt][ty]["total"] == 0 for rt, ty in BLOCKS):
        return None
    return without_zero_entries(out)


@dataclass
class Outcome:
    report: Report
    repaired_days: list[date] = field(default_factory=list)
    rebuilt_totals: list[str] = field(default_factory=list)
    adopted_left: list[date] = field(default_factory=list)  # differing adopted days not repaired
    after_repair: Report | None = None

    @property
    def final(self) -> Report:
        return self.after_repair or self.report

    def summary(self) -> dict[str, Any]:
        """The closing line of `verify --json`."""
        summary = {
            "before_repair" if self.after_repair else "result": self.report.as_dict(),
            "repaired_days": [d.isoformat() for d in self.repaired_days],
            "rebuilt_totals": self.rebuilt_totals,
            "adopted_left": [d.isoformat() for d in self.adopted_left],
        }
        if self.after_repair:
            summary["result"] = self.after_repair.as_dict()
        return {"summary": summary}

    def text_lines(self) -> Iterator[str]:
        """What `verify` prints: each day's outcome, the totals, and after a repair the same again."""
        reports = [("", self.report)]
        if self.after_repair:
            reports.append(("after repair: ", self.after_repair))
        for prefix, report in reports:
            for day in report.days:
                yield (
                    f"{prefix}{day.harvest_date}  {day.outcome:<12} {day.documents} documents"
                    + (f", {day.differences} differences" if day.differences else "")
                )
            yield (
                f"{prefix}totals: {report.totals_checked} recordsets checked, "
                f"{len(report.totals_differing)} differ"
            )
            if report.midnight_days:
                yield (
                    f"{prefix}adopted days differing only by the events at midnight, which the original "
                    f"counted for no day (docs/migrating.md): {', '.join(map(str, report.midnight_days))}"
                )
            if prefix == "" and self.after_repair:
                yield (
                    f"repaired: {len(self.repaired_days)} days republished, "
                    f"{len(self.rebuilt_totals)} totals rebuilt"
                )

    def error(self) -> IdbStatsError | None:
        """Exit 11 when any difference is left, else 10 when days could not be checked, else None."""
        final = self.final
        if not final.agrees:
            days = ", ".join(map(str, final.differing_days)) or "none"
            left = (
                f"; adopted days left as the original wrote them: {', '.join(map(str, self.adopted_left))} "
                "(--include-adopted D republishes one from the telemetry)"
                if self.adopted_left
                else ""
            )
            return VerifyDifferences(
                f"verify: {final.differences} differences (days {days}, "
                f"totals of {len(final.totals_differing)} recordsets); --json lists them, --repair fixes "
                f"what the telemetry can recompute, except adopted days unless named with --include-adopted"
                f"{left}"
            )
        if final.unverifiable_days:
            return SourceRowsGone(
                f"verify: the telemetry rows of {', '.join(map(str, final.unverifiable_days))} are gone; "
                "their published documents cannot be checked and were left as they are"
            )
        return None


def verify(
    config: Config,
    first: date | None = None,
    last: date | None = None,
    sample: int | None = None,
    repair: bool = False,
    on_difference: OnDifference = lambda d, after_repair: None,
    lock_timeout: float | None = None,
    on_day: OnDay | None = None,
    include_adopted: frozenset[date] = frozenset(),
    source: TelemetrySource | None = None,
    store: Publishing | None = None,
) -> Outcome:
    """Compare, and with repair: republish differing days (reason repair), rebuild totals that
    are not the sum of their days, then compare again. Adopted days (the original collector's
    history) are republished only when named in include_adopted. The repair is a run of its own
    in the ledger ("verify --repair"), with its lock and outcome like any write. source and
    store: the caller's adapters (else the configuration's, opened and closed here)."""
    with (
        given_or_opened(source, lambda: open_source(config)) as source,
        given_or_opened(store, lambda: open_store(config)) as store,
    ):
        report = Verifier(config, store, source, on_difference, on_day=on_day).run(first, last, sample)
        outcome = Outcome(report)
        if not repair or report.agrees:
            return outcome
        with write_run(config, store, "verify --repair", lock_timeout) as run:
            days = [
                d.harvest_date
                for d in report.days
                if d.outcome == "differs" and (not d.adopted or d.harvest_date in include_adopted)
            ]
            outcome.adopted_left = [d for d in report.differing_days if d not in days]
            outcome.repaired_days, outcome.rebuilt_totals = _repair(config, store, source, days, run)
        outcome.after_repair = Verifier(
            config, store, source, on_difference, after_repair=True, on_day=on_day
        ).run(first, last, sorted(d.harvest_date for d in report.days))
        return outcome


def _repair(
    config: Config, store: DayStore, source: TelemetrySource, days: list[date], run: RunRecord
) -> tuple[list[date], list[str]]:
    repaired = []
    for day in days:
        stats = process_day(config, source, store, day, run.run_id, reason="repair")
        run.days.append(stats.as_dict())
        repaired.append(day)
        log.info(
            "%s: republished (repair)",
            day,
            extra={"fields": {"harvest_date": day.isoformat(), "reason": "repair"}},
        )
    # Republishing swaps a day's old contribution for its new one, so totals that were wrong
    # before stay wrong: rebuild those from the documents.
    sums = _sum_store(store)
    divergent = list(_divergent_totals(store, sums))
    store.rewrite_totals(
        [wanted for _, wanted, _ in divergent if wanted is not None],
        [rs for rs, wanted, _ in divergent if wanted is None],
    )
    rebuilt = [rs for rs, _, _ in divergent]
    run.rebuilt_totals = rebuilt
    return repaired, rebuilt
