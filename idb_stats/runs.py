"""What the run ledger and the run lock hold: a run's record, and who holds a store's lock.

A run record is stored as a JSON object (its field names are the ledger's shape since version 1:
status, `changes` and monitors read them); fields only some commands fill are left out when empty.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

# A run's outcome in the ledger; status shows a "running" run whose lock is free as abandoned.
RUNNING, OK, FAILED, INTERRUPTED, ABANDONED = "running", "ok", "failed", "interrupted", "abandoned"


@dataclass
class RunRecord:
    run_id: str
    command: str
    host: str
    pid: int
    started_at: str
    finished_at: str | None = None
    seconds: float | None = None
    outcome: str = RUNNING
    days: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # Filled by some commands only.
    dry_run: bool | None = None
    plan: str | None = None
    recheck: dict[str, Any] | None = None  # a catch-up's re-check of published days
    refused: list[str] = field(default_factory=list)  # days refused for their data
    snapshot: dict[str, Any] | None = None  # api-stats
    rebuilt_totals: list[str] | None = None  # verify --repair

    BASE = (
        "run_id",
        "command",
        "host",
        "pid",
        "started_at",
        "finished_at",
        "seconds",
        "outcome",
        "days",
        "error",
    )
    OPTIONAL = ("dry_run", "plan", "recheck", "refused", "snapshot", "rebuilt_totals")

    def as_dict(self) -> dict[str, Any]:
        doc = {name: getattr(self, name) for name in self.BASE}
        doc.update(
            {name: value for name in self.OPTIONAL if (value := getattr(self, name)) not in (None, [])}
        )
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RunRecord:
        """A ledger entry as stored (older entries may lack host and pid)."""
        known = {name: doc[name] for name in (*cls.BASE, *cls.OPTIONAL) if doc.get(name) is not None}
        known.setdefault("host", "")
        known.setdefault("pid", 0)
        known.setdefault("started_at", "")
        return cls(**known)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a store's run lock, as far as the store can tell."""

    run_id: str | None  # None: a session the store cannot tie to a run
    description: str  # for the LockHeld message: command, run, host, pid, since or until when


class RunLock(Protocol):
    """One run at a time per store, held in the store itself, so every configuration that writes
    the store takes the same lock whatever its telemetry source."""

    def hold(self, run: RunRecord, timeout: float) -> AbstractContextManager[None]:
        """Take the lock for this run, waiting up to `timeout` seconds (LockHeld, exit 7, naming
        the holder); released when the block ends, and by the store if the process dies."""

    def holder(self) -> LockHolder | None:
        """Who holds the lock now; None when it is free."""
