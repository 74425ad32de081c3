"""The read side on every store: `show` for a cohort and the static HTML `report`."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from helpers import HARVEST, MakeConfig, collect, exported_documents, load_week, published, run
from hostile import BEYOND_BIGINT, BEYOND_BIGINT_QUERY, BEYOND_BIGINT_RECORDSET, insert_beyond_bigint
from hostile import HARVEST as BEYOND_HARVEST
from PIL import Image

from idb_stats import cohort, report
from idb_stats.config import load_config
from idb_stats.model import BLOCKS, EVENT_TYPES, RECORD_TYPES
from idb_stats.report import build_report, page_name
from idb_stats.stores import open_store


def test_show_per_recordset_and_summed(make_config: MakeConfig, dsn: str) -> None:
    config, daily = published(make_config, dsn)
    recordsets = sorted({d["recordset_id"] for d in daily})[:4]
    wanted = [d for d in daily if d["recordset_id"] in recordsets and d["harvest_date"] >= str(HARVEST[1])]
    store = open_store(config)
    try:
        each = cohort.query(store, recordsets, HARVEST[1], None, "day", summed=False, top=5)
        summed = cohort.query(store, recordsets, HARVEST[1], None, "week", summed=True, top=5)
    finally:
        store.close()
    for rt, ty in BLOCKS:
        for field in ("count", "total"):
            expected = sum(d[rt][ty][field] for d in wanted)
            assert each.totals[f"{rt}.{ty}.{field}"] == summed.totals[f"{rt}.{ty}.{field}"] == expected
    assert {(r["period"].isoformat(), r["recordset_id"]) for r in each.series} == {
        (d["harvest_date"], d["recordset_id"]) for d in wanted
    }
    assert {r["recordset_id"] for r in summed.series} == {None}
    assert len(summed.countries) <= 5 and summed.countries == each.countries

    data = json.loads(cohort.as_json(each))
    assert data["totals"] == each.totals and len(data["series"]) == len(each.series)
    rows = list(csv.DictReader(io.StringIO(cohort.as_csv(each))))
    assert sum(int(r["records.seen.total"]) for r in rows) == each.totals["records.seen.total"]
    table = cohort.as_table(summed)
    assert f"{summed.totals['records.seen.total']:,}" in table.splitlines()[-len(summed.countries) - 3]


class PageParser(HTMLParser):
    """Links, chart series and table cells of a generated page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.series: list[tuple[str, str]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")
        if tag == "path" and values.get("data-series"):
            self.series.append((values["data-series"] or "", values.get("d") or ""))
        for name in ("src", "href"):
            if re.match(r"^(https?:)?//", values.get(name) or ""):
                self.external.append(values[name] or "")


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text())
    return parser


def test_report_pages_hold_the_store_numbers(
    make_config: MakeConfig, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "CHUNK", 5)  # several chunks of pages, built by two threads
    config, daily = published(make_config, dsn)
    result = build_report(lambda: open_store(config), config.store, HARVEST[0], HARVEST[-1], tmp_path)
    recordsets = sorted({d["recordset_id"] for d in daily})
    assert result.pages == len(recordsets) + 1
    index = parse(tmp_path / "index.html")
    assert sorted(index.links) == sorted(f"recordsets/{page_name(rs)}" for rs in recordsets)
    assert not index.external
    assert [name for name, _ in index.series] == [rt for _ in EVENT_TYPES for rt in RECORD_TYPES]
    assert all(path.startswith("M") for _, path in index.series)

    busiest = max(
        recordsets,
        key=lambda rs: sum(d["records"]["seen"]["total"] for d in daily if d["recordset_id"] == rs),
    )
    page = (tmp_path / "recordsets" / page_name(busiest)).read_text()
    seen = sum(d[rt]["seen"]["total"] for d in daily if d["recordset_id"] == busiest for rt in RECORD_TYPES)
    assert f"<td>{seen:,}</td>" in page
    assert "Top records" in page and "Top queries" in page


def test_show_and_report_through_the_cli(dsn: str, tmp_path: Path) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), env=env).returncode == 0
    exported = run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), env=env).stdout
    daily = exported_documents(exported)
    ids = sorted({d["recordset_id"] for d in daily})
    listing = tmp_path / "cohort.txt"
    listing.write_text(f"# the cohort\n{ids[1]}\n\n{ids[2]}  # trailing comment\n")
    shown = run(
        "show", ids[0], "--recordsets-file", str(listing), "--interval", "week", "--format", "json", env=env
    )
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["recordsets"] == ids[:3]
    wanted = [d for d in daily if d["recordset_id"] in ids[:3]]
    assert data["totals"]["records.search.total"] == sum(d["records"]["search"]["total"] for d in wanted)
    table = run("show", ids[0], "--sum", env=env)
    assert table.returncode == 0 and table.stdout.startswith("period")
    assert run("show", env=env).returncode == 2  # no recordset named

    built = run(
        "report",
        "--from",
        str(HARVEST[0]),
        "--to",
        str(HARVEST[-1]),
        "--out",
        str(tmp_path / "site"),
        env=env,
    )
    assert built.returncode == 0, built.stderr
    assert f"{len(ids) + 1} pages" in built.stdout
    assert (tmp_path / "site" / "index.html").exists()


def test_report_renders_in_a_browser_without_network(dsn: str, tmp_path: Path) -> None:
    """Open the pages as a person would, in headless Chromium: charts drawn, nothing fetched."""
    browser_binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_binary is None:
        pytest.skip(
            "chromium is not installed (Debian: apt-get install chromium); the report was not looked at"
        )
    sync_api = pytest.importorskip("playwright.sync_api")
    load_week(dsn)
    config = load_config(overrides={"source.dsn": dsn}, environ={})
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    build_report(lambda: open_store(config), config.store, HARVEST[0], HARVEST[-1], tmp_path / "site")

    requested: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=browser_binary,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda request: requested.append(request.url))
        page.goto((tmp_path / "site" / "index.html").as_uri())
        assert_charts_drawn(page, tmp_path / "index.png")

        # The recordsets table sorts by a clicked column (numbers, largest first).
        cells = page.locator("table.recordsets tbody tr td:nth-child(3)")
        page.locator("table.recordsets th", has_text="seen").click()
        seen = [int(v) for v in cells.evaluate_all("cells => cells.map(c => c.dataset.value)")]
        assert seen == sorted(seen, reverse=True) and seen[0] > 0

        page.locator("table.recordsets a").first.click()
        page.wait_for_load_state("load")
        assert page.url.endswith(".html") and "/recordsets/" in page.url
        assert_charts_drawn(page, tmp_path / "recordset.png")
        assert page.locator("table.terms").count() == 2
        browser.close()
    assert requested and all(url.startswith("file://") for url in requested), requested


def assert_charts_drawn(page: Any, screenshot: Path) -> None:
    page.screenshot(path=str(screenshot), full_page=True)
    charts = page.locator("figure.chart")
    assert charts.count() == len(EVENT_TYPES)
    assert charts.locator("figcaption").all_inner_texts() == list(EVENT_TYPES)
    search = charts.first
    box = search.locator("svg").bounding_box()
    assert box and box["width"] > 300 and box["height"] > 150
    legend = search.locator(".legend span").first
    assert legend.inner_text().startswith("records (")
    # The style sheet applied whole: the legend's colour marker exists and matches the line.
    marker = legend.evaluate(
        "s => [getComputedStyle(s, '::before').content, getComputedStyle(s, '::before').backgroundColor]"
    )
    assert marker == ['""', "rgb(0, 114, 178)"]
    assert search.locator("path.series").count() == len(RECORD_TYPES)
    # The drawn pixels, not just the markup: the charts hold the first series' colour, and many
    # more. Looked for in every chart: in one, a series may lie under the next (equal values).
    colours: set[Any] = set()
    for svg in charts.locator("svg").all():
        image = Image.open(io.BytesIO(svg.screenshot())).convert("RGB")
        colours |= {colour for _, colour in image.getcolors(maxcolors=1 << 16) or []}
    assert (0x00, 0x72, 0xB2) in colours and len(colours) > 20


def test_show_and_report_print_sums_beyond_bigint(dsn: str, tmp_path: Path) -> None:
    """A day's sums are exact beyond 2**63 - 1 in the PostgreSQL store: show (table, CSV, JSON)
    and the report read and print them whole, not cast to bigint (which failed, exit 5)."""
    insert_beyond_bigint(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    day = str(BEYOND_HARVEST)
    assert run("collect-stats", "-d", day, env=env).returncode == 0
    rs = BEYOND_BIGINT_RECORDSET
    table = run("show", rs, "--interval", "day", env=env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.count(f"{BEYOND_BIGINT:,}") == 3, table.stdout  # the day, the total, US hits
    as_csv = run("show", rs, "--format", "csv", env=env)
    assert as_csv.returncode == 0, as_csv.stderr
    assert next(csv.DictReader(io.StringIO(as_csv.stdout)))["records.search.total"] == str(BEYOND_BIGINT)
    as_json = run("show", rs, "--format", "json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert (
        data["series"][0]["records.search.total"] == data["totals"]["records.search.total"] == BEYOND_BIGINT
    )
    assert data["top_countries"] == [{"country": "US", "hits": BEYOND_BIGINT}]

    built = run("report", "--from", day, "--to", day, "--out", str(tmp_path / "site"), env=env)
    assert built.returncode == 0, built.stderr
    page = (tmp_path / "site" / "recordsets" / page_name(rs)).read_text()
    assert f"{BEYOND_BIGINT:,}" in page
    # The query's text (its hash in the cell's title) beside the sum.
    assert re.search(rf'title="{BEYOND_BIGINT_QUERY}"><code>\{{\}}</code></td><td>{BEYOND_BIGINT:,}<', page)
