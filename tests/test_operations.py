"""Deployment files and logging: units verify and score, install.sh stages, journal fields arrive."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from idb_stats.logs import encode_journal_entry

ROOT = Path(__file__).resolve().parent.parent
SERVICES = sorted(p.name for p in (ROOT / "systemd").glob("*.service"))
analyze = shutil.which("systemd-analyze") or ""
needs_analyze = pytest.mark.skipif(not analyze, reason="systemd-analyze is not installed on this machine")


@needs_analyze
@pytest.mark.parametrize("unit", SERVICES)
def test_service_exposure_at_most_1_5(unit: str) -> None:
    out = subprocess.run(
        [analyze, "security", "--offline=yes", str(ROOT / "systemd" / unit)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    assert score <= 1.5, out


@needs_analyze
def test_units_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart= exists: point the units at a staged entry point.
    entry = tmp_path / "venv/bin/idb-stats"
    entry.parent.mkdir(parents=True)
    entry.write_text("#!/bin/sh\n")
    entry.chmod(0o755)
    names = []
    for unit in (ROOT / "systemd").iterdir():
        name = unit.name.replace("@.", "@2020-02-18.") if "backfill" in unit.name else unit.name
        if "notify@" in name:
            name = name.replace("@.", "@idb-stats-collect.service.")
        (tmp_path / name).write_text(unit.read_text().replace("/opt/idb-stats", str(tmp_path)))
        names.append(str(tmp_path / name))
    result = subprocess.run(
        [analyze, "verify", *names], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "idb-stats" not in result.stderr, result.stderr


def test_every_hardening_line_is_commented() -> None:
    for unit in (ROOT / "systemd").glob("*.service"):
        lines = unit.read_text().splitlines()
        section = ""
        for i, line in enumerate(lines):
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                comment_above = any(
                    lines[j].startswith("#")
                    for j in range(max(0, i - 30), i)
                    if all("=" in lines[k] for k in range(j + 1, i))
                )
                assert comment_above, f"{unit.name}: {line} has no comment"


def test_every_timer_starts_a_shipped_service_and_is_enabled_by_install() -> None:
    install = (ROOT / "deploy/install.sh").read_text()
    timers = sorted(p.name for p in (ROOT / "systemd").glob("*.timer"))
    assert "idb-stats-verify.timer" in timers
    enabled = re.search(r'^timers="([^"]*)"', install, re.MULTILINE)
    assert enabled is not None and sorted(enabled.group(1).split()) == timers
    for timer in timers:
        assert timer.replace(".timer", ".service") in SERVICES
    verify = (ROOT / "systemd/idb-stats-verify.service").read_text()
    # Unverifiable days (exit 10: telemetry past its retention) are no failure; differences are.
    assert re.search(r"^ExecStart=\S+/idb-stats verify ", verify, re.MULTILINE)
    assert re.search(r"^SuccessExitStatus=10$", verify, re.MULTILINE)


def test_timers_say_what_they_run_and_that_they_run_on_the_host_clock() -> None:
    api_timer = (ROOT / "systemd/idb-stats-api.timer").read_text()
    assert "collection" not in api_timer and "size snapshot" in api_timer.splitlines()[0]
    operations = (ROOT / "docs/operations.md").read_text()
    assert "The timers run on the host clock; days close in `source.timezone`." in operations


def test_install_into_staging_root(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    dry = subprocess.run(
        ["bash", str(ROOT / "deploy/install.sh"), "--root", str(stage), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "would run: python3 -m venv" in dry.stdout and not stage.exists()
    for _ in range(2):  # idempotent: the second run upgrades in place
        subprocess.run(
            ["bash", str(ROOT / "deploy/install.sh"), "--root", str(stage), "--prefix", "/srv/idb"],
            capture_output=True,
            text=True,
            check=True,
        )
    idb = stage / "srv/idb/venv/bin/idb-stats"
    # The #! line names /srv/idb, where the tree will be copied: run it with the staged python.
    python = stage / "srv/idb/venv/bin/python"
    assert subprocess.run([str(python), str(idb), "--help"], capture_output=True, check=True).returncode == 0
    config = stage / "etc/idb-stats/config.toml"
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    unit = (stage / "etc/systemd/system/idb-stats-collect.service").read_text()
    assert "ExecStart=/srv/idb/venv/bin/idb-stats collect-stats" in unit
    assert (stage / "etc/idb-stats/credentials/source-dsn").exists()
    config.write_text("# edited by the operator\n")
    subprocess.run(
        ["bash", str(ROOT / "deploy/install.sh"), "--root", str(stage), "--prefix", "/srv/idb"],
        capture_output=True,
        check=True,
    )
    assert config.read_text() == "# edited by the operator\n"
    subprocess.run(
        [
            "bash",
            str(ROOT / "deploy/install.sh"),
            "--root",
            str(stage),
            "--prefix",
            "/srv/idb",
            "--uninstall",
        ],
        capture_output=True,
        check=True,
    )
    assert not (stage / "srv/idb").exists() and config.exists()
    assert not (stage / "etc/systemd/system/idb-stats-collect.service").exists()


def parse_journal(datagram: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    data = datagram
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            data = rest
        else:
            size = int.from_bytes(rest[:8], "little")
            fields[line.decode()] = rest[8 : 8 + size].decode()
            data = rest[8 + size + 1 :]
    return fields


def test_journal_encoding_round_trips_multiline() -> None:
    entry = {"MESSAGE": "two\nlines", "PRIORITY": 3, "IDB_STATS_ROWS": 12}
    assert parse_journal(encode_journal_entry(entry)) == {
        "MESSAGE": "two\nlines",
        "PRIORITY": "3",
        "IDB_STATS_ROWS": "12",
    }


def test_collect_under_systemd_sends_journal_fields_and_status(dsn: str, tmp_path: Path) -> None:
    from helpers import HARVEST, load_week

    load_week(dsn)
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(tmp_path / "journal.sock"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    stderr_file = tmp_path / "stderr"
    with stderr_file.open("w") as err:
        st = os.fstat(err.fileno())
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("IDB_STATS_")},
            "IDB_STATS_SOURCE_DSN": dsn,
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
            "IDB_STATS_JOURNAL_SOCKET": str(tmp_path / "journal.sock"),
            "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        }
        subprocess.run(
            [
                sys.executable,
                "-m",
                "idb_stats.cli",
                "collect-stats",
                "--from",
                str(HARVEST[0]),
                "--to",
                str(HARVEST[1]),
            ],
            env=env,
            stderr=err,
            check=True,
            cwd=ROOT,
            timeout=120,
        )
    journal.setblocking(False)
    entries = []
    while True:
        try:
            entries.append(parse_journal(journal.recv(1 << 20)))
        except BlockingIOError:
            break
    days = [e for e in entries if "IDB_STATS_HARVEST_DATE" in e and "IDB_STATS_ROWS" in e]
    assert [e["IDB_STATS_HARVEST_DATE"] for e in days] == [str(HARVEST[0]), str(HARVEST[1])]
    for e in days:
        assert e["PRIORITY"] == "6" and e["SYSLOG_IDENTIFIER"] == "idb-stats"
        for field in ("ENTRIES", "RECORDSETS", "SKIPPED", "SECONDS", "RUN_ID"):
            assert f"IDB_STATS_{field}" in e
        assert int(e["IDB_STATS_ROWS"]) > 0
    assert stderr_file.read_text() == ""  # everything went to the journal
    finished = entries[-1]
    assert re.search(r"finished: 2 days, [\d,]+ rows in [\d.]+ s$", finished["MESSAGE"]), finished
    assert float(finished["IDB_STATS_SECONDS"]) > 0
    notify.setblocking(False)
    first, last = notify.recv(4096).decode(), notify.recv(4096).decode()
    # The backfill's progress: elapsed, rate and (until the last day) the time left.
    assert re.match(
        rf"STATUS={HARVEST[0]}: 1/2 days, [\d.k]+ rows, [\d.]+ s elapsed, [\d.]+ days/(s|min|h|d), "
        r"ETA [\d.]+ s$",
        first,
    ), first
    assert re.match(rf"STATUS={HARVEST[1]}: 2/2 days, [\d.k]+ rows, [\d.]+ s elapsed, [^,]+/[a-z]+$", last), (
        last
    )

    # --log-format json writes the very fields the journal received, one object per line.
    as_json = subprocess.run(
        [
            sys.executable,
            "-m",
            "idb_stats.cli",
            "--log-format",
            "json",
            "collect-stats",
            "-d",
            str(HARVEST[0]),
        ],
        env={k: v for k, v in env.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    (day,) = [e for e in map(json.loads, as_json.stderr.splitlines()) if "IDB_STATS_HARVEST_DATE" in e]
    assert set(day) - {"TIMESTAMP"} == set(days[0])
