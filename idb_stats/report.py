"""`idb-stats report`: a static HTML site of a range, built from the store's grouped queries.

An index page (portal-wide charts, a sortable table of recordsets, countries) and one page per
recordset (its charts, top records, queries and countries). Every page carries its own style and
script and draws charts as inline SVG, so the site opens from disk with no network at all.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import jinja2
import markupsafe
from dateutil import rrule

from . import __version__
from .charts import Chart, line_chart
from .errors import UsageError
from .model import EVENT_TYPES, RECORD_TYPES
from .names import NO_NAMES, Names
from .ports import Store
from .terminal import printable

# Recordsets per series query: a day interval over a year stays well under Elasticsearch's
# default limit of 65,536 buckets per search.
CHUNK = 100
WORKERS = 2
TOP = 10
# A recordset's page is named after its id when the id is a plain name: lowercase letters,
# digits, "-", "_" and dots between them, first a letter or digit, at most 100 characters, and
# not a Windows device name (CON, aux.txt, ...). Any other id's page is named by a hash of the id
# and begins with "_", which no plain name does. So no two ids share a page by construction, even
# where file names ignore case (a plain name has no capitals; a hash is lowercase hex) or on
# Windows (no reserved name, no trailing dot or space). Ids that an earlier version named as given
# (an id with capitals, or one looking like another's hashed name "id-<hex>") had collided.
PLAIN_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_-]|\.(?=[a-z0-9_-])){0,99}")
WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)


# The query text behind each hash (names.query_texts), or {} to show hashes only.
QueryTexts = Callable[[Iterable[str]], Mapping[str, str]]


@dataclass
class RecordsetRow:
    recordset_id: str
    page: str
    values: list[int]  # total hits per event type over the range
    name: str = ""  # from the ingest database; the id when unknown


@dataclass
class PublisherRow:
    publisher_id: str
    name: str
    page: str
    recordsets: list[RecordsetRow]  # those with activity in the range, busiest first
    values: list[int]


@dataclass
class ReportResult:
    out_dir: Path
    pages: int
    bytes: int
    seconds: float


def default_interval(first: date, last: date) -> str:
    """One point per day up to about a year, then coarser, so charts keep a few hundred points."""
    days = (last - first).days + 1
    return "day" if days <= 400 else "week" if days <= 7 * 400 else "month"


def page_name(recordset_id: str) -> str:
    """A file name for a recordset's page, unique among all ids (see PLAIN_NAME)."""
    if PLAIN_NAME.fullmatch(recordset_id) and recordset_id.split(".")[0] not in WINDOWS_DEVICES:
        return f"{recordset_id}.html"
    digest = hashlib.sha256(recordset_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"_{digest[:32]}.html"


def shown(value: Any) -> Any:
    """Every value a template prints: text (ids, terms, countries from the telemetry) with its
    control and format characters escaped as terminal.printable writes them (\\u202e, \\x1b), for
    a raw U+202E reverses the text after it on the page and a C0 control is no HTML at all;
    markup the report made itself (its style sheet) as it is."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return printable(value)
    return value


# Calendar stepping is dateutil's (months of every length, leap years); truncation to a period's
# start is the stores' date_trunc / date_histogram rule, stated here.
STEPS: dict[str, Literal[0, 1, 2, 3, 4, 5, 6]] = {
    "day": rrule.DAILY,
    "week": rrule.WEEKLY,
    "month": rrule.MONTHLY,
    "year": rrule.YEARLY,
}


def periods(first: date, last: date, interval: str) -> list[date]:
    """Every period start of the range, as the stores' date_trunc / date_histogram key them."""
    start = datetime.combine(period_start(first, interval), datetime.min.time())
    until = datetime.combine(last, datetime.min.time())
    return [step.date() for step in rrule.rrule(STEPS[interval], dtstart=start, until=until)]


def period_start(day: date, interval: str) -> date:
    if interval == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if interval == "month":
        return day.replace(day=1)
    if interval == "year":
        return day.replace(month=1, day=1)
    return day


def type_charts(rows: Sequence[dict[str, Any]], axis: list[date], interval: str) -> list[Chart]:
    """One small chart per event type, with a line per record type (total hits per period)."""
    index = {day: i for i, day in enumerate(axis)}
    charts = []
    for event_type in EVENT_TYPES:
        series = {rt: [0] * len(axis) for rt in RECORD_TYPES}
        for row in rows:
            position = index.get(row["period"])
            if position is not None:
                for rt in RECORD_TYPES:
                    series[rt][position] += row[f"{rt}.{event_type}.total"]
        charts.append(line_chart(event_type, f"records per {interval}", axis, series))
    return charts


def range_totals(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Total hits per event type (records and media records together) over the rows."""
    return [sum(row[f"{rt}.{ty}.total"] for row in rows for rt in RECORD_TYPES) for ty in EVENT_TYPES]


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: files("idb_stats").joinpath("templates", name).read_text()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=shown,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _by_recordset(rows: Sequence[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["recordset_id"], []).append(row)
    yield from sorted(grouped.items())


GENERATOR_MARK = '<meta name="generator" content="idb-stats">'
PAGE_DIRECTORIES = ("recordsets", "publishers")


def prepare_out_dir(out_dir: Path) -> None:
    """Refuse before any work an --out that cannot be written or that holds something other than
    an earlier report (which is replaced: its pages of recordsets no longer in range go)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: not a directory; name a new or empty directory")
    existing = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if existing and not _is_report(out_dir, existing):
        raise UsageError(
            f"--out {out_dir}: not empty and not an idb-stats report ({', '.join(existing[:3])}"
            f"{', ...' if len(existing) > 3 else ''}); name a new or empty directory"
        )
    try:
        for directory in PAGE_DIRECTORIES:
            (out_dir / directory).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir / "recordsets"):
            pass
    except OSError as exc:
        raise UsageError(
            f"--out {out_dir}: cannot write there ({exc.strerror}); choose a directory this user can write"
        ) from None


def _is_report(out_dir: Path, entries: list[str]) -> bool:
    """Only index.html and recordsets/, every page marked as ours (an interrupted report, pages
    without their index, counts too: the next run finishes it)."""
    if not set(entries) <= {"index.html", *PAGE_DIRECTORIES}:
        return False
    pages = [out_dir / "index.html"] if "index.html" in entries else []
    for directory in PAGE_DIRECTORIES:
        if directory in entries:
            if not (out_dir / directory).is_dir():
                return False
            pages += (out_dir / directory).iterdir()
    return all(page.suffix == ".html" and page.is_file() and _marked(page) for page in pages)


def _marked(page: Path) -> bool:
    with page.open(encoding="utf-8", errors="replace") as text:
        return GENERATOR_MARK in text.read(4096)


class _Site:
    """The pages of one report: what every page shares, and how each kind of page is written."""

    def __init__(
        self,
        open_store: Callable[[], Store],
        store_kind: str,
        first: date,
        last: date,
        interval: str,
        out: Path,
        names: Names = NO_NAMES,
        query_texts: QueryTexts | None = None,
    ) -> None:
        self.names, self.query_texts = names, query_texts
        self.open_store, self.first, self.last, self.interval, self.out = (
            open_store,
            first,
            last,
            interval,
            out,
        )
        self.axis = periods(first, last, interval)
        self.env = environment()
        self.common = {
            "css": files("idb_stats").joinpath("templates", "report.css").read_text(),
            "version": __version__,
            "generated": datetime.now().strftime("%Y-%m-%d %H:%M"),
            "store_kind": store_kind,
            "first": first,
            "last": last,
            "interval": interval,
            "columns": list(EVENT_TYPES),
        }

    def write(self, path: Path, template: str, **context: Any) -> int:
        text = self.env.get_template(template).render(**self.common, **context)
        path.write_text(text, encoding="utf-8")
        return len(text.encode())

    def ranking(self) -> list[RecordsetRow]:
        """Every recordset with activity, busiest first, with its range totals (from a yearly
        series: one or two rows per recordset)."""
        with self.open_store() as store:
            rows = [
                RecordsetRow(rs, page_name(rs), range_totals(series), self.names.recordset(rs))
                for rs, series in _by_recordset(store.series([], self.first, self.last, "year"))
            ]
        return sorted(rows, key=lambda r: (-sum(r.values), r.recordset_id))

    def recordset_pages(self, chunk: list[str]) -> tuple[int, int]:
        """Pages of some recordsets, on a store connection of their own: (pages, bytes)."""
        first, last, interval = self.first, self.last, self.interval
        with self.open_store() as store:
            pages = size = 0
            countries: dict[str, list[dict[str, Any]]] = {}
            for row in store.top_countries(chunk, first, last, TOP, by_recordset=True):
                countries.setdefault(row["recordset_id"], []).append(row)
            grouped = list(_by_recordset(store.series(chunk, first, last, interval)))
            terms = {rs: store.top_terms(rs, first, last, TOP) for rs, _ in grouped}
        # One lookup of query text for the chunk's pages, outside the store connection.
        hashes = {t["term"] for found in terms.values() for t in found["queries"]}
        texts = self.query_texts(hashes) if self.query_texts and hashes else {}
        for recordset_id, rows in grouped:
            publisher = self.names.publisher_of.get(recordset_id)
            size += self.write(
                self.out / "recordsets" / page_name(recordset_id),
                "recordset.html",
                recordset_id=recordset_id,
                name=self.names.recordset(recordset_id),
                publisher=publisher and (self.names.publisher(publisher), page_name(publisher)),
                values=range_totals(rows),
                charts=type_charts(rows, self.axis, interval),
                terms=terms[recordset_id],
                query_texts=texts,
                countries=countries.get(recordset_id, []),
            )
            pages += 1
        return pages, size

    def publishers(self, ranking: list[RecordsetRow]) -> list[PublisherRow]:
        """Publishers with a recordset active in the range (membership as of today), busiest first."""
        members: dict[str, list[RecordsetRow]] = {}
        for row in ranking:
            if publisher := self.names.publisher_of.get(row.recordset_id):
                members.setdefault(publisher, []).append(row)
        rows = [
            PublisherRow(
                p,
                self.names.publisher(p),
                page_name(p),
                mine,
                [sum(values) for values in zip(*(r.values for r in mine), strict=True)],
            )
            for p, mine in members.items()
        ]
        return sorted(rows, key=lambda r: (-sum(r.values), r.publisher_id))

    def publisher_pages(self, publishers: list[PublisherRow]) -> tuple[int, int]:
        """A page per publisher: its recordsets' sums grouped in the store, and its recordsets."""
        size = 0
        with self.open_store() as store:
            for publisher in publishers:
                ids = [r.recordset_id for r in publisher.recordsets]
                rows = store.series(ids, self.first, self.last, self.interval, by_recordset=False)
                size += self.write(
                    self.out / "publishers" / publisher.page,
                    "publisher.html",
                    publisher=publisher,
                    charts=type_charts(rows, self.axis, self.interval),
                    countries=store.top_countries(ids, self.first, self.last, TOP),
                )
        return len(publishers), size

    def index_page(self, ranking: list[RecordsetRow], publishers: list[PublisherRow]) -> int:
        with self.open_store() as store:
            portal = store.series([], self.first, self.last, self.interval, by_recordset=False)
            return self.write(
                self.out / "index.html",
                "index.html",
                charts=type_charts(portal, self.axis, self.interval),
                recordsets=ranking,
                publishers=publishers,
                countries=store.top_countries([], self.first, self.last, 50),
            )


def build_report(
    open_store: Callable[[], Store],
    store_kind: str,
    first: date,
    last: date,
    out_dir: Path,
    interval: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = WORKERS,
    names: Names = NO_NAMES,
    query_texts: QueryTexts | None = None,
) -> ReportResult:
    """Write the site. Recordset pages are built by `workers` threads, each with its own store
    connection: the work is mostly the store's, so two queries at once use both cores."""
    started = time.monotonic()
    prepare_out_dir(out_dir)
    chosen = interval or default_interval(first, last)
    site = _Site(open_store, store_kind, first, last, chosen, out_dir, names, query_texts)
    ranking = site.ranking()
    publishers = site.publishers(ranking)
    chunks = [[r.recordset_id for r in ranking[i : i + CHUNK]] for i in range(0, len(ranking), CHUNK)]
    done = written = 0
    with ThreadPoolExecutor(max(1, workers)) as pool:
        # The index's portal-wide queries run beside the first pages rather than before them.
        index = pool.submit(site.index_page, ranking, publishers)
        publisher_pages = pool.submit(site.publisher_pages, publishers)
        for pages, size in pool.map(site.recordset_pages, chunks):
            done, written = done + pages, written + size
            if progress:
                progress(done, len(ranking))
        written += index.result()
        publisher_count, publisher_bytes = publisher_pages.result()
    current = {"recordsets": {r.page for r in ranking}, "publishers": {p.page for p in publishers}}
    for directory, kept in current.items():
        for stale in (out_dir / directory).glob("*.html"):
            if stale.name not in kept:
                stale.unlink()
    return ReportResult(
        out_dir, done + publisher_count + 1, written + publisher_bytes, time.monotonic() - started
    )
