"""Pure assembly of daily documents from the aggregated cells of a day."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from .model import (
    BLOCKS,
    COUNTER_KEY,
    DOCUMENT_RECORD_TYPES,
    OTHER_TERM,
    PUBLISHER_BLOCK,
    Cell,
    CounterDay,
    CounterFigures,
    DayStats,
)

if TYPE_CHECKING:
    from .ports import TelemetryDay

Document = dict[str, Any]


def daily_document_id(recordset_id: str, harvest_date: date | str) -> str:
    """Deterministic identity: a re-run of the day overwrites instead of adding."""
    day = harvest_date if isinstance(harvest_date, str) else harvest_date.isoformat()
    return f"{recordset_id}-{day}"


def by_count(counts: dict[str, int]) -> list[tuple[str, int]]:
    """(key, count) pairs, largest count first, ties by key: the order of every ranked list."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def cut_term_list(ranked: list[dict[str, Any]], limit: int = 0) -> list[dict[str, Any]]:
    """A list in by_count order with the breakdown limit applied: beyond `limit` entries the
    rest is one __other__ entry."""
    if limit and len(ranked) > limit:
        rest = sum(entry["count"] for entry in ranked[limit:])
        return [*ranked[:limit], {"term": OTHER_TERM, "count": rest}]
    return ranked


def term_list(counts: dict[str, int], limit: int = 0) -> list[dict[str, Any]]:
    """Sorted by count desc, then term; beyond `limit` terms the rest is one __other__ entry."""
    return cut_term_list([{"term": term, "count": count} for term, count in by_count(counts)], limit)


def geocode_list(counts: dict[str, int], limit: int = 0) -> list[dict[str, Any]]:
    """Like term_list, keyed by the canonical JSON of the geocode object."""
    return cut_term_list(
        [{"geo": _geo_object(key), "count": count} for key, count in by_count(counts)], limit
    )


# A day has at most some thousands of distinct geocodes but a geocode cell per recordset and block
# that saw it (440,000 on the wide day of 50,000 rows), so each geocode's text is parsed and
# canonicalised once: parsing every cell was 8.6 s of the 11 s Python spent on that day.
GEO_CACHE = 65_536


@functools.lru_cache(maxsize=GEO_CACHE)
def _canonical_geo_text(text: str) -> str:
    return canonical_geo(json.loads(text))


@functools.lru_cache(maxsize=GEO_CACHE)
def _parsed_geo(key: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(key)
    return parsed


def _geo_object(key: str) -> dict[str, Any]:
    # A copy per document, so a document never shares a mutable object with another.
    return dict(_parsed_geo(key))


def _breakdown(
    ranked: list[dict[str, Any]] | None, counts: dict[str, int], limit: int
) -> list[dict[str, Any]]:
    """A block's items or queries, from the list the source ranked or from single cells."""
    return cut_term_list(ranked, limit) if ranked is not None else term_list(counts, limit)


def geocode_table(texts: Sequence[str]) -> tuple[list[int], list[str]]:
    """A day's distinct geocode texts (code i + 1 is texts[i]) ranked as documents rank them: each
    code's rank (1-based, in canonical JSON order; texts with one canonical form share a rank) and
    the canonical JSON of each rank (table[rank - 1]), for a source that sends ranks, not texts.
    Texts, not objects: a day of 1,000,000 distinct geocodes held 830 bytes each as dicts; entries
    are made from them through the parse cache (_geo_object)."""
    canonical = [_canonical_geo_text(text) for text in texts]
    ordered = sorted(set(canonical))
    rank_of = {text: rank for rank, text in enumerate(ordered, 1)}
    return [rank_of[text] for text in canonical], ordered


def add_terms(doc: Document, sums: dict[str, dict[str, int]]) -> None:
    """Add a daily document's items and queries, over all its blocks, into sums["items"] and
    sums["queries"]; __other__ (the tail cut off by a breakdown limit) is not a term."""
    for rt, ty in BLOCKS:
        block = doc.get(rt, {}).get(ty, {})
        for kind in ("items", "queries"):
            totals = sums[kind]
            for entry in block.get(kind, ()):
                term = entry["term"]
                if term != OTHER_TERM:
                    totals[term] = totals.get(term, 0) + int(entry["count"])


def canonical_geo(geo: dict[str, Any] | None) -> str:
    return json.dumps(geo or {}, sort_keys=True, separators=(",", ":"))


def ranked_pairs(pairs: list[list[Any]]) -> list[list[Any]]:
    """A block's [key, hits] pairs in the documents' order: hits descending, then key (a term, or a
    rank in a day's table, whose order is the order that breaks ties). Two stable sorts on C keys,
    faster than one on a tuple built per pair (3.1 M pairs on the wide day of issue 18)."""
    pairs.sort(key=itemgetter(0))
    pairs.sort(key=itemgetter(1), reverse=True)  # reverse keeps equal hits in key order
    return pairs


def build_document(
    recordset_id: str,
    harvest_date: date,
    cells: Iterable[Cell],
    limit: int = 0,
    geocodes: Sequence[str] = (),
    queries: Sequence[str] = (),
) -> tuple[Document, int]:
    """One recordset's daily document from its cells; also returns its number of payload entries.
    geocodes and queries: the day's tables that cells of kind "geocodes" and "queries" name by rank."""
    lists: dict[tuple[str, str], dict[str, dict[str, int]]] = {
        block: {"item": {}, "query": {}, "geo": {}} for block in BLOCKS
    }
    ranked: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {block: {} for block in BLOCKS}
    counts: dict[tuple[str, str], list[int]] = {block: [0, 0] for block in BLOCKS}
    for cell in cells:
        block = (cell.record_type, cell.type)
        if cell.kind == "geo":
            geocode_hits = lists[block]["geo"]
            key = _canonical_geo_text(cell.key)
            geocode_hits[key] = geocode_hits.get(key, 0) + cell.hits
        elif cell.kind == "geocodes":
            ranked[block]["geocodes"] = [
                {"geo": _geo_object(geocodes[rank - 1]), "count": hits}
                for rank, hits in ranked_pairs(json.loads(cell.key))
            ]
        elif cell.kind == "queries":
            ranked[block]["queries"] = [
                {"term": queries[rank - 1], "count": hits}
                for rank, hits in ranked_pairs(json.loads(cell.key))
            ]
        elif cell.kind == "items":
            ranked[block]["items"] = [
                {"term": term, "count": hits} for term, hits in ranked_pairs(json.loads(cell.key))
            ]
        else:
            lists[block][cell.kind][cell.key] = cell.hits
        if cell.kind == "geo" or cell.kind == "geocodes":
            # Every entry carries a geocode ({} when unknown), so the geo cells add up to count and total.
            counts[block][0] += cell.entries
            counts[block][1] += cell.hits
    doc: Document = {"recordset_id": recordset_id, "harvest_date": harvest_date.isoformat()}
    for record_type in DOCUMENT_RECORD_TYPES:
        doc[record_type] = {}
    for (record_type, event_type), (count, total) in counts.items():
        kinds, ready = lists[(record_type, event_type)], ranked[(record_type, event_type)]
        geocode_entries = ready.get("geocodes")
        doc[record_type][event_type] = {
            "count": count,
            "total": total,
            "items": _breakdown(ready.get("items"), kinds["item"], limit),
            "queries": _breakdown(ready.get("queries"), kinds["query"], limit),
            "geocodes": (
                cut_term_list(geocode_entries, limit)
                if geocode_entries is not None
                else geocode_list(kinds["geo"], limit)
            ),
        }
    entries = sum(c for c, _ in counts.values())
    return doc, entries


def with_every_block(doc: Document) -> Document:
    """A daily document as this version reads it: a block it lacks (written before the block
    existed, such as recordsets.view before schema version 2) is an empty one."""
    if all(ty in doc.get(rt, {}) for rt, ty in BLOCKS):
        return doc
    out = {**doc, **{rt: dict(doc.get(rt, {})) for rt in DOCUMENT_RECORD_TYPES}}
    for rt, ty in BLOCKS:
        out[rt].setdefault(ty, {"count": 0, "total": 0, "items": [], "queries": [], "geocodes": []})
    return out


def publisher_document(
    publisher_id: str, harvest_date: date, views: dict[str, int], limit: int = 0
) -> Document:
    """A publisher's daily document: its page's views (each one entry, one hit) by geocode, from
    canonical geocode JSON -> views. Shaped like a recordset block without items or queries."""
    count = sum(views.values())
    record_type, event_type = PUBLISHER_BLOCK
    return {
        "publisher_id": publisher_id,
        "harvest_date": harvest_date.isoformat(),
        record_type: {event_type: {"count": count, "total": count, "geocodes": geocode_list(views, limit)}},
    }


def publisher_documents(
    views: Iterable[tuple[str, str, int]], harvest_date: date, limit: int = 0
) -> list[Document]:
    """Publisher documents, sorted by publisher, from (publisher, geocode JSON text, views) rows."""
    by_publisher: dict[str, dict[str, int]] = {}
    for publisher_id, geo_text, n in views:
        geocodes = by_publisher.setdefault(publisher_id, {})
        key = _canonical_geo_text(geo_text)
        geocodes[key] = geocodes.get(key, 0) + int(n)
    return [publisher_document(p, harvest_date, v, limit) for p, v in sorted(by_publisher.items())]


def publisher_document_id(publisher_id: str, harvest_date: date | str) -> str:
    return daily_document_id(publisher_id, harvest_date)


def build_documents(
    cells: Iterable[Cell],
    harvest_date: date,
    stats: DayStats,
    limit: int = 0,
    geocodes: Sequence[str] = (),
    queries: Sequence[str] = (),
    counter: CounterDay = None,
) -> Iterator[Document]:
    """Documents of a day, one per recordset, from cells grouped by recordset; with the day's
    COUNTER-style figures when known (a recordset without any: zeros).

    Holds one recordset at a time, so memory follows the largest recordset, not the day.
    """
    for recordset_id, group in groupby(cells, key=lambda c: c.recordset_id):
        doc, entries = build_document(recordset_id, harvest_date, group, limit, geocodes, queries)
        if counter is not None:
            doc[COUNTER_KEY] = counter.get(recordset_id, CounterFigures()).as_block()
        stats.entries += entries
        stats.recordsets += 1
        yield doc


def day_documents(
    day: TelemetryDay, harvest_date: date, stats: DayStats, limit: int = 0
) -> Iterator[Document]:
    """The documents of a day read from a source: its cells, with the tables they name."""
    return build_documents(day.cells(), harvest_date, stats, limit, day.geocodes, day.queries, day.counter)
