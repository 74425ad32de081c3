"""Any sequence of collect, catch-up, forget-day, import, late and vanished rows on memory
adapters keeps the store's promise: totals are the sum of the daily documents, every mark agrees
with what the store holds, a refused day changes nothing, and verify --repair brings every day
whose rows exist back to what the rules say. Damage done behind the store's back (a document, a
mark or a recordset's totals lost, totals edited) is mixed in: the runs after it must not fail
for it, and one verify --repair must undo it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from typing import Any

from helpers import DAYS, HARVEST, assert_consistent, random_rows
from hypothesis import given, settings
from hypothesis import strategies as st
from memory_world import World
from rules_source import RulesTelemetrySource

from idb_stats import importing, verify
from idb_stats.errors import IdbStatsError
from idb_stats.forget import forget_day

DAY = st.integers(0, len(HARVEST) - 1)
OPERATION = st.one_of(
    st.tuples(st.just("collect"), DAY),
    st.tuples(st.just("catch_up")),
    st.tuples(st.just("forget"), DAY),
    st.tuples(st.just("late"), DAY, st.integers(0, 1000)),
    st.tuples(st.just("gone"), DAY),
    st.tuples(st.just("import"), DAY),
    st.tuples(st.sampled_from(["lose_document", "lose_mark"]), DAY),
    st.tuples(st.sampled_from(["lose_totals", "edit_totals"]), st.integers(0, 11)),
)
DAMAGE = ("lose_document", "lose_mark", "lose_totals", "edit_totals")


def small_week() -> RulesTelemetrySource:
    rows = []
    for i, day in enumerate(DAYS):
        rows += random_rows(40 + i, day, n=20, bad=False)
    return RulesTelemetrySource(rows)


def apply(world: World, operation: tuple[Any, ...]) -> None:
    kind, *args = operation
    if kind == "collect":
        world.collect(day=HARVEST[args[0]])
    elif kind == "catch_up":
        world.collect()
    elif kind == "forget":
        forget_day(world.config, HARVEST[args[0]], store=world.store)
    elif kind == "late":
        day, seed = DAYS[args[0]], args[1]
        world.source.add(random_rows(seed, day, n=3, bad=False))
    elif kind == "gone":
        world.source.delete(lambda s: s.at.date() == DAYS[args[0]])
    elif kind in DAMAGE:
        damage(world, kind, args[0])
    else:
        day = HARVEST[args[0]]
        documents = list(world.store.export(day, day))
        if documents:
            importing.import_documents(world.config, documents, store=world.store)


def damage(world: World, kind: str, which: int) -> None:
    """Change the store's data as a partial restore or a hand edit would, not through its methods."""
    data = world.store._data
    if kind in ("lose_document", "lose_mark"):
        day = HARVEST[which]
        if kind == "lose_mark":
            data.marks.pop(day, None)
        elif data.daily.get(day):
            del data.daily[day][min(data.daily[day])]
    elif data.totals:
        recordset = sorted(data.totals)[which % len(data.totals)]
        if kind == "lose_totals":
            del data.totals[recordset]
        else:
            doc = json.loads(data.totals[recordset])
            doc["records"]["search"]["total"] += 1
            data.totals[recordset] = json.dumps(doc)


def assert_whole(world: World, unverifiable: Iterable[date] = ()) -> None:
    daily, totals = world.published()
    assert_consistent(daily, totals)
    held = world.store.held_days().documents
    for day, marker in world.store.completed_days().items():
        assert day in unverifiable or held.get(day, 0) == marker["recordsets"]
    assert set(held) - set(unverifiable) <= set(world.store.completed_days())


@settings(max_examples=40, deadline=None)
@given(st.lists(OPERATION, max_size=7))
def test_any_sequence_keeps_totals_marks_and_the_rules(operations: list[tuple[Any, ...]]) -> None:
    world = World(source=small_week())
    world.store.init()
    damaged = False
    for operation in operations:
        before = world.published()
        try:
            apply(world, operation)
        except IdbStatsError as exc:
            # Refused for its data: exit 6 or 10, said in one line, and a single day changed nothing.
            assert exc.exit_code in (6, 10) and "\n" not in str(exc)
            assert world.runs()[0]["outcome"] == "failed"
            if operation[0] == "collect" and not damaged:
                assert world.published() == before
        damaged = damaged or operation[0] in DAMAGE
        if not damaged:
            assert_whole(world)
    after_repair: list[verify.Difference] = []
    outcome = verify.verify(
        world.config,
        repair=True,
        source=world.source,
        store=world.store,
        on_difference=lambda d, after: after_repair.extend([d] if after else []),
    )
    unverifiable = outcome.final.unverifiable_days
    # What is left is the damage of days whose rows are gone: nothing to recompute them from.
    assert {d.harvest_date for d in after_repair} <= {d.isoformat() for d in unverifiable}
    assert_whole(world, unverifiable)
    daily, _ = world.published()
    for day in world.store.completed_days():
        if day not in unverifiable:
            mine = [d for d in daily if d["harvest_date"] == day.isoformat()]
            assert mine == world.rules(day).documents


def test_the_property_world_has_documents_to_lose() -> None:
    world = World(source=small_week())
    world.collect(first=HARVEST[0], last=HARVEST[-1])
    assert len(world.published()[0]) > 10
