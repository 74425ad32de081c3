"""The use cases' world in memory: a rules-backed telemetry source (tests/rules_source.py), a
MemoryStore, a configuration and a fixed clock. No PostgreSQL, no search server."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from helpers import DAYS, HARVEST, assert_consistent, random_rows
from rules_source import Row, RulesTelemetrySource

from idb_stats import collect as collect_use_case
from idb_stats.clock import FixedClock
from idb_stats.collect import RunResult, Selection
from idb_stats.config import Config, load_config
from idb_stats.rules import RulesDay, aggregate_day
from idb_stats.stores.memory import MemoryStore

# The morning after the test week: HARVEST[-1] + 1 is the last closed (and settled) day.
MORNING = datetime.combine(HARVEST[-1] + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=9)


def memory_config(**overrides: Any) -> Config:
    """A configuration as load_config makes it (never reaching its source.dsn), on a memory store."""
    config = load_config(overrides={"source.dsn": "dbname=unused", **overrides}, environ={})
    return replace(config, store="memory", store_url="memory://unit")


def week_rows(bad: bool = False) -> list[Row]:
    rows: list[Row] = []
    for i, day in enumerate(DAYS):
        rows += random_rows(10 + i, day, n=60, bad=bad)
    return rows


@dataclass
class World:
    source: RulesTelemetrySource = field(default_factory=lambda: RulesTelemetrySource(week_rows()))
    store: MemoryStore = field(default_factory=MemoryStore)
    config: Config = field(default_factory=memory_config)
    clock: FixedClock = field(default_factory=lambda: FixedClock(MORNING))

    def collect(self, **selection: Any) -> RunResult:
        options = {k: selection.pop(k) for k in ("dry_run", "allow_empty", "on_day") if k in selection}
        return collect_use_case.collect(
            self.config,
            Selection(**selection),
            clock=self.clock,
            source=self.source,
            store=self.store,
            **options,
        )

    def published(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every daily document and totals document the store holds."""
        return list(self.store.export(date(1970, 1, 1), date(2999, 12, 31))), list(self.store.totals())

    def rules(self, day: date, limit: int = 0) -> RulesDay:
        """What the rules make of the day's rows, read straight from the source."""
        start = datetime.combine(day - timedelta(days=1), datetime.min.time())
        rows = [s.row for s in self.source._rows.values() if start <= s.at < start + timedelta(days=1)]
        return aggregate_day(sorted(rows, key=lambda r: r.id), day, limit)

    def assert_equal_to_rules(self, days: list[date]) -> None:
        daily, totals = self.published()
        assert daily == [doc for day in sorted(days) for doc in self.rules(day).documents]
        assert_consistent(daily, totals)

    def runs(self) -> list[dict[str, Any]]:
        return self.store.runs(100)


def week_collected() -> World:
    world = World()
    world.collect(first=HARVEST[0], last=HARVEST[-1])
    return world
