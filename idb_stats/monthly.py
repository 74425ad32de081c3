"""`idb-stats monthly-report`: per publisher, the year so far month by month, as files to send.

For the month M of year Y, in --out:
- `publishers/<publisher>.csv`: one row per recordset and metric (cohort.FIELDS: every record
  type x event type, count and total), one column per month January..M, then the year so far;
- `publishers/<publisher>.html`: the same, small, for a browser (only rows with activity);
- `publishers/<publisher>-dsr.tsv` and `-dsr.json`: the COUNTER research-data Dataset report
  (DSR) of its recordsets: investigations and requests, total and unique, one column per month;
- `portal-dsr.tsv` and `portal-dsr.json`: the same for every recordset of the portal;
- `index.html`: every publisher with its month's figures and links to its files.

The figures are the store's: the compatible blocks grouped there by month (as `show`), and the
COUNTER figures from the daily documents' optional "counter" key. A day published before that
key existed has no COUNTER figures: its month is unknown (an empty cell, and exception 3040
"Partial Data Returned" in the header), never zero. The telemetry has no user agent, so the
COUNTER rows are not robot-filtered: the header says so.

Pure functions build the tables; `write_monthly_report` reads the store and the ingest database
(membership as of the run: names.py), writes the files, then hands each to `[reports] command`.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import logging
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

from . import __version__
from .cohort import FIELDS
from .config import Config, command_words
from .errors import DeliveryFailed, UsageError
from .model import EVENT_TYPES, RECORD_TYPES
from .names import Names
from .ports import Store
from .report import environment, page_name

log = logging.getLogger("idb_stats.monthly")

PORTAL = "portal"  # the publisher id the whole portal's files are delivered under
CHUNK = 100  # recordsets per series query (as report.py: well under a search store's bucket limit)
DELIVERY_TIMEOUT = 600  # seconds one [reports] command may take
MONTH = re.compile(r"^([0-9]{4})-([0-9]{2})$")

# COUNTER Code of Practice for Research Data: the Dataset report's metric types, and where each is
# in a daily document's "counter" key.
METRIC_TYPES: dict[str, tuple[str, str]] = {
    "Total_Dataset_Investigations": ("investigations", "total"),
    "Unique_Dataset_Investigations": ("investigations", "unique"),
    "Total_Dataset_Requests": ("requests", "total"),
    "Unique_Dataset_Requests": ("requests", "unique"),
}
NOT_ROBOT_FILTERED = (
    "Not robot-filtered: the portal's telemetry records no user agent, so machine traffic cannot "
    "be told apart; only repeats by one session within 30 seconds are counted once"
)


def parse_month(text: str) -> date:
    """'2026-11' as date(2026, 11, 1); anything else is a usage error saying what to write."""
    match = MONTH.match(text.strip())
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1:
        raise UsageError(f"--month {text!r}: not a month; write it as YYYY-MM, e.g. 2026-11")
    return date(int(match[1]), int(match[2]), 1)


def previous_month(today: date) -> date:
    first = today.replace(day=1)
    return date(first.year - 1, 12, 1) if first.month == 1 else first.replace(month=first.month - 1)


def month_end(month: date) -> date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def months_so_far(month: date) -> list[date]:
    """January through `month` of its year, as first days."""
    return [date(month.year, m, 1) for m in range(1, month.month + 1)]


def month_label(month: date) -> str:
    """COUNTER's column heading for a month: Mmm-yyyy."""
    return f"{calendar.month_abbr[month.month]}-{month.year}"


# ---- the compatible figures: one row per recordset and metric -------------------------------


@dataclass(frozen=True)
class UsageRow:
    recordset_id: str
    recordset_name: str
    metric: str  # a cohort.FIELDS name: records.search.count, ...
    months: tuple[int, ...]  # one per month of the year so far

    @property
    def total(self) -> int:
        return sum(self.months)


def usage_rows(
    series: Iterable[Mapping[str, Any]], recordsets: Sequence[str], months: Sequence[date], names: Names
) -> list[UsageRow]:
    """Every recordset x metric, from store.series(..., "month") rows (a recordset or month
    without a row had no activity: zeros). Recordsets in the order given."""
    position = {m: i for i, m in enumerate(months)}
    values: dict[tuple[str, str], list[int]] = {}
    for row in series:
        where = position.get(row["period"])
        if where is None:
            continue
        for metric in FIELDS:
            values.setdefault((row["recordset_id"], metric), [0] * len(months))[where] += row[metric]
    return [
        UsageRow(rs, names.recordset(rs), metric, tuple(values.get((rs, metric), [0] * len(months))))
        for rs in recordsets
        for metric in FIELDS
    ]


# A spreadsheet takes a cell beginning with one of these for a formula: a recordset id (from the
# telemetry) or a name (from the ingest database) such as =HYPERLINK("http://…") would run in
# the curator's spreadsheet the report is sent to. Such a text is written with a leading
# apostrophe, which spreadsheets show as text and do not display (OWASP's CSV injection advice).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """A text cell of a CSV or TSV file meant for spreadsheets, never read as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def usage_csv(rows: Sequence[UsageRow], months: Sequence[date]) -> str:
    """CRLF lines (RFC 4180), so a name holding a lone \r is quoted too; texts as
    spreadsheet_text writes them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        ["recordset_id", "recordset_name", "metric", *(m.strftime("%Y-%m") for m in months), "year_to_date"]
    )
    for row in rows:
        texts = map(spreadsheet_text, (row.recordset_id, row.recordset_name, row.metric))
        writer.writerow([*texts, *row.months, row.total])
    return out.getvalue()


# ---- the COUNTER Dataset report --------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRow:
    dataset_id: str
    dataset_name: str
    publisher_id: str
    publisher_name: str
    metric_type: str
    months: tuple[int | None, ...]  # None: unknown (a day of that month has no COUNTER figures)

    @property
    def total(self) -> int:
        """The reporting period's total over the months that are known (see exception 3040)."""
        return sum(v for v in self.months if v is not None)


def counter_figures(
    documents: Iterable[Mapping[str, Any]], months: Sequence[date]
) -> dict[str, dict[str, list[int | None]]]:
    """recordset -> metric type -> per month: the sum of its daily documents' "counter" figures;
    None for a month when any of its documents lacks them (published before they were counted).
    A recordset without documents is absent (the caller gives it zeros: no events, no uses)."""
    position = {(m.year, m.month): i for i, m in enumerate(months)}
    figures: dict[str, dict[str, list[int | None]]] = {}
    for doc in documents:
        day = date.fromisoformat(str(doc["harvest_date"])[:10])
        where = position.get((day.year, day.month))
        if where is None:
            continue
        per_metric = figures.setdefault(
            doc["recordset_id"], {metric: [0] * len(months) for metric in METRIC_TYPES}
        )
        counter = doc.get("counter")
        for metric, (kind, measure) in METRIC_TYPES.items():
            value = counter.get(kind, {}).get(measure) if isinstance(counter, Mapping) else None
            cells = per_metric[metric]
            before = cells[where]
            cells[where] = None if value is None or before is None else before + int(value)
    return figures


def dataset_rows(
    recordsets: Sequence[str],
    figures: Mapping[str, Mapping[str, Sequence[int | None]]],
    months: Sequence[date],
    names: Names,
) -> list[DatasetRow]:
    rows = []
    for rs in recordsets:
        publisher = names.publisher_of.get(rs, "")
        for metric in METRIC_TYPES:
            cells = figures.get(rs, {}).get(metric) or [0] * len(months)
            rows.append(
                DatasetRow(
                    rs,
                    names.recordset(rs),
                    publisher,
                    names.publisher(publisher) if publisher else "",
                    metric,
                    tuple(cells),
                )
            )
    return rows


def unknown_months(rows: Sequence[DatasetRow], months: Sequence[date]) -> list[date]:
    return [m for i, m in enumerate(months) if any(r.months[i] is None for r in rows)]


def dsr_header(
    scope: str, month: date, months: Sequence[date], rows: Sequence[DatasetRow], created: datetime
) -> dict[str, str]:
    """The COUNTER report header, as ordered name/value pairs (TSV: one line each)."""
    exceptions = []
    missing = unknown_months(rows, months)
    if missing:
        exceptions.append(
            "3040: Partial Data Returned (no COUNTER figures for days published before they were "
            f"counted, in {', '.join(m.strftime('%Y-%m') for m in missing)}: those cells are empty "
            "and not in the totals)"
        )
    exceptions.append(NOT_ROBOT_FILTERED)
    return {
        "Report_Name": "Dataset Report",
        "Report_ID": "DSR",
        "Release": "RD1",
        "Institution_Name": scope,
        "Institution_ID": "",
        "Metric_Types": "; ".join(METRIC_TYPES),
        "Report_Filters": "",
        "Report_Attributes": "",
        "Exceptions": "; ".join(exceptions),
        "Reporting_Period": f"Begin_Date={months[0].isoformat()}; End_Date={month_end(month).isoformat()}",
        "Created": created.isoformat(timespec="seconds"),
        "Created_By": f"idb-stats {__version__}",
    }


DSR_COLUMNS = (
    "Dataset_Title",
    "Dataset_ID",
    "Publisher",
    "Publisher_ID",
    "Metric_Type",
    "Reporting_Period_Total",
)


def dsr_tsv(header: Mapping[str, str], rows: Sequence[DatasetRow], months: Sequence[date]) -> str:
    out = io.StringIO()
    # Tabs and line breaks inside a name would break the layout; csv quotes them, and a lone \r
    # too only when it is part of the line terminator (RFC 4180's CRLF; with "\n" it was not).
    writer = csv.writer(out, dialect="excel-tab", lineterminator="\r\n")
    for name, value in header.items():
        writer.writerow([name, spreadsheet_text(value)])
    writer.writerow([])
    writer.writerow([*DSR_COLUMNS, *(month_label(m) for m in months)])
    for row in rows:
        cells = ["" if v is None else v for v in row.months]
        writer.writerow(
            [
                *map(
                    spreadsheet_text,
                    (row.dataset_name, row.dataset_id, row.publisher_name, row.publisher_id, row.metric_type),
                ),
                row.total,
                *cells,
            ]
        )
    return out.getvalue()


def dsr_json(header: Mapping[str, str], rows: Sequence[DatasetRow], months: Sequence[date]) -> str:
    items = [
        {
            "Dataset_Title": row.dataset_name,
            "Dataset_ID": row.dataset_id,
            "Publisher": row.publisher_name,
            "Publisher_ID": row.publisher_id,
            "Metric_Type": row.metric_type,
            "Reporting_Period_Total": row.total,
            "Performance": {m.strftime("%Y-%m"): v for m, v in zip(months, row.months, strict=True)},
        }
        for row in rows
    ]
    return json.dumps({"Report_Header": dict(header), "Report_Items": items}, indent=1, ensure_ascii=False)


# ---- writing the files -----------------------------------------------------------------------


@dataclass
class PublisherFiles:
    publisher_id: str
    publisher_name: str
    stem: str  # file name without extension, unique per publisher (report.page_name)
    recordsets: int
    month_totals: list[int]  # hits per event type in the reported month


@dataclass
class MonthlyResult:
    out_dir: Path
    month: date
    publishers: int
    files: list[tuple[Path, str, str]]  # every file written, with its publisher id and name
    delivered: int
    seconds: float


def out_dir_of(out: Path, month: date) -> Path:
    """--out with {month} replaced by YYYY-MM: one directory per month from one unit file."""
    return Path(str(out).replace("{month}", f"{month:%Y-%m}"))


MARK = ".idb-stats-monthly-report"  # marks a directory as one of these reports, which a rerun replaces


def prepare_out_dir(out_dir: Path) -> None:
    """Refuse, before any connection, an --out that is not new, empty or an earlier monthly report,
    or that this user cannot write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: not a directory; name a new or empty directory")
    existing = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if existing and MARK not in existing:
        raise UsageError(
            f"--out {out_dir}: not empty and not an idb-stats monthly report ({', '.join(existing[:3])}"
            f"{', ...' if len(existing) > 3 else ''}); name a new or empty directory"
        )
    try:
        (out_dir / "publishers").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir / "publishers"):
            pass
        (out_dir / MARK).write_text("idb-stats monthly-report\n")
    except OSError as exc:
        raise UsageError(
            f"--out {out_dir}: cannot write there ({exc.strerror}); choose a directory this user can write"
        ) from None


def _series(store: Store, recordsets: Sequence[str], first: date, last: date) -> Iterator[Mapping[str, Any]]:
    for i in range(0, len(recordsets), CHUNK):
        yield from store.series(list(recordsets[i : i + CHUNK]), first, last, "month")


def _month_totals(rows: Sequence[UsageRow], index: int) -> list[int]:
    """Hits (totals) per event type in one month, records and media records together."""
    wanted = {f"{rt}.{ty}.total": ty for rt in RECORD_TYPES for ty in EVENT_TYPES}
    sums = dict.fromkeys(EVENT_TYPES, 0)
    for row in rows:
        if row.metric in wanted:
            sums[wanted[row.metric]] += row.months[index]
    return [sums[ty] for ty in EVENT_TYPES]


def write_monthly_report(
    store: Store,
    names: Names,
    month: date,
    out_dir: Path,
    store_kind: str,
    now: datetime,
) -> MonthlyResult:
    """Write every file of the month's report (out_dir already prepared)."""
    started = time.monotonic()
    months = months_so_far(month)
    first, last = months[0], month_end(month)
    complete = set(store.completed_days())
    missing = [d for d in _days(first, last) if d not in complete]
    if missing:
        log.warning(
            "%d harvest dates of %s..%s are not complete in the store (first %s): their figures are missing",
            len(missing),
            first,
            last,
            missing[0],
        )
    active = {row["recordset_id"] for row in store.series([], first, last, "year")}
    everyone = sorted(active | set(names.publisher_of))
    rows = usage_rows(_series(store, everyone, first, last), everyone, months, names)
    by_recordset: dict[str, list[UsageRow]] = {}
    for row in rows:
        by_recordset.setdefault(row.recordset_id, []).append(row)
    figures = counter_figures(store.export(first, last), months)
    counter_rows = dataset_rows(everyone, figures, months, names)
    env = environment()
    common = {
        "css": _css(),
        "version": __version__,
        "generated": now.strftime("%Y-%m-%d %H:%M"),
        "store_kind": store_kind,
        "month": month,
        "months": [m.strftime("%Y-%m") for m in months],
        "columns": list(EVENT_TYPES),
        "not_robot_filtered": NOT_ROBOT_FILTERED,
    }
    written: list[tuple[Path, str, str]] = []
    listed: list[PublisherFiles] = []
    current: set[str] = set()
    for publisher_id in names.publisher_ids():
        members = names.recordsets_of(publisher_id)
        if not members:
            continue
        name = names.publisher(publisher_id)
        stem = page_name(publisher_id).removesuffix(".html")
        mine = [row for rs in members for row in by_recordset.get(rs, [])]
        member_set = set(members)
        counter_mine = [row for row in counter_rows if row.dataset_id in member_set]
        entry = PublisherFiles(publisher_id, name, stem, len(members), _month_totals(mine, len(months) - 1))
        base = out_dir / "publishers" / stem
        header = dsr_header(name, month, months, counter_mine, now)
        outputs = {
            base.with_suffix(".csv"): usage_csv(mine, months),
            base.with_suffix(".html"): env.get_template("monthly.html").render(
                **common,
                publisher_id=publisher_id,
                publisher_name=name,
                rows=[r for r in mine if r.total],
                counter=counter_mine,
                stem=stem,
            ),
            base.parent / f"{stem}-dsr.tsv": dsr_tsv(header, counter_mine, months),
            base.parent / f"{stem}-dsr.json": dsr_json(header, counter_mine, months),
        }
        for path, text in outputs.items():
            path.write_text(text, encoding="utf-8")
            written.append((path, publisher_id, name))
            current.add(path.name)
        listed.append(entry)
    portal_header = dsr_header("the whole portal", month, months, counter_rows, now)
    for path, text in {
        out_dir / "portal-dsr.tsv": dsr_tsv(portal_header, counter_rows, months),
        out_dir / "portal-dsr.json": dsr_json(portal_header, counter_rows, months),
    }.items():
        path.write_text(text, encoding="utf-8")
        written.append((path, PORTAL, "the whole portal"))
    listed.sort(key=lambda p: (-sum(p.month_totals), p.publisher_name, p.publisher_id))
    index = out_dir / "index.html"
    index.write_text(
        env.get_template("monthly-index.html").render(**common, publishers=listed), encoding="utf-8"
    )
    written.append((index, PORTAL, "the whole portal"))
    for stale in (out_dir / "publishers").iterdir():
        if stale.is_file() and stale.name not in current:
            stale.unlink()
    return MonthlyResult(out_dir, month, len(listed), written, 0, time.monotonic() - started)


def _days(first: date, last: date) -> list[date]:
    return [date.fromordinal(o) for o in range(first.toordinal(), last.toordinal() + 1)]


def _css() -> str:
    return files("idb_stats").joinpath("templates", "report.css").read_text()


# ---- delivery --------------------------------------------------------------------------------


def delivery_argv(command: str, path: Path, publisher_id: str, publisher_name: str) -> list[str]:
    """The command's words with {file}, {publisher_id} and {publisher_name} filled in: each value
    stays one argument whatever it holds (no shell ever sees it)."""
    values = {"file": str(path), "publisher_id": publisher_id, "publisher_name": publisher_name}
    return [word.format(**values) for word in command_words(command)]


def deliver(
    command: str,
    files: Sequence[tuple[Path, str, str]],
    run: Callable[[list[str]], int] | None = None,
) -> int:
    """Run the command once per file; every failure is logged (as notify-failure logs its
    command's) and the rest still go. Raises DeliveryFailed when any failed; returns the count."""
    run = run or _run
    failed = []
    for path, publisher_id, publisher_name in files:
        argv = delivery_argv(command, path, publisher_id, publisher_name)
        code = run(argv)
        if code:
            failed.append(path)
            log.error(
                "reports.command exited %d for %s (publisher %s)",
                code,
                path,
                publisher_id,
                extra={"fields": {"file": str(path), "publisher_id": publisher_id, "exit_status": code}},
            )
    if failed:
        raise DeliveryFailed(
            f"reports.command failed for {len(failed)} of {len(files)} files (each is logged above; "
            "the files are written): fix the command and run monthly-report again"
        )
    return len(files)


def _run(argv: list[str]) -> int:
    try:
        return subprocess.run(
            argv, check=False, timeout=DELIVERY_TIMEOUT, stdin=subprocess.DEVNULL
        ).returncode
    except FileNotFoundError:
        log.error("reports.command: no such program %s", argv[0])
        return 127
    except PermissionError:
        log.error("reports.command: %s is not executable", argv[0])
        return 126
    except subprocess.TimeoutExpired:
        log.error("reports.command: still running after %d s, stopped", DELIVERY_TIMEOUT)
        return 124


def monthly_report(
    config: Config,
    open_store: Callable[[], Store],
    load_names: Callable[[], Names],
    month: date,
    out_dir: Path,
    now: datetime,
) -> MonthlyResult:
    """The command: check the month and --out, read membership (required), write the files,
    deliver them."""
    if month >= now.date().replace(day=1):
        raise UsageError(
            f"--month {month:%Y-%m}: not over yet; "
            f"the last complete month is {previous_month(now.date()):%Y-%m}"
        )
    prepare_out_dir(out_dir)
    names = load_names()
    with open_store() as store:
        result = write_monthly_report(store, names, month, out_dir, config.store, now)
    if config.reports_command:
        result.delivered = deliver(config.reports_command, result.files)
    return result
