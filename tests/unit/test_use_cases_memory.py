"""verify, import, forget-day, api-stats and status through in-memory adapters: their documents,
totals, ledger entries and refusals, with numbers compared with rules.py."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from helpers import DAYS, HARVEST, assert_consistent
from memory_world import MORNING, World, memory_config, week_collected

from idb_stats import apistats, importing, status, verify
from idb_stats.config import Config
from idb_stats.errors import ConfigError, DuplicateDocuments, ExitCode, LockHeld, UsageError
from idb_stats.forget import forget_day
from idb_stats.ledger import new_run
from idb_stats.runs import RUNNING
from idb_stats.stores.memory import MemoryStore


def differences(world: World, **options: Any) -> tuple[verify.Outcome, list[verify.Difference]]:
    found: list[verify.Difference] = []
    outcome = verify.verify(
        world.config,
        on_difference=lambda d, after: found.append(d),
        source=world.source,
        store=world.store,
        **options,
    )
    return outcome, found


def tamper(world: World, day: date, change: Any) -> str:
    """Change the first stored document of a day behind the store's back; returns its recordset."""
    stored = world.store._data.daily[day]
    recordset = min(stored)
    doc = json.loads(stored[recordset].text)
    change(doc)
    stored[recordset].text = json.dumps(doc)
    return recordset


# --- verify -----------------------------------------------------------------------------------


def test_verify_finds_a_published_week_in_agreement() -> None:
    world = week_collected()
    outcome, found = differences(world)
    assert found == [] and outcome.report.agrees
    assert [d.harvest_date for d in outcome.report.days] == HARVEST
    assert all(d.outcome == "agrees" for d in outcome.report.days)
    assert outcome.report.totals_checked == len(world.store._data.totals)
    assert [r["command"] for r in world.runs()] == ["collect-stats"]  # verify alone writes nothing


def test_verify_finds_a_changed_document_and_repair_republishes_it() -> None:
    world = week_collected()
    clean = world.published()
    recordset = tamper(world, HARVEST[1], lambda doc: doc["records"]["search"].update(count=10**6))
    outcome, found = differences(world, repair=True)
    assert outcome.report.differing_days == [HARVEST[1]]
    assert {(d.check, d.recordset_id, d.path) for d in found if d.check == "documents"} == {
        ("documents", recordset, "records.search.count")
    }
    assert outcome.repaired_days == [HARVEST[1]]
    assert outcome.after_repair is not None and outcome.after_repair.agrees
    assert world.published() == clean
    run = world.store.last_run("verify --repair")
    assert run is not None and run["outcome"] == "ok"
    assert [d["harvest_date"] for d in run["days"]] == [HARVEST[1].isoformat()]
    assert world.store.completed_days()[HARVEST[1]]["reason"] == "repair"


def test_verify_rebuilds_totals_that_are_not_the_sum_of_their_days() -> None:
    world = week_collected()
    clean = world.published()
    recordset = min(world.store._data.totals)
    totals = json.loads(world.store._data.totals[recordset])
    totals["records"]["seen"]["total"] += 7
    world.store.rewrite_totals([totals], gone=[])
    orphan = {**totals, "recordset_id": "no-such-recordset"}
    world.store.rewrite_totals([orphan], gone=[])
    outcome, found = differences(world, repair=True)
    assert sorted(outcome.report.totals_differing) == sorted([recordset, "no-such-recordset"])
    assert {d.check for d in found} == {"totals"}
    assert sorted(outcome.rebuilt_totals) == sorted([recordset, "no-such-recordset"])
    assert world.published() == clean
    run = world.store.last_run("verify --repair")
    assert run is not None and sorted(run["rebuilt_totals"]) == sorted(outcome.rebuilt_totals)


def test_verify_reports_a_day_whose_rows_are_gone_as_unverifiable_and_leaves_it() -> None:
    world = week_collected()
    clean = world.published()
    world.source.delete(lambda s: s.at.date() == DAYS[2])
    tamper(world, HARVEST[1], lambda doc: doc["records"]["search"].update(total=1))
    outcome, _ = differences(world, repair=True)
    assert outcome.report.unverifiable_days == [HARVEST[2]]
    assert outcome.repaired_days == [HARVEST[1]]
    assert world.published() == clean


def test_verify_checks_the_ledger_against_the_documents() -> None:
    world = week_collected()
    world.store._data.marks.pop(HARVEST[0])
    marker = json.loads(world.store._data.marks[HARVEST[3]])
    world.store._data.marks[HARVEST[3]] = json.dumps({**marker, "recordsets": marker["recordsets"] + 1})
    _, found = differences(world, sample=None, first=HARVEST[0], last=HARVEST[-1])
    ledger = {(d.harvest_date, d.path, d.expected, d.actual) for d in found if d.check == "ledger"}
    held = world.store.held_days().documents
    assert ledger == {
        (HARVEST[0].isoformat(), "marked complete", True, False),
        (HARVEST[3].isoformat(), "recordsets", held[HARVEST[3]] + 1, held[HARVEST[3]]),
    }


def test_verify_a_sample_of_days() -> None:
    world = week_collected()
    outcome, _ = differences(world, sample=2)
    assert len(outcome.report.days) == 2 and {d.harvest_date for d in outcome.report.days} <= set(HARVEST)


def test_a_failed_repair_is_recorded_failed() -> None:
    world = week_collected()
    tamper(world, HARVEST[1], lambda doc: doc["records"]["search"].update(count=3))
    noon = datetime.combine(DAYS[1], datetime.min.time()) + timedelta(hours=12)
    world.source.add([(noon, "facet", "records", None, None, {"rs": 1})] * 40)  # now breaks the rules
    with pytest.raises(Exception, match="break the rules") as failed:
        differences(world, repair=True)
    assert failed.value.exit_code == ExitCode.DATA_QUALITY  # type: ignore[attr-defined]
    run = world.store.last_run("verify --repair")
    assert run is not None and run["outcome"] == "failed" and "break the rules" in run["error"]


def test_verify_diff_tells_1_from_1_0_and_ignores_the_order_of_equal_counts() -> None:
    assert list(verify.diff({"a": 1}, {"a": 1.0})) == [("a", 1, 1.0)]
    items = [{"term": "x", "count": 2}, {"term": "y", "count": 2}]
    assert list(verify.diff({"items": items}, {"items": items[::-1]})) == []
    assert (
        list(verify.diff({"geocodes": [{"geo": None, "count": 1}]}, {"geocodes": [{"geo": {}, "count": 1}]}))
        == []
    )


# --- import -----------------------------------------------------------------------------------


def test_import_of_an_export_rebuilds_the_same_store_and_records_the_run() -> None:
    world = week_collected()
    daily, totals = world.published()
    target = MemoryStore()
    heard: list[date] = []
    outcomes = importing.import_documents(
        world.config, daily, store=target, on_day=lambda outcome, stats: heard.append(stats.harvest_date)
    )
    assert (
        [o.harvest_date for o in outcomes]
        == heard
        == sorted({date.fromisoformat(d["harvest_date"]) for d in daily})
    )
    assert list(target.export(date(1970, 1, 1), date(2999, 1, 1))) == daily
    assert list(target.totals()) == totals
    (run,) = target.runs()
    assert run["command"] == "import" and run["outcome"] == "ok"
    assert sum(d["written"] for d in run["days"]) == len(daily)
    assert {m["reason"] for m in target.completed_days().values()} == {"import"}


def test_import_refuses_duplicates_before_any_write() -> None:
    world = week_collected()
    daily, _ = world.published()
    target = MemoryStore()
    with pytest.raises(DuplicateDocuments, match="--duplicates keep-last") as refused:
        importing.import_documents(world.config, [daily[0], *daily], store=target)
    assert refused.value.exit_code == ExitCode.DATA_QUALITY
    assert target.runs() == [] and target.completed_days() == {}


def test_import_duplicates_keep_last_or_sum() -> None:
    world = week_collected()
    daily, _ = world.published()
    first = daily[0]
    doubled = json.loads(json.dumps(first))
    doubled["records"]["search"]["count"] += 1
    kept = MemoryStore()
    importing.import_documents(world.config, [first, doubled], duplicates="keep-last", store=kept)
    assert list(kept.export(HARVEST[0], HARVEST[0])) == [doubled]
    summed = MemoryStore()
    importing.import_documents(world.config, [first, first], duplicates="sum", store=summed)
    (doc,) = summed.export(HARVEST[0], HARVEST[0])
    assert doc["records"]["search"]["count"] == 2 * first["records"]["search"]["count"]
    assert_consistent(list(summed.export(HARVEST[0], HARVEST[0])), list(summed.totals()))


def test_import_refuses_a_bad_line_naming_it_before_any_write() -> None:
    world = week_collected()
    daily, _ = world.published()
    target = MemoryStore()
    lines = b"\n".join([json.dumps(daily[0]).encode(), b"{not json"]) + b"\n"
    with pytest.raises(UsageError, match="line 2") as refused:
        importing.import_file(world.config, io.BytesIO(lines), "file.ndjson", store=target)
    assert refused.value.exit_code == ExitCode.USAGE
    assert target.runs() == [] and target.completed_days() == {}


def test_import_replaces_a_published_day_and_keeps_totals_exact() -> None:
    world = week_collected()
    daily, _ = world.published()
    one_day = [d for d in daily if d["harvest_date"] == HARVEST[1].isoformat()][:2]
    importing.import_documents(world.config, one_day, store=world.store)
    after, totals = world.published()
    assert [d for d in after if d["harvest_date"] == HARVEST[1].isoformat()] == one_day
    assert_consistent(after, totals)
    assert world.store.completed_days()[HARVEST[1]]["reason"] == "import"


# --- forget-day -------------------------------------------------------------------------------


def test_forget_day_takes_the_day_out_and_records_the_run() -> None:
    world = week_collected()
    held = world.store.held_days().documents[HARVEST[1]]
    assert forget_day(world.config, HARVEST[1], store=world.store) == held
    daily, totals = world.published()
    assert HARVEST[1].isoformat() not in {d["harvest_date"] for d in daily}
    assert_consistent(daily, totals)
    assert HARVEST[1] not in world.store.completed_days()
    run = world.store.last_run("forget-day")
    assert run is not None and run["outcome"] == "ok"
    assert run["days"] == [{"harvest_date": HARVEST[1].isoformat(), "recordsets": held}]
    # Again: nothing held, nothing locked or written.
    assert forget_day(world.config, HARVEST[1], store=world.store) is None
    assert len([r for r in world.runs() if r["command"] == "forget-day"]) == 1
    # The catch-up redoes it.
    world.collect(first=HARVEST[1], last=HARVEST[1], reprocess="missing")
    world.assert_equal_to_rules(HARVEST)


def test_forget_day_of_a_day_only_totals_list_repairs_those_totals() -> None:
    world = week_collected()
    world.store._data.daily.pop(HARVEST[2])
    world.store._data.marks.pop(HARVEST[2])
    assert forget_day(world.config, HARVEST[2], store=world.store) == 0
    daily, totals = world.published()
    assert_consistent(daily, totals)


def test_forget_day_waits_for_the_lock() -> None:
    world = week_collected()
    with world.store.run_lock().hold(new_run("collect-stats"), 0), pytest.raises(LockHeld):
        forget_day(world.config, HARVEST[0], store=world.store)
    assert HARVEST[0] in world.store.completed_days()


# --- api-stats ----------------------------------------------------------------------------------


def sizes(config: Config, taken_at: datetime) -> list[dict[str, Any]]:
    return [
        {"recordset_id": rs, "harvest_date": taken_at.isoformat(timespec="seconds"), **counts}
        for rs, counts in (
            ("rs-a", {"records_count": 3, "mediarecords_count": 1}),
            ("rs-b", {"records_count": 0, "mediarecords_count": 0}),
        )
    ]


def test_api_stats_writes_the_snapshot_and_records_it() -> None:
    world = World()
    summary = apistats.api_stats(world.config, clock=world.clock, store=world.store, sizes=sizes)
    assert summary["recordsets"] == 2 and summary["snapshot_date"] == MORNING.date().isoformat()
    assert world.store.snapshots() == {MORNING.date(): 2}
    run = world.store.last_run("api-stats")
    assert run is not None and run["outcome"] == "ok" and run["snapshot"] == summary
    # A second run the same day replaces the snapshot.
    apistats.api_stats(world.config, clock=world.clock, store=world.store, sizes=lambda c, t: sizes(c, t)[:1])
    assert world.store.snapshots() == {MORNING.date(): 1}


def test_api_stats_without_an_ingest_database_is_refused_before_the_lock() -> None:
    world = World()
    needs = r"api\.dsn: api-stats needs the ingest database"
    # Refused before the lock, which is not even waited for.
    with (
        world.store.run_lock().hold(new_run("collect-stats"), 0),
        pytest.raises(ConfigError, match=needs) as refused,
    ):
        apistats.api_stats(world.config, clock=world.clock, store=world.store)
    assert refused.value.exit_code == ExitCode.CONFIG
    assert world.store.runs() == [] and world.store.snapshots() == {}


# --- status -----------------------------------------------------------------------------------


def test_status_of_a_store_that_is_up_to_date() -> None:
    world = week_collected()
    world.collect()
    apistats.api_stats(world.config, clock=world.clock, store=world.store, sizes=sizes)
    now = status.status(world.config, world.clock, store=world.store, source=world.source)
    closed = HARVEST[-1] + timedelta(days=1)
    assert (now.last_closed, now.last_complete, now.complete_through, now.lag_days) == (
        closed,
        closed,
        closed,
        0,
    )
    assert now.missing_days == [] and now.damaged_days == [] and now.complete_days == 5
    assert set(now.last_runs) == {"collect-stats", "api-stats"}
    assert now.failed_runs == []
    assert now.last_day_rows == world.rules(closed).report.rows
    assert now.last_snapshot == MORNING.date() and not now.snapshot_missing_today
    assert now.last_recheck is not None and now.last_recheck["stale"] == []
    assert now.as_dict()["lag_days"] == 0


def test_status_counts_holes_damage_and_lag() -> None:
    world = World()
    world.collect(first=HARVEST[0], last=HARVEST[0])
    world.collect(first=HARVEST[2], last=HARVEST[3])
    world.store._data.marks.pop(HARVEST[3])  # its documents stay: damaged
    now = status.status(world.config, world.clock, store=world.store)
    # Missing up to the last complete day, and the damaged days wherever they lie.
    assert now.missing_days == [HARVEST[1], HARVEST[3]]
    assert now.damaged_days == [HARVEST[3]]
    assert now.complete_through == HARVEST[0] and now.lag_days == 4
    assert [d.as_dict()["harvest_date"] for d in now.damage] == [HARVEST[3].isoformat()]


def test_status_shows_a_run_that_died_as_abandoned_and_its_failure() -> None:
    world = week_collected()
    died = new_run("forget-day")
    world.store.record_run(died)
    now = status.status(world.config, world.clock, store=world.store)
    assert now.last_runs["forget-day"].outcome == "abandoned"
    assert [r.command for r in now.failed_runs] == ["forget-day"]
    # While its lock is held, it is running.
    with world.store.run_lock().hold(died, 0):
        held = status.status(world.config, world.clock, store=world.store)
    assert held.last_runs["forget-day"].outcome == RUNNING


def test_status_of_an_empty_store() -> None:
    now = status.status(memory_config(), World().clock, store=MemoryStore())
    assert now.last_complete is None and now.lag_days is None and now.last_runs == {}
    assert now.last_run is None and now.last_snapshot is None


def test_status_lists_the_days_the_re_check_cannot_compare() -> None:
    world = week_collected()
    daily, _ = world.published()
    importing.import_documents(
        world.config, [d for d in daily if d["harvest_date"] == HARVEST[0].isoformat()], store=world.store
    )
    now = status.status(world.config, world.clock, store=world.store)
    assert now.not_rechecked == {"imported": [HARVEST[0]]}


def test_status_snapshot_missing_today() -> None:
    world = World()
    apistats.api_stats(world.config, clock=world.clock, store=world.store, sizes=sizes)
    later = World(store=world.store)
    later.clock = type(world.clock)(MORNING + timedelta(days=1))
    now = status.status(later.config, later.clock, store=world.store)
    assert now.snapshot_missing_today and now.snapshot_recordsets == 2
    assert datetime.now(UTC) > MORNING
