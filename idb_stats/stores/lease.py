"""The search stores' run lock: one document in the runs index, held under a lease.

A search engine has no session that dies with its client, so the lock is a document
(`run-lock`) naming its holder (command, run, host, pid) and when its lease expires:
  - taken by creating it (op_type=create: of two runs creating it at once, one wins);
  - renewed by a background thread every third of the lease while the run lives, each write
    conditional on the version it last wrote (if_seq_no/if_primary_term);
  - taken over, by the same conditional write, once its lease has expired (its run died);
  - deleted at the end of the run, conditionally, so a run never frees another's lock.
A run that cannot renew (its store unreachable for a whole lease) and finds its lock taken over
stops as if sent SIGTERM. Expiry compares the holder's clock with the waiter's: keep hosts' clocks
in sync (NTP) to well within store.lock_lease.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from .. import interrupt
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import IdbStatsError, LockHeld
from ..runs import LockHolder, RunRecord
from .mappings import runs_mapping
from .transport import RetryingRequests

log = logging.getLogger(__name__)

LOCK_ID = "run-lock"

# The version of the lock document a run last wrote: what its next write is conditional on.
Version = dict[str, int]


class LeaseRunLock:
    def __init__(self, http: RetryingRequests, runs_index: str, lease: float, clock: Clock = SYSTEM_CLOCK):
        # The wall clock, not the clock a use case plans with: leases are compared across hosts.
        self.http = http
        self.runs_index = runs_index
        self.lease = lease
        self.clock = clock
        self.path = f"/{quote(runs_index)}/_doc/{LOCK_ID}"

    @contextlib.contextmanager
    def hold(self, run: RunRecord, timeout: float) -> Iterator[None]:
        self._ensure_runs_index()
        version = self._acquire(run, timeout)
        renewal = _Renewal(self, run, version)
        renewal.start()
        try:
            yield
        finally:
            renewal.stop()
            try:
                self._release(run, renewal.version)
            except IdbStatsError as exc:  # the run itself is done and recorded
                log.warning(
                    "could not free the run lock (%s): the next run waits for its lease to expire "
                    "(store.lock_lease = %g s)",
                    exc,
                    self.lease,
                )

    def _release(self, run: RunRecord, version: Version) -> None:
        if self.http.request("DELETE", self.path, params=version, ok=(404, 409)) is not None:
            return
        # A renewal applied whose answer was lost leaves this run's document at a later version.
        current = self.http.request("GET", self.path, ok=(404,))
        if current and current.get("found", True) and current["_source"].get("run_id") == run.run_id:
            latest = {"if_seq_no": current["_seq_no"], "if_primary_term": current["_primary_term"]}
            self.http.request("DELETE", self.path, params=latest, ok=(404, 409))

    def holder(self) -> LockHolder | None:
        current = self.http.request("GET", self.path, ok=(404,))
        if not current or not current.get("found", True) or self._expired(current["_source"]):
            return None
        return self._describe(current["_source"])

    def _ensure_runs_index(self) -> None:
        # Locking comes before `init`; a document written into a missing index would create it with
        # a guessed mapping, which init then refuses. A runs index created here gets its own.
        if not self.http.request("HEAD", f"/{quote(self.runs_index)}", ok=(404,)):
            body = {"settings": {"number_of_shards": 1}, "mappings": runs_mapping()}
            self.http.request("PUT", f"/{quote(self.runs_index)}", body, ok=(400,))  # 400: made meanwhile

    def _document(self, run: RunRecord) -> dict[str, Any]:
        now = self.clock.now()
        return {
            "kind": "lock",
            "run_id": run.run_id,
            "command": run.command,
            "host": run.host,
            "pid": run.pid,
            "renewed_at": now.isoformat(timespec="milliseconds"),
            "expires_at": (now + timedelta(seconds=self.lease)).isoformat(timespec="milliseconds"),
        }

    def _expired(self, source: dict[str, Any]) -> bool:
        try:
            return datetime.fromisoformat(str(source.get("expires_at"))) <= self.clock.now()
        except ValueError:
            return True  # not a lock this version wrote: nothing holds it

    def _describe(self, source: dict[str, Any]) -> LockHolder:
        return LockHolder(
            source.get("run_id"),
            f"{source.get('command')} run {source.get('run_id')}, host {source.get('host')} "
            f"pid {source.get('pid')}, lease renewed {source.get('renewed_at')} "
            f"until {source.get('expires_at')}",
        )

    def _write(self, run: RunRecord, condition: Version | None) -> Version | None:
        """Create the lock (no condition) or overwrite the version given; the new version, or None
        when another run's write came first. A write whose answer was lost and that was retried
        meets itself: the document names this run, and is ours."""
        params: dict[str, Any] = dict(condition) if condition else {"op_type": "create"}
        written = self.http.request("PUT", self.path, self._document(run), params=params, ok=(409,))
        if written is not None:
            return {"if_seq_no": written["_seq_no"], "if_primary_term": written["_primary_term"]}
        current = self.http.request("GET", self.path, ok=(404,))
        if current and current.get("found", True) and current["_source"].get("run_id") == run.run_id:
            return {"if_seq_no": current["_seq_no"], "if_primary_term": current["_primary_term"]}
        return None

    def _acquire(self, run: RunRecord, timeout: float) -> Version:
        deadline = time.monotonic() + timeout
        while True:
            version = self._write(run, None)
            if version is not None:
                return version
            current = self.http.request("GET", self.path, ok=(404,))
            if current and current.get("found", True):
                if self._expired(current["_source"]):
                    condition = {"if_seq_no": current["_seq_no"], "if_primary_term": current["_primary_term"]}
                    version = self._write(run, condition)
                    if version is not None:
                        log.warning(
                            "took over the run lock of a run that stopped renewing it (%s)",
                            self._describe(current["_source"]).description,
                        )
                        return version
                    continue  # another waiter took it over first
                if time.monotonic() >= deadline:
                    raise LockHeld(
                        "another idb-stats run holds the lock for this store "
                        f"({self._describe(current['_source']).description}; waited {timeout:g} s): "
                        "wait for it to finish, or raise --lock-timeout to wait longer"
                    )
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))


class _Renewal(threading.Thread):
    """Renews the lease every third of it until stopped; stops the run if the lock was lost."""

    def __init__(self, lock: LeaseRunLock, run: RunRecord, version: Version):
        super().__init__(name="idb-stats lock lease", daemon=True)
        self.lock = lock
        self.run_record = run
        self.version = version
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.lock.lease / 3):
            try:
                version = self.lock._write(self.run_record, self.version)
            except IdbStatsError as exc:  # the store unreachable for now: the next renewal may do
                log.warning("could not renew the run lock's lease: %s", exc)
                continue
            if version is None:
                log.error(
                    "the run lock was taken over by another run after this run could not renew its "
                    "lease for %g s (store.lock_lease): stopping this run",
                    self.lock.lease,
                )
                interrupt.stop_run()
                return
            self.version = version

    def stop(self) -> None:
        self._stopped.set()
        self.join()
