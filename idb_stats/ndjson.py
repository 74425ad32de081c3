"""Checking an NDJSON export before `import` writes anything: every line, with its number."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date

from .errors import UsageError
from .legacy import NotADailyDocument, legacy_day, normalise


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
        if not line.strip():
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
            normalise(doc)
        except NotADailyDocument as exc:
            raise UsageError(f"{where}: {exc}; nothing was imported") from None
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


def _harvest_day(doc: object) -> date | None:
    """The day of a daily document, ours or the original collector's (a date-time, epoch ms)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("recordset_id"), str):
        return None
    try:
        return legacy_day(doc.get("harvest_date"))
    except NotADailyDocument:
        return None
