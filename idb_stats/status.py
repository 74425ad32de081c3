"""The status use case: what an operator or a monitor reads from the store, without the lock."""

from __future__ import annotations

from typing import Any

from . import fingerprint, planning
from .clock import SYSTEM_CLOCK, Clock
from .collect import last_closed, tracked_days
from .config import Config
from .ledger import RUN_COMMANDS
from .runs import ABANDONED, RUNNING, LockHolder
from .stores import open_store


def status(config: Config, clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """What an operator or a monitor needs: last complete day, lag, holes, each command's last run."""
    with open_store(config) as store:
        complete = store.completed_days()
        days = tracked_days(complete)
        closed = last_closed(config, clock)
        last = max(complete, default=None)
        first = min(days, default=None)
        through = planning.complete_through(days, closed)
        runs = store.runs(limit=20)
        last_runs = {command: run for command in RUN_COMMANDS if (run := store.last_run(command))}
        if any(run.get("outcome") == RUNNING for run in [*runs[:1], *last_runs.values()]):
            holder = store.run_lock().holder()
            runs[0] = _abandoned(runs[0], holder)
            last_runs = {command: _abandoned(run, holder) for command, run in last_runs.items()}
        checked = next((r for r in runs if "recheck" in r and r.get("outcome") != "running"), None)
        snapshots = store.snapshots()
        last_snapshot = max(snapshots, default=None)
        return {
            "store": config.store,
            "today": closed.isoformat(),
            "last_closed_harvest_date": closed.isoformat(),
            "last_complete_harvest_date": last.isoformat() if last else None,
            "complete_through": through.isoformat() if through else None,
            # Counted from the first hole, so a failed day makes the store lag until it is redone.
            "lag_days": (closed - through).days if through else None,
            "complete_days": len(complete),
            "missing_days": [
                d.isoformat() for d in planning.missing_days(days, first, min(last or closed, closed))
            ],
            "not_closed_days": sorted(d.isoformat() for d in days if d > closed),
            "last_day": complete[last] if last else None,
            "last_run": runs[0] if runs else None,
            "last_runs": last_runs,
            # The latest catch-up's re-check of published days: found stale, and republished.
            "last_recheck": (
                {"run_id": checked["run_id"], "started_at": checked["started_at"], **checked["recheck"]}
                if checked
                else None
            ),
            # Published days the re-check skips: their late rows would go unnoticed.
            "not_rechecked": {
                why: [d.isoformat() for d in days]
                for why, days in fingerprint.unfingerprinted(complete, config.recheck_days).items()
            },
            "recheck_days": config.recheck_days,
            "last_snapshot": last_snapshot.isoformat() if last_snapshot else None,
            "snapshot_missing_today": bool(snapshots) and last_snapshot != clock.now().date(),
            "snapshot_recordsets": snapshots.get(last_snapshot) if last_snapshot else None,
        }


def _abandoned(run: dict[str, Any], holder: LockHolder | None) -> dict[str, Any]:
    """A run the ledger says is running while the store's lock is free (or held by another run)
    died without recording its end (SIGKILL, a power cut): shown as abandoned, with its host and
    process id so the operator can check."""
    if run.get("outcome") != RUNNING or (holder is not None and holder.run_id in (None, run.get("run_id"))):
        return run
    return {**run, "outcome": ABANDONED}
