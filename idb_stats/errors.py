"""Exit codes and the errors that carry them.

The library raises these; only the CLI turns them into a process exit.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    CONFIG = 3
    SOURCE_UNREACHABLE = 4
    STORE_FAILED = 5
    DATA_QUALITY = 6
    LOCK_HELD = 7
    LAGGING = 8
    SPAN_TOO_LONG = 9
    SOURCE_ROWS_GONE = 10
    VERIFY_DIFFERENCES = 11
    DELIVERY_FAILED = 12
    OUTPUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a tool its reader stopped


# What each exit code means: every command's help shows this table (cli.py), and a test checks
# that every exit code an error type carries is in it. 130/143 are interrupt.Interrupted's.
EXIT_CODE_MEANINGS: dict[int, str] = {
    ExitCode.OK: "ok",
    ExitCode.UNEXPECTED: "unexpected error",
    ExitCode.USAGE: "usage (bad arguments or input file, a harvest date not over yet, an output that "
    "cannot be written)",
    ExitCode.CONFIG: "configuration (also a failed check-config --connect, or an index with another "
    "mapping: run adopt)",
    ExitCode.SOURCE_UNREACHABLE: "telemetry database unreachable",
    ExitCode.STORE_FAILED: "store unreachable or write not acknowledged",
    ExitCode.DATA_QUALITY: "too many skipped rows (or duplicate documents under --duplicates refuse)",
    ExitCode.LOCK_HELD: "lock held by another run",
    ExitCode.LAGGING: "status --max-lag: lagging",
    ExitCode.SPAN_TOO_LONG: "catch-up span too long",
    ExitCode.SOURCE_ROWS_GONE: "a day's source rows are gone while the store holds its documents, or "
    "a day without rows and without rows after it (a stopped writer) or before it (--allow-empty)",
    ExitCode.VERIFY_DIFFERENCES: "verify found differences",
    ExitCode.DELIVERY_FAILED: "monthly-report: reports.command failed for some files (they are written)",
    130: "stopped by SIGINT (run recorded as interrupted)",
    143: "stopped by SIGTERM (run recorded as interrupted)",
    ExitCode.OUTPUT_CLOSED: "standard output closed by its reader (| head)",
}


def exit_codes_help() -> str:
    """The exit-code table of every command's help, one paragraph."""
    listed = ", ".join(f"{int(code)} {meaning}" for code, meaning in sorted(EXIT_CODE_MEANINGS.items()))
    return f"Exit codes: {listed}. status --format nagios exits 0-3 (OK, WARNING, CRITICAL, UNKNOWN)."


class IdbStatsError(Exception):
    exit_code = ExitCode.UNEXPECTED


class UsageError(IdbStatsError):
    """A mistake in a command's arguments or input (a reversed range, a harvest date not over yet,
    a malformed file, an --out that cannot be used), found before any lock, connection or write;
    the message says what to ask instead."""

    exit_code = ExitCode.USAGE


class OutputUnwritable(UsageError):
    """An output file or standard output that cannot be written (disk full, quota, I/O error)."""


class OutputClosed(IdbStatsError):
    """Standard output is a pipe its reader closed (`idb-stats export | head -1`): stop quietly."""

    exit_code = ExitCode.OUTPUT_CLOSED


class ConfigError(IdbStatsError):
    """Every problem found in the configuration, reported together."""

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class SourceUnreachable(IdbStatsError):
    exit_code = ExitCode.SOURCE_UNREACHABLE


class StoreError(IdbStatsError):
    """The store could not be reached or did not acknowledge a write."""

    exit_code = ExitCode.STORE_FAILED


class StoreUnreachable(StoreError):
    """No answer from the store at all: connection refused, unknown host, timed out."""


class ChecksFailed(IdbStatsError):
    """check-config --connect: an endpoint, table or privilege a command needs is not there."""

    exit_code = ExitCode.CONFIG


class IncompatibleIndex(IdbStatsError):
    """A live index has a mapping this version cannot use (e.g. one the original collector made)."""

    exit_code = ExitCode.CONFIG


class DataQualityError(IdbStatsError):
    exit_code = ExitCode.DATA_QUALITY


class DuplicateDocuments(DataQualityError):
    """Two or more documents of one (recordset, day) under --duplicates refuse (import, adopt)."""


class LockHeld(IdbStatsError):
    exit_code = ExitCode.LOCK_HELD


class Lagging(IdbStatsError):
    """status --max-lag: the last complete harvest date is too old, or a day is damaged."""

    exit_code = ExitCode.LAGGING


class SpanTooLong(IdbStatsError):
    exit_code = ExitCode.SPAN_TOO_LONG


class SourceRowsGone(IdbStatsError):
    """Re-running a day whose source rows are gone would erase its published documents."""

    exit_code = ExitCode.SOURCE_ROWS_GONE


class EmptySource(SourceRowsGone):
    """A day without rows whose source shows no sign of a live writer (no rows after the day's
    window) or that lies before the telemetry begins: publishing it would mark it complete and empty."""


class VerifyDifferences(IdbStatsError):
    """verify found published numbers that disagree with the source or with each other."""

    exit_code = ExitCode.VERIFY_DIFFERENCES


class DeliveryFailed(IdbStatsError):
    """monthly-report wrote its files but [reports] command failed for some (each one logged)."""

    exit_code = ExitCode.DELIVERY_FAILED
