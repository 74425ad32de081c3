"""How a run is recorded in the store's run ledger: its entry, and its outcome however it ends."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from . import interrupt
from .errors import IdbStatsError
from .interrupt import Interrupted
from .ports import Store

# The commands that record runs, each shown with its last run by `status`.
RUN_COMMANDS = ("collect-stats", "api-stats", "import", "forget-day")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")  # orders runs of one second


def new_run(command: str, **fields: Any) -> dict[str, Any]:
    """A ledger entry, still running."""
    return {
        "run_id": f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}",
        "command": command,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": now_iso(),
        "finished_at": None,
        "seconds": None,
        "outcome": "running",
        "days": [],
        "error": None,
        **fields,
    }


@contextlib.contextmanager
def ledger_entry(store: Store | None, run: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Record the run as running, then as ok, failed or interrupted (store None: a dry run)."""
    started = time.monotonic()
    if store is not None:
        store.record_run(run)
    try:
        yield run
    except BaseException as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else interrupt.received()
        run["outcome"] = "interrupted" if signum else "failed"
        known = isinstance(exc, IdbStatsError | Interrupted)
        run["error"] = str(exc) if known else f"{type(exc).__name__}: {exc}"
        if signum and not isinstance(exc, Interrupted):
            run["error"] = f"interrupted by {signal.Signals(signum).name} ({run['error']})"
        run["finished_at"], run["seconds"] = now_iso(), round(time.monotonic() - started, 3)
        if store is not None:
            with contextlib.suppress(Exception):  # the original error is the one to report
                store.record_run(run)
        if signum and not isinstance(exc, Interrupted):
            # The signal cancelled a query: report the interruption, not the cancelled query.
            raise Interrupted(signum) from exc
        raise
    run["outcome"], run["finished_at"] = "ok", now_iso()
    run["seconds"] = round(time.monotonic() - started, 3)
    if store is not None:
        store.record_run(run)
