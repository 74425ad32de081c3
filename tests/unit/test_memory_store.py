"""The memory store's own promises, beside the contract it shares with the other stores
(tests/test_store_contract.py): repairs of totals damaged behind its back, a publish that fails
part-way, and its read queries against the documents summed the slow way."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from helpers import HARVEST, assert_consistent
from memory_world import week_collected

from idb_stats.errors import LockHeld, StoreError
from idb_stats.ledger import new_run
from idb_stats.model import BLOCKS, DayStats
from idb_stats.stores.memory import MemoryStore, _period


def test_deleted_totals_are_rebuilt_from_every_day_when_a_day_is_republished() -> None:
    world = week_collected()
    clean = world.published()
    recordset = min(world.store._data.totals)
    world.store.rewrite_totals([], gone=[recordset])
    day = min(d for d, docs in world.store._data.daily.items() if recordset in docs)
    world.collect(day=day)
    assert world.published() == clean


def test_deleted_totals_are_rebuilt_when_the_recordset_joins_another_day() -> None:
    world = week_collected()
    clean = world.published()
    day = HARVEST[1]
    documents = list(world.store.export(day, day))
    recordset = documents[0]["recordset_id"]
    world.store.publish_day(DayStats(day, "r1"), iter(documents[1:]))  # the recordset leaves the day
    world.store.rewrite_totals([], gone=[recordset])  # and its totals are lost
    world.store.publish_day(DayStats(day, "r2"), iter(documents))  # it comes back to the day
    assert world.published() == clean


def test_totals_listing_a_day_without_its_document_are_rebuilt() -> None:
    world = week_collected()
    clean = world.published()
    day_docs = world.store._data.daily[HARVEST[1]]
    recordset = min(day_docs)
    del day_docs[recordset]  # a document lost behind the store's back
    world.collect(day=HARVEST[1])
    assert world.published() == clean


def test_a_publish_failing_part_way_changes_nothing() -> None:
    world = week_collected()
    clean, runs = world.published(), world.runs()
    day = HARVEST[2]
    documents = list(world.store.export(day, day))

    def failing() -> Iterator[dict[str, Any]]:
        yield from documents[:3]
        raise OSError("connection reset")

    with pytest.raises(OSError):
        world.store.publish_day(DayStats(day, "r"), failing(), [])
    with pytest.raises(StoreError, match="two documents of"):
        world.store.publish_day(DayStats(day, "r"), iter([documents[0], documents[0]]))
    with pytest.raises(StoreError, match="a document of"):
        world.store.publish_day(DayStats(HARVEST[0], "r"), iter(documents))
    assert world.published() == clean and world.runs() == runs
    assert list(world.store.publishers(day, day))  # kept


def test_a_new_store_reads_as_empty_and_refuses_writes_until_init() -> None:
    store = MemoryStore()
    assert store.completed_days() == {} and store.runs() == [] and store.snapshots() == {}
    assert store.last_run("collect-stats") is None and store.changes() == []
    assert store.held_days().documents == {}
    with pytest.raises(StoreError, match="idb-stats init"):
        store.publish_day(DayStats(HARVEST[0]), iter([]))
    with pytest.raises(StoreError, match="idb-stats init"):
        list(store.export(HARVEST[0], HARVEST[0]))
    store.init()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.init()


def test_documents_read_are_copies() -> None:
    world = week_collected()
    (first, *_) = world.store.export(HARVEST[0], HARVEST[0])
    first["records"] = "changed"
    assert next(world.store.export(HARVEST[0], HARVEST[0]))["records"] != "changed"


def test_series_and_countries_equal_the_documents_summed() -> None:
    world = week_collected()
    daily, _ = world.published()
    for interval in ("day", "week", "month", "quarter", "year"):
        rows = world.store.series([], None, None, interval, by_recordset=False)
        periods = sorted({_period(date.fromisoformat(d["harvest_date"]), interval) for d in daily})
        assert [r["period"] for r in rows] == periods
        for rt, ty in BLOCKS:
            assert sum(r[f"{rt}.{ty}.total"] for r in rows) == sum(d[rt][ty]["total"] for d in daily)
    assert _period(date(2020, 2, 20), "week") == date(2020, 2, 17)  # a Monday
    with pytest.raises(StoreError, match="unknown interval"):
        world.store.series([], None, None, "fortnight")
    recordsets = sorted({d["recordset_id"] for d in daily})[:2]
    grouped = world.store.top_countries(recordsets, None, None, 100, by_recordset=True)
    for rs in recordsets:
        hits = sum(r["hits"] for r in grouped if r["recordset_id"] == rs)
        assert hits == sum(d[rt][ty]["total"] for d in daily if d["recordset_id"] == rs for rt, ty in BLOCKS)


def test_changes_select_by_date_and_recordset() -> None:
    world = week_collected()
    doc = json.loads(json.dumps(next(world.store.export(HARVEST[0], HARVEST[0]))))
    doc["records"]["search"]["count"] += 1
    rest = list(world.store.export(HARVEST[0], HARVEST[0]))[1:]
    world.store.publish_day(DayStats(HARVEST[0], "r2", reason="import"), iter([doc, *rest]))
    (change,) = world.store.changes(recordset_id=doc["recordset_id"])
    assert change["reason"] == "import" and change["run_id"] == "r2"
    assert world.store.changes(since=date.today() + timedelta(days=1)) == []
    assert world.store.changes(recordset_id="nobody") == []


def test_the_run_lock_waits_then_names_its_holder() -> None:
    store = MemoryStore()
    first, second = new_run("collect-stats"), new_run("import")
    released = threading.Event()

    def hold_briefly() -> None:
        with store.run_lock().hold(first, 0):
            released.wait(5)
            time.sleep(0.05)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    while store.run_lock().holder() is None:
        time.sleep(0.01)
    with (
        pytest.raises(LockHeld, match=f"collect-stats run {first.run_id}"),
        store.run_lock().hold(second, 0.05),
    ):
        pass
    released.set()
    with store.run_lock().hold(second, 5):  # waits for the holder to finish
        lock = store.run_lock().holder()
        assert lock is not None and lock.run_id == second.run_id
    holder.join()
    assert store.run_lock().holder() is None


def test_forget_day_is_safe_to_repeat() -> None:
    world = week_collected()
    removed = world.store.forget_day(HARVEST[0])
    assert removed > 0 and world.store.forget_day(HARVEST[0]) == 0
    assert_consistent(*world.published())
