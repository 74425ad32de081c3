"""Published numbers stay true: late, purged and changed rows are found by the catch-up's
re-check, days whose rows are gone are never emptied by accident, and every change to a
published number is recorded."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import helpers
import psycopg2
import pytest
from helpers import (
    HARVEST,
    RECORDSETS,
    MakeConfig,
    assert_consistent,
    execute,
    insert_rows,
    load_week,
    other_store,
    random_rows,
    snapshot,
    window,
)

import idb_stats.collect
from idb_stats import status as store_status
from idb_stats.clock import FixedClock
from idb_stats.errors import SourceRowsGone
from idb_stats.logs import fields_of
from idb_stats.source import PostgresTelemetrySource
from idb_stats.stores import open_store

# The catch-up runs at a fixed moment, so these tests plan the same days at any hour (a run that
# crossed midnight UTC failed them); TODAY is the last closed harvest date then.
AT = FixedClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
TODAY = AT.now().date()


def collect(config: Any, **selection: Any) -> idb_stats.collect.RunResult:
    return helpers.collect(config, AT, **selection)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def first_id_sql(extra: str = "") -> str:
    return f"(SELECT min(id) FROM stats WHERE date >= %(start)s AND date < %(end)s {extra})"


def export(config: Any, first: date, last: date) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    store = open_store(config)
    try:
        return list(store.export(first, last)), list(store.totals())
    finally:
        store.close()


def current_fingerprint(config: Any, day: date) -> Any:
    source = PostgresTelemetrySource(config)
    try:
        with source.read_day(day) as telemetry:
            return telemetry.fingerprint
    finally:
        source.close()


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_fingerprint_sees_inserted_deleted_and_changed_rows_not_freezing(
    make_config: MakeConfig, dsn: str
) -> None:
    load_week(dsn)
    config, day = make_config(), HARVEST[1]
    seen = [current_fingerprint(config, day)]
    assert seen[0]["rows"] > 0 and seen[0]["min_id"] <= seen[0]["max_id"]
    # Freezing the rows (as autovacuum does) keeps their fingerprint.
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM (FREEZE) stats")
    conn.close()
    assert current_fingerprint(config, day) == seen[0]
    search, records, with_query = (
        "AND type = 'search'",
        "AND record_type = 'records'",
        "AND query_id IS NOT NULL",
    )
    changes = [
        "UPDATE stats SET payload = payload || '{\"extra\": 1}' WHERE id = " + first_id_sql(search),
        'UPDATE stats SET ip_geocode = \'{"country": "FR"}\' WHERE id = ' + first_id_sql(),
        "UPDATE stats SET record_type = 'mediarecords' WHERE id = " + first_id_sql(records),
        "UPDATE stats SET type = 'mapping' WHERE id = " + first_id_sql(search),
        "UPDATE stats SET query_id = NULL WHERE id = " + first_id_sql(with_query),
        "DELETE FROM stats WHERE id = " + first_id_sql(),
    ]
    for sql in changes:
        assert execute(dsn, sql, window(day)) == 1
        seen.append(current_fingerprint(config, day))
    insert_rows(
        dsn, [(window(day)["start"] + timedelta(hours=5), "view", "records", None, None, {"r": "rs"})]
    )
    seen.append(current_fingerprint(config, day))
    assert len({repr(fp) for fp in seen}) == len(seen), "every change gives another fingerprint"
    # The grouped re-check query agrees with the per-day fingerprint, and sees empty days as None.
    source = PostgresTelemetrySource(config)
    try:
        grouped = source.fingerprints([HARVEST[0], day, date(1999, 1, 1)])
    finally:
        source.close()
    assert grouped[day] == seen[-1] and grouped[HARVEST[0]] == current_fingerprint(config, HARVEST[0])
    assert grouped[date(1999, 1, 1)] is None


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_catch_up_stops_at_the_settled_day(make_config: MakeConfig, dsn: str) -> None:
    today = TODAY
    load_week(dsn)
    # A row written now: the writer is alive, so the days without rows before it are published.
    insert_rows(dsn, [(datetime.now(UTC).replace(tzinfo=None), "view", "records", None, None, {"r": "rs"})])
    assert collect(make_config(**{"collect.settle": "1d"})).plan.days == [today - timedelta(days=1)]
    assert collect(make_config(**{"collect.settle": "0min"})).plan.days == [today]


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_catch_up_republishes_exactly_the_changed_days(make_config: MakeConfig, dsn: str) -> None:
    today = TODAY
    harvest = [today - timedelta(days=i) for i in (5, 4, 3, 2, 1)]
    rows = []
    for i, day in enumerate(harvest):
        rows += random_rows(40 + i, day - timedelta(days=1), n=60, bad=False)
    insert_rows(dsn, rows)
    config = make_config()
    collect(config, first=harvest[0], last=harvest[-1])
    before, _ = export(config, harvest[0], harvest[-1])

    late_rs = RECORDSETS[0]
    insert_rows(
        dsn,
        [(window(harvest[0])["start"] + timedelta(hours=3), "search", "records", "q-late", {}, {late_rs: 5})],
    )
    assert execute(dsn, f"DELETE FROM stats WHERE id = {first_id_sql()}", window(harvest[1])) == 1
    assert (
        execute(
            dsn,
            'UPDATE stats SET ip_geocode = \'{"country": "FR"}\' WHERE id = ' + first_id_sql(),
            window(harvest[2]),
        )
        == 1
    )
    assert (
        execute(dsn, "DELETE FROM stats WHERE date >= %(start)s AND date < %(end)s", window(harvest[3])) > 0
    )

    journal, logger = ListHandler(), logging.getLogger("idb_stats")
    level = logger.level
    logger.addHandler(journal)
    logger.setLevel(logging.INFO)
    try:
        result = collect(config)  # the timer's plain catch-up
    finally:
        logger.removeHandler(journal)
        logger.setLevel(level)
    late_fields = [fields_of(r) for r in journal.records if fields_of(r).get("reason") == "late_rows"]
    assert [(f["harvest_date"], f["row_delta"]) for f in late_fields] == [
        (harvest[0].isoformat(), 1),
        (harvest[1].isoformat(), -1),
        (harvest[2].isoformat(), 0),
    ]
    assert [(s.harvest_date, s.row_delta, s.rows_gone) for s in result.stale] == [
        (harvest[0], 1, False),
        (harvest[1], -1, False),
        (harvest[2], 0, False),
        (
            harvest[3],
            -sum(1 for r in rows if window(harvest[3])["start"] <= r[0] < window(harvest[3])["end"]),
            True,
        ),
    ]
    republished = [d.harvest_date for d in result.days if d.reason == "late_rows"]
    assert republished == harvest[:3]
    assert [d.harvest_date for d in result.days if d.reason != "late_rows"] == [today]

    # Equal to one clean run over the changed source, except the day whose rows are all gone:
    # it keeps what was published.
    clean = other_store(make_config, "clean")
    collect(clean, first=harvest[0], last=today)
    daily, totals = export(config, harvest[0], today)
    clean_daily, _ = export(clean, harvest[0], today)
    kept = [d for d in before if d["harvest_date"] == harvest[3].isoformat()]
    assert kept and [d for d in daily if d["harvest_date"] == harvest[3].isoformat()] == kept
    assert [d for d in daily if d["harvest_date"] != harvest[3].isoformat()] == clean_daily
    assert_consistent(daily, totals)

    # The change is recorded with its reason and numbers.
    store = open_store(config)
    try:
        recorded = store.changes(recordset_id=late_rs)
        catch_up = next(r for r in store.runs() if r["run_id"] == result.run_id)
    finally:
        store.close()
    old = next(
        d for d in before if d["recordset_id"] == late_rs and d["harvest_date"] == harvest[0].isoformat()
    )
    late = [r for r in recorded if r["harvest_date"] == harvest[0].isoformat()]
    assert len(late) == 1 and late[0]["reason"] == "late_rows" and late[0]["run_id"] == result.run_id
    assert late[0]["blocks"] == {
        "records.search": {
            "old": {"count": old["records"]["search"]["count"], "total": old["records"]["search"]["total"]},
            "new": {
                "count": old["records"]["search"]["count"] + 1,
                "total": old["records"]["search"]["total"] + 5,
            },
        }
    }
    assert catch_up["recheck"]["republished"] == [h.isoformat() for h in harvest[:3]]
    shown = store_status.status(config).as_dict()["last_recheck"]
    assert shown["republished"] == [h.isoformat() for h in harvest[:3]] and len(shown["stale"]) == 4

    # Nothing is stale any more but the day whose rows are gone, which is never emptied.
    again = collect(config)
    assert [s.harvest_date for s in again.stale] == [harvest[3]] and not again.days


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_a_day_published_empty_is_republished_when_its_rows_arrive(make_config: MakeConfig, dsn: str) -> None:
    # The portal's ingest was down for a day: collect-stats publishes it empty; its rows are
    # loaded later and the next catch-up must find them.
    today = TODAY
    harvest = [today - timedelta(days=i) for i in (3, 2, 1)]
    middle = window(harvest[1])

    def inside(rows: list[Any], inside_middle: bool) -> list[Any]:
        return [r for r in rows if (middle["start"] <= r[0] < middle["end"]) == inside_middle]

    insert_rows(
        dsn,
        inside(
            random_rows(50, harvest[0] - timedelta(days=1), n=40, bad=False)
            + random_rows(52, harvest[2] - timedelta(days=1), n=40, bad=False),
            inside_middle=False,
        ),
    )
    config = make_config()
    first = collect(config, first=harvest[0], last=harvest[-1])
    assert [(d.harvest_date, d.rows) for d in first.days][1] == (harvest[1], 0)
    assert export(config, harvest[1], harvest[1])[0] == []

    arrived = inside(random_rows(51, harvest[1] - timedelta(days=1), n=40, bad=False), inside_middle=True)
    insert_rows(dsn, arrived)
    result = collect(config)
    assert [(s.harvest_date, s.row_delta) for s in result.stale] == [(harvest[1], len(arrived))]
    assert [d.harvest_date for d in result.days if d.reason == "late_rows"] == [harvest[1]]
    clean = other_store(make_config, "clean")
    collect(clean, first=harvest[1], last=harvest[1])
    late_day = export(config, harvest[1], harvest[1])[0]
    assert late_day and late_day == export(clean, harvest[1], harvest[1])[0]


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_recheck_days_zero_disables_the_recheck(make_config: MakeConfig, dsn: str) -> None:
    today = TODAY
    insert_rows(dsn, random_rows(7, today - timedelta(days=2), n=30, bad=False))
    config = make_config(**{"collect.recheck_days": 0})
    collect(config, first=today - timedelta(days=1), last=today - timedelta(days=1))
    insert_rows(
        dsn, [(window(today - timedelta(days=1))["start"], "view", "records", None, None, {"r": "rs"})]
    )
    assert collect(config).stale == []
    assert collect(make_config()).stale[0].row_delta == 1


def test_rerunning_a_day_whose_rows_are_gone_is_refused(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    before, _ = snapshot(config)
    gone = HARVEST[1]
    assert execute(dsn, "DELETE FROM stats WHERE date >= %(start)s AND date < %(end)s", window(gone)) > 0
    with pytest.raises(SourceRowsGone, match=f"{gone}.*--allow-empty"):
        collect(config, day=gone)
    assert snapshot(config)[0] == before

    # A range reports the day and goes on with the others.
    insert_rows(
        dsn,
        [(window(HARVEST[2])["start"] + timedelta(hours=1), "download", "records", None, {}, {"new-rs": 3})],
    )
    with pytest.raises(SourceRowsGone):
        collect(config, first=HARVEST[0], last=HARVEST[-1])
    daily, totals = snapshot(config)
    assert [d for d in daily if d["harvest_date"] == gone.isoformat()] == [
        d for d in before if d["harvest_date"] == gone.isoformat()
    ]
    assert any(d["recordset_id"] == "new-rs" for d in daily)
    assert_consistent(daily, totals)

    # --allow-empty empties it, on purpose.
    idb_stats.collect.collect(config, idb_stats.collect.Selection(day=gone), allow_empty=True)
    daily, totals = snapshot(config)
    assert not [d for d in daily if d["harvest_date"] == gone.isoformat()]
    assert_consistent(daily, totals)


def test_every_store_records_what_a_rerun_changed(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    collect(config, day=HARVEST[0])  # the same rows: nothing changed, nothing recorded
    insert_rows(dsn, [(window(HARVEST[1])["start"], "download", "mediarecords", None, {}, {"late-rs": 4})])
    result = collect(config, day=HARVEST[1])
    store = open_store(config)
    try:
        everything = store.changes()
        of_late = store.changes(recordset_id="late-rs")
        future = store.changes(since=datetime.now(UTC).date() + timedelta(days=1))
    finally:
        store.close()
    expected = {
        "harvest_date": HARVEST[1].isoformat(),
        "recordset_id": "late-rs",
        "reason": "rerun",
        "run_id": result.run_id,
        "blocks": {
            "mediarecords.download": {"old": {"count": 0, "total": 0}, "new": {"count": 1, "total": 4}}
        },
    }
    assert [{k: v for k, v in r.items() if k != "changed_at"} for r in everything] == [expected]
    assert of_late == everything and future == []


def test_cli_refuses_with_exit_10_then_allow_empty_and_changes(dsn: str) -> None:
    from helpers import exported_documents, run

    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), env=env).returncode == 0
    execute(dsn, "DELETE FROM stats WHERE date >= %(start)s AND date < %(end)s", window(HARVEST[0]))
    refused = run("collect-stats", "-d", str(HARVEST[0]), env=env)
    assert refused.returncode == 10 and "--allow-empty" in refused.stderr
    exported = exported_documents(
        run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[0]), env=env).stdout
    )
    assert exported
    emptied = run("collect-stats", "-d", str(HARVEST[0]), "--allow-empty", env=env)
    assert emptied.returncode == 0, emptied.stderr
    assert not exported_documents(
        run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[0]), env=env).stdout
    )
    listed = run("changes", "--json", env=env)
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert records and {r["reason"] for r in records} == {"rerun"}
    assert {r["recordset_id"] for r in records} == {d["recordset_id"] for d in exported}
    assert all(all(b["new"] == {"count": 0, "total": 0} for b in r["blocks"].values()) for r in records)
    text = run("changes", "--recordset", records[0]["recordset_id"], env=env).stdout
    assert text.count("\n") == 1 and f"{HARVEST[0]} {records[0]['recordset_id']} rerun" in text


def test_settle_and_recheck_days_are_validated() -> None:
    from idb_stats.config import load_config
    from idb_stats.errors import ConfigError

    good = load_config(overrides={"source.dsn": "host=x", "collect.settle": "30min"}, environ={})
    assert good.settle == timedelta(minutes=30) and good.recheck_days == 7
    assert load_config(
        overrides={"source.dsn": "host=x", "collect.settle": "1.5h"}, environ={}
    ).settle == timedelta(minutes=90)
    with pytest.raises(ConfigError) as error:
        load_config(
            overrides={"source.dsn": "host=x", "collect.settle": "soon", "collect.recheck_days": -1},
            environ={},
        )
    assert len(error.value.problems) == 2
    problems = "\n".join(error.value.problems)
    assert "collect.settle" in problems and "collect.recheck_days" in problems
