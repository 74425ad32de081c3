"""How every write run starts and ends: `write_run` takes the store's run lock, creates the
store's schema, records the run in the store's ledger as running, and records its outcome however
it ends (ok, failed, or interrupted by a signal; a run killed outright is left running, and status
shows it abandoned once its lock is free)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from . import interrupt
from .clock import SYSTEM_CLOCK, Clock
from .config import Config
from .errors import IdbStatsError
from .interrupt import Interrupted
from .ports import RunLedger
from .runs import FAILED, INTERRUPTED, OK, RunRecord

# The commands that record runs, each shown with its last run by `status`.
RUN_COMMANDS = ("collect-stats", "api-stats", "import", "forget-day", "verify --repair", "adopt")


def timestamp(clock: Clock = SYSTEM_CLOCK) -> str:
    return clock.now().isoformat(timespec="milliseconds")  # orders runs of one second


def new_run_id(clock: Clock = SYSTEM_CLOCK, prefix: str = "") -> str:
    return f"{prefix}{clock.now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def new_run(command: str, clock: Clock = SYSTEM_CLOCK, run_id_prefix: str = "", **fields: Any) -> RunRecord:
    """A ledger entry, still running. Stamped by the wall clock, whatever clock the use case plans
    with: the ledger records when runs happened, and status orders them by it."""
    return RunRecord(
        run_id=new_run_id(clock, run_id_prefix),
        command=command,
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=timestamp(clock),
        **fields,
    )


@contextlib.contextmanager
def write_run(
    config: Config,
    store: RunLedger,
    command: str,
    lock_timeout: float | None = None,
    dry_run: bool | None = None,
    run_id_prefix: str = "",
    **fields: Any,
) -> Iterator[RunRecord]:
    """The one way a command that writes the store runs: the store's run lock (waiting
    lock_timeout seconds, default collect.lock_timeout), its schema, and its ledger entry with the
    outcome. dry_run (None for commands without one) is kept in the record; a dry run gets its
    record and nothing else: no lock, no schema, no ledger entry."""
    run = new_run(command, run_id_prefix=run_id_prefix, dry_run=dry_run, **fields)
    if dry_run:
        yield run
        return
    timeout = config.lock_timeout if lock_timeout is None else lock_timeout
    with store.run_lock().hold(run, timeout):
        store.init()
        with ledger_entry(store, run):
            yield run


@contextlib.contextmanager
def ledger_entry(store: RunLedger, run: RunRecord, clock: Clock = SYSTEM_CLOCK) -> Iterator[RunRecord]:
    """Record the run as running, then as ok, failed or interrupted."""
    started = time.monotonic()
    store.record_run(run)
    try:
        yield run
    except BaseException as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else interrupt.received()
        run.outcome = INTERRUPTED if signum else FAILED
        known = isinstance(exc, IdbStatsError | Interrupted)
        run.error = str(exc) if known else f"{type(exc).__name__}: {exc}"
        if signum and not isinstance(exc, Interrupted):
            run.error = f"interrupted by {signal.Signals(signum).name} ({run.error})"
        run.finished_at, run.seconds = timestamp(clock), round(time.monotonic() - started, 3)
        with contextlib.suppress(Exception):  # the original error is the one to report
            store.record_run(run)
        if signum and not isinstance(exc, Interrupted):
            # The signal cancelled a query: report the interruption, not the cancelled query.
            raise Interrupted(signum) from exc
        raise
    run.outcome, run.finished_at = OK, timestamp(clock)
    run.seconds = round(time.monotonic() - started, 3)
    store.record_run(run)
