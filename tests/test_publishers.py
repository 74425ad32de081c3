"""Names, publisher roll-ups and monthly-report against a real store and a real ingest database
(recordsets and publishers tables as idb-backend has them, in the test's PostgreSQL)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import socket
import sys
from datetime import date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import markupsafe
import pytest
from helpers import DAYS, HARVEST, MakeConfig, collect, execute, load_week, reference, run

from idb_stats import monthly, publishers
from idb_stats.cohort import FIELDS
from idb_stats.config import Config
from idb_stats.errors import DeliveryFailed, SourceUnreachable, UsageError
from idb_stats.model import BLOCKS
from idb_stats.names import load_names, query_texts
from idb_stats.report import build_report, page_name
from idb_stats.stores import open_store
from idb_stats.synthetic import fake_uuid
from idb_stats.terminal import printable

# Names as hostile as the ingest database may hold: markup, a right-to-left override, a tab and
# a quote (HTML, CSV and TSV must all keep them as text).
HOSTILE = '<script>alert(1)</script> "Herbarium"\t\u202eevil'
PUBLISHER_A, PUBLISHER_B, PUBLISHER_C = (fake_uuid(3, i) for i in range(3))

# idb-backend's tables (tests/data/schema.sql there), the columns idb-stats reads and their types.
INGEST_SCHEMA = """
CREATE TABLE publishers (
  id bigserial PRIMARY KEY, uuid uuid UNIQUE, name text, rss_url text NOT NULL DEFAULT ''
);
CREATE TABLE recordsets (
  id bigserial PRIMARY KEY, uuid uuid UNIQUE, publisher_uuid uuid REFERENCES publishers(uuid),
  name text NOT NULL, file_link text NOT NULL DEFAULT ''
);
"""


def ingest(dsn: str, recordsets: list[str]) -> dict[str, list[str]]:
    """Publisher A holds the first five recordsets (one with a hostile name), B the next three,
    C one recordset without activity; the rest belong to no publisher. Returns membership."""
    execute(dsn, INGEST_SCHEMA)
    execute(
        dsn,
        "INSERT INTO publishers (uuid, name) VALUES (%s, %s), (%s, %s), (%s, NULL)",
        (PUBLISHER_A, HOSTILE, PUBLISHER_B, "Museum B", PUBLISHER_C),
    )
    idle = fake_uuid(1, 999)
    membership = {PUBLISHER_A: recordsets[:5], PUBLISHER_B: recordsets[5:8], PUBLISHER_C: [idle]}
    for publisher, members in membership.items():
        for i, rs in enumerate(members):
            name = HOSTILE if rs == recordsets[0] else f"Recordset {rs[-4:]} of {publisher[-2:]} #{i}"
            execute(
                dsn,
                "INSERT INTO recordsets (uuid, publisher_uuid, name) VALUES (%s, %s, %s)",
                (rs, publisher, name),
            )
    return membership


# Known sessions for the COUNTER figures: each client views one record, then repeats the view
# after these gaps (seconds): within 30 s (a double click: the earlier view is not counted), at
# exactly 30 s, beyond it, and into the next hour (a new session); then downloads the recordset
# twice within 30 s and once beyond.
REPEATS = (0, 10, 20, 30, 31, 95, 3600)
CLIENTS = ("192.0.2.1", "192.0.2.2", "2001:db8::7")
CHAINED = fake_uuid(1, 0)
INVESTIGATED = [(rt, ty) for rt in ("records", "mediarecords") for ty in ("view", "download")]


def known_sessions(dsn: str) -> int:
    """Insert the chains of repeats for every day of the week; the view events inserted."""
    views = 0
    for day in DAYS:
        for c, client in enumerate(CLIENTS):
            start = datetime(day.year, day.month, day.day, 9 + c, 59, 0)
            at = start
            for gap in REPEATS:
                at += timedelta(seconds=gap)
                views += execute(
                    dsn,
                    "INSERT INTO stats (date, type, record_type, ip, ip_geocode, payload) "
                    "VALUES (%s, 'view', 'records', %s, NULL, %s)",
                    (at, client, json.dumps({fake_uuid(2, 900 + c): CHAINED})),
                )
            for gap in (0, 12, 45):
                at += timedelta(seconds=gap)
                execute(
                    dsn,
                    "INSERT INTO stats (date, type, record_type, ip, ip_geocode, payload) "
                    "VALUES (%s, 'download', 'records', %s, NULL, %s)",
                    (at, client, json.dumps({CHAINED: 5})),
                )
    return views


@pytest.fixture
def world(make_config: MakeConfig, dsn: str) -> tuple[Config, list[dict[str, Any]], dict[str, list[str]]]:
    load_week(dsn)
    chained_views = known_sessions(dsn)
    collect(make_config(), first=HARVEST[0], last=HARVEST[-1])
    # What every figure must equal: the documents of the plain statement of the rules (rules.py).
    daily = [doc for harvest in HARVEST for doc in reference(dsn, harvest)[0]]
    recordsets = sorted({d["recordset_id"] for d in daily})
    membership = ingest(dsn, recordsets)
    # The chains are counted by the 30-second rule, and by session, not as the events they are.
    chained = [d["counter"]["investigations"] for d in daily if d["recordset_id"] == CHAINED]
    assert 0 < sum(i["unique"] for i in chained) < sum(i["total"] for i in chained)
    events = sum(
        d[rt][ty]["count"] for d in daily if d["recordset_id"] == CHAINED for rt, ty in INVESTIGATED
    )
    assert chained_views < events and sum(i["total"] for i in chained) < events
    return make_config(**{"api.dsn": dsn}), daily, membership


def sums(daily: list[dict[str, Any]], recordsets: list[str], first: date, last: date) -> dict[str, int]:
    """The plain sum of the reference documents: what every roll-up must equal."""
    chosen = [
        d
        for d in daily
        if d["recordset_id"] in recordsets and first <= date.fromisoformat(d["harvest_date"][:10]) <= last
    ]
    return {
        f"{rt}.{ty}.{f}": sum(d[rt][ty][f] for d in chosen) for rt, ty in BLOCKS for f in ("count", "total")
    }


@pytest.mark.parametrize("store_kind", ["postgres", "opensearch"], indirect=True)
def test_show_publisher_equals_the_sum_of_its_recordsets(world: Any) -> None:
    config, daily, membership = world
    names = load_names(config, required=True)
    assert names.recordsets_of(PUBLISHER_A) == sorted(membership[PUBLISHER_A])
    assert names.publisher(PUBLISHER_A) == HOSTILE and names.publisher(PUBLISHER_C) == PUBLISHER_C
    first, last = HARVEST[1], HARVEST[-1]
    with open_store(config) as store:
        for publisher, interval in ((PUBLISHER_A, "day"), (PUBLISHER_B, "week"), ("Museum B", "month")):
            rolled = publishers.rollup(store, names, publisher, first, last, interval, top=5)
            members = membership[rolled.publisher_id]
            assert rolled.cohort.totals == sums(daily, members, first, last)
            # Previous period: as many days just before; year to date: 1 January to the last day.
            previous = rolled.previous.span
            assert (previous.last, (previous.last - previous.first).days) == (first - timedelta(days=1), 2)
            assert rolled.previous.totals == sums(daily, members, previous.first, previous.last)
            assert rolled.year_to_date.totals == sums(daily, members, date(last.year, 1, 1), last)
            assert {row["recordset_id"] for row in rolled.cohort.series} == {None}
        data = json.loads(publishers.as_json(rolled))
        assert (
            data["publisher_id"] == PUBLISHER_B
            and data["year_to_date"]["totals"] == rolled.year_to_date.totals
        )
        table = publishers.as_table(publishers.rollup(store, names, PUBLISHER_A, first, last, "day", 5))
        assert "\\u202e" in table and "\u202e" not in table  # the name's control character, escaped
        with pytest.raises(UsageError, match="is no publisher"):
            publishers.rollup(store, names, PUBLISHER_C + "0", first, last, "day", 5)


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_show_through_the_cli_names_and_publisher(world: Any, tmp_path: Path) -> None:
    config, daily, membership = world
    dsn = config.source_dsn
    env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_API_DSN": dsn}
    shown = run("show", *membership[PUBLISHER_A][:2], "--format", "csv", env=env)
    assert shown.returncode == 0, shown.stderr
    rows = list(csv.DictReader(io.StringIO(shown.stdout)))
    assert {r["recordset_name"] for r in rows} <= {
        HOSTILE,
        f"Recordset {membership[PUBLISHER_A][1][-4:]} of {PUBLISHER_A[-2:]} #1",
    }
    assert HOSTILE in {r["recordset_name"] for r in rows}  # CSV keeps the text as it is, quoted

    rolled = run("show", "--publisher", PUBLISHER_B, "--from", str(HARVEST[0]), "--format", "json", env=env)
    assert rolled.returncode == 0, rolled.stderr
    data = json.loads(rolled.stdout)
    assert data["totals"] == sums(daily, membership[PUBLISHER_B], HARVEST[0], HARVEST[-1])
    assert data["to"] == str(HARVEST[-1])  # the range ends at the store's last complete day
    text = run("show", "--publisher", PUBLISHER_B, env=env)
    assert text.returncode == 0 and "previous" in text.stdout and "year to date" in text.stdout

    # Mistakes: one line, the documented exit code, no traceback.
    for args, code, said in (
        (("show", "--publisher", "nobody"), 2, "no publisher"),
        (("show", "--publisher", PUBLISHER_B, membership[PUBLISHER_B][0]), 2, "name no recordsets"),
    ):
        failed = run(*args, env=env)
        assert failed.returncode == code and said in failed.stderr and "Traceback" not in failed.stderr
    no_ingest = run("show", "--publisher", PUBLISHER_B, env={"IDB_STATS_SOURCE_DSN": dsn})
    assert no_ingest.returncode == 3 and "api.dsn" in no_ingest.stderr
    down = {**env, "IDB_STATS_API_DSN": f"host=127.0.0.1 port={closed_port()} dbname=x"}
    unreachable = run("show", "--publisher", PUBLISHER_B, env=down)
    assert unreachable.returncode == 4 and "ingest" in unreachable.stderr, unreachable.stderr
    # Names only decorate a recordset's numbers: without them, ids, one warning, exit 0.
    fallback = run("show", membership[PUBLISHER_A][0], "--format", "csv", env=down)
    assert fallback.returncode == 0 and fallback.stderr.count("showing ids") == 1, fallback.stderr
    assert {r["recordset_name"] for r in csv.DictReader(io.StringIO(fallback.stdout))} == {
        membership[PUBLISHER_A][0]
    }


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_report_shows_names_query_text_and_publisher_pages(world: Any, tmp_path: Path) -> None:
    config, daily, membership = world
    dsn = config.source_dsn
    # The query behind one hash is hostile markup, and long: escaped and cut on the page.
    hostile_query = '{"rq": "</td><script>x()</script>' + "y" * 500 + '"}'
    execute(dsn, "UPDATE queries SET query = %s::jsonb WHERE query_hash = 'q0000'", (hostile_query,))
    names = load_names(config)
    texts = query_texts(config, ["q0000", "q0001", "absent"])
    assert len(texts["q0000"]) == config.query_text_length and texts["q0000"].endswith("…")
    assert "absent" not in texts
    out = tmp_path / "site"
    result = build_report(
        lambda: open_store(config),
        config.store,
        HARVEST[0],
        HARVEST[-1],
        out,
        names=names,
        query_texts=lambda hashes: query_texts(config, hashes),
    )
    active = sorted({d["recordset_id"] for d in daily})
    assert result.pages == len(active) + 2 + 1  # recordsets, publishers A and B, the index
    index = (out / "index.html").read_text()
    # As every page prints telemetry text: control characters escaped, then HTML-escaped.
    assert str(markupsafe.escape(printable(HOSTILE))) in index and "\\u202e" in index
    assert "<script>alert" not in index
    page_a = (out / "publishers" / page_name(PUBLISHER_A)).read_text()
    totals = sums(daily, membership[PUBLISHER_A], HARVEST[0], HARVEST[-1])
    seen = totals["records.seen.total"] + totals["mediarecords.seen.total"]
    assert f"<td>{seen:,}</td>" in page_a
    assert not (out / "publishers" / page_name(PUBLISHER_C)).exists()  # no activity, no page
    pages = [p.read_text() for p in (out / "recordsets").glob("*.html")]
    shown = [p for p in pages if "&lt;/td&gt;&lt;script&gt;x()&lt;/script&gt;" in p]
    assert shown and all("</td><script>x()" not in p for p in pages)
    assert all("y" * (config.query_text_length) not in p for p in pages)

    hidden = dataclasses.replace(config, query_text=False)
    assert query_texts(hidden, ["q0000"]) == {}


@pytest.mark.parametrize("store_kind", ["postgres", "opensearch"], indirect=True)
def test_monthly_report_files_equal_the_documents(world: Any, tmp_path: Path) -> None:
    config, daily, membership = world
    delivered = tmp_path / "delivered.jsonl"
    script = tmp_path / "deliver.py"
    script.write_text(
        "import json, sys\n"
        f"open({str(delivered)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(3 if sys.argv[1].endswith('portal-dsr.json') else 0)\n"
    )
    command = f"{sys.executable} {script} {{file}} {{publisher_id}} {{publisher_name}}"
    config = dataclasses.replace(config, reports_command=command)
    out = tmp_path / "monthly"
    month = date(HARVEST[0].year, HARVEST[0].month, 1)
    now = datetime(2026, 12, 6, 12, 0)
    with pytest.raises(DeliveryFailed, match="1 of"):
        monthly.monthly_report(
            config, lambda: open_store(config), lambda: load_names(config, True), month, out, now
        )
    months = monthly.months_so_far(month)
    for publisher in (PUBLISHER_A, PUBLISHER_B, PUBLISHER_C):
        stem = page_name(publisher).removesuffix(".html")
        rows = list(csv.DictReader((out / "publishers" / f"{stem}.csv").open(encoding="utf-8")))
        members = membership[publisher]
        assert len(rows) == len(members) * len(FIELDS)
        for m in months:
            column = m.strftime("%Y-%m")
            wanted = sums(daily, members, m, monthly.month_end(m))
            got = {f: sum(int(r[column]) for r in rows if r["metric"] == f) for f in FIELDS}
            assert got == wanted
        assert {r["recordset_id"] for r in rows} == set(members)
        page = (out / "publishers" / f"{stem}.html").read_text()
        assert "<script>alert" not in page
        # The page's table holds the CSV's rows with activity, the same numbers.
        shown = table_rows(page, "monthly")
        wanted_rows = [
            [
                r["recordset_id"],
                r["metric"],
                *(f"{int(r[m.strftime('%Y-%m')]):,}" for m in months),
                f"{int(r['year_to_date']):,}",
            ]
            for r in rows
            if int(r["year_to_date"])
        ]
        assert shown == wanted_rows and (shown or publisher == PUBLISHER_C)
        header, dsr = read_dsr(out / "publishers" / f"{stem}-dsr.tsv")
        assert "not robot-filtered" in header["Exceptions"].lower()
        # Documents collected before COUNTER figures existed: unknown (empty), not zero.
        assert {r["Dataset_ID"] for r in dsr} == set(members)
        assert len(dsr) == len(members) * len(monthly.METRIC_TYPES)
        for row in dsr:
            expected = [counter_cell(daily, row["Dataset_ID"], row["Metric_Type"], m) for m in months]
            assert [row[monthly.month_label(m)] for m in months] == [
                "" if e is None else str(e) for e in expected
            ]
            assert row["Reporting_Period_Total"] == str(sum(e for e in expected if e is not None))
        assert {r["Jan-2020"] for r in dsr} == {"0"}  # no documents: no events, no uses
    # Documents published without COUNTER figures (before they were counted) make a month unknown.
    unknown = any("counter" not in d for d in daily)
    assert ("3040" in read_dsr(out / "portal-dsr.tsv")[0]["Exceptions"]) == unknown
    index = (out / "index.html").read_text()
    assert page_name(PUBLISHER_A).removesuffix(".html") in index and "<script>alert" not in index
    calls = [json.loads(line) for line in delivered.read_text().splitlines()]
    assert len(calls) == 4 * 3 + 3  # four files per publisher, the portal's two and the index
    assert [HOSTILE in c for c in calls].count(True) == 4  # a name with spaces and tabs stays one argument
    assert all(len(c) == 3 for c in calls)

    # The telemetry's client addresses (helpers write 127.0.0.1; the known sessions' own) never
    # reach a file.
    written = [p for p in out.rglob("*") if p.is_file()]
    addresses = [a.encode() for a in ("127.0.0.1", *CLIENTS)]
    assert len(written) == 4 * 3 + 4
    assert not [p for p in written for a in addresses if a in p.read_bytes()]

    # Rerun into the same directory: replaced, not refused.
    config = dataclasses.replace(config, reports_command=None)
    again = monthly.monthly_report(
        config, lambda: open_store(config), lambda: load_names(config, True), month, out, now
    )
    assert again.publishers == 3 and again.delivered == 0


def counter_cell(daily: list[dict[str, Any]], recordset: str, metric: str, month: date) -> int | None:
    """A Dataset report cell by its definition, from the reference documents: the month's sum,
    or unknown (None) when any of its documents carries no COUNTER figures."""
    kind, measure = monthly.METRIC_TYPES[metric]
    values = [
        d.get("counter", {}).get(kind, {}).get(measure)
        for d in daily
        if d["recordset_id"] == recordset and d["harvest_date"][:7] == f"{month:%Y-%m}"
    ]
    return None if None in values else sum(v for v in values if v is not None)


class TableRows(HTMLParser):
    """The body rows of one table (by class) of a page: the first cell's title (the id), then
    each other cell's text."""

    def __init__(self, css_class: str) -> None:
        super().__init__()
        self.css_class, self.inside = css_class, False
        self.rows: list[list[str]] = []
        self.cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self.inside = self.css_class in (found.get("class") or "").split()
        elif self.inside and tag == "tr":
            self.rows.append([])  # a heading row has no td: left empty, dropped
        elif self.inside and tag == "td":
            self.cell = "" if self.rows[-1] else None
            if self.cell is None:
                self.rows[-1].append(found.get("title") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append(self.cell)
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell += data


def table_rows(page: str, css_class: str) -> list[list[str]]:
    parser = TableRows(css_class)
    parser.feed(page)
    return [row for row in parser.rows if row]


def read_dsr(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    lines = list(csv.reader(path.open(encoding="utf-8"), dialect="excel-tab"))
    blank = lines.index([])
    header = {row[0]: row[1] for row in lines[:blank]}
    columns = lines[blank + 1]
    return header, [dict(zip(columns, row, strict=True)) for row in lines[blank + 2 :]]


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_monthly_report_mistakes_through_the_cli(world: Any, tmp_path: Path) -> None:
    config, _, _ = world
    dsn = config.source_dsn
    env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_API_DSN": dsn}
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    a_file = tmp_path / "file"
    a_file.write_text("")
    down = {**env, "IDB_STATS_API_DSN": f"host=127.0.0.1 port={closed_port()} dbname=x"}
    for args, environment, code, said in (
        (("--month", "2020-13"), env, 2, "YYYY-MM"),
        (("--month", "last"), env, 2, "YYYY-MM"),
        (("--month", "2999-01"), env, 2, "not over yet"),
        (("--month", "2020-02", "--out", str(occupied)), env, 2, "not empty"),
        (("--month", "2020-02", "--out", str(a_file)), env, 2, "is a file"),  # click's own check
        # A place no user may create a directory (root included): /proc holds only the kernel's.
        (("--month", "2020-02", "--out", "/proc/idb-stats-monthly"), env, 2, "cannot write there"),
        (("--month", "2020-02"), {"IDB_STATS_SOURCE_DSN": dsn}, 3, "api.dsn"),
        (("--month", "2020-02"), down, 4, "ingest"),
    ):
        target = [] if "--out" in args else ["--out", str(tmp_path / "fresh")]
        failed = run("monthly-report", *args, *target, env=environment)
        assert failed.returncode == code, (args, failed.stderr)
        # The message is the last line (click's usage errors put two lines of usage before it).
        assert said in failed.stderr.strip().splitlines()[-1] and "Traceback" not in failed.stderr
    assert (occupied / "notes.txt").read_text() == "mine" and sorted(p.name for p in occupied.iterdir()) == [
        "notes.txt"
    ]
    done = run("monthly-report", "--month", "2020-02", "--out", str(tmp_path / "ok" / "{month}"), env=env)
    assert done.returncode == 0 and "3 publishers" in done.stdout, done.stderr
    assert (tmp_path / "ok" / "2020-02" / "index.html").is_file()


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_the_ingest_database_down_is_exit_4_for_roll_ups(make_config: MakeConfig) -> None:
    config = make_config(**{"api.dsn": f"host=127.0.0.1 port={closed_port()} dbname=x"})
    with pytest.raises(SourceUnreachable, match="ingest"):
        load_names(config, required=True)
    assert load_names(config).read is False
