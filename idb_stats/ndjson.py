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
from typing import IO, Any

from .documents import Document
from .errors import UsageError
from .json_text import compact
from .legacy import NotADailyDocument, legacy_day, missing_blocks, normalise
from .model import (
    BLOCKS,
    COUNTER_FIELDS,
    COUNTER_KEY,
    COUNTER_METRICS,
    DOCUMENT_RECORD_TYPES,
    INVESTIGATION_EVENT,
    ITEM_BLOCKS,
    MAX_GEOCODE_BYTES,
    MAX_ID_BYTES,
    OTHER_TERM,
    PER_RECORD_TYPES,
    RECORD_TYPES,
    REQUEST_EVENT,
)

# A blank line holds only what JSON calls whitespace; str.strip() would also drop U+001C or
# U+2028, making a line of them vanish instead of being refused as not JSON.
JSON_WHITESPACE = " \t\r\n"


OPENING = "idb_stats_export"
CLOSING = "idb_stats_export_end"
FORMAT = 1

# The longest line import reads. A line is read whole before it is parsed, and parsing a document
# takes about 13 times its size (a 70 MB line took 917 MB): a longer line is refused after this
# many bytes, before it is held or parsed. A search engine takes no request over 100 MB anyway.
MAX_LINE_BYTES = 64 * 2**20

# What a daily document may hold (README "What is counted"); the blocks come from model.BLOCKS.
DOCUMENT_KEYS = frozenset({"recordset_id", "harvest_date", *DOCUMENT_RECORD_TYPES, COUNTER_KEY})
# The largest figure a search engine's long field holds.
MAX_LONG = 2**63 - 1
BLOCK_KEYS = frozenset({"count", "total", "items", "queries", "geocodes"})


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


def numbered_lines(stream: IO[bytes], name: str) -> Iterator[tuple[int, bytes]]:
    """A file's lines with their numbers, each read at most MAX_LINE_BYTES long: a longer line is
    refused when that much of it has been read, never held whole."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise UsageError(
                f"{name} line {number}: longer than {MAX_LINE_BYTES // 2**20} MiB, the most import reads "
                "in one line (a daily document that large would take about a gigabyte to load); check "
                "that this is an idb-stats export; nothing was imported"
            )
        yield number, raw


class DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of repeated keys: a second "recordset_id" or "count" would win
    # silently over the first, which is what any other reader of the line may believe.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def parse_line(raw: bytes, where: str) -> Any:
    """A line as JSON, strictly: UTF-8, no repeated keys in an object, no NaN or Infinity, numbers
    Python can read; anything else is a UsageError naming the line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte {exc.start + 1}); nothing was imported") from None
    try:
        return json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{where}: not valid JSON ({exc.msg}, column {exc.colno}); nothing was imported"
        ) from None
    except DuplicateKey as exc:
        raise UsageError(
            f"{where}: the key {str(exc)[:60]!r} appears twice in one object (which one counts is "
            "up to the reader); not a line idb-stats wrote; nothing was imported"
        ) from None
    except RecursionError:  # "[[[[..." deeper than the parser's stack
        raise UsageError(f"{where}: JSON nested too deeply; nothing was imported") from None
    except ValueError as exc:  # NaN, Infinity, an integer of more than 4,300 digits
        raise UsageError(f"{where}: not valid JSON ({str(exc)[:80]}); nothing was imported") from None


def _envelope(doc: object) -> str | None:
    if isinstance(doc, dict) and len(doc) == 1 and next(iter(doc)) in (OPENING, CLOSING):
        return str(next(iter(doc)))
    return None


class ExportCheck:
    """The checks of an import file, fed one line at a time (so the caller reads each line once).

    document() raises UsageError naming the first line that is not a daily document (or one
    normalise() refuses: a day replaced without it would lose that recordset), that breaks a rule
    collect-stats keeps (document_problem), whose harvest date is not over yet (after
    last_closed), or whose day comes back after other days (import publishes one day at a time);
    in a file that opens as an export, also an opening line of another format, a missing or
    misplaced closing line and day counts that differ from it (finish()).
    """

    def __init__(self, name: str, last_closed: date | None = None) -> None:
        self.name, self.last_closed = name, last_closed
        self.checked = CheckedExport(0)
        self._current: date | None = None
        self._finished: set[date] = set()
        self._per_day: dict[str, int] = {}
        self._closing: tuple[int, Any] | None = None
        self._last = 0
        self.filled_blocks = 0

    def document(self, number: int, raw: bytes) -> Document | None:
        """The line's daily document, normalised and checked; None for a blank or envelope line.
        filled_blocks is then the number of blocks the line lacked (filled with zeros)."""
        self._last = number
        where = f"{self.name} line {number}"
        if len(raw) > MAX_LINE_BYTES:
            raise UsageError(f"{where}: longer than {MAX_LINE_BYTES // 2**20} MiB; nothing was imported")
        if not raw.strip(JSON_WHITESPACE.encode()):
            return None
        doc = parse_line(raw, where)
        if self._closing is not None:
            raise UsageError(f"{where}: a line after the export's closing line; nothing was imported")
        kind = _envelope(doc)
        if kind == OPENING and self.checked.complete is None and not self.checked.documents:
            _check_format(where, doc[OPENING])
            self.checked.complete, self.checked.envelope = False, {number}
            return None
        if kind == CLOSING and self.checked.complete is False:
            self._closing = (number, doc[CLOSING])
            self.checked.envelope.add(number)
            return None
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
        if self.last_closed is not None and day > self.last_closed:
            raise UsageError(
                f"{where}: harvest date {day} is not over yet (the last closed one is {self.last_closed}); "
                "nothing was imported"
            )
        try:
            normalised = normalise(doc)
        except NotADailyDocument as exc:
            raise UsageError(f"{where}: {exc}; nothing was imported") from None
        current_shape = _current_shape(doc)
        problem = document_problem(doc, normalised, current_shape) or inconsistency(
            normalised, made_by_collect_stats=current_shape
        )
        if not problem and COUNTER_KEY in doc:
            problem = counter_problem(doc[COUNTER_KEY], normalised)
            if not problem:
                normalised[COUNTER_KEY] = doc[COUNTER_KEY]
        if problem:
            raise UsageError(
                f"{where}: {problem}: not a document collect-stats made (edited or damaged?); "
                "nothing was imported"
            )
        if day != self._current:
            if day in self._finished:
                raise UsageError(
                    f"{where}: documents of {day} are not together; sort by harvest_date (as "
                    "`idb-stats export` does); nothing was imported"
                )
            if self._current is not None:
                self._finished.add(self._current)
            self._current = day
        self.checked.documents += 1
        self.filled_blocks = missing_blocks(doc)
        self._per_day[normalised["harvest_date"]] = self._per_day.get(normalised["harvest_date"], 0) + 1
        return normalised

    def finish(self) -> CheckedExport:
        if self.checked.complete is False:
            _check_counts(self.name, self._last, self._closing, self._per_day)
            self.checked.complete = True
        return self.checked


def check_export(lines: Iterable[bytes], name: str, last_closed: date | None = None) -> CheckedExport:
    """Check every line (see ExportCheck); returns what was found."""
    check = ExportCheck(name, last_closed)
    for number, raw in enumerate(lines, 1):
        check.document(number, raw)
    return check.finish()


def _check_format(where: str, opening: Any) -> None:
    """The opening line names the format its lines follow: a later one may mean other things by
    the same fields, so only this version's is read."""
    version = opening.get("format") if isinstance(opening, dict) else None
    if type(version) is not int or version != FORMAT:
        raise UsageError(
            f"{where}: an export in format {version!r:.40}, which this idb-stats does not read (it "
            f"reads format {FORMAT}); import it with the idb-stats that wrote it, or a newer one; "
            "nothing was imported"
        )


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


def _text_problem(text: str) -> str | None:
    """Text collect-stats cannot have read from PostgreSQL, which holds no NUL and only UTF-8."""
    if "\x00" in text:
        return "holds a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (not Unicode text)"
    return None


def _shown(text: str) -> str:
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def document_problem(raw: dict[str, Any], doc: Document, current_shape: bool) -> str | None:
    """What in a daily document collect-stats could never have made, or None: unknown keys or
    blocks, ids longer than MAX_ID_BYTES, text PostgreSQL cannot hold, a geocode that is not an
    object of strings or is larger than MAX_GEOCODE_BYTES, an entry repeated in a list, a list in
    a block that never has one. raw is the line as read, doc as normalise() made it. (Whether its
    sums fit the target store is the store's question: importing.py asks it.)"""
    unknown = sorted(set(raw) - DOCUMENT_KEYS)
    if unknown:
        return f"unknown key {unknown[0][:40]!r} (a daily document has {', '.join(sorted(DOCUMENT_KEYS))})"
    for rt in DOCUMENT_RECORD_TYPES:
        known = {ty for r, ty in BLOCKS if r == rt}
        for ty, block in (raw.get(rt) or {}).items():
            if ty not in known:
                return f"unknown block {rt}.{ty[:40]!r} (known: {', '.join(sorted(known))})"
            extra = sorted(set(block or {}) - BLOCK_KEYS)
            if extra:
                return (
                    f"{rt}.{ty}: unknown key {extra[0][:40]!r} (a block has {', '.join(sorted(BLOCK_KEYS))})"
                )
    recordset_id = doc["recordset_id"]
    if problem := _text_problem(recordset_id):
        return f"recordset_id {problem}"
    if _utf8_length(recordset_id) > MAX_ID_BYTES:
        return (
            f"recordset_id is longer than {MAX_ID_BYTES} bytes (collect-stats skips such rows: oversized_id)"
        )
    for rt, ty in BLOCKS:
        if problem := _block_problem(doc[rt][ty], rt, ty, current_shape):
            return f"{rt}.{ty} {problem}"
    return None


def _block_problem(block: dict[str, Any], rt: str, ty: str, current_shape: bool) -> str | None:
    if block["items"] and (rt, ty) not in ITEM_BLOCKS:
        shown = ", ".join(".".join(b) for b in ITEM_BLOCKS)
        return f"has items, which only the blocks of records ({shown}) have"
    if block["queries"] and ty == "view" and current_shape:
        return "has queries, which a view never has (a record view is not a search)"
    for list_name, key in (("items", "term"), ("queries", "term"), ("geocodes", "geo")):
        seen: set[object] = set()
        for entry in block[list_name]:
            ident: object
            if entry.get("term") == OTHER_TERM and key == "geo":
                ident = OTHER_TERM
            elif key == "geo":
                geo = entry["geo"]
                if problem := _geocode_problem(geo, current_shape):
                    return f"geocode {problem}"
                # Its entries, in any order: a geocode is grouped by its canonical JSON.
                ident = None if geo is None else tuple(sorted(geo.items()))
            else:
                term = entry["term"]
                if not isinstance(term, str):
                    if current_shape:
                        return f"{list_name} entry without a term"
                    term = ""
                if problem := _text_problem(term):
                    return f"{list_name} term {problem}"
                if list_name == "items" and _utf8_length(term) > MAX_ID_BYTES:
                    return (
                        f"item {_shown(term)} is longer than {MAX_ID_BYTES} bytes "
                        "(collect-stats skips it: oversized_id)"
                    )
                ident = term
            if ident in seen:
                twice = entry.get(key) if key == "geo" else ident
                return (
                    f"{list_name} list has {_shown(json.dumps(twice))} twice (collect-stats lists each once)"
                )
            seen.add(ident)
    return None


def _geocode_problem(geo: Any, current_shape: bool) -> str | None:
    if geo is None:  # the original collector's `geo: null`, never written by collect-stats
        return "is null" if current_shape else None
    if not all(isinstance(value, str) for value in geo.values()):
        bad = next(k for k, v in geo.items() if not isinstance(v, str))
        return f"value {bad[:40]!r} is not a string (collect-stats skips such rows: bad_geocode_value)"
    for text in (*geo, *geo.values()):
        if problem := _text_problem(text):
            return problem
    if sum(_utf8_length(k) + _utf8_length(v) for k, v in geo.items()) > MAX_GEOCODE_BYTES:
        return f"is longer than {MAX_GEOCODE_BYTES} bytes (collect-stats skips such rows: oversized_geocode)"
    return None


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


def counter_problem(block: Any, doc: Document) -> str | None:
    """What in a daily document's `counter` block (docs/counting.md, "COUNTER-style figures")
    collect-stats could never have made, against the document's normalised blocks, or None: its
    shape, figures that are not whole numbers in [0, 2^63 - 1], a unique above its total or zero
    without it, requests beyond investigations (a request is also an investigation), more view
    chains than views or more requests than downloads (the double-click rule only removes)."""
    if not isinstance(block, dict) or set(block) != set(COUNTER_METRICS):
        return f"{COUNTER_KEY} is not an object of {' and '.join(COUNTER_METRICS)}"
    figures: dict[str, dict[str, int]] = {}
    for metric in COUNTER_METRICS:
        pair = block[metric]
        if not isinstance(pair, dict) or set(pair) != set(COUNTER_FIELDS):
            return f"{COUNTER_KEY}.{metric} is not an object of {' and '.join(COUNTER_FIELDS)}"
        for name, value in pair.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LONG:
                return f"{COUNTER_KEY}.{metric}.{name} is not a whole number in [0, 2^63 - 1]"
        if pair["unique"] > pair["total"] or (pair["unique"] == 0) != (pair["total"] == 0):
            return f"{COUNTER_KEY}.{metric}: unique {pair['unique']} does not fit total {pair['total']}"
        figures[metric] = pair
    investigations, requests = figures["investigations"], figures["requests"]
    if any(requests[f] > investigations[f] for f in COUNTER_FIELDS):
        return f"{COUNTER_KEY}: more requests than investigations (every request is also one)"
    views = sum(doc[rt][INVESTIGATION_EVENT]["count"] for rt in RECORD_TYPES)
    downloads = sum(doc[rt][REQUEST_EVENT]["count"] for rt in RECORD_TYPES)
    if requests["total"] > downloads or investigations["total"] - requests["total"] > views:
        return f"{COUNTER_KEY}: more investigations or requests than the document's views and downloads"
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
