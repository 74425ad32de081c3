"""verify on every store: a document altered behind our back, a totals document off by one and a
lost day marker are reported and repaired; a day whose rows are gone is unverifiable and kept."""

from __future__ import annotations

import json
import os
from datetime import date
from typing import Any

import psycopg2
import pytest
from helpers import HARVEST, MakeConfig, execute, insert_rows, published, snapshot, window

from idb_stats import verify
from idb_stats.documents import daily_document_id
from idb_stats.errors import DataQualityError
from idb_stats.importing import import_documents
from idb_stats.stores import open_store


def tamper(config: Any, dsn: str, table: str, key: dict[str, Any], path: list[str], delta: int) -> int:
    """Add delta to one number of a stored daily or totals document, bypassing idb-stats."""
    if config.store == "postgres":
        conn = psycopg2.connect(dsn)
        where = " AND ".join(f"{column} = %({column})s" for column in key)
        with conn, conn.cursor() as cur:
            cur.execute(f"SELECT doc FROM idb_stats.{table} WHERE {where}", key)
            (doc,) = cur.fetchone() or (None,)
            holder = doc
            for name in path[:-1]:
                holder = holder[name]
            holder[path[-1]] += delta
            cur.execute(
                f"UPDATE idb_stats.{table} SET doc = %(doc)s WHERE {where}", {**key, "doc": json.dumps(doc)}
            )
        conn.close()
        return int(holder[path[-1]])
    store = open_store(config)
    try:
        if table == "daily":
            index, doc_id = config.daily_index, daily_document_id(key["recordset_id"], key["harvest_date"])
        else:
            index, doc_id = config.totals_index, key["recordset_id"]
        doc = store.http.request("GET", f"/{index}/_doc/{doc_id}")["_source"]  # type: ignore[attr-defined]
        holder = doc
        for name in path[:-1]:
            holder = holder[name]
        holder[path[-1]] += delta
        store.http.request("PUT", f"/{index}/_doc/{doc_id}", doc, params={"refresh": "true"})  # type: ignore[attr-defined]
        return int(holder[path[-1]])
    finally:
        store.close()


def forget_marker(config: Any, dsn: str, day: date) -> None:
    if config.store == "postgres":
        execute(dsn, "DELETE FROM idb_stats.days WHERE harvest_date = %s", (day,))
        return
    store = open_store(config)
    try:
        store.http.request("DELETE", f"/{config.runs_index}/_doc/day-{day}", params={"refresh": "true"})  # type: ignore[attr-defined]
    finally:
        store.close()


def collect_differences(
    config: Any, **options: Any
) -> tuple[verify.Outcome, list[tuple[verify.Difference, bool]]]:
    found: list[tuple[verify.Difference, bool]] = []
    outcome = verify.verify(config, on_difference=lambda d, after: found.append((d, after)), **options)
    return outcome, found


def test_verify_reports_and_repairs_what_was_altered(make_config: MakeConfig, dsn: str) -> None:
    config, daily = published(make_config, dsn)
    before = snapshot(config)
    clean, found = collect_differences(config)
    assert clean.report.agrees and not found
    assert [d.harvest_date for d in clean.report.days] == HARVEST
    assert {d.outcome for d in clean.report.days} == {"agrees"}
    assert clean.report.totals_checked == len(before[1]) > 0

    target = next(
        d for d in daily if d["harvest_date"] == HARVEST[1].isoformat() and d["records"]["search"]["count"]
    )
    original = target["records"]["search"]["count"]
    day = date.fromisoformat(target["harvest_date"])
    altered = tamper(
        config,
        dsn,
        "daily",
        {"harvest_date": day, "recordset_id": target["recordset_id"]},
        ["records", "search", "count"],
        7,
    )
    off = next(t["recordset_id"] for t in before[1] if t["recordset_id"] != target["recordset_id"])
    off_total = tamper(config, dsn, "totals", {"recordset_id": off}, ["records", "seen", "total"], 1)
    forget_marker(config, dsn, HARVEST[3])

    outcome, found = collect_differences(config)
    report = outcome.report
    assert not report.agrees and outcome.after_repair is None
    assert report.differing_days == [HARVEST[1], HARVEST[3]]
    assert sorted(report.totals_differing) == sorted([off, target["recordset_id"]])
    documents = [
        (d.harvest_date, d.recordset_id, d.path, d.expected, d.actual)
        for d, _ in found
        if d.check == "documents"
    ]
    assert documents == [
        (HARVEST[1].isoformat(), target["recordset_id"], "records.search.count", original, altered)
    ]
    ledger = [(d.harvest_date, d.path) for d, _ in found if d.check == "ledger"]
    assert ledger == [(HARVEST[3].isoformat(), "marked complete")]
    off_diff = [
        (d.path, d.expected, d.actual) for d, _ in found if d.check == "totals" and d.recordset_id == off
    ]
    assert off_diff == [("records.seen.total", off_total - 1, off_total)]
    assert snapshot(config) != before  # verify alone writes nothing: still altered

    repaired, found = collect_differences(config, repair=True)
    assert repaired.repaired_days == [HARVEST[1], HARVEST[3]]
    # The target's totals need a rebuild where republishing subtracts the altered document (search
    # stores read it back), not where the store kept its own summary beside it (PostgreSQL).
    assert off in repaired.rebuilt_totals and set(repaired.rebuilt_totals) <= {off, target["recordset_id"]}
    assert repaired.after_repair is not None and repaired.after_repair.agrees
    assert not [d for d, after in found if after]
    assert snapshot(config) == before
    store = open_store(config)
    try:
        assert HARVEST[3] in store.completed_days()
    finally:
        store.close()


def test_days_whose_rows_are_gone_are_unverifiable_and_kept(make_config: MakeConfig, dsn: str) -> None:
    config, _ = published(make_config, dsn)
    before = snapshot(config)
    execute(dsn, "DELETE FROM stats WHERE date >= %(start)s AND date < %(end)s", window(HARVEST[2]))
    outcome, found = collect_differences(config, repair=True, first=HARVEST[1], last=HARVEST[2])
    assert [(d.harvest_date, d.outcome) for d in outcome.report.days] == [
        (HARVEST[1], "agrees"),
        (HARVEST[2], "unverifiable"),
    ]
    assert outcome.report.agrees and not found and not outcome.repaired_days
    assert snapshot(config) == before


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_verify_through_the_cli(make_config: MakeConfig, dsn: str) -> None:
    from helpers import run

    config, daily = published(make_config, dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    clean = run("verify", "--sample", "2", env=env)
    assert clean.returncode == 0, clean.stderr
    assert len([line for line in clean.stdout.splitlines() if "agrees" in line]) == 2
    tamper(
        config, dsn, "totals", {"recordset_id": daily[0]["recordset_id"]}, ["records", "view", "count"], -1
    )
    differs = run("verify", "--json", env=env)
    assert differs.returncode == 11 and "--repair" in differs.stderr
    lines = [json.loads(line) for line in differs.stdout.splitlines()]
    assert lines[0]["check"] == "totals" and lines[0]["path"] == "records.view.count"
    assert lines[-1]["summary"]["result"]["totals_differing"] == [daily[0]["recordset_id"]]
    fixed = run("verify", "--repair", env=env)
    assert fixed.returncode == 0 and "1 totals rebuilt" in fixed.stdout, fixed.stderr
    execute(dsn, "DELETE FROM stats WHERE date >= %(start)s AND date < %(end)s", window(HARVEST[0]))
    gone = run("verify", env=env)
    assert gone.returncode == 10 and str(HARVEST[0]) in gone.stderr


def test_import_of_changed_documents_is_recorded_as_import(make_config: MakeConfig, dsn: str) -> None:
    config, daily = published(make_config, dsn)
    day = [d for d in daily if d["harvest_date"] == HARVEST[0].isoformat()]
    # A search's hits are its total: two more searches that found nothing change only the count.
    day[0]["records"]["search"]["count"] += 2
    import_documents(config, iter(day))
    store = open_store(config)
    try:
        recorded = store.changes()
    finally:
        store.close()
    assert [(r["recordset_id"], r["reason"], r["blocks"]) for r in recorded] == [
        (
            day[0]["recordset_id"],
            "import",
            {
                "records.search": {
                    "old": {
                        "count": day[0]["records"]["search"]["count"] - 2,
                        "total": day[0]["records"]["search"]["total"],
                    },
                    "new": {
                        "count": day[0]["records"]["search"]["count"],
                        "total": day[0]["records"]["search"]["total"],
                    },
                }
            },
        )
    ]


@pytest.mark.parametrize("store_kind", ["postgres", "opensearch"], indirect=True)
def test_a_repair_that_fails_is_recorded_failed(make_config: MakeConfig, dsn: str) -> None:
    """verify --repair is a write run like any other: a day it cannot republish (here one row
    breaks the rules under max_skipped_share = 0) ends its ledger entry as failed, not running,
    and frees the lock."""
    config, _ = published(make_config, dsn)
    strict = make_config(**{"collect.max_skipped_share": 0.0})
    at = window(HARVEST[1])["start"]
    insert_rows(dsn, [(at, "view", "records", None, None, {"r-late": "rs-late"})])  # a difference
    insert_rows(dsn, [(at, "search", "records", None, None, {"rs": -1})])  # and a row the rules skip
    with pytest.raises(DataQualityError, match=str(HARVEST[1])):
        verify.verify(strict, repair=True, lock_timeout=0)
    with open_store(config) as store:
        run = store.last_run("verify --repair")
    assert run is not None and run["outcome"] == "failed" and str(HARVEST[1]) in run["error"]
    assert run["host"] and run["pid"] == os.getpid() and run["finished_at"] is not None
    lenient = make_config(**{"collect.max_skipped_share": 0.5})
    outcome = verify.verify(lenient, repair=True, lock_timeout=0)  # the lock is free again
    assert outcome.repaired_days == [HARVEST[1]] and outcome.final.agrees
