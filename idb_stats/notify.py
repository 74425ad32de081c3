"""`idb-stats notify-failure UNIT`: run by idb-stats-notify@.service when a unit fails.

Reads only [notify] command, so a broken or unfinished configuration still alerts. Logs the
failed unit's result and runs the configured [notify] command with the unit's name in
IDB_STATS_FAILED_UNIT and its result in IDB_STATS_FAILED_RESULT (e.g. a mail or a curl webhook).
"""

from __future__ import annotations

import logging
import os
import subprocess

from .config import load_notify_command
from .errors import IdbStatsError

log = logging.getLogger("idb_stats.notify")


def unit_result(unit: str) -> str:
    try:
        shown = subprocess.run(
            ["systemctl", "show", "--property=Result,ExecMainStatus", "--value", unit],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return " ".join(shown.stdout.split()) or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def notify(unit: str, config_path: str | None = None) -> int:
    result = unit_result(unit)
    log.error(
        "%s failed (result: %s); see journalctl -u %s",
        unit,
        result,
        unit,
        extra={"fields": {"failed_unit": unit, "failed_result": result}},
    )
    try:
        command = load_notify_command(config_path)
    except IdbStatsError as exc:
        log.error("cannot read the notification command: %s", exc)
        return int(exc.exit_code)
    if not command:
        log.warning("no [notify] command configured; the failure is only in the journal")
        return 0
    env = {**os.environ, "IDB_STATS_FAILED_UNIT": unit, "IDB_STATS_FAILED_RESULT": result}
    completed = subprocess.run(command, shell=True, env=env, check=False, timeout=120)
    if completed.returncode:
        log.error("notification command exited %d", completed.returncode)
    return completed.returncode
