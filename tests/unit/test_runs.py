"""The run record's stored shape: what earlier versions wrote reads back, and what this one writes
has the fields status, monitors and older readers use."""

from __future__ import annotations

from datetime import UTC, datetime

from idb_stats.clock import FixedClock
from idb_stats.ledger import new_run
from idb_stats.runs import RunRecord

# A collect-stats entry as version 1 of the ledger stored it (a dict built by hand).
STORED = {
    "run_id": "20261125T120000Z-0123abcd",
    "command": "collect-stats",
    "host": "stats-1",
    "pid": 4242,
    "started_at": "2026-11-25T12:00:00.000+00:00",
    "finished_at": "2026-11-25T12:00:03.500+00:00",
    "seconds": 3.5,
    "outcome": "ok",
    "days": [{"harvest_date": "2026-11-25", "rows": 10}],
    "error": None,
    "dry_run": False,
    "plan": "harvest date 2026-11-25",
    "recheck": {"stale": [], "republished": []},
}


def test_a_stored_entry_reads_back_unchanged() -> None:
    assert RunRecord.from_dict(STORED).as_dict() == STORED


def test_fields_a_command_does_not_fill_are_left_out() -> None:
    run = new_run("forget-day", FixedClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC)))
    stored = run.as_dict()
    assert set(stored) == set(RunRecord.BASE)
    assert stored["outcome"] == "running" and stored["started_at"] == "2026-11-25T12:00:00.000+00:00"
    assert stored["run_id"].startswith("20261125T120000Z-")
    assert "recheck" not in stored  # status finds a catch-up's re-check by this key


def test_entries_of_older_versions_without_host_and_pid_read() -> None:
    old = {k: v for k, v in STORED.items() if k not in ("host", "pid", "dry_run")}
    run = RunRecord.from_dict({**old, "command": "verify --repair", "outcome": "running"})
    assert (run.host, run.pid, run.outcome) == ("", 0, "running")
