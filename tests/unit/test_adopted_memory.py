"""The bookkeeping of adopted days (the original collector's history, written as adopt writes it)
on memory adapters: the catch-up and status count gaps from the last adopted day, status asks
the telemetry for holes in the adopted range, and verify --repair leaves adopted days alone
unless they are named. Also the ledger of an interrupted run."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from helpers import HARVEST
from memory_world import World

from idb_stats import status, verify
from idb_stats.adopt import ADOPT_RUN_PREFIX, PlannedDay, _write_day, adopted_days
from idb_stats.interrupt import Interrupted
from idb_stats.ledger import write_run
from idb_stats.legacy import DayOutcome
from idb_stats.model import DayStats


def adopted_world(changed: bool = False) -> World:
    """HARVEST[0] and HARVEST[2] adopted (HARVEST[1], whose telemetry exists, the original missed);
    changed: the original counted one search more in the first recordset of HARVEST[2]."""
    world = World()
    with write_run(world.config, world.store, "adopt", run_id_prefix=ADOPT_RUN_PREFIX) as run:
        for day in (HARVEST[0], HARVEST[2]):
            documents = world.rules(day).documents
            if changed and day == HARVEST[2]:
                documents[0]["records"]["search"]["count"] += 1
            sizes = [{"recordset_id": documents[0]["recordset_id"], "records_count": 9}]
            _write_day(world.store, PlannedDay(DayOutcome(day), documents, sizes), run.run_id)
    return world


def test_adopted_days_are_marked_and_their_gaps_are_not_ours_to_fill() -> None:
    world = adopted_world()
    assert adopted_days(world.store.completed_days()) == [HARVEST[0], HARVEST[2]]
    assert world.store.snapshots() == {HARVEST[0]: 1, HARVEST[2]: 1}
    run = world.store.last_run("adopt")
    assert run is not None and run["outcome"] == "ok" and run["run_id"].startswith(ADOPT_RUN_PREFIX)
    now = status.status(world.config, world.clock, store=world.store, source=world.source)
    assert now.adopted_gaps == [HARVEST[1]]
    assert HARVEST[1] not in now.missing_days
    assert now.not_rechecked == {"adopted": [HARVEST[0], HARVEST[2]]}
    # The catch-up starts after the last adopted day.
    assert world.collect().plan.days == [HARVEST[3], HARVEST[3] + timedelta(days=1)]
    world.assert_equal_to_rules([HARVEST[0], HARVEST[2], HARVEST[3], HARVEST[3] + timedelta(days=1)])


def test_a_hole_without_telemetry_is_no_adopted_gap() -> None:
    world = adopted_world()
    world.source.delete(lambda s: s.at.date() + timedelta(days=1) == HARVEST[1])
    now = status.status(world.config, world.clock, store=world.store, source=world.source)
    assert now.adopted_gaps == []


def test_repair_leaves_a_differing_adopted_day_unless_it_is_named() -> None:
    world = adopted_world(changed=True)
    outcome = verify.verify(world.config, repair=True, source=world.source, store=world.store)
    assert outcome.report.differing_days == [HARVEST[2]]
    assert [d.adopted for d in outcome.report.days] == [True, True]
    assert outcome.adopted_left == [HARVEST[2]] and outcome.repaired_days == []
    named = verify.verify(
        world.config,
        repair=True,
        include_adopted=frozenset({HARVEST[2]}),
        source=world.source,
        store=world.store,
    )
    assert named.repaired_days == [HARVEST[2]] and named.final.agrees
    world.assert_equal_to_rules([HARVEST[0], HARVEST[2]])


def test_an_interrupted_run_is_recorded_interrupted() -> None:
    world = World()

    def on_day(stats: DayStats, done: int, total: int) -> None:
        raise Interrupted(signal.SIGTERM)

    with pytest.raises(Interrupted):
        world.collect(first=HARVEST[0], last=HARVEST[-1], on_day=on_day)
    (run,) = world.runs()
    assert (run["outcome"], run["error"]) == ("interrupted", "interrupted by SIGTERM")
    assert list(world.store.completed_days()) == [HARVEST[0]]  # the day finished before the signal
