"""The status use case: what an operator or a monitor reads from the store, without the lock.

`status` returns a typed `Status`; `Status.as_dict` is the `status --json` document, and the
renderers (the terminal text below, Nagios and Prometheus in monitoring.py) read the fields.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from . import fingerprint, planning
from .adopt import adopted_days
from .clock import SYSTEM_CLOCK, Clock
from .collect import day_states, last_closed, tracked_days
from .config import Config
from .errors import IdbStatsError, Lagging
from .ledger import RUN_COMMANDS
from .ports import StatusReading, TelemetrySource, given_or_opened
from .runs import ABANDONED, RUNNING, LockHolder
from .source import PostgresTelemetrySource
from .stores import open_store
from .terminal import dates_text, plural

log = logging.getLogger(__name__)

# Last-run outcomes that mean the command did not do its work. "abandoned": the ledger says
# running but no process holds the run lock any more (killed, machine lost).
FAILED_OUTCOMES = ("failed", "abandoned")


@dataclass(frozen=True)
class RunState:
    """A command's last run as the ledger recorded it."""

    command: str
    run_id: str
    outcome: str  # running, ok, failed, interrupted, abandoned
    started_at: str
    seconds: float | None
    error: str | None
    record: Mapping[str, Any]  # the whole ledger entry, which --json shows as it is

    @classmethod
    def from_record(cls, command: str, record: Mapping[str, Any]) -> RunState:
        seconds = record.get("seconds")
        return cls(
            command=command,
            run_id=str(record.get("run_id", "")),
            outcome=str(record.get("outcome", "unknown")),
            started_at=str(record.get("started_at", "")),
            seconds=float(seconds) if seconds is not None else None,
            error=record.get("error"),
            record=record,
        )


@dataclass(frozen=True)
class Status:
    store: str
    last_closed: date
    last_complete: date | None
    complete_through: date | None
    # Counted from the first hole, so a failed day makes the store lag until it is redone.
    lag_days: int | None
    complete_days: int
    missing_days: list[date]
    not_closed_days: list[date]
    last_day: Mapping[str, Any] | None  # the last complete day's stats (rows, seconds, ...)
    last_run: Mapping[str, Any] | None
    last_runs: dict[str, RunState]
    # The latest catch-up's re-check of published days: found stale, and republished.
    last_recheck: Mapping[str, Any] | None
    # Published days the re-check skips, by why: their late rows would go unnoticed.
    not_rechecked: dict[str, list[date]]
    recheck_days: int
    last_snapshot: date | None
    snapshot_missing_today: bool
    snapshot_recordsets: Any
    # Days the store holds only part of (documents without their mark, or the reverse).
    damaged_days: list[date] = field(default_factory=list)
    # The same days with why each is damaged (planning.assess_days).
    damage: list[planning.Damage] = field(default_factory=list)
    # Days collected from a window without telemetry rows (a real outage, or --allow-empty).
    empty_days: list[date] = field(default_factory=list)
    # Not lag (collection continues after them) but history the portal lacks: days inside the
    # adopted range the original failed to write, whose telemetry exists (None: not asked).
    adopted_gaps: list[date] | None = field(default_factory=list)

    @property
    def last_day_rows(self) -> int | None:
        return int(self.last_day["rows"]) if self.last_day and "rows" in self.last_day else None

    @property
    def last_day_seconds(self) -> float | None:
        seconds = self.last_day.get("seconds") if self.last_day else None
        return float(seconds) if seconds is not None else None

    @property
    def failed_runs(self) -> list[RunState]:
        return [run for run in self.last_runs.values() if run.outcome in FAILED_OUTCOMES]

    def as_dict(self) -> dict[str, Any]:
        """The `status --json` document."""

        def iso(day: date | None) -> str | None:
            return day.isoformat() if day else None

        return {
            "store": self.store,
            "today": self.last_closed.isoformat(),
            "last_closed_harvest_date": self.last_closed.isoformat(),
            "last_complete_harvest_date": iso(self.last_complete),
            "complete_through": iso(self.complete_through),
            "lag_days": self.lag_days,
            "complete_days": self.complete_days,
            "missing_days": [d.isoformat() for d in self.missing_days],
            "damaged_days": [d.isoformat() for d in self.damaged_days],
            "damaged": [d.as_dict() for d in self.damage],
            "adopted_gaps": None if self.adopted_gaps is None else [d.isoformat() for d in self.adopted_gaps],
            "not_closed_days": [d.isoformat() for d in self.not_closed_days],
            "last_day": self.last_day,
            "last_day_rows": self.last_day_rows,
            "empty_days": [d.isoformat() for d in self.empty_days],
            "last_run": self.last_run,
            "last_runs": {command: run.record for command, run in self.last_runs.items()},
            "last_recheck": self.last_recheck,
            "not_rechecked": {why: [d.isoformat() for d in days] for why, days in self.not_rechecked.items()},
            "recheck_days": self.recheck_days,
            "last_snapshot": iso(self.last_snapshot),
            "snapshot_missing_today": self.snapshot_missing_today,
            "snapshot_recordsets": self.snapshot_recordsets,
        }


def _read_from_source(marker: Mapping[str, Any]) -> bool:
    """A day marker of a day collected from telemetry (it has a source fingerprint, EMPTY for no
    rows); imported and adopted days were not, so their row count says nothing."""
    return marker.get("fingerprint") is not None


def adopted_gaps(
    config: Config, complete: dict[date, dict[str, Any]], source: TelemetrySource | None = None
) -> list[date] | None:
    """Days inside the adopted range that the store lacks while the telemetry has rows for them:
    days the original collector failed to write (None when the telemetry cannot be asked). The
    source is opened only when the adopted range has holes."""
    adopted = adopted_days(complete)
    holes = planning.missing_days(set(complete), adopted[0], adopted[-1]) if adopted else []
    if not holes:
        return []
    try:
        with given_or_opened(source, lambda: PostgresTelemetrySource(config)) as telemetry:
            found = telemetry.fingerprints(holes)
    except IdbStatsError as exc:
        log.warning("status: cannot ask the telemetry for gaps in the adopted history: %s", exc)
        return None
    return [d for d in holes if found.get(d) is not None]


def status(
    config: Config,
    clock: Clock = SYSTEM_CLOCK,
    store: StatusReading | None = None,
    source: TelemetrySource | None = None,
) -> Status:
    """What an operator or a monitor needs: last complete day, lag, holes, each command's last run.
    store and source: the caller's adapters (else the configuration's; the telemetry is asked
    only for gaps in adopted history)."""
    with given_or_opened(store, lambda: open_store(config)) as store:
        # Complete: marked, and what the store holds of the day agrees with the mark (the
        # documents and totals, not the mark alone, say whether a day is whole).
        marks, states = day_states(store)
        complete = {d: m for d, m in marks.items() if d in states.complete}
        damaged = states.damaged_days
        days = tracked_days(complete)
        closed = last_closed(config, clock)
        last = max(complete, default=None)
        # Gaps are counted from the first complete or damaged day, as the catch-up plans them.
        first = min(days | tracked_days(complete, damaged), default=None)
        through = planning.complete_through(days, closed, damaged)
        runs = store.runs(limit=20)
        last_runs = {command: run for command in RUN_COMMANDS if (run := store.last_run(command))}
        if any(run.get("outcome") == RUNNING for run in [*runs[:1], *last_runs.values()]):
            holder = store.run_lock().holder()
            runs[0] = _abandoned(runs[0], holder)
            last_runs = {command: _abandoned(run, holder) for command, run in last_runs.items()}
        checked = next((r for r in runs if "recheck" in r and r.get("outcome") != "running"), None)
        snapshots = store.snapshots()
        last_snapshot = max(snapshots, default=None)
        return Status(
            store=config.store,
            last_closed=closed,
            last_complete=last,
            complete_through=through,
            lag_days=(closed - through).days if through else None,
            complete_days=len(complete),
            # Damaged days are missing too (not complete), wherever they lie.
            missing_days=sorted({*planning.missing_days(days, first, min(last or closed, closed)), *damaged}),
            not_closed_days=sorted(d for d in days if d > closed),
            last_day=complete[last] if last else None,
            last_run=runs[0] if runs else None,
            last_runs={command: RunState.from_record(command, run) for command, run in last_runs.items()},
            last_recheck=(
                {"run_id": checked["run_id"], "started_at": checked["started_at"], **checked["recheck"]}
                if checked
                else None
            ),
            not_rechecked=dict(fingerprint.unfingerprinted(complete, config.recheck_days)),
            recheck_days=config.recheck_days,
            last_snapshot=last_snapshot,
            snapshot_missing_today=bool(snapshots) and last_snapshot != clock.now().date(),
            snapshot_recordsets=snapshots.get(last_snapshot) if last_snapshot else None,
            damaged_days=damaged,
            damage=list(states.damaged),
            empty_days=sorted(
                d for d, marker in complete.items() if _read_from_source(marker) and not marker.get("rows")
            ),
            adopted_gaps=adopted_gaps(config, complete, source),
        )


def _abandoned(run: dict[str, Any], holder: LockHolder | None) -> dict[str, Any]:
    """A run the ledger says is running while the store's lock is free (or held by another run)
    died without recording its end (SIGKILL, a power cut): shown as abandoned, with its host and
    process id so the operator can check."""
    if run.get("outcome") != RUNNING or (holder is not None and holder.run_id in (None, run.get("run_id"))):
        return run
    return {**run, "outcome": ABANDONED}


# The terminal text of `idb-stats status` (Nagios and Prometheus are in monitoring.py).


def as_text(info: Status) -> str:
    lines = [
        f"store:                 {info.store}",
        f"last closed day:       {info.last_closed}",
        f"last complete day:     {info.last_complete or 'none'}"
        + (f" ({plural(info.last_day_rows, 'row')})" if info.last_day_rows is not None else ""),
        f"complete through:      {info.complete_through or 'none'}",
        f"lag:                   {lag_text(info.lag_days)}",
        f"complete days:         {info.complete_days}",
        f"missing days:          {dates_text(info.missing_days) or 'none'}",
    ]
    if info.damaged_days:
        lines.append(
            f"damaged days:          {dates_text(info.damaged_days)} (idb-stats collect-stats redoes them)"
        )
        lines += [f"  {d.harvest_date}: {'; '.join(d.reasons)}" for d in info.damage]
    if info.empty_days:
        lines.append(
            f"published empty:       {dates_text(info.empty_days)} (0 telemetry rows; "
            "check the source if the portal was not down)"
        )
    lines.append(f"last re-check:         {_recheck_line(info.last_recheck)}")
    if info.not_rechecked:
        lines.append(f"not re-checkable:      {_not_rechecked_line(info)}")
    if info.adopted_gaps:
        lines.append(
            f"gaps in adopted days:  {dates_text(info.adopted_gaps)} (telemetry exists: "
            "idb-stats collect-stats --from D --to D)"
        )
    if info.not_closed_days:
        lines.append(f"complete but not over: {dates_text(info.not_closed_days)} (idb-stats forget-day DATE)")
    for command, run in info.last_runs.items():
        seconds = f"{run.seconds:.1f} s" if run.seconds is not None else "-"
        label = f"last {command}:"
        lines.append(
            f"{label:23s}{run.outcome} {run.started_at} ({seconds}) {run.run_id} {run.error or ''}".rstrip()
            + (
                f" (pid {run.record.get('pid')} on host {run.record.get('host')} is gone; its lock is free)"
                if run.outcome == ABANDONED
                else ""
            )
        )
    if not info.last_runs:
        lines.append("last run:              none")
    lines.append(
        f"last size snapshot:    {info.last_snapshot or 'none'}"
        + (" (none today)" if info.snapshot_missing_today else "")
    )
    return "\n".join(lines)


def lag_text(lag: int | None) -> str:
    return "-" if lag is None else plural(lag, "day")


def _not_rechecked_line(info: Status) -> str:
    groups = info.not_rechecked
    days = sum(len(d) for d in groups.values())
    listed = "; ".join(f"{why}: {dates_text(d)}" for why, d in groups.items())
    return (
        f"{plural(days, 'day')} of the last {info.recheck_days} published carry no source "
        f"fingerprint, so late rows there go unnoticed ({listed})"
    )


def _recheck_line(recheck: Mapping[str, Any] | None) -> str:
    if recheck is None:
        return "none"
    stale = recheck["stale"]
    gone = [s["harvest_date"] for s in stale if s["rows_gone"]]
    return (
        f"{recheck['started_at']}: {len(stale)} days found stale, "
        f"{len(recheck['republished'])} republished ({', '.join(recheck['republished']) or '-'})"
        + (f", rows gone: {', '.join(gone)}" if gone else "")
    )


def lag_error(info: Status, max_lag: int) -> Lagging | None:
    """status --max-lag: what is wrong when the store lags more than `max_lag` days or holds a
    damaged day, saying what to run; None when it keeps up."""
    lag = info.lag_days
    if lag is not None and lag <= max_lag and not info.damaged_days:
        return None
    if info.damaged_days:
        return Lagging(
            f"damaged days {dates_text(info.damaged_days)} (--max-lag {max_lag}): "
            "run `idb-stats collect-stats` to redo them"
        )
    if lag is None:
        return Lagging(f"no complete harvest date yet (--max-lag {max_lag}); run idb-stats collect-stats")
    holes = f" (missing: {dates_text(info.missing_days)})" if info.missing_days else ""
    return Lagging(
        f"complete through {info.complete_through}{holes}, lag {plural(lag, 'day')} "
        f"exceeds --max-lag {max_lag}: run `idb-stats collect-stats` to catch up"
    )
