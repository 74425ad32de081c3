"""monthly-report's pure parts: COUNTER figures from daily documents (with and without the
"counter" key), the Dataset report's TSV and JSON, the usage table, months, and the delivery
command's argv."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idb_stats import monthly
from idb_stats.cohort import FIELDS
from idb_stats.config import command_problem
from idb_stats.errors import DeliveryFailed, UsageError
from idb_stats.model import DayStats
from idb_stats.names import Names
from idb_stats.rules import TelemetryRow, aggregate_day
from idb_stats.stores.memory import MemoryStore

RECORDSETS = ["rs-a", "rs-b", "rs-c"]
MONTH = date(2026, 3, 1)
MONTHS = monthly.months_so_far(MONTH)
# Hostile text: tabs, line breaks, quotes, markup and format characters all stay text.
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
FIGURE = st.integers(0, 10**12)


@st.composite
def documents(draw: Any) -> list[dict[str, Any]]:
    """Daily documents of Jan-Apr 2026 (April outside the report), some without "counter" (days
    published before it existed), some with a part of it missing."""
    docs = []
    for _ in range(draw(st.integers(0, 25))):
        day = date(2026, 1, 1) + timedelta(days=draw(st.integers(0, 119)))
        doc: dict[str, Any] = {
            "recordset_id": draw(st.sampled_from(RECORDSETS)),
            "harvest_date": day.isoformat(),
        }
        shape = draw(st.sampled_from(["full", "full", "absent", "partial"]))
        if shape != "absent":
            counter = {
                kind: {"total": draw(FIGURE), "unique": draw(FIGURE)}
                for kind in ("investigations", "requests")
            }
            if shape == "partial":
                del counter[draw(st.sampled_from(["investigations", "requests"]))]
            doc["counter"] = counter
        docs.append(doc)
    return docs


def brute_force(docs: list[dict[str, Any]], rs: str, metric: str, month: date) -> int | None:
    """One cell by its definition: unknown when any of the month's documents lacks the figure."""
    kind, measure = monthly.METRIC_TYPES[metric]
    mine = [
        d
        for d in docs
        if d["recordset_id"] == rs and date.fromisoformat(d["harvest_date"]).replace(day=1) == month
    ]
    values = [d.get("counter", {}).get(kind, {}).get(measure) for d in mine]
    return None if any(v is None for v in values) else sum(values)


@given(documents())
def test_counter_figures_equal_a_brute_force_sum(docs: list[dict[str, Any]]) -> None:
    figures = monthly.counter_figures(docs, MONTHS)
    names = Names(publisher_of={"rs-a": "pub-1"}, publishers={"pub-1": "Publisher One"}, read=True)
    rows = monthly.dataset_rows(RECORDSETS, figures, MONTHS, names)
    assert len(rows) == len(RECORDSETS) * len(monthly.METRIC_TYPES)
    for row in rows:
        expected = [brute_force(docs, row.dataset_id, row.metric_type, m) for m in MONTHS]
        assert list(row.months) == expected
        assert row.total == sum(v for v in expected if v is not None)
        assert row.publisher_name == ("Publisher One" if row.dataset_id == "rs-a" else "")
    header = monthly.dsr_header("p", MONTH, MONTHS, rows, _now())
    unknown = [m for i, m in enumerate(MONTHS) if any(r.months[i] is None for r in rows)]
    assert ("3040" in header["Exceptions"]) == bool(unknown)
    assert "not robot-filtered" in header["Exceptions"].lower()


def _now() -> datetime:
    return datetime(2026, 4, 2, 6, 0)


@given(st.lists(st.tuples(TEXT, TEXT, st.lists(st.none() | FIGURE, min_size=3, max_size=3)), max_size=6))
def test_dataset_report_tsv_and_json_keep_every_name_and_figure(items: list[Any]) -> None:
    rows = [
        monthly.DatasetRow(f"id-{i}", name, "pub", publisher, "Total_Dataset_Requests", tuple(cells))
        for i, (name, publisher, cells) in enumerate(items)
    ]
    header = monthly.dsr_header("scope\twith tab", MONTH, MONTHS, rows, _now())
    lines = list(csv.reader(io.StringIO(monthly.dsr_tsv(header, rows, MONTHS)), dialect="excel-tab"))
    blank = lines.index([])
    assert {k: v for k, v in lines[:blank]} == {k: monthly.spreadsheet_text(v) for k, v in header.items()}
    assert lines[blank + 1][-3:] == ["Jan-2026", "Feb-2026", "Mar-2026"]
    for row, line in zip(rows, lines[blank + 2 :], strict=True):
        texts = [row.dataset_name, row.dataset_id, row.publisher_name, "pub", row.metric_type]
        assert line[:6] == [*map(monthly.spreadsheet_text, texts), str(row.total)]
        assert line[6:] == ["" if v is None else str(v) for v in row.months]
    data = json.loads(monthly.dsr_json(header, rows, MONTHS))
    assert data["Report_Header"] == header
    for row, item in zip(rows, data["Report_Items"], strict=True):
        assert item["Dataset_Title"] == row.dataset_name and item["Reporting_Period_Total"] == row.total
        assert list(item["Performance"].values()) == list(row.months)


@given(
    st.lists(
        st.tuples(st.sampled_from(RECORDSETS), st.sampled_from([*MONTHS, date(2026, 4, 1)]), FIGURE),
        max_size=20,
    )
)
def test_usage_rows_sum_the_series_by_month(cells: list[tuple[str, date, int]]) -> None:
    series = [
        {"recordset_id": rs, "period": m, **dict.fromkeys(FIELDS, 0), "records.view.total": n}
        for rs, m, n in cells
    ]
    rows = monthly.usage_rows(series, RECORDSETS, MONTHS, Names())
    assert len(rows) == len(RECORDSETS) * len(FIELDS)
    for row in rows:
        if row.metric != "records.view.total":
            assert row.months == (0, 0, 0)
            continue
        assert list(row.months) == [
            sum(n for rs, m, n in cells if rs == row.recordset_id and m == month) for month in MONTHS
        ]
    text = monthly.usage_csv(rows, MONTHS)
    read = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["year_to_date"]) for r in read] == [r.total for r in rows]


@given(TEXT)
def test_a_month_is_yyyy_mm_or_a_usage_error(text: str) -> None:
    try:
        month = monthly.parse_month(text)
    except UsageError as exc:
        assert "YYYY-MM" in str(exc)
    else:
        assert month.strftime("%Y-%m") == text.strip() and month.day == 1


def test_previous_month_and_ends() -> None:
    assert monthly.previous_month(date(2027, 1, 15)) == date(2026, 12, 1)
    assert monthly.month_end(date(2028, 2, 1)) == date(2028, 2, 29)
    assert monthly.months_so_far(date(2026, 1, 1)) == [date(2026, 1, 1)]


@given(TEXT, TEXT)
def test_delivery_placeholders_stay_one_argument(publisher_id: str, name: str) -> None:
    path = Path("/srv/reports/2026-03/publishers/a b.csv")
    argv = monthly.delivery_argv(
        "send --to 'x y' {publisher_id} {file} {publisher_name}", path, publisher_id, name
    )
    assert argv == ["send", "--to", "x y", publisher_id, str(path), name]


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("send 'unbalanced", "quotes"),
        ("   ", "empty"),
        ("send {recipient}", "not a placeholder"),
        ("send {0}", "placeholder"),
    ],
)
def test_a_reports_command_that_cannot_run_is_refused(command: str, problem: str) -> None:
    said = command_problem(command)
    assert said is not None and problem in said
    assert command_problem("send {{literal}} {file}") is None


def test_failed_deliveries_are_each_logged_and_the_rest_still_go(caplog: pytest.LogCaptureFixture) -> None:
    files = [(Path(f"/tmp/f{i}"), f"p{i}", f"P {i}") for i in range(4)]
    ran: list[list[str]] = []

    def run(argv: list[str]) -> int:
        ran.append(argv)
        return 2 if argv[-1] in ("/tmp/f1", "/tmp/f3") else 0

    with pytest.raises(DeliveryFailed, match="2 of 4"):
        monthly.deliver("deliver {publisher_id} {file}", files, run)
    assert len(ran) == 4
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
        "reports.command exited 2 for /tmp/f1 (publisher p1)",
        "reports.command exited 2 for /tmp/f3 (publisher p3)",
    ]


def test_monthly_report_on_a_memory_store_with_counter_blocks(tmp_path: Path) -> None:
    """The whole report over a store holding documents with and without COUNTER blocks (days
    published before the figures existed): files per publisher equal the documents' sums."""
    store = MemoryStore()
    store.init()
    published: list[dict[str, Any]] = []
    days = [date(2026, 1, 20), date(2026, 2, 3), date(2026, 2, 4), date(2026, 3, 9)]
    for n, harvest in enumerate(days):
        telemetry = [
            TelemetryRow(i, "view", "records", None, {"country": "US"}, {f"rec-{n}-{i}": RECORDSETS[i % 3]})
            for i in range(1, 6)
        ]
        documents = aggregate_day(telemetry, harvest).documents
        for k, doc in enumerate(documents):
            if harvest != date(2026, 2, 3):  # that day was published before COUNTER figures
                doc["counter"] = {
                    "investigations": {"total": 3 + k + n, "unique": 1 + k},
                    "requests": {"total": n, "unique": min(n, 1)},
                }
        store.publish_day(DayStats(harvest), documents)
        published += documents
    names = Names({"rs-a": "A's set"}, {"pub": "Pub \t<b>"}, {"rs-a": "pub", "rs-b": "pub"}, read=True)
    monthly.prepare_out_dir(tmp_path)
    result = monthly.write_monthly_report(store, names, MONTH, tmp_path, "memory", _now())
    assert result.publishers == 1 and len(result.files) == 4 + 3
    header, rows = _read_tsv((tmp_path / "publishers" / "pub-dsr.tsv").read_text())
    assert "3040" in header["Exceptions"] and "2026-02" in header["Exceptions"]
    assert {r["Dataset_ID"] for r in rows} == {"rs-a", "rs-b"}
    for row in rows:
        cells = [brute_force(published, row["Dataset_ID"], row["Metric_Type"], m) for m in MONTHS]
        assert [row[monthly.month_label(m)] for m in MONTHS] == ["" if c is None else str(c) for c in cells]
        assert cells[1] is None and cells[0] is not None  # February: one day without figures
    usage = list(csv.DictReader(io.StringIO((tmp_path / "publishers" / "pub.csv").read_text(), newline="")))
    views = [r for r in usage if r["metric"] == "records.view.total"]
    expected = [
        [
            sum(
                d["records"]["view"]["total"]
                for d in published
                if d["recordset_id"] == rs and d["harvest_date"][:7] == f"{m:%Y-%m}"
            )
            for m in MONTHS
        ]
        for rs in ("rs-a", "rs-b")
    ]
    assert [[int(r[f"{m:%Y-%m}"]) for m in MONTHS] for r in views] == expected
    portal = _read_tsv((tmp_path / "portal-dsr.tsv").read_text())[1]
    assert {r["Dataset_ID"] for r in portal} == set(RECORDSETS)


def _read_tsv(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    lines = list(csv.reader(io.StringIO(text, newline=""), dialect="excel-tab"))
    blank = lines.index([])
    return dict((row[0], row[1]) for row in lines[:blank]), [
        dict(zip(lines[blank + 1], row, strict=True)) for row in lines[blank + 2 :]
    ]


@given(st.text())
def test_no_text_cell_reads_as_a_spreadsheet_formula(text: str) -> None:
    """Whatever a name or id holds, its cell does not begin a formula, and only a text that would
    has the apostrophe a spreadsheet hides."""
    cell = monthly.spreadsheet_text(text)
    assert not cell.startswith(monthly.FORMULA_STARTS)
    assert cell == text or (cell == "'" + text and text.startswith(monthly.FORMULA_STARTS))
    row = monthly.UsageRow("=1+1", text, "records.view.count", (1,))
    (line,) = list(csv.reader(io.StringIO(monthly.usage_csv([row], [MONTH]))))[1:]
    assert line[:3] == ["'=1+1", cell, "records.view.count"]
