"""Taking over an index the original collector wrote (`idb-stats adopt`), and legacy-shaped imports.

The original's index is read day by day, whatever its documents' ids (a scroll per UTC day of
harvest_date, so memory follows one day). Each day's documents are normalised (legacy.py), their
duplicates resolved by the operator's policy, and published through the store's normal, crash-safe
publish_day into the target: a new versioned index (Elasticsearch/OpenSearch) or the PostgreSQL
store. Totals and day markers come with it; markers carry a run id starting "adopt-", so status
counts gaps only from where collection continues, and collect-stats catches up from the day after
the last adopted one. Days already adopted are skipped, so an interrupted adoption is finished by
running it again. Last, when the target is a search index, one atomic `_aliases` request deletes
the original index and gives its name to the new one, so the portal keeps reading `stats`.
Long because adoption is one protocol (plan, per-day copy, check, alias switch) best read whole.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from .config import Config
from .documents import Document
from .errors import ConfigError, DataQualityError, IdbStatsError, IncompatibleIndex, StoreError
from .legacy import (
    DayOutcome,
    DuplicatesRefused,
    NotADailyDocument,
    legacy_day,
    missing_blocks,
    normalise,
    resolve_duplicates,
)
from .model import DayStats
from .ndjson import JSON_WHITESPACE
from .pg import run_lock
from .ports import Store
from .stores import open_store

log = logging.getLogger(__name__)

ADOPT_RUN_PREFIX = "adopt-"


class DuplicateDocuments(DataQualityError):
    """Two or more documents of one (recordset, day) under --duplicates refuse."""


def adopted_days(complete: dict[date, dict[str, Any]]) -> list[date]:
    """Days a store holds because they were adopted, not collected."""
    return sorted(d for d, m in complete.items() if str(m.get("run_id", "")).startswith(ADOPT_RUN_PREFIX))


@dataclass
class AdoptReport:
    legacy_index: str
    target: str
    dry_run: bool
    documents: int = 0  # in the original index when adoption started
    undated: int = 0  # without a harvest_date the histogram can place: not adopted
    days: list[DayOutcome] = field(default_factory=list)
    already_adopted: list[date] = field(default_factory=list)  # by an earlier, interrupted run
    size_snapshots: int = 0
    alias_switched: bool = False
    finished_before: bool = False  # the original's name already points at the target

    def as_dict(self) -> dict[str, Any]:
        written = sum(d.written for d in self.days)
        return {
            "legacy_index": self.legacy_index,
            "target": self.target,
            "dry_run": self.dry_run,
            "documents": self.documents,
            "undated": self.undated,
            "days": len(self.days),
            "first_day": min((d.harvest_date for d in self.days), default=None),
            "last_day": max((d.harvest_date for d in self.days), default=None),
            "written": written,
            "duplicate_recordset_days": sum(len(d.duplicates) for d in self.days),
            "rejected": _sum_reasons(self.days),
            "filled_blocks": sum(d.filled_blocks for d in self.days),
            "days_already_adopted": len(self.already_adopted),
            "size_snapshots": self.size_snapshots,
            "alias_switched": self.alias_switched,
            "finished_before": self.finished_before,
        }


def _sum_reasons(days: Iterable[DayOutcome]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for day in days:
        for reason, n in day.rejected.items():
            sums[reason] = sums.get(reason, 0) + n
    return dict(sorted(sums.items()))


def adopt(
    config: Config,
    legacy_config: Config,
    target_index: str | None,
    duplicates: str,
    dry_run: bool,
    on_day: Callable[[DayOutcome], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> AdoptReport:
    """Adopt legacy_config.daily_index (on a search cluster) into config's store.

    target_index: the new index when config's store is a search store (None for PostgreSQL).
    on_total hears how many days are to adopt before on_day hears of each (for progress).
    """
    from .stores.search import SearchStore

    legacy_index = legacy_config.daily_index
    reader = open_store(legacy_config)
    if not isinstance(reader, SearchStore):
        raise ConfigError(
            ["adopt reads an Elasticsearch or OpenSearch index: give --from-store and --from-url"]
        )
    search_target = config.store in ("elasticsearch", "opensearch")
    same_cluster = search_target and (config.store_url, config.daily_index) == (
        legacy_config.store_url,
        legacy_index,
    )
    target_name = target_index if search_target else f"{config.store} schema {config.store_schema}"
    report = AdoptReport(legacy_index, str(target_name), dry_run)
    try:
        state, behind = reader.index_state(legacy_index)
        if state == "alias":
            if target_index in behind:
                report.finished_before = True
                return report
            raise IncompatibleIndex(
                f"{legacy_index!r} is already an alias (of {', '.join(behind)}): nothing to adopt"
            )
        if state == "absent":
            raise ConfigError([f"adopt: there is no index {legacy_index!r} to adopt"])
        others = (legacy_index, config.totals_index, config.runs_index, config.api_index)
        if search_target and target_index in others:
            raise ConfigError([f"adopt --target: {target_index!r} names another index; choose a new name"])
        report.documents = reader.count(legacy_index)
        days = reader.legacy_days(legacy_index)
        report.undated = report.documents - sum(days.values())
        if duplicates == "refuse" or dry_run:
            planned = _plan_duplicates(reader, legacy_index, days)
            if duplicates == "refuse" and planned and not dry_run:
                raise DuplicateDocuments(
                    f"{sum(len(v) for v in planned.values())} (recordset, day) pairs have more than one "
                    f"document in {legacy_index!r}, e.g. "
                    + "; ".join(
                        f"{d}: " + ", ".join(f"{rs} ({n})" for rs, n in sorted(rs_n.items())[:5])
                        for d, rs_n in sorted(planned.items())[:5]
                    )
                    + "; choose --duplicates keep-last or --duplicates sum (see docs/migrating.md)"
                )
        if dry_run:
            if on_total:
                on_total(len(days))
            for day in sorted(days):
                outcome = DayOutcome(day, read=days[day], duplicates=planned.get(day, {}))
                report.days.append(outcome)
                if on_day:
                    on_day(outcome)
            return report
        target_config = replace(config, daily_index=target_index or "") if search_target else config
        with open_store(target_config) as store:
            # The lock collect-stats takes for this configuration's store, so neither runs beside the other.
            lock_identity = store.identity if not search_target else _identity(config)
            with run_lock(config, lock_identity, config.lock_timeout):
                _refuse_foreign_totals(store, reader, target_config, search_target)
                store.init()
                done = set(adopted_days(store.completed_days()))
                if on_total:
                    on_total(len(days.keys() - done))
                run_id = f"{ADOPT_RUN_PREFIX}{uuid.uuid4().hex[:8]}"
                for day in sorted(days):
                    if day in done:
                        report.already_adopted.append(day)
                        continue
                    outcome, snapshots = _adopt_day(reader, legacy_index, store, day, duplicates, run_id)
                    report.size_snapshots += snapshots
                    report.days.append(outcome)
                    if on_day:
                        on_day(outcome)
                if search_target:
                    _verify(reader, store, target_index or "", legacy_index, report.documents)
                if same_cluster and target_index:
                    reader.replace_index_with_alias(legacy_index, target_index)
                    report.alias_switched = True
        return report
    finally:
        reader.close()


def _identity(config: Config) -> str:
    with open_store(config) as store:
        return store.identity


def _plan_duplicates(reader: Any, index: str, days: dict[date, int]) -> dict[date, dict[str, int]]:
    """(recordset, day) pairs with more than one document, read from ids and recordset only."""
    found: dict[date, dict[str, int]] = {}
    for day in days:
        seen: dict[str, int] = {}
        for _, source in reader.legacy_documents(index, day, ["recordset_id", "records_count"]):
            recordset_id = source.get("recordset_id")
            if isinstance(recordset_id, str) and "records_count" not in source:
                seen[recordset_id] = seen.get(recordset_id, 0) + 1
        repeated = {rs: n for rs, n in seen.items() if n > 1}
        if repeated:
            found[day] = repeated
    return found


def _refuse_foreign_totals(store: Store, reader: Any, target_config: Config, search_target: bool) -> None:
    # Totals made by collecting into the original index would list days the adoption rewrites
    # (publish_day then takes them for already added); a fresh adoption needs them rebuilt.
    totals = target_config.totals_index
    fresh = search_target and reader.index_state(target_config.daily_index)[0] == "absent"
    if fresh and reader.index_state(totals)[0] != "absent" and reader.count(totals):
        raise IncompatibleIndex(
            f"the totals index {totals!r} already holds totals: adopt rebuilds them from the original "
            "index; delete it (and the runs index) first, see docs/migrating.md"
        )


def _adopt_day(
    reader: Any, index: str, store: Store, day: date, duplicates: str, run_id: str
) -> tuple[DayOutcome, int]:
    outcome = DayOutcome(day)
    docs: list[Document] = []
    snapshots: dict[str, dict[str, Any]] = {}
    # Sorted by (sequence number, id): "last" in keep-last is the last written.
    for _, raw in sorted(reader.legacy_documents(index, day), key=lambda pair: pair[0]):
        outcome.read += 1
        try:
            doc = normalise(raw)
        except NotADailyDocument as exc:
            if exc.reason == "size_snapshot":
                snapshots[str(raw.get("recordset_id"))] = raw
            else:
                outcome.rejected[exc.reason] = outcome.rejected.get(exc.reason, 0) + 1
                log.warning("%s: a document of %s not adopted: %s", index, day, exc)
            continue
        outcome.filled_blocks += missing_blocks(raw)
        docs.append(doc)
    try:
        resolved = resolve_duplicates(docs, duplicates, outcome)
    except DuplicatesRefused as exc:  # written meanwhile by a collector that still runs
        raise DuplicateDocuments(f"duplicates appeared during adoption: {exc}") from None
    if resolved:
        stats = DayStats(day, run_id, recordsets=len(resolved), reason="adopt")
        store.publish_day(stats, iter(resolved))
        outcome.written = len(resolved)
    if snapshots:
        store.write_snapshot(day, _size_snapshots(snapshots.values(), outcome))
    return outcome, len(snapshots)


def _size_snapshots(docs: Iterable[dict[str, Any]], outcome: DayOutcome) -> Iterator[Document]:
    for doc in docs:
        try:
            yield {
                "recordset_id": doc["recordset_id"],
                "harvest_date": doc.get("harvest_date"),
                "records_count": int(doc.get("records_count") or 0),
                "mediarecords_count": int(doc.get("mediarecords_count") or 0),
            }
        except (KeyError, TypeError, ValueError):
            outcome.rejected["bad_size_snapshot"] = outcome.rejected.get("bad_size_snapshot", 0) + 1


def _verify(reader: Any, store: Store, target: str, legacy_index: str, documents_at_start: int) -> None:
    """Before the original index is deleted: the target holds one document per adopted
    (recordset, day), and nothing was added to the original meanwhile."""
    complete = store.completed_days()
    expected = sum(int(complete[d].get("recordsets", 0)) for d in adopted_days(complete))
    held = reader.count(target)
    if held != expected:
        raise StoreError(
            f"adopt: {target!r} holds {held} documents where the adopted days list {expected}; "
            f"{legacy_index!r} is kept; re-run `idb-stats adopt` to repair"
        )
    now = reader.count(legacy_index)
    if now != documents_at_start:
        raise IncompatibleIndex(
            f"adopt: {legacy_index!r} changed during adoption ({documents_at_start} -> {now} documents): "
            "stop the original collector's timer, then run `idb-stats adopt` again"
        )


def normalised_import(
    lines: Iterable[str | dict[str, Any]], duplicates: str, on_rejected: Callable[[int, str], None]
) -> Iterator[tuple[DayOutcome, list[Document]]]:
    """NDJSON lines (an export, ours or the original's; or parsed) as days of normalised documents.

    A day's lines must be contiguous (as an export is). Every line is counted: adopted, resolved
    as a duplicate, or rejected with its line number and reason through on_rejected.
    """
    import json

    current: DayOutcome | None = None
    docs: list[Document] = []
    finished: set[date] = set()
    for number, line in enumerate(lines, 1):
        if isinstance(line, str) and not line.strip(JSON_WHITESPACE):
            continue
        try:
            raw = json.loads(line) if isinstance(line, str) else line
            day = legacy_day(raw.get("harvest_date") if isinstance(raw, dict) else None)
        except ValueError as exc:
            on_rejected(number, getattr(exc, "reason", "not_json"))
            continue
        if current is None or day != current.harvest_date:
            if current is not None:
                yield _resolved(current, docs, duplicates)
                finished.add(current.harvest_date)
            if day in finished:
                raise IdbStatsError(
                    f"import: line {number}: documents of {day} are not contiguous; sort by harvest_date"
                )
            current, docs = DayOutcome(day), []
        current.read += 1
        try:
            doc = normalise(raw)
        except NotADailyDocument as exc:
            current.rejected[exc.reason] = current.rejected.get(exc.reason, 0) + 1
            on_rejected(number, exc.reason)
            continue
        current.filled_blocks += missing_blocks(raw)
        docs.append(doc)
    if current is not None:
        yield _resolved(current, docs, duplicates)


def _resolved(
    outcome: DayOutcome, docs: list[Document], duplicates: str
) -> tuple[DayOutcome, list[Document]]:
    try:
        resolved = resolve_duplicates(docs, duplicates, outcome)
    except DuplicatesRefused as exc:
        raise DuplicateDocuments(
            f"import: more than one document for a recordset and day: {exc}; nothing of that day was "
            "written; choose --duplicates keep-last or --duplicates sum"
        ) from None
    outcome.written = len(resolved)
    return outcome, resolved
