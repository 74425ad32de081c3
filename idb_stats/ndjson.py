"""Checking an NDJSON export before `import` writes anything: every line, with its number."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from typing import Any

from .documents import Document
from .errors import UsageError
from .legacy import NotADailyDocument, legacy_day, missing_blocks, normalise
from .model import BLOCKS, PER_RECORD_TYPES

# A blank line holds only what JSON calls whitespace; str.strip() would also drop U+001C or
# U+2028, making a line of them vanish instead of being refused as not JSON.
JSON_WHITESPACE = " \t\r\n"


def check_export(lines: Iterable[bytes], name: str, last_closed: date | None = None) -> int:
    """Raise UsageError naming the first line that is not a daily document (or one normalise()
    refuses: a day replaced without it would lose that recordset), whose harvest date is not over
    yet (after last_closed), or whose day comes back after other days (import publishes one day
    at a time); return the documents."""
    current: date | None = None
    finished: set[date] = set()
    documents = 0
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"{name} line {number}: not UTF-8 text (byte {exc.start + 1}); nothing was imported"
            ) from None
        if not line.strip(JSON_WHITESPACE):
            continue
        where = f"{name} line {number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{where}: not valid JSON ({exc.msg}, column {exc.colno}); nothing was imported"
            ) from None
        except RecursionError:  # "[[[[..." deeper than the parser's stack
            raise UsageError(f"{where}: JSON nested too deeply; nothing was imported") from None
        day = _harvest_day(doc)
        if day is None:
            raise UsageError(
                f"{where}: not a daily document (an object with recordset_id and harvest_date "
                "YYYY-MM-DD, as `idb-stats export` writes); nothing was imported"
            )
        if last_closed is not None and day > last_closed:
            raise UsageError(
                f"{where}: harvest date {day} is not over yet (the last closed one is {last_closed}); "
                "nothing was imported"
            )
        try:
            normalised = normalise(doc)
        except NotADailyDocument as exc:
            raise UsageError(f"{where}: {exc}; nothing was imported") from None
        problem = inconsistency(normalised, made_by_collect_stats=_current_shape(doc))
        if problem:
            raise UsageError(
                f"{where}: {problem}: not a document collect-stats made (edited or damaged?); "
                "nothing was imported"
            )
        if day != current:
            if day in finished:
                raise UsageError(
                    f"{where}: documents of {day} are not together; sort by harvest_date (as "
                    "`idb-stats export` does); nothing was imported"
                )
            if current is not None:
                finished.add(current)
            current = day
        documents += 1
    return documents


def inconsistency(doc: Document, made_by_collect_stats: bool) -> str | None:
    """What in a normalised daily document contradicts the rules (README "What is counted"), or None.

    Always: a view or seen entry is one record, one hit, so such a block's total is its count.
    For a document in this version's shape (made_by_collect_stats) also: every entry carries a
    geocode (`{}` when unknown) so the geocodes' counts add up to the total, and every view or
    seen entry names one record so the items' counts add up to the count (a breakdown limit's
    __other__ keeps both sums exact). The original collector's documents are not held to those.
    """
    for rt, ty in BLOCKS:
        block = doc[rt][ty]
        where = f"{rt}.{ty}"
        if ty in PER_RECORD_TYPES and block["total"] != block["count"]:
            return f"{where} total {block['total']} is not its count {block['count']} (one hit per {ty})"
        if not made_by_collect_stats:
            continue
        geocodes = sum(entry["count"] for entry in block["geocodes"])
        if geocodes != block["total"]:
            return f"{where} geocode counts add up to {geocodes}, not its total {block['total']}"
        items = sum(entry["count"] for entry in block["items"])
        if ty in PER_RECORD_TYPES and items != block["count"]:
            return f"{where} item counts add up to {items}, not its count {block['count']}"
    return None


def _current_shape(doc: dict[str, Any]) -> bool:
    """A document as this version writes it: a YYYY-MM-DD harvest date, every block present,
    counts and totals integers (the original collector's are doubles)."""
    day = doc.get("harvest_date")
    if not (isinstance(day, str) and len(day) == 10) or missing_blocks(doc):
        return False
    return all(isinstance(doc[rt][ty].get(field), int) for rt, ty in BLOCKS for field in ("count", "total"))


def _harvest_day(doc: object) -> date | None:
    """The day of a daily document, ours or the original collector's (a date-time, epoch ms)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("recordset_id"), str):
        return None
    try:
        return legacy_day(doc.get("harvest_date"))
    except NotADailyDocument:
        return None
