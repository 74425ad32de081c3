"""`idb-stats show`: the numbers of a cohort of recordsets over a range, grouped in the store.

Querying is one call to the store per part (series and countries); formatting is pure.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .errors import UsageError
from .model import COUNT_FIELDS
from .ports import Store
from .terminal import plural, printable

log = logging.getLogger("idb_stats")

INTERVALS = ("day", "week", "month", "year")
FIELDS = tuple(f"{rt}.{ty}.{f}" for rt, ty, f in COUNT_FIELDS)


@dataclass
class Cohort:
    recordsets: list[str]
    first: date | None
    last: date | None
    interval: str
    summed: bool
    series: list[dict[str, Any]]
    totals: dict[str, int]
    countries: list[dict[str, Any]]
    # Recordset id -> name (names.Names.recordsets), shown beside or instead of the id.
    names: Mapping[str, str] = field(default_factory=dict)

    def name(self, recordset_id: str | None) -> str | None:
        return None if recordset_id is None else self.names.get(recordset_id, recordset_id)


def read_recordsets(arguments: Sequence[str], lines: Sequence[str]) -> list[str]:
    """Recordset ids from the command line and a file (one per line, # starts a comment), once each."""
    ids = [*arguments, *(line.split("#", 1)[0].strip() for line in lines)]
    return list(dict.fromkeys(i for i in ids if i))


def unknown_recordsets(store: Store, recordsets: Sequence[str]) -> list[str]:
    """The named recordsets the store has no statistics for (every one it has holds totals)."""
    known = {doc["recordset_id"] for doc in store.totals(recordsets)}
    return [r for r in recordsets if r not in known]


def query(
    store: Store,
    recordsets: list[str],
    first: date | None,
    last: date | None,
    interval: str,
    summed: bool,
    top: int,
    names: Mapping[str, str] | None = None,
) -> Cohort:
    series = store.series(recordsets, first, last, interval, by_recordset=not summed)
    totals = {name: sum(row[name] for row in series) for name in FIELDS}
    countries = store.top_countries(recordsets, first, last, top) if top else []
    return Cohort(recordsets, first, last, interval, summed, series, totals, countries, names or {})


def _row(cohort: Cohort, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "period": row["period"].isoformat(),
        "recordset_id": row["recordset_id"],
        "recordset_name": cohort.name(row["recordset_id"]),
    } | {name: row[name] for name in FIELDS}


def as_json(cohort: Cohort) -> str:
    return json.dumps(
        {
            "recordsets": cohort.recordsets,
            "recordset_names": {r: cohort.name(r) for r in cohort.recordsets},
            "from": cohort.first.isoformat() if cohort.first else None,
            "to": cohort.last.isoformat() if cohort.last else None,
            "interval": cohort.interval,
            "summed": cohort.summed,
            "series": [_row(cohort, row) for row in cohort.series],
            "totals": cohort.totals,
            "top_countries": cohort.countries,
        },
        indent=2,
    )


def as_csv(cohort: Cohort) -> str:
    """The series only, one row per period (and recordset): a table for spreadsheets. CRLF lines
    (RFC 4180): with "\n" a recordset name holding a lone \r was written unquoted."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["period", "recordset_id", "recordset_name", *FIELDS], lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(_row(cohort, row) for row in cohort.series)
    return out.getvalue()


def as_table(cohort: Cohort) -> str:
    """Aligned text: the series with the blocks that have any activity, totals, then countries;
    ids and countries (sent by clients) with control characters escaped."""
    active = [name for name in FIELDS if cohort.totals[name]]
    header = ["period"] + ([] if cohort.summed else ["recordset"]) + active
    rows = [
        [row["period"].isoformat()]
        + ([] if cohort.summed else [printable(cohort.name(row["recordset_id"]) or "")])
        + [f"{row[name]:,}" for name in active]
        for row in cohort.series
    ]
    rows.append(
        ["total"]
        + ([] if cohort.summed else [f"{len(cohort.recordsets)} recordsets"])
        + [f"{cohort.totals[name]:,}" for name in active]
    )
    labels = len(header) - len(active)
    lines = align([header, *rows], labels) if active else ["no activity for these recordsets in this range"]
    if cohort.countries:
        countries = [
            ["country", "hits"],
            *([printable(c["country"]), f"{c['hits']:,}"] for c in cohort.countries),
        ]
        lines += ["", *align(countries, 1)]
    return "\n".join(lines) + "\n"


def align(table: list[list[str]], labels: int) -> list[str]:
    """Columns padded to their widest cell: the first `labels` to the left, numbers to the right."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i < labels else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    ]


FORMATTERS = {"table": as_table, "json": as_json, "csv": as_csv}


def report_unknown(named: Sequence[str], unknown: list[str]) -> None:
    """Say which named recordsets the store does not know; all of them unknown is a mistake."""
    if not unknown:
        return
    listed = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
    message = f"no statistics for {plural(len(unknown), 'recordset')}: {listed} (check the ids)"
    if len(unknown) == len(named):
        raise UsageError(message)
    log.warning("%s", message)
