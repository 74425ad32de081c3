"""Logging for people and for journald.

Under systemd (stderr is the journal stream) records go to journald natively, with a priority
and structured IDB_STATS_* fields, so `journalctl IDB_STATS_HARVEST_DATE=2020-02-18` finds a day.
On a terminal: readable lines, and a progress bar for multi-day runs.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from typing import Any, TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# Where the journal listens; a test points this at a socket of its own.
JOURNAL_SOCKET_ENV = "IDB_STATS_JOURNAL_SOCKET"

_PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return dict(getattr(record, "fields", None) or {})


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """systemd sets JOURNAL_STREAM=device:inode of the stream it connected to the journal."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def encode_journal_entry(fields: dict[str, Any]) -> bytes:
    """The journal's native protocol: KEY=value lines, or KEY, a 64-bit length and raw bytes."""
    out = bytearray()
    for key, value in fields.items():
        data = str(value).encode("utf-8", errors="replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record as one native journal entry (standard library only)."""

    def __init__(self, identifier: str = "idb-stats", path: str | None = None):
        super().__init__()
        self.identifier = identifier
        self.path = path or os.environ.get(JOURNAL_SOCKET_ENV) or JOURNAL_SOCKET
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {
                "MESSAGE": self.format(record),
                "PRIORITY": _PRIORITIES.get(record.levelno, 6),
                "SYSLOG_IDENTIFIER": self.identifier,
                "CODE_FILE": record.pathname,
                "CODE_LINE": record.lineno,
                "CODE_FUNC": record.funcName,
                "LOGGER": record.name,
            }
            for key, value in fields_of(record).items():
                entry[f"IDB_STATS_{key.upper()}"] = value
            self.sock.sendto(encode_journal_entry(entry), self.path)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


class TerminalFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    root = logging.getLogger("idb_stats")
    root.handlers.clear()
    root.propagate = False
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    handler: logging.Handler
    if stderr_is_journal():
        handler = _native_journal_handler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TerminalFormatter())
    root.addHandler(handler)


def _native_journal_handler() -> logging.Handler:
    if not os.environ.get(JOURNAL_SOCKET_ENV):
        try:  # the optional [journal] extra: systemd's own client
            from systemd import journal  # type: ignore[attr-defined]

            return _SystemdJournalHandler(journal)
        except ImportError:
            pass
    return JournalHandler()


class _SystemdJournalHandler(logging.Handler):
    def __init__(self, journal: Any):
        super().__init__()
        self.journal = journal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra = {f"IDB_STATS_{k.upper()}": str(v) for k, v in fields_of(record).items()}
            self.journal.send(
                self.format(record),
                PRIORITY=str(_PRIORITIES.get(record.levelno, 6)),
                SYSLOG_IDENTIFIER="idb-stats",
                **extra,
            )
        except Exception:
            self.handleError(record)


def sd_notify(message: str) -> bool:
    """Tell systemd our status (Type=oneshot + NotifyAccess=main shows it in systemctl status)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True


class ProgressBar:
    """A one-line progress bar on a terminal; silent elsewhere."""

    def __init__(self, total: int, stream: TextIO | None = None, unit: str = "days"):
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() and not stderr_is_journal(self.stream)

    def update(self, done: int, label: str = "", total: int | None = None) -> None:
        self.total = total or self.total
        if not self.enabled or self.total <= 1:
            return
        width = 30
        filled = int(width * done / self.total)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {self.unit}  {label}\x1b[K"
        )
        if done == self.total:
            self.stream.write("\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
