"""Taking over an index the original collector wrote (`idb-stats adopt`).

The original's index is read day by day over plain HTTP, on any cluster from Elasticsearch 2 on
(stores/legacy_reader.py), whatever its documents' ids (a scroll per UTC day of harvest_date, so
memory follows one day). Each day is planned (plan_day, pure: mapping type `search` -> daily
documents, `api` -> record-count snapshots), its documents normalised (legacy.py), their
duplicates resolved by the operator's policy, and published through the store's normal, crash-safe
publish_day into the target: a new versioned index (Elasticsearch/OpenSearch) or the PostgreSQL
store; a dry run plans every day the same way and writes nothing. Totals and day markers come
with it; markers carry a run id starting "adopt-", so status counts lag only from where
collection continues (and lists the adopted range's gaps apart), and collect-stats catches up
from the day after the last adopted one. Days already adopted are skipped, so an interrupted
adoption is finished by running it again. Last, when the target is a search index, one atomic
`_aliases` request gives the original's name to the new index and the record-count index
(deleting the original index, or moving its alias), so the portal keeps reading `stats` for all
four of its query kinds.
Long because adoption is one protocol (plan, per-day copy, check, alias switch) best read whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from .config import SEARCH_STORE_KINDS, Config
from .documents import Document
from .errors import ConfigError, DuplicateDocuments, IncompatibleIndex, StoreError, UsageError
from .ledger import write_run
from .legacy import (
    DayOutcome,
    DuplicatesRefused,
    NotADailyDocument,
    is_size_snapshot,
    missing_blocks,
    normalise,
    resolve_duplicates,
)
from .model import DayStats
from .ports import Adoption, DayStore, Store
from .secrets import has_password
from .stores import open_store
from .stores.legacy_reader import GENERIC_TYPES, LegacyHit, LegacyReader

log = logging.getLogger(__name__)

ADOPT_RUN_PREFIX = "adopt-"


@dataclass(frozen=True)
class Sources:
    """Where adopt reads and writes, from its flags: the original's index on its cluster, and on a
    search store the new index the copy goes to (None on PostgreSQL)."""

    legacy: Config
    target_index: str | None


def sources(
    config: Config, legacy_index: str | None, target: str | None, from_url: str | None
) -> Sources:
    """adopt's flag rules, checked before anything is opened: PostgreSQL has no original to read
    in place (--from-url), and --from-url is an http(s) URL without credentials."""
    search_store = config.store in SEARCH_STORE_KINDS
    if not search_store and not from_url:
        raise UsageError("adopting into PostgreSQL needs --from-url (the original's cluster)")
    if from_url and (has_password(from_url) or not from_url.startswith(("http://", "https://"))):
        raise UsageError("--from-url: an http(s):// URL without credentials (put them in the configuration)")
    legacy = replace(
        config, store_url=from_url or config.store_url, daily_index=legacy_index or config.daily_index
    )
    return Sources(legacy, (target or f"{config.daily_index}-v2") if search_store else None)


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
    alias_switched: bool = False
    finished_before: bool = False  # the original's name already points at the target
    server_version: str = ""
    would_refuse: bool = False  # a dry run under --duplicates refuse found duplicates

    def as_dict(self) -> dict[str, Any]:
        written = sum(d.written for d in self.days)
        return {
            "legacy_index": self.legacy_index,
            "target": self.target,
            "dry_run": self.dry_run,
            "server_version": self.server_version,
            "documents": self.documents,
            "undated": self.undated,
            "days": len(self.days),
            "first_day": min((d.harvest_date for d in self.days), default=None),
            "last_day": max((d.harvest_date for d in self.days), default=None),
            "written": written,
            "duplicate_recordset_days": sum(len(d.duplicates) for d in self.days),
            "would_refuse": self.would_refuse,
            "rejected": _sum_reasons(self.days),
            "filled_blocks": sum(d.filled_blocks for d in self.days),
            "days_already_adopted": len(self.already_adopted),
            "size_snapshots": sum(d.snapshots for d in self.days),
            "superseded_snapshots": sum(d.superseded_snapshots for d in self.days),
            "alias_switched": self.alias_switched,
            "finished_before": self.finished_before,
        }


def _sum_reasons(days: Iterable[DayOutcome]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for day in days:
        for reason, n in day.rejected.items():
            sums[reason] = sums.get(reason, 0) + n
    return dict(sorted(sums.items()))


@dataclass
class PlannedDay:
    """What adopting one day writes: its daily documents and its record-count snapshot."""

    outcome: DayOutcome
    documents: list[Document]
    snapshots: list[Document]


def _kind(hit: LegacyHit) -> str:
    """daily, snapshot, or the name of a mapping type adopt does not take (the original's
    `digest`: ingestion summaries). Where the server has no types, the document's shape says."""
    if hit.mapping_type == "search":
        return "daily"
    if hit.mapping_type == "api":
        return "snapshot"
    if hit.mapping_type in GENERIC_TYPES:
        return "snapshot" if is_size_snapshot(hit.source) else "daily"
    return str(hit.mapping_type)


def plan_day(day: date, hits: Iterable[LegacyHit], duplicates: str) -> PlannedDay:
    """A day's legacy documents as adopt writes them (pure): normalised daily documents with
    duplicates resolved, and one snapshot per recordset (its last run that day). Raises
    DuplicatesRefused under --duplicates refuse."""
    outcome = DayOutcome(day)
    docs: list[Document] = []
    last_runs: dict[str, dict[str, Any]] = {}
    # In "last written" order: keep-last keeps the last, a later record-count run supersedes.
    for hit in sorted(hits, key=lambda h: h.order):
        outcome.read += 1
        kind, raw = _kind(hit), hit.source
        if kind == "snapshot":
            recordset_id = raw.get("recordset_id")
            if not isinstance(recordset_id, str) or not recordset_id:
                outcome.rejected["bad_size_snapshot"] = outcome.rejected.get("bad_size_snapshot", 0) + 1
                continue
            if recordset_id in last_runs:
                outcome.superseded_snapshots += 1
            last_runs[recordset_id] = raw
            continue
        if kind != "daily":
            reason = f"type_{kind}"
            outcome.rejected[reason] = outcome.rejected.get(reason, 0) + 1
            continue
        try:
            doc = normalise(raw)
        except NotADailyDocument as exc:
            outcome.rejected[exc.reason] = outcome.rejected.get(exc.reason, 0) + 1
            continue
        outcome.filled_blocks += missing_blocks(raw)
        docs.append(doc)
    resolved = resolve_duplicates(docs, duplicates, outcome)
    snapshots = list(_size_snapshots((last_runs[rs] for rs in sorted(last_runs)), outcome))
    outcome.written, outcome.snapshots = len(resolved), len(snapshots)
    return PlannedDay(outcome, resolved, snapshots)


def _planned(reader: LegacyReader, index: str, day: date, duplicates: str, dry_run: bool) -> PlannedDay:
    hits = list(reader.documents(index, day))
    if dry_run and duplicates == "refuse":
        # Counted as keep-last writes them; the report says the real run would refuse.
        return plan_day(day, hits, "keep-last")
    try:
        return plan_day(day, hits, duplicates)
    except DuplicatesRefused as exc:
        raise DuplicateDocuments(
            f"(recordset, day) pairs with more than one document in {index!r}: {exc}; nothing was "
            "written; choose --duplicates keep-last (right for the original's re-runs) or "
            "--duplicates sum (see docs/migrating.md)"
        ) from None


def adopt(
    config: Config,
    legacy_config: Config,
    target_index: str | None,
    duplicates: str,
    dry_run: bool,
    on_day: Callable[[DayOutcome], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    lock_timeout: float | None = None,
) -> AdoptReport:
    """Adopt legacy_config.daily_index (on the cluster at legacy_config.store_url, Elasticsearch
    2.x-9.x or OpenSearch) into config's store.

    target_index: the new index when config's store is a search store (None for PostgreSQL).
    on_total hears how many days are to adopt before on_day hears of each (for progress).
    """
    legacy_index = legacy_config.daily_index
    search_target = config.store in ("elasticsearch", "opensearch")
    same_cluster = search_target and (config.store_url, config.daily_index) == (
        legacy_config.store_url,
        legacy_index,
    )
    target_name = target_index if search_target else f"{config.store} schema {config.store_schema}"
    report = AdoptReport(legacy_index, str(target_name), dry_run)
    reader = LegacyReader(legacy_config)
    report.server_version = ("opensearch " if reader.opensearch else "elasticsearch ") + reader.version
    try:
        state, behind = reader.index_state(legacy_index)
        if state == "alias" and target_index in behind:
            report.finished_before = True
            return report
        if state == "absent":
            raise ConfigError([f"adopt: there is no index {legacy_index!r} to adopt"])
        # An alias over other indexes (the portal's `stats` over `stats-2.6.0`) is read through.
        others = (legacy_index, config.totals_index, config.runs_index, config.api_index, *behind)
        if search_target and target_index in others:
            raise ConfigError([f"adopt --target: {target_index!r} names another index; choose a new name"])
        report.documents = reader.count(legacy_index)
        days = reader.days(legacy_index)
        report.undated = report.documents - sum(days.values())
        if dry_run or duplicates == "refuse":
            # A refusal comes before any write: every day is planned first (one day in memory at a time).
            if dry_run and on_total:
                on_total(len(days))
            outcomes = []
            for day in sorted(days):
                outcomes.append(_planned(reader, legacy_index, day, duplicates, True).outcome)
                if dry_run and on_day:
                    on_day(outcomes[-1])
            report.would_refuse = any(o.duplicates for o in outcomes) and duplicates == "refuse"
            if report.would_refuse and not dry_run:
                found = [(o.harvest_date, o.duplicates) for o in outcomes if o.duplicates]
                raise DuplicateDocuments(
                    f"{sum(len(d) for _, d in found)} (recordset, day) pairs have more than one document "
                    f"in {legacy_index!r}, e.g. "
                    + "; ".join(
                        f"{day}: " + ", ".join(f"{rs} ({n})" for rs, n in sorted(d.items())[:5])
                        for day, d in found[:5]
                    )
                    + "; nothing was written; choose --duplicates keep-last (right for the original's "
                    "re-runs) or --duplicates sum (see docs/migrating.md)"
                )
            if dry_run:
                report.days += outcomes
                return report
        target_config = replace(config, daily_index=target_index or "") if search_target else config
        with open_store(target_config) as store:
            # What only a search store can do (its indexes and aliases); None for PostgreSQL.
            adoption = store if isinstance(store, Adoption) else None
            # Before write_run, whose store.init() creates the target index this check looks for.
            _refuse_foreign_totals(adoption, target_config)
            # The target's runs index is this configuration's: collect-stats takes the same lock.
            with write_run(
                target_config, store, "adopt", lock_timeout, run_id_prefix=ADOPT_RUN_PREFIX
            ) as run:
                run.plan = f"adopt {legacy_index!r} into {target_name}"
                done = set(adopted_days(store.completed_days()))
                if on_total:
                    on_total(len(days.keys() - done))
                for day in sorted(days):
                    if day in done:
                        report.already_adopted.append(day)
                        continue
                    plan = _planned(reader, legacy_index, day, duplicates, False)
                    _write_day(store, plan, run.run_id)
                    report.days.append(plan.outcome)
                    run.days.append(plan.outcome.as_dict())
                    if on_day:
                        on_day(plan.outcome)
                if adoption is not None:
                    _verify(reader, store, adoption, target_index or "", legacy_index, report.documents)
                if adoption is not None and target_index:
                    report.alias_switched = _switch(
                        adoption, config, target_index, same_cluster, state, behind
                    )
        return report
    finally:
        reader.close()


def _switch(
    store: Adoption, config: Config, target: str, same_cluster: bool, state: str, behind: list[str]
) -> bool:
    """Give the portal's name to the copy and the record-count index. On the original's cluster
    the name stops being the original (its index deleted, or its alias moved); on another cluster
    the name is created, unless an index already holds it there (left as it is, said so)."""
    name = config.daily_index
    if not same_cluster:
        state, behind = store.index_state(name)
        if state == "index":
            log.warning(
                "adopt: %r is an index on the target cluster; no alias made, see docs/migrating.md", name
            )
            return False
        if target in behind:
            return True
    store.replace_index_with_alias(name, target, config.api_index, state, behind)
    return True


def _refuse_foreign_totals(store: Adoption | None, target_config: Config) -> None:
    # Totals made by collecting into the original index would list days the adoption rewrites
    # (publish_day then takes them for already added); a fresh adoption needs them rebuilt.
    if store is None:
        return
    totals = target_config.totals_index
    fresh = store.index_state(target_config.daily_index)[0] == "absent"
    if fresh and store.index_state(totals)[0] != "absent" and store.count(totals):
        raise IncompatibleIndex(
            f"the totals index {totals!r} already holds totals: adopt rebuilds them from the original "
            "index; delete it (and the runs index) first, see docs/migrating.md"
        )


def _write_day(store: Store, plan: PlannedDay, run_id: str) -> None:
    day = plan.outcome.harvest_date
    if plan.documents:
        stats = DayStats(day, run_id, recordsets=len(plan.documents), reason="adopt")
        store.publish_day(stats, iter(plan.documents))
    if plan.snapshots:
        store.write_snapshot(day, iter(plan.snapshots))
    for reason, n in plan.outcome.rejected.items():
        log.warning("%s: %d documents not adopted: %s", day, n, reason)


def _size_snapshots(docs: Iterable[dict[str, Any]], outcome: DayOutcome) -> Iterator[Document]:
    for doc in docs:
        try:
            yield {
                "recordset_id": doc["recordset_id"],
                "harvest_date": doc.get("harvest_date"),
                "records_count": _whole_count(doc.get("records_count")),
                "mediarecords_count": _whole_count(doc.get("mediarecords_count")),
            }
        except (KeyError, TypeError, ValueError):
            outcome.rejected["bad_size_snapshot"] = outcome.rejected.get("bad_size_snapshot", 0) + 1


def _whole_count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise ValueError(value)
    return int(value)


def _verify(
    reader: LegacyReader,
    store: DayStore,
    adoption: Adoption,
    target: str,
    legacy_index: str,
    documents_at_start: int,
) -> None:
    """Before the original index is deleted: the target holds one document per adopted
    (recordset, day), and nothing was added to the original meanwhile."""
    complete = store.completed_days()
    expected = sum(int(complete[d].get("recordsets", 0)) for d in adopted_days(complete))
    held = adoption.count(target)
    if held != expected:
        raise StoreError(
            f"adopt: {target!r} holds {held} documents where the adopted days list {expected}; "
            f"{legacy_index!r} is kept; re-run `idb-stats adopt` to repair"
        )
    now = reader.count(legacy_index)
    if now != documents_at_start:
        raise IncompatibleIndex(
            f"adopt: {legacy_index!r} changed during adoption ({documents_at_start} -> {now} documents): "
            "stop the original collector's timers, then run `idb-stats adopt` again"
        )
