"""The NDJSON export file: written by `export` between an opening and a closing line, and checked
before `import` writes anything, every line with its number.

The opening line says the file is this version's export; the closing line counts its documents
per harvest date. A file cut short (a full disk, an interrupted copy) lacks its closing line or
holds fewer documents than it says, so import refuses it rather than replacing a day with part
of it. A file without the opening line (an older export, the original collector's, another tool's)
is imported as before, with a warning that its completeness cannot be checked.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .documents import Document
from .errors import UsageError
from .json_text import compact
from .legacy import NotADailyDocument, legacy_day, missing_blocks, normalise
from .model import BLOCKS, ITEM_BLOCKS, PER_RECORD_TYPES

# A blank line holds only what JSON calls whitespace; str.strip() would also drop U+001C or
# U+2028, making a line of them vanish instead of being refused as not JSON.
JSON_WHITESPACE = " \t\r\n"


OPENING = "idb_stats_export"
CLOSING = "idb_stats_export_end"
FORMAT = 1


def _line(value: Any) -> str:
    return compact(value) + "\n"


def export_lines(documents: Iterable[Document], first: date, last: date) -> Iterator[str]:
    """The export file's lines: the opening line, the documents, the closing line with how many
    documents each harvest date has (the documents are streamed, counted as they pass). The
    first document is read before anything is written: a store that fails at once leaves no
    output."""
    stream = iter(documents)
    head = next(stream, None)
    yield _line({OPENING: {"format": FORMAT, "from": first.isoformat(), "to": last.isoformat()}})
    per_day: dict[str, int] = {}
    for doc in itertools.chain([head] if head is not None else [], stream):
        per_day[doc["harvest_date"]] = per_day.get(doc["harvest_date"], 0) + 1
        yield _line(doc)
    yield _line({CLOSING: {"documents": sum(per_day.values()), "days": per_day}})


@dataclass
class CheckedExport:
    documents: int
    # Whether the file has the opening and closing lines whose counts were checked (None: a file
    # without them, whose completeness cannot be known).
    complete: bool | None = None
    envelope: set[int] = field(default_factory=set)  # line numbers of the opening and closing lines


def document_lines(lines: Iterable[bytes], checked: CheckedExport) -> Iterator[str]:
    """The file's lines for import, as text, with the opening and closing lines blank (so every
    other line keeps its number)."""
    for number, raw in enumerate(lines, 1):
        yield "" if number in checked.envelope else raw.decode()


def _envelope(doc: object) -> str | None:
    if isinstance(doc, dict) and len(doc) == 1 and next(iter(doc)) in (OPENING, CLOSING):
        return str(next(iter(doc)))
    return None


def check_export(lines: Iterable[bytes], name: str, last_closed: date | None = None) -> CheckedExport:
    """Raise UsageError naming the first line that is not a daily document (or one normalise()
    refuses: a day replaced without it would lose that recordset), whose harvest date is not over
    yet (after last_closed), or whose day comes back after other days (import publishes one day
    at a time); in a file that opens as an export, also a missing or misplaced closing line and
    day counts that differ from it. Returns what was found."""
    current: date | None = None
    finished: set[date] = set()
    checked = CheckedExport(0)
    per_day: dict[str, int] = {}
    closing: tuple[int, Any] | None = None
    number = 0
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
        if closing is not None:
            raise UsageError(f"{where}: a line after the export's closing line; nothing was imported")
        kind = _envelope(doc)
        if kind == OPENING and checked.complete is None and not checked.documents:
            checked.complete, checked.envelope = False, {number}
            continue
        if kind == CLOSING and checked.complete is False:
            closing = (number, doc[CLOSING])
            checked.envelope.add(number)
            continue
        if kind is not None:
            raise UsageError(
                f"{where}: {kind} is out of place (an export's first or last line); nothing was imported"
            )
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
        checked.documents += 1
        per_day[normalised["harvest_date"]] = per_day.get(normalised["harvest_date"], 0) + 1
    if checked.complete is False:
        _check_counts(name, number, closing, per_day)
        checked.complete = True
    return checked


def _check_counts(
    name: str, last_line: int, closing: tuple[int, Any] | None, per_day: dict[str, int]
) -> None:
    """The documents read per harvest date against the closing line's counts."""
    read = sum(per_day.values())
    if closing is None:
        raise UsageError(
            f"{name} line {last_line}: the file ends without the export's closing line, so it was cut "
            f"short ({read} documents of {len(per_day)} days read); export it again; nothing was imported"
        )
    number, said = closing
    days = said.get("days") if isinstance(said, dict) else None
    if not isinstance(days, dict) or said.get("documents") != sum(
        d for d in days.values() if isinstance(d, int)
    ):
        raise UsageError(f"{name} line {number}: not an export's closing line; nothing was imported")
    if days != per_day:
        short = sorted(d for d in days.keys() | per_day.keys() if days.get(d) != per_day.get(d, 0))
        raise UsageError(
            f"{name} line {number}: the closing line counts other documents than the file holds "
            f"(harvest dates {', '.join(short[:5])}{' …' if len(short) > 5 else ''}): lines are "
            "missing or were added; export it again; nothing was imported"
        )


def inconsistency(doc: Document, made_by_collect_stats: bool) -> str | None:
    """What in a normalised daily document contradicts the rules (docs/counting.md), or None.

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
        if (rt, ty) in ITEM_BLOCKS and items != block["count"]:
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
