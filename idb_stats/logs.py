"""Logging for people, for journald and for log files.

Under systemd (stderr is the journal stream) records go to journald natively, with a priority
and structured IDB_STATS_* fields, so `journalctl IDB_STATS_HARVEST_DATE=2020-02-18` finds a day.
On a terminal: readable lines, and a progress bar for long runs. `--log-format json` (cron,
containers, files): one JSON object per line on stderr with the very fields journald receives.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from .progress import Estimate, describe

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# Where the journal listens; a test points this at a socket of its own.
JOURNAL_SOCKET_ENV = "IDB_STATS_JOURNAL_SOCKET"

_PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
# --log-format: text, json, or (not given) journald under systemd and text elsewhere.
LOG_FORMATS = ("text", "json")
LOG_FORMAT_ENV = "IDB_STATS_LOG_FORMAT"
# What setup_logging chose last: the progress bar stays off when stderr carries JSON lines.
_chosen = {"format": "text"}


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


def journal_fields(record: logging.LogRecord, message: str, identifier: str = "idb-stats") -> dict[str, Any]:
    """The fields of a record's journal entry: MESSAGE, PRIORITY, where it was logged, and each
    structured field as IDB_STATS_<NAME> (also what --log-format json writes)."""
    entry: dict[str, Any] = {
        "MESSAGE": message,
        "PRIORITY": _PRIORITIES.get(record.levelno, 6),
        "SYSLOG_IDENTIFIER": identifier,
        "CODE_FILE": record.pathname,
        "CODE_LINE": record.lineno,
        "CODE_FUNC": record.funcName,
        "LOGGER": record.name,
    }
    for key, value in fields_of(record).items():
        entry[f"IDB_STATS_{key.upper()}"] = value
    return entry


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: the journal entry's fields and a UTC TIMESTAMP."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        return json.dumps({"TIMESTAMP": stamp, **journal_fields(record, message)}, default=str)


class JournalHandler(logging.Handler):
    """Sends each record as one native journal entry (standard library only)."""

    def __init__(self, identifier: str = "idb-stats", path: str | None = None):
        super().__init__()
        self.identifier = identifier
        self.path = path or os.environ.get(JOURNAL_SOCKET_ENV) or JOURNAL_SOCKET
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = journal_fields(record, self.format(record), self.identifier)
            self.sock.sendto(encode_journal_entry(entry), self.path)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


class TerminalFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")


def setup_logging(verbose: bool = False, quiet: bool = False, log_format: str | None = None) -> None:
    """log_format: "json" or "text" on stderr whatever it is; None: journald when stderr is the
    journal stream, else text."""
    root = logging.getLogger("idb_stats")
    root.handlers.clear()
    root.propagate = False
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    handler: logging.Handler
    if log_format is None and stderr_is_journal():
        handler = _native_journal_handler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TerminalFormatter())
    _chosen["format"] = log_format or "text"
    root.addHandler(handler)


def json_logging() -> bool:
    """Whether log lines go out as JSON (so other messages on stderr should too)."""
    return _chosen["format"] == "json"


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
            entry = journal_fields(record, self.format(record))
            # systemd.journal.send adds CODE_* and MESSAGE itself.
            extra = {k: str(v) for k, v in entry.items() if not k.startswith("CODE_") and k != "MESSAGE"}
            self.journal.send(entry["MESSAGE"], **extra)
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
    """A one-line progress bar with elapsed time, rate and ETA on a terminal; silent elsewhere
    (a file, the journal, or stderr carrying JSON log lines). A progress.Tracker sink."""

    def __init__(self, unit: str = "days", stream: TextIO | None = None):
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = (
            self.stream.isatty() and not stderr_is_journal(self.stream) and _chosen["format"] == "text"
        )

    def __call__(self, estimate: Estimate, label: str = "") -> None:
        if not self.enabled or estimate.total <= 1:
            return
        width = 30
        filled = int(width * min(estimate.done, estimate.total) / estimate.total)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {describe(estimate, self.unit)}  {label}\x1b[K"
        )
        if estimate.done >= estimate.total:
            self.stream.write("\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")


def status_sink(unit: str, details: Callable[[], Sequence[str]] = tuple) -> Callable[[Estimate, str], None]:
    """A progress.Tracker sink: systemd's STATUS= line (`systemctl status` shows it), such as
    `2020-02-18: 3/12 days, 1.2M rows, 40.2 s elapsed, 4.5 days/min, ETA 2 min 00 s`."""

    def send(estimate: Estimate, label: str) -> None:
        sd_notify(f"STATUS={label + ': ' if label else ''}{describe(estimate, unit, details())}")

    return send
