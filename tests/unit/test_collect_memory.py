"""collect-stats through in-memory adapters: planning with the re-check, refusals, the ledger on
every path, damaged days; every number compared with rules.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from helpers import DAYS, HARVEST, assert_consistent
from memory_world import World, memory_config, week_collected

from idb_stats.errors import DataQualityError, EmptySource, ExitCode, LockHeld, SourceRowsGone, UsageError
from idb_stats.ledger import new_run
from idb_stats.model import DayStats


def test_a_range_publishes_what_the_rules_say_and_records_the_run() -> None:
    world = World()
    result = world.collect(first=HARVEST[0], last=HARVEST[-1])
    assert [s.harvest_date for s in result.days] == HARVEST
    world.assert_equal_to_rules(HARVEST)
    assert set(world.store.completed_days()) == set(HARVEST)
    (run,) = world.runs()
    assert (run["command"], run["outcome"], run["run_id"]) == ("collect-stats", "ok", result.run_id)
    assert [d["harvest_date"] for d in run["days"]] == [d.isoformat() for d in HARVEST]
    assert run["plan"] == f"range {HARVEST[0]} to {HARVEST[-1]}"
    for day, marker in world.store.completed_days().items():
        report = world.rules(day).report
        assert (marker["rows"], marker["skipped"]) == (report.rows, report.skipped)
        assert marker["fingerprint"] == world.source.fingerprints([day])[day]
        assert marker["reason"] == "collect"
    # Publisher documents are the rules' too.
    publishers = list(world.store.publishers(HARVEST[0], HARVEST[-1]))
    assert publishers == [p for day in HARVEST for p in world.rules(day).publishers]


def test_the_first_catch_up_takes_the_last_closed_day_then_every_missing_one() -> None:
    world = World()
    first = world.collect()
    closed = HARVEST[-1] + timedelta(days=1)
    assert first.plan.days == [closed]
    assert first.plan.reason.startswith("first run")
    world.store.forget_day(closed)
    world.collect(day=HARVEST[1])
    second = world.collect()
    assert second.plan.days == [*HARVEST[2:], closed]
    world.assert_equal_to_rules([*HARVEST[1:], closed])
    assert world.collect().plan.days == []  # up to date


def test_reruns_in_any_order_leave_what_one_clean_run_leaves() -> None:
    world = week_collected()
    clean = world.published()
    for day in (HARVEST[2], HARVEST[0], HARVEST[2]):
        world.collect(day=day)
    assert world.published() == clean
    # The same numbers again change nothing in the change ledger; the markers say rerun.
    assert world.store.changes() == []
    assert world.store.completed_days()[HARVEST[2]]["reason"] == "rerun"


def test_late_rows_are_found_by_the_re_check_and_republished() -> None:
    world = week_collected()
    recordset = "late-recordset"
    at = datetime.combine(DAYS[1], datetime.min.time()) + timedelta(hours=12)
    world.source.add([(at, "download", "records", "q-late", {"country": "NZ"}, {recordset: 5})])
    result = world.collect()
    late = HARVEST[1]
    assert late in result.plan.days and "changed source rows" in result.plan.reason
    assert [s.harvest_date for s in result.stale] == [late] and result.stale[0].row_delta == 1
    world.assert_equal_to_rules(list(world.store.completed_days()))
    (change,) = [c for c in world.store.changes() if c["recordset_id"] == recordset]
    assert change["reason"] == "late_rows" and change["harvest_date"] == late.isoformat()
    assert change["blocks"]["records.download"] == {
        "old": {"count": 0, "total": 0},
        "new": {"count": 1, "total": 5},
    }
    run = world.runs()[0]
    assert run["recheck"]["republished"] == [late.isoformat()]
    assert world.store.completed_days()[late]["reason"] == "late_rows"


def test_an_updated_row_makes_its_day_stale() -> None:
    world = week_collected()
    row_id = min(s.row.id for s in world.source._rows.values() if s.at.date() == DAYS[2] and s.at.hour)
    world.source.update(row_id, world.source._rows[row_id].row.payload)  # same value, new version
    result = world.collect()
    assert [s.harvest_date for s in result.stale] == [HARVEST[2]]
    assert result.stale[0].row_delta == 0


def test_a_published_day_whose_rows_are_gone_is_refused_and_kept() -> None:
    world = week_collected()
    before = world.published()
    world.source.delete(lambda s: s.at.date() == DAYS[0])
    with pytest.raises(SourceRowsGone) as refused:
        world.collect(day=HARVEST[0])
    assert refused.value.exit_code == ExitCode.SOURCE_ROWS_GONE
    assert str(refused.value).startswith(f"{HARVEST[0]}: the telemetry has no rows")
    assert world.published() == before
    run = world.runs()[0]
    assert run["outcome"] == "failed" and run["refused"] == [str(refused.value)]
    # The catch-up's re-check sees the rows gone, leaves the day as published and says so.
    stale = world.collect().stale
    assert [(s.harvest_date, s.rows_gone) for s in stale] == [(HARVEST[0], True)]
    assert world.runs()[0]["recheck"]["republished"] == []
    first_day = HARVEST[0].isoformat()
    kept = [d for d in world.published()[0] if d["harvest_date"] == first_day]
    assert kept == [d for d in before[0] if d["harvest_date"] == first_day] and kept
    # --allow-empty empties it, on purpose.
    world.collect(day=HARVEST[0], allow_empty=True)
    assert not [d for d in world.published()[0] if d["harvest_date"] == HARVEST[0].isoformat()]
    world.assert_equal_to_rules(list(world.store.completed_days()))


def test_a_day_breaking_the_rules_too_often_is_refused_and_the_range_goes_on() -> None:
    world = World()
    bad_day = DAYS[1]
    noon = datetime.combine(bad_day, datetime.min.time()) + timedelta(hours=12)
    world.source.add([(noon, "facet", "records", None, None, {"rs": 1})] * 50)
    with pytest.raises(DataQualityError) as refused:
        world.collect(first=HARVEST[0], last=HARVEST[-1])
    assert refused.value.exit_code == ExitCode.DATA_QUALITY
    assert "unknown_type: 50" in str(refused.value)
    assert set(world.store.completed_days()) == set(HARVEST) - {HARVEST[1]}
    world.assert_equal_to_rules([d for d in HARVEST if d != HARVEST[1]])
    run = world.runs()[0]
    assert run["outcome"] == "failed" and len(run["refused"]) == 1
    assert [d["harvest_date"] for d in run["days"]] == [d.isoformat() for d in HARVEST if d != HARVEST[1]]


def test_two_refused_days_fail_the_run_with_the_worst_exit() -> None:
    world = World()
    world.source.delete(lambda s: s.at.date() == DAYS[2])
    for day in (DAYS[0], DAYS[1]):
        noon = datetime.combine(day, datetime.min.time()) + timedelta(hours=12)
        world.source.add([(noon, "search", "records", None, "US", {"rs": 1})] * 40)
    with pytest.raises(DataQualityError, match=r"^2 days were refused") as refused:
        world.collect(first=HARVEST[0], last=HARVEST[-1])
    assert "2 other days were published" in str(refused.value)
    assert set(world.store.completed_days()) == {HARVEST[2], HARVEST[3]}


def test_an_empty_day_is_refused_unless_the_telemetry_has_rows_around_it() -> None:
    world = World()
    world.source.delete(lambda s: s.at.date() == DAYS[1])
    world.collect(day=HARVEST[1])  # rows before and after it: an outage, published empty
    # No rows after the day: the writer may have stopped.
    world.source.delete(lambda s: s.at.date() >= DAYS[1])
    with pytest.raises(EmptySource, match="none after it"):
        world.collect(day=HARVEST[2])
    world.source.delete(lambda s: True)
    with pytest.raises(EmptySource, match="no rows at all"):
        world.collect(day=HARVEST[0])
    assert list(world.store.completed_days()) == [HARVEST[1]]
    assert [r["outcome"] for r in world.runs()] == ["failed", "failed", "ok"]


def test_an_outage_day_is_published_empty() -> None:
    world = World()
    world.source.delete(lambda s: s.at.date() == DAYS[1] and s.at.time() != datetime.min.time())
    world.source.delete(lambda s: s.at.date() == DAYS[1])
    world.collect(first=HARVEST[0], last=HARVEST[-1])
    marker = world.store.completed_days()[HARVEST[1]]
    assert marker["rows"] == 0 and marker["recordsets"] == 0
    world.assert_equal_to_rules(HARVEST)


def test_a_dry_run_writes_nothing_and_records_no_run() -> None:
    world = World()
    result = world.collect(first=HARVEST[0], last=HARVEST[-1], dry_run=True)
    assert [s.harvest_date for s in result.days] == HARVEST
    assert [s.recordsets for s in result.days] == [len(world.rules(d).documents) for d in HARVEST]
    assert world.store.completed_days() == {} and world.runs() == []


def test_a_day_whose_window_is_open_is_refused_before_anything_is_written() -> None:
    world = World()
    open_day = HARVEST[-1] + timedelta(days=2)
    with pytest.raises(UsageError, match="is not over yet"):
        world.collect(day=open_day)
    with pytest.raises(UsageError):
        world.collect(first=open_day, last=open_day + timedelta(days=3))
    assert world.runs() == []
    # A range that merely runs past the last closed day is cut there.
    result = world.collect(first=HARVEST[-1], last=open_day)
    assert result.plan.days == [HARVEST[-1], HARVEST[-1] + timedelta(days=1)]
    assert result.plan.not_closed == [open_day]


def test_all_days_with_telemetry_skip_the_complete_ones() -> None:
    world = World()
    world.collect(day=HARVEST[1])
    result = world.collect(all_days=True)
    assert HARVEST[1] not in result.plan.days
    assert result.plan.days == [d for d in world.source.harvest_dates() if d != HARVEST[1]]
    again = world.collect(all_days=True, reprocess="all")
    assert again.plan.days == world.source.harvest_dates()


def test_a_damaged_day_is_repaired_first_by_the_catch_up() -> None:
    world = week_collected()
    clean = world.published()
    # A mark without its documents (a lost shard, a partial restore).
    world.store._data.daily.pop(HARVEST[1])
    result = world.collect()
    assert result.plan.days[0] == HARVEST[1] and "damaged" in result.plan.reason
    assert world.store.completed_days()[HARVEST[1]]["reason"] == "repair"
    daily, totals = world.published()
    assert [d for d in daily if d["harvest_date"] <= HARVEST[-1].isoformat()] == clean[0]
    assert_consistent(daily, totals)


def test_documents_without_their_mark_are_redone_and_totals_stay_exact() -> None:
    world = week_collected()
    world.store._data.marks.pop(HARVEST[2])
    result = world.collect()
    assert HARVEST[2] in result.plan.days
    world.assert_equal_to_rules(list(world.store.completed_days()))


def test_a_run_waits_for_the_lock_then_refuses_without_a_ledger_entry() -> None:
    world = World()
    holder = new_run("api-stats")
    with world.store.run_lock().hold(holder, 0):
        assert world.store.run_lock().holder() is not None
        with pytest.raises(LockHeld, match=f"api-stats run {holder.run_id}") as held:
            world.collect(day=HARVEST[0])
    assert held.value.exit_code == ExitCode.LOCK_HELD
    assert world.runs() == [] and world.store.run_lock().holder() is None


def test_a_failure_after_a_day_records_the_run_failed_and_keeps_the_day() -> None:
    world = World()

    def on_day(stats: DayStats, done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("the terminal went away")

    with pytest.raises(RuntimeError):
        world.collect(first=HARVEST[0], last=HARVEST[-1], on_day=on_day)
    run = world.runs()[0]
    assert run["outcome"] == "failed" and run["error"] == "RuntimeError: the terminal went away"
    assert run["finished_at"] and run["seconds"] is not None
    assert set(world.store.completed_days()) == {HARVEST[0], HARVEST[1]}
    world.assert_equal_to_rules(HARVEST[:2])


def test_a_breakdown_limit_keeps_the_sums() -> None:
    world = World(config=memory_config(**{"collect.breakdown_limit": 1}))
    world.collect(first=HARVEST[0], last=HARVEST[-1])
    daily, totals = world.published()
    assert daily == [doc for day in HARVEST for doc in world.rules(day, limit=1).documents]
    assert daily != [doc for day in HARVEST for doc in world.rules(day).documents]
    assert_consistent(daily, totals)


def test_a_day_repeated_in_one_range_is_published_once() -> None:
    world = World()
    seen: list[Any] = []
    world.collect(first=HARVEST[0], last=HARVEST[0], on_day=lambda s, done, total: seen.append(s))
    assert len(seen) == 1 and world.source.reads == [HARVEST[0]]


def test_given_adapters_run_the_days_in_this_process_whatever_jobs_says() -> None:
    # Workers could only open the configuration's adapters: here a database that does not exist.
    world = World(config=memory_config(**{"collect.jobs": 2}))
    result = world.collect(first=HARVEST[0], last=HARVEST[-1])
    assert [s.harvest_date for s in result.days] == HARVEST
    assert world.source.reads == HARVEST
    world.assert_equal_to_rules(HARVEST)
