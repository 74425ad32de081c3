"""Documents as the original collector left them, normalised into this version's shape (pure).

The original wrote one document per recordset and day with a random id and never made a day
idempotent, so an index it filled holds, besides documents shaped like ours:
- harvest dates with a time part (`2016-05-03T00:00:00`), or epoch milliseconds;
- counts as doubles (`12.0`);
- early documents without some of the ten blocks;
- `geo: null` (no geocode) and `term: null` (no query) entries;
- duplicate (recordset, day) documents, from runs repeated by hand;
- its record-count snapshots (`records_count`, `mediarecords_count`), kept in the same index.
normalise() turns one into a daily document or says why it cannot; resolve_duplicates() applies
the operator's policy to the documents of one (recordset, day).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from .documents import Document
from .model import BLOCKS, DOCUMENT_RECORD_TYPES, OTHER_TERM, RECORD_TYPES

log = logging.getLogger("idb_stats")

DUPLICATE_POLICIES = ("refuse", "keep-last", "sum")


class NotADailyDocument(ValueError):
    """Why a line or an indexed document cannot become a daily document (a short reason key)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def legacy_day(value: Any) -> date:
    """A harvest date as the original stored it: a date, an ISO date-time or epoch milliseconds.

    A date-time counts on its UTC day, the bucket the portal's date histogram put it in.
    """
    if isinstance(value, bool):
        raise NotADailyDocument("bad_harvest_date", repr(value))
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value / 1000, UTC).date()
        if isinstance(value, str) and len(value) >= 10:
            if len(value) == 10:
                return date.fromisoformat(value)
            moment = datetime.fromisoformat(value)
            return (moment.astimezone(UTC) if moment.tzinfo else moment).date()
    except (ValueError, OverflowError, OSError):
        pass
    raise NotADailyDocument("bad_harvest_date", repr(value)[:60])


def is_size_snapshot(doc: dict[str, Any]) -> bool:
    """The original's record-count documents (its `api` type), kept in the same index."""
    return ("records_count" in doc or "mediarecords_count" in doc) and not any(
        rt in doc for rt in RECORD_TYPES
    )


def _whole(value: Any, where: str) -> int:
    # json.loads accepts NaN and Infinity: neither is a count.
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
        or value < 0
    ):
        raise NotADailyDocument("bad_count", f"{where} = {value!r}"[:80])
    return int(value)


def _sort_key(entry: dict[str, Any], key: str) -> tuple[bool, int, str]:
    # The ranking order of every list: count desc, then the term, or the geocode's canonical JSON
    # (as documents.geocode_list orders them); a null term or geo ranks as "". A breakdown limit's
    # __other__ entry stays last, where documents.cut_term_list put it, whatever its count.
    if entry.get("term") == OTHER_TERM:
        return (True, 0, "")
    term = entry.get(key)
    if term is None or isinstance(term, str):
        return (False, -entry["count"], term or "")
    return (False, -entry["count"], json.dumps(term, sort_keys=True, separators=(",", ":")))


def _entries(value: Any, key: str, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise NotADailyDocument("bad_list", where)
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or "count" not in entry:
            raise NotADailyDocument("bad_list", f"{where}[{i}]")
        count = _whole(entry["count"], f"{where}[{i}].count")
        if key == "geo" and entry.get("term") == OTHER_TERM and entry.get("geo") is None:
            # A breakdown limit's rest of the geocodes is a term entry (documents.cut_term_list):
            # read as `geo: null` it moved among the ranked entries and counted as country unknown.
            out.append({"term": OTHER_TERM, "count": count})
            continue
        term = entry.get(key)
        if key == "term" and term is not None and not isinstance(term, str):
            raise NotADailyDocument("bad_list", f"{where}[{i}].term")
        if key == "geo" and term is not None and not isinstance(term, dict):
            raise NotADailyDocument("bad_list", f"{where}[{i}].geo")
        out.append({key: term, "count": count})
    return sorted(out, key=lambda e: _sort_key(e, key))


def normalise(doc: Any) -> Document:
    """This version's daily document for an original one; raises NotADailyDocument."""
    if not isinstance(doc, dict):
        raise NotADailyDocument("not_an_object")
    if is_size_snapshot(doc):
        raise NotADailyDocument("size_snapshot", "a record-count document, not usage statistics")
    recordset_id = doc.get("recordset_id")
    if not isinstance(recordset_id, str) or not recordset_id.strip():
        raise NotADailyDocument("no_recordset_id", repr(recordset_id)[:60])
    day = legacy_day(doc.get("harvest_date"))
    out: Document = {"recordset_id": recordset_id, "harvest_date": day.isoformat()}
    for rt in DOCUMENT_RECORD_TYPES:
        if doc.get(rt) is not None and not isinstance(doc.get(rt), dict):
            raise NotADailyDocument("bad_block", rt)
        out[rt] = {}
    for rt, ty in BLOCKS:
        block = (doc.get(rt) or {}).get(ty) or {}
        where = f"{rt}.{ty}"
        if not isinstance(block, dict):
            raise NotADailyDocument("bad_block", where)
        out[rt][ty] = {
            "count": _whole(block.get("count", 0), f"{where}.count"),
            "total": _whole(block.get("total", 0), f"{where}.total"),
            "items": _entries(block.get("items"), "term", f"{where}.items"),
            "queries": _entries(block.get("queries"), "term", f"{where}.queries"),
            "geocodes": _entries(block.get("geocodes"), "geo", f"{where}.geocodes"),
        }
    return out


def missing_blocks(doc: dict[str, Any]) -> int:
    """Blocks an original document lacks (filled with zeros by normalise)."""
    return sum(1 for rt, ty in BLOCKS if not isinstance((doc.get(rt) or {}).get(ty), dict))


def _sum_lists(lists: Iterable[list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    # Keyed by (field, JSON of its value): a geocode list's __other__ entry is a term entry.
    sums: dict[tuple[str, str], tuple[Any, int]] = {}
    for entries in lists:
        for entry in entries:
            field = key if key in entry else "term"
            ident = (field, json.dumps(entry[field], sort_keys=True))
            value, count = sums.get(ident, (entry[field], 0))
            sums[ident] = (value, count + entry["count"])
    return sorted(
        ({field: value, "count": n} for (field, _), (value, n) in sums.items()),
        key=lambda e: _sort_key(e, key),
    )


def sum_documents(docs: list[Document]) -> Document:
    """One document adding up normalised documents of the same recordset and day."""
    out: Document = {"recordset_id": docs[0]["recordset_id"], "harvest_date": docs[0]["harvest_date"]}
    for rt in DOCUMENT_RECORD_TYPES:
        out[rt] = {}
    for rt, ty in BLOCKS:
        blocks = [d[rt][ty] for d in docs]
        out[rt][ty] = {
            "count": sum(b["count"] for b in blocks),
            "total": sum(b["total"] for b in blocks),
            "items": _sum_lists((b["items"] for b in blocks), "term"),
            "queries": _sum_lists((b["queries"] for b in blocks), "term"),
            "geocodes": _sum_lists((b["geocodes"] for b in blocks), "geo"),
        }
    return out


@dataclass
class DayOutcome:
    """What adoption or import did with one harvest date's documents."""

    harvest_date: date
    read: int = 0
    written: int = 0
    filled_blocks: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)  # recordset -> documents found
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> documents
    snapshots: int = 0  # record-count documents written (one per recordset and day)
    superseded_snapshots: int = 0  # earlier record-count runs of the same recordset and day

    def as_dict(self) -> dict[str, Any]:
        return {
            "harvest_date": self.harvest_date.isoformat(),
            "read": self.read,
            "written": self.written,
            "filled_blocks": self.filled_blocks,
            "duplicates": dict(sorted(self.duplicates.items())),
            "rejected": dict(sorted(self.rejected.items())),
            "snapshots": self.snapshots,
            "superseded_snapshots": self.superseded_snapshots,
        }


class DuplicatesRefused(ValueError):
    pass


def resolve_duplicates(docs: list[Document], policy: str, outcome: DayOutcome) -> list[Document]:
    """One document per recordset from a day's normalised documents, in input order.

    keep-last keeps the last of a recordset's documents in input order; sum adds them up;
    refuse raises DuplicatesRefused naming them. Duplicates are recorded in outcome either way.
    """
    groups: dict[str, list[Document]] = {}
    for doc in docs:
        groups.setdefault(doc["recordset_id"], []).append(doc)
    for recordset_id, group in groups.items():
        if len(group) > 1:
            outcome.duplicates[recordset_id] = len(group)
    if outcome.duplicates and policy == "refuse":
        listed = ", ".join(f"{rs} ({n} documents)" for rs, n in sorted(outcome.duplicates.items()))
        raise DuplicatesRefused(f"{outcome.harvest_date}: {listed}")
    resolved = [
        group[-1] if policy == "keep-last" or len(group) == 1 else sum_documents(group)
        for group in groups.values()
    ]
    return sorted(resolved, key=lambda d: d["recordset_id"])


def original_mapping() -> dict[str, Any]:
    """The index mapping the original collector left (idb-backend idb/stats: ES 2-era `string`
    fields with a keyword analyzer, here `keyword`; doubles; geocodes as plain objects). Tests
    and the adopt benchmark build legacy indexes with it."""
    listed = {"properties": {"count": {"type": "double"}, "term": {"type": "keyword"}}}
    geo = {"properties": {k: {"type": "keyword"} for k in ("country", "region", "city")}}
    block = {
        "properties": {
            "count": {"type": "double"},
            "total": {"type": "double"},
            "items": listed,
            "queries": listed,
            "geocodes": {"properties": {"count": {"type": "double"}, "geo": geo}},
        }
    }
    return {
        "properties": {
            "recordset_id": {"type": "keyword"},
            "harvest_date": {"type": "date"},
            **{rt: {"properties": {ty: block for r, ty in BLOCKS if r == rt}} for rt in RECORD_TYPES},
        }
    }


def log_outcome(verb: str, outcome: DayOutcome, seconds: float | None = None) -> None:
    """The log line of a day imported or adopted: what was read, written, filled and rejected."""
    fields = outcome.as_dict()
    details = [f"{outcome.read} read", f"{outcome.written} written"]
    if outcome.duplicates:
        details.append(f"{len(outcome.duplicates)} recordsets had duplicates")
    if outcome.filled_blocks:
        details.append(f"{outcome.filled_blocks} missing blocks filled with zeros")
    if outcome.snapshots:
        details.append(f"{outcome.snapshots} record-count snapshots")
    if outcome.superseded_snapshots:
        details.append(f"{outcome.superseded_snapshots} earlier record-count runs of the day superseded")
    if outcome.rejected:
        details.append("rejected " + ", ".join(f"{r}: {n}" for r, n in outcome.rejected.items()))
    if seconds is not None:
        details.append(f"{seconds:.1f} s")
        fields["seconds"] = f"{seconds:.3f}"
    log.info("%s %s: %s", verb, outcome.harvest_date, ", ".join(details), extra={"fields": fields})
