"""What monitors read: `status` as a Nagios plugin line and as Prometheus text (pure renderers over
status.Status), and the Prometheus file written for node_exporter's textfile collector.

Nagios plugin output: one line `IDB-STATS STATE - summary | perfdata`, exit 0/1/2/3 for
OK/WARNING/CRITICAL/UNKNOWN; perfdata is `label=value[UOM];warn;crit;min;max`.
Prometheus: the text exposition format 0.0.4 (# HELP, # TYPE, then samples).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import IntEnum
from pathlib import Path

from .ledger import RUN_COMMANDS
from .status import FAILED_OUTCOMES, Status

DEFAULT_WARN_LAG = 2
DEFAULT_CRIT_LAG = 3


class NagiosState(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class NagiosCheck:
    state: NagiosState
    summary: str
    perfdata: tuple[str, ...] = ()

    def line(self) -> str:
        text = f"IDB-STATS {self.state.name} - {self.summary}"
        return text + (" | " + " ".join(self.perfdata) if self.perfdata else "")


def _days(days: Iterable[date], limit: int = 5) -> str:
    listed = [d.isoformat() for d in days]
    return ", ".join(listed[:limit]) + (f" and {len(listed) - limit} more" if len(listed) > limit else "")


def _plural_days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def _perf(
    label: str, value: float | None, unit: str = "", warn: int | None = None, crit: int | None = None
) -> str:
    shown = "U" if value is None else f"{value:g}"
    thresholds = ";".join("" if t is None else str(t) for t in (warn, crit))
    return f"{label}={shown}{unit if value is not None else ''};{thresholds};0"


def nagios_check(status: Status, warn_lag: int, crit_lag: int) -> NagiosCheck:
    """The state: CRITICAL for damaged days, a failed or abandoned last run, a lag beyond crit_lag
    or no complete day at all; WARNING for a lag beyond warn_lag or an interrupted last run."""
    critical: list[str] = []
    warning: list[str] = []
    lag = status.lag_days
    if lag is None:
        critical.append("no complete harvest date yet (run idb-stats collect-stats)")
    else:
        # The lag counts from the first hole, so missing days show in it; name them.
        holes = f", missing {_days(status.missing_days)}" if status.missing_days else ""
        through = f"lag {_plural_days(lag)} (complete through {status.complete_through}{holes})"
        if lag > crit_lag:
            critical.append(f"{through} > {crit_lag}")
        elif lag > warn_lag:
            warning.append(f"{through} > {warn_lag}")
    if status.damaged_days:
        critical.append(f"damaged {_days(status.damaged_days)}")
    for run in status.last_runs.values():
        if run.outcome in FAILED_OUTCOMES:
            critical.append(f"last {run.command} {run.outcome} {run.started_at}")
        elif run.outcome == "interrupted":
            warning.append(f"last {run.command} interrupted {run.started_at}")
    state = NagiosState.CRITICAL if critical else NagiosState.WARNING if warning else NagiosState.OK
    if critical or warning:
        summary = "; ".join(critical + warning)
    else:
        summary = f"complete through {status.complete_through}, lag {_plural_days(lag or 0)}"
    perfdata = (
        _perf("lag_days", lag, warn=warn_lag, crit=crit_lag),
        _perf("complete_days", status.complete_days),
        _perf("missing_days", len(status.missing_days)),
        _perf("damaged_days", len(status.damaged_days), crit=0),
        _perf("last_day_rows", status.last_day_rows),
        _perf("last_day_seconds", status.last_day_seconds, "s"),
    )
    return NagiosCheck(state, summary, perfdata)


def nagios_unknown(reason: str) -> NagiosCheck:
    """The store could not be read: the check cannot tell (a one-line reason, no perfdata)."""
    return NagiosCheck(NagiosState.UNKNOWN, " ".join(reason.split()))


# --- Prometheus ------------------------------------------------------------------------------

# Each last run's outcome as a state set: one series per outcome, 1 for the current one.
UP_HELP = "1 when the status could be read from the store, 0 when it could not."
RUN_OUTCOMES = ("ok", "failed", "interrupted", "abandoned", "running")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return repr(value) if isinstance(value, float) else str(value)


def _timestamp(day: date) -> float:
    return datetime.combine(day, time(), UTC).timestamp()


def _run_started(started_at: str) -> float | None:
    try:
        return datetime.fromisoformat(started_at).timestamp()
    except ValueError:
        return None


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        samples = list(samples)
        if not samples:
            return
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            shown = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{shown}}} {_number(value)}" if shown else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def prometheus_text(status: Status) -> str:
    """The status as Prometheus text exposition. A value not known yet (no complete day, no run)
    is left out rather than given a made-up number: alert on absent() for those."""
    out = _Exposition()
    store = {"store": status.store}
    out.metric("idb_stats_up", "gauge", UP_HELP, [(store, 1)])
    known = [(store, float(status.lag_days))] if status.lag_days is not None else []
    out.metric(
        "idb_stats_lag_days",
        "gauge",
        "Days between the last closed harvest date and the last day complete without a hole before it.",
        known,
    )
    out.metric(
        "idb_stats_last_complete_day_timestamp_seconds",
        "gauge",
        "The last complete harvest date, as midnight UTC of that date.",
        [(store, _timestamp(status.last_complete))] if status.last_complete else [],
    )
    out.metric(
        "idb_stats_complete_days",
        "gauge",
        "Harvest dates published complete.",
        [(store, status.complete_days)],
    )
    out.metric(
        "idb_stats_missing_days",
        "gauge",
        "Harvest dates missing between the first complete one and the last closed one.",
        [(store, len(status.missing_days))],
    )
    out.metric(
        "idb_stats_damaged_days",
        "gauge",
        "Harvest dates the store holds only part of.",
        [(store, len(status.damaged_days))],
    )
    out.metric(
        "idb_stats_last_day_rows",
        "gauge",
        "Telemetry rows of the last complete harvest date.",
        [(store, status.last_day_rows)] if status.last_day_rows is not None else [],
    )
    out.metric(
        "idb_stats_last_day_seconds",
        "gauge",
        "Seconds the last complete harvest date took.",
        [(store, status.last_day_seconds)] if status.last_day_seconds is not None else [],
    )
    runs = [status.last_runs[c] for c in RUN_COMMANDS if c in status.last_runs]
    outcomes = RUN_OUTCOMES + tuple(sorted({r.outcome for r in runs} - set(RUN_OUTCOMES)))
    out.metric(
        "idb_stats_last_run_outcome",
        "gauge",
        "Outcome of each command's last run: 1 for the outcome it had, 0 for the others.",
        [
            ({**store, "command": r.command, "outcome": o}, int(r.outcome == o))
            for r in runs
            for o in outcomes
        ],
    )
    out.metric(
        "idb_stats_last_run_seconds",
        "gauge",
        "How long each command's last finished run took.",
        [({**store, "command": r.command}, r.seconds) for r in runs if r.seconds is not None],
    )
    out.metric(
        "idb_stats_last_run_start_timestamp_seconds",
        "gauge",
        "When each command's last run started.",
        [({**store, "command": r.command}, t) for r in runs if (t := _run_started(r.started_at)) is not None],
    )
    return out.text()


def prometheus_down(store_kind: str) -> str:
    """What the textfile says when the status could not be read (the store is unreachable)."""
    out = _Exposition()
    out.metric("idb_stats_up", "gauge", UP_HELP, [({"store": store_kind}, 0)])
    return out.text()


def write_atomically(path: Path, text: str) -> None:
    """Replace path with text in one rename, so a reader (node_exporter) never sees half a file.
    The temporary file starts with a dot: the textfile collector reads only *.prom files. The
    metrics are no secret and node_exporter runs as another user: mode 0644."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
