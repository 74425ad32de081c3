"""The live portal's row kinds (recordset and publisher page views) in every store, the schema
change they bring to a search store made by the previous version, and an empty source refused."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from helpers import (
    PUBLISHERS,
    RECORDSETS,
    MakeConfig,
    assert_consistent,
    collect,
    insert_rows,
    random_rows,
    reference_day,
    run,
)

import idb_stats.collect
from idb_stats import status
from idb_stats.collect import Selection, last_closed
from idb_stats.errors import EmptySource, ExitCode, SourceRowsGone
from idb_stats.model import RECORDSET_PAGE_BLOCK, DayStats
from idb_stats.stores import open_store
from idb_stats.stores.mappings import daily_mapping, totals_mapping
from idb_stats.stores.search import SearchStore
from idb_stats.totals import Totals, summarize, with_day
from idb_stats.verify import verify

DAYS = [date(2021, 3, 1) + timedelta(days=i) for i in range(3)]  # calendar days of events
HARVEST = [d + timedelta(days=1) for d in DAYS]


def live_day(seed: int, day: date, n: int = 300, pages: bool = True) -> list[Any]:
    """A calendar day as the live search API writes it: the usage rows, and page views of
    recordsets and publishers at about 3 % (keyed by the page's uuid, valued by a `recordset` field
    the page's document lacks, so null)."""
    rng = random.Random(seed)
    start = datetime(day.year, day.month, day.day)
    rows = [
        row
        for row in random_rows(seed, day, n=n, bad=False)
        if row[2] in ("records", "mediarecords") and start <= row[0] < start + timedelta(days=1)
    ]
    for i in range(len(rows) * 3 // 97 + 1 if pages else 0):
        kind = ("recordsets", "publishers")[i % 2]
        page = rng.choice(RECORDSETS if kind == "recordsets" else PUBLISHERS)
        at = start + timedelta(seconds=rng.uniform(0, 86399))
        rows.append((at, "view", kind, None, rng.choice([{"country": "US"}, None]), {page: None}))
    return rows


def test_page_views_at_a_few_percent_publish_every_day_under_default_settings(
    make_config: MakeConfig, dsn: str
) -> None:
    for i, day in enumerate(DAYS):
        insert_rows(dsn, live_day(i, day))
    config = make_config()
    assert config.max_skipped_share == 0.01
    result = collect(config, first=HARVEST[0], last=HARVEST[-1])
    assert [s.harvest_date for s in result.days] == HARVEST
    with open_store(config) as store:
        ledger = store.runs(limit=1)[0]
        daily = list(store.export(HARVEST[0], HARVEST[-1]))
        totals = list(store.totals())
        publishers = list(store.publishers(HARVEST[0], HARVEST[-1]))
        completed = store.completed_days()
    expected_daily: list[dict[str, Any]] = []
    expected_publishers: list[dict[str, Any]] = []
    for stats, logged, day in zip(result.days, ledger["days"], HARVEST, strict=True):
        expected = reference_day(dsn, day)
        expected_daily += expected.documents
        expected_publishers += expected.publishers
        # Recognised, not skipped: their own counts in the summary, the ledger and the day marker.
        assert stats.skipped == 0 and stats.skip_reasons == {}
        assert stats.kinds == expected.report.kinds
        assert stats.kinds["recordsets"] > 0 and stats.kinds["publishers"] > 0
        assert sum(stats.kinds.values()) == stats.rows
        assert 0.02 < (stats.kinds["recordsets"] + stats.kinds["publishers"]) / stats.rows < 0.05
        assert logged["kinds"] == stats.kinds and logged["publishers"] == len(expected.publishers)
        assert completed[day]["kinds"] == stats.kinds
    assert daily == expected_daily and publishers == expected_publishers
    assert_consistent(daily, totals)
    page_views = sum(d[RECORDSET_PAGE_BLOCK[0]][RECORDSET_PAGE_BLOCK[1]]["count"] for d in daily)
    assert page_views == sum(s.kinds["recordsets"] for s in result.days)
    assert sum(p["publishers"]["view"]["count"] for p in publishers) == sum(
        s.kinds["publishers"] for s in result.days
    )
    # The new block is summed where every block is: show's series.
    with open_store(config) as store:
        (period,) = store.series([], None, None, "year", by_recordset=False)
    assert period["recordsets.view.count"] == period["recordsets.view.total"] == page_views

    # A republished day replaces its publisher documents; forgetting it removes them.
    collect(config, day=HARVEST[0])
    with open_store(config) as store:
        assert list(store.publishers(HARVEST[0], HARVEST[-1])) == expected_publishers
        store.forget_day(HARVEST[0])
        assert [p["harvest_date"] for p in store.publishers(HARVEST[0], HARVEST[-1])] == [
            p["harvest_date"] for p in expected_publishers if p["harvest_date"] != HARVEST[0].isoformat()
        ]


def without_page_block(mapping: dict[str, Any]) -> dict[str, Any]:
    """The mapping as the version before schema 2 made it: without the recordsets block."""
    return {**mapping, "properties": {k: v for k, v in mapping["properties"].items() if k != "recordsets"}}


@pytest.mark.parametrize("store_kind", ["opensearch", "elasticsearch"])
def test_init_adds_the_new_block_in_place_to_indexes_made_by_the_previous_version(
    make_config: MakeConfig, dsn: str
) -> None:
    # The previous version's indexes (its daily and totals mappings, no publishers index) holding
    # its documents: this version's documents of a day without page views, less the new block.
    insert_rows(dsn, live_day(3, DAYS[0], n=60, pages=False))
    config = make_config()
    with open_store(config) as store:
        assert isinstance(store, SearchStore)
        day = reference_day(dsn, HARVEST[0])
        old_daily = [{k: v for k, v in doc.items() if k != "recordsets"} for doc in day.documents]
        old_totals = []
        for doc in old_daily:
            made = with_day(Totals(doc["recordset_id"]), HARVEST[0], summarize(doc)).to_doc()
            old_totals.append({k: v for k, v in made.items() if k != "recordsets"})
        for index, mapping, docs, key in (
            (config.daily_index, without_page_block(daily_mapping()), old_daily, "recordset_id"),
            (config.totals_index, without_page_block(totals_mapping()), old_totals, "recordset_id"),
        ):
            store.http.request("PUT", f"/{quote(index)}", {"mappings": mapping})
            for doc in docs:
                doc_id = f"{doc[key]}-{HARVEST[0]}" if index == config.daily_index else doc[key]
                store.http.request("PUT", f"/{quote(index)}/_doc/{quote(doc_id)}", doc)
        store.http.request("POST", f"/{quote(config.daily_index)},{quote(config.totals_index)}/_refresh")

        store.init()
        store.init()
        live = store.http.request("GET", f"/{quote(config.daily_index)}/_mapping")
        (concrete,) = live.values()
        assert "view" in concrete["mappings"]["properties"]["recordsets"]["properties"]
        assert store.index_differences(config.publishers_index, {}) == []
        # Old documents are read as they were written, the new block as zeros.
        assert list(store.export(HARVEST[0], HARVEST[0])) == old_daily
        (period,) = store.series([], None, None, "year", by_recordset=False)
        assert (period["recordsets.view.count"], period["recordsets.view.total"]) == (0, 0)
        assert period["records.search.total"] == sum(d["records"]["search"]["total"] for d in old_daily)
        # Its day marker, as the previous version wrote it; verify then finds nothing to repair.
        marker = {k: v for k, v in day_stats(len(old_daily)).items() if k not in ("kinds", "publishers")}
        store.http.request(
            "PUT", f"/{quote(config.runs_index)}/_doc/day-{HARVEST[0]}", marker, params={"refresh": "true"}
        )
    differences: list[Any] = []
    outcome = verify(config, on_difference=lambda d, _: differences.append(d))
    assert outcome.report.agrees and outcome.report.days[0].outcome == "agrees", differences

    # The next day, with page views, lands beside them; totals stay the sum of the days.
    rs = old_daily[0]["recordset_id"]
    insert_rows(
        dsn,
        [
            (datetime(2021, 3, 2, 9), "view", "recordsets", None, {"country": "US"}, {rs: None}),
            (datetime(2021, 3, 2, 9), "view", "publishers", None, None, {PUBLISHERS[0]: None}),
        ],
    )
    collect(config, day=HARVEST[1])
    with open_store(config) as store:
        daily = list(store.export(HARVEST[0], HARVEST[1]))
        totals = list(store.totals())
        assert [p["publisher_id"] for p in store.publishers(HARVEST[1], HARVEST[1])] == [PUBLISHERS[0]]
    assert_consistent(daily, totals)
    (rs_totals,) = [t for t in totals if t["recordset_id"] == rs]
    assert rs_totals["recordsets"]["view"]["count"] == 1 and rs_totals["days"] == 2


def day_stats(recordsets: int) -> dict[str, Any]:
    return {"kind": "day", **DayStats(HARVEST[0], "v1-run", rows=1, recordsets=recordsets).as_dict()}


# --- an empty source is not a day -----------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["postgres", "opensearch"])
def test_a_day_without_rows_is_published_only_between_days_with_rows(
    make_config: MakeConfig, dsn: str
) -> None:
    # Rows on the first and the last of three days: the middle one is a real outage of the portal.
    insert_rows(dsn, live_day(1, DAYS[0], n=40) + live_day(2, DAYS[2], n=40))
    config = make_config()
    result = collect(config, first=HARVEST[0], last=HARVEST[2])
    assert [(s.harvest_date, s.rows > 0) for s in result.days] == [
        (HARVEST[0], True),
        (HARVEST[1], False),
        (HARVEST[2], True),
    ]
    info = status.status(config)
    assert info.empty_days == [HARVEST[1]]
    assert info.last_day_rows == result.days[2].rows
    assert info.as_dict()["empty_days"] == [HARVEST[1].isoformat()]


@pytest.mark.parametrize("store_kind", ["postgres", "opensearch"])
def test_days_after_the_telemetry_stopped_or_before_it_began_are_refused(
    make_config: MakeConfig, dsn: str
) -> None:
    # Telemetry on the middle day only: the first day is before it begins, the last after it stopped.
    insert_rows(dsn, live_day(1, DAYS[1], n=40))
    config = make_config()
    with pytest.raises(SourceRowsGone, match="2 days were refused") as refused:
        collect(config, first=HARVEST[0], last=HARVEST[2])
    assert refused.value.exit_code == ExitCode.SOURCE_ROWS_GONE == 10
    with open_store(config) as store:
        assert sorted(store.completed_days()) == [HARVEST[1]]  # the other day went on
    for day, why in ((HARVEST[0], "before the telemetry begins"), (HARVEST[2], "writer")):
        with pytest.raises(EmptySource, match=f"{day}: the telemetry has no rows for this day .*{why}"):
            collect(config, day=day)
    # --allow-empty publishes such a day on purpose; status then flags it.
    idb_stats.collect.collect(config, Selection(day=HARVEST[2]), allow_empty=True)
    assert status.status(config).empty_days == [HARVEST[2]]


@pytest.mark.parametrize("store_kind", ["postgres", "opensearch"])
def test_the_catch_up_over_an_empty_source_fails_naming_the_day(
    make_config: MakeConfig, dsn: str, tmp_path: Path
) -> None:
    insert_rows(dsn, [])  # the telemetry tables, without a row
    config = make_config()
    env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_STORE": config.store}
    if config.store_url:
        env["IDB_STATS_STORE_URL"] = config.store_url
    closed = last_closed(config)
    # The CLI as an operator runs it, on this test's own indexes.
    path = str(tmp_path / "config.toml")
    Path(path).write_text(
        "[store]\n"
        + "".join(
            f'{role}_index = "{getattr(config, role + "_index")}"\n'
            for role in ("daily", "totals", "runs", "api", "publishers")
        )
    )
    first = run("collect-stats", "--config", path, env=env)
    assert first.returncode == 10, first.stderr
    assert f"{closed}: the telemetry has no rows for this day" in first.stderr
    assert "check source.dsn and source.stats_table" in first.stderr and "Traceback" not in first.stderr
    with open_store(config) as store:
        assert store.completed_days() == {}
    shown = run("status", "--config", path, "--json", env=env)
    assert json.loads(shown.stdout)["empty_days"] == []

    # The writer comes back after a quiet day: the quiet day is published, flagged empty.
    now = datetime.now(UTC).replace(tzinfo=None)
    insert_rows(dsn, [(now - timedelta(days=3), "search", "records", None, None, {RECORDSETS[0]: 1})])
    insert_rows(dsn, [(now, "search", "records", None, None, {RECORDSETS[0]: 1})])
    collect(config, day=closed - timedelta(days=1))
    status_text = run("status", "--config", path, env=env).stdout
    assert f"published empty:       {closed - timedelta(days=1)}" in status_text, status_text
