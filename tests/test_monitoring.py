"""Monitoring that plugs in, against real stores: `status --format nagios` exit codes and states
as a Nagios check run sees them, Prometheus text from every store kind parsed by the official
client's parser, the textfile written after each run, and JSON log lines."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from helpers import DAYS, HARVEST, MakeConfig, collect, insert_rows, load_week, random_rows, run
from prometheus_client.parser import text_string_to_metric_families

from idb_stats import embedded, monitoring
from idb_stats.cli import cli
from idb_stats.status import status


def metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def run_outcome(parsed: dict[Any, float], command: str) -> str:
    (current,) = [
        dict(labels)["outcome"]
        for (name, labels), value in parsed.items()
        if name == "idb_stats_last_run_outcome" and dict(labels)["command"] == command and value == 1
    ]
    return current


def nagios(env: dict[str, str], *thresholds: str) -> tuple[int, str]:
    result = run("status", "--format", "nagios", *thresholds, env=env)
    assert result.stdout.count("\n") == 1, result.stdout + result.stderr
    return result.returncode, result.stdout.strip()


def test_nagios_check_maps_lag_failures_and_an_unreachable_store_to_states(dsn: str, tmp_path: Path) -> None:
    load_week(dsn)
    textfile = tmp_path / "idb_stats.prom"
    env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_METRICS_TEXTFILE": str(textfile)}
    assert run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), env=env).returncode == 0
    # The test week is years old: its lag is in the thousands of days.
    code, line = nagios(env, "--warn-lag", "100000", "--crit-lag", "100000")
    assert code == 0 and line.startswith(f"IDB-STATS OK - complete through {HARVEST[1]}, lag "), line
    assert " | lag_days=" in line and "complete_days=2;;;0" in line and "last_day_rows=" in line
    code, line = nagios(env, "--warn-lag", "0", "--crit-lag", "100000")
    assert code == 1 and line.startswith("IDB-STATS WARNING - lag ")
    code, line = nagios(env, "--warn-lag", "0", "--crit-lag", "0")
    assert code == 2 and line.startswith("IDB-STATS CRITICAL - lag ")
    code, line = nagios(env, "--warn-lag", "3", "--crit-lag", "1")  # the check's own mistake
    assert code == 3 and line == "IDB-STATS UNKNOWN - --warn-lag 3 is above --crit-lag 1: swap them"
    assert run("status", "--warn-lag", "3", "--crit-lag", "1", env=env).returncode == 2

    parsed = metrics(textfile.read_text())  # written by the collect run
    assert run_outcome(parsed, "collect-stats") == "ok"
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idb_stats.prom"]  # no temporary left

    # A run refused for bad rows is recorded failed: CRITICAL whatever the lag, and in the textfile.
    insert_rows(dsn, random_rows(77, DAYS[2], n=60, bad=True))
    strict = tmp_path / "strict.toml"
    strict.write_text("[collect]\nmax_skipped_share = 0\n")
    failed = run("collect-stats", "-d", str(HARVEST[2]), "--config", str(strict), env=env)
    assert failed.returncode == 6, failed.stderr
    code, line = nagios(env, "--warn-lag", "100000", "--crit-lag", "100000")
    assert code == 2 and "last collect-stats failed" in line, line
    assert run_outcome(metrics(textfile.read_text()), "collect-stats") == "failed"

    # A usage mistake is refused before anything runs: the file is left as it was.
    before = textfile.stat().st_mtime_ns
    assert run("collect-stats", "-d", "2999-01-01", env=env).returncode == 2
    assert textfile.stat().st_mtime_ns == before

    # The store does not answer: UNKNOWN (3), one line; the textfile says the store is down.
    closed = {**env, "IDB_STATS_STORE_URL": f"host=127.0.0.1 port={embedded._free_port()} dbname=x"}
    code, line = nagios(closed)
    assert code == 3 and line.startswith("IDB-STATS UNKNOWN - "), line
    assert run("forget-day", str(HARVEST[0]), env=closed).returncode == 5
    assert metrics(textfile.read_text()) == {("idb_stats_up", frozenset({("store", "postgres")})): 0}


def test_prometheus_text_of_every_store_kind_parses(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[2])
    shown = status(config)
    parsed = metrics(monitoring.prometheus_text(shown))
    store = ("store", config.store)
    assert parsed[("idb_stats_up", frozenset({store}))] == 1
    assert parsed[("idb_stats_complete_days", frozenset({store}))] == 3
    assert parsed[("idb_stats_lag_days", frozenset({store}))] == shown.lag_days
    assert (
        shown.last_day_rows and parsed[("idb_stats_last_day_rows", frozenset({store}))] == shown.last_day_rows
    )
    assert run_outcome(parsed, "collect-stats") == "ok"
    midnight = (HARVEST[2] - HARVEST[0]).days * 86400 + parsed_midnight(HARVEST[0])
    assert parsed[("idb_stats_last_complete_day_timestamp_seconds", frozenset({store}))] == midnight


def parsed_midnight(day: Any) -> float:
    from datetime import UTC, datetime, time

    return datetime.combine(day, time(), UTC).timestamp()


def test_status_formats_in_process(dsn: str) -> None:
    load_week(dsn)
    runner = CliRunner()
    env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_LOG_FORMAT": "text"}
    assert runner.invoke(cli, ["collect-stats", "-d", str(HARVEST[0])], env=env).exit_code == 0
    as_json = json.loads(runner.invoke(cli, ["status", "--json"], env=env).stdout)
    assert as_json == json.loads(runner.invoke(cli, ["status", "--format", "json"], env=env).stdout)
    assert as_json["last_complete_harvest_date"] == str(HARVEST[0]) and as_json["damaged_days"] == []
    assert as_json["last_runs"]["collect-stats"]["outcome"] == "ok"
    text = runner.invoke(cli, ["status"], env=env).stdout
    assert f"last complete day:     {HARVEST[0]}" in text and "last collect-stats:    ok " in text
    prometheus = runner.invoke(cli, ["status", "--format", "prometheus"], env=env).stdout
    assert run_outcome(metrics(prometheus), "collect-stats") == "ok"
    both = runner.invoke(cli, ["status", "--json", "--format", "prometheus"], env=env)
    assert both.exit_code == 2 and "--json is --format json" in both.output


def test_collect_with_log_format_json_writes_only_json_lines(dsn: str) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    for args, extra in (
        (["--log-format", "json", "collect-stats"], {}),
        (["collect-stats", "--log-format", "json"], {}),
        (["collect-stats"], {"IDB_STATS_LOG_FORMAT": "json"}),
    ):
        result = run(*args, "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), env={**env, **extra})
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stderr.splitlines()]
        assert lines and all(isinstance(entry, dict) for entry in lines)
        days = [e for e in lines if "IDB_STATS_ROWS" in e and "IDB_STATS_HARVEST_DATE" in e]
        assert [e["IDB_STATS_HARVEST_DATE"] for e in days] == [str(HARVEST[0]), str(HARVEST[1])]
        for entry in days:
            assert entry["PRIORITY"] == 6 and entry["SYSLOG_IDENTIFIER"] == "idb-stats"
            for field in ("ENTRIES", "RECORDSETS", "SKIPPED", "SECONDS", "RUN_ID"):
                assert f"IDB_STATS_{field}" in entry
        finished = lines[-1]
        assert "finished" in finished["MESSAGE"] and float(finished["IDB_STATS_SECONDS"]) > 0
    # A failure is a JSON line too: ours (a day not over yet) and click's (a malformed date).
    for args in (["-d", "2999-01-01"], ["-d", "yesterday"]):
        refused = run("--log-format", "json", "collect-stats", *args, env=env)
        assert refused.returncode == 2
        (line,) = [json.loads(line) for line in refused.stderr.splitlines()]
        assert line["PRIORITY"] == 3 and line["IDB_STATS_EXIT_CODE"] == 2 and args[1] in line["MESSAGE"]


def test_textfile_setting_is_checked(tmp_path: Path, dsn: str) -> None:
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    for value, said in (
        (str(tmp_path / "missing" / "idb.prom"), "no such directory"),
        (str(tmp_path / "idb.txt"), "ending in .prom"),
        ("idb.prom", "an absolute path"),
    ):
        result = run("check-config", env={**env, "IDB_STATS_METRICS_TEXTFILE": value})
        assert result.returncode == 3 and "monitoring.textfile" in result.stderr and said in result.stderr
