"""Long runs tell as they go: import and verify hand each day over as soon as it is done (the store
already holds it, the next is not started), and every run's last line gives its duration."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

from click.testing import CliRunner
from helpers import HARVEST, MakeConfig, other_store, published, snapshot

from idb_stats import verify
from idb_stats.cli import cli
from idb_stats.importing import import_documents
from idb_stats.legacy import DayOutcome
from idb_stats.model import DayStats
from idb_stats.stores import open_store


def test_import_hands_each_day_over_once_it_is_published(make_config: MakeConfig, dsn: str) -> None:
    _, daily = published(make_config, dsn)
    target = other_store(make_config, "progress")
    seen: list[tuple[date, list[date], float]] = []

    def on_day(outcome: DayOutcome, stats: DayStats) -> None:
        with open_store(target) as store:  # what the store holds when the day is reported
            seen.append((outcome.harvest_date, sorted(store.completed_days()), stats.seconds))

    outcomes = import_documents(target, daily, on_day=on_day)
    assert [o.harvest_date for o in outcomes] == HARVEST
    assert [(day, complete) for day, complete, _ in seen] == [
        (d, HARVEST[: i + 1]) for i, d in enumerate(HARVEST)
    ]
    assert all(seconds > 0 for _, _, seconds in seen)
    assert snapshot(target)[0] == daily


def test_verify_hands_each_day_over_with_its_place_in_the_run(make_config: MakeConfig, dsn: str) -> None:
    config, _ = published(make_config, dsn)
    seen: list[tuple[date, str, int, int, bool]] = []
    verify.verify(
        config,
        HARVEST[1],
        None,
        on_day=lambda result, done, total, after_repair: seen.append(
            (result.harvest_date, result.outcome, done, total, after_repair)
        ),
    )
    days = HARVEST[1:]
    assert seen == [(d, "agrees", i, len(days), False) for i, d in enumerate(days, 1)]


def test_import_and_verify_log_each_day_and_their_duration(tmp_path: Path, dsn: str) -> None:
    from helpers import load_week

    load_week(dsn)
    runner = CliRunner()
    env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_LOG_FORMAT": "text"}
    assert (
        runner.invoke(
            cli, ["collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1])], env=env
        ).exit_code
        == 0
    )
    dump = tmp_path / "week.ndjson"
    exported = runner.invoke(
        cli, ["export", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), "-o", str(dump)], env=env
    )
    assert exported.exit_code == 0, exported.output
    copy = tmp_path / "copy.toml"
    copy.write_text('[store]\nschema = "progress_copy"\n')
    imported = runner.invoke(cli, ["import", "--config", str(copy), str(dump)], env=env)
    assert imported.exit_code == 0, imported.output
    # Reading the file through (every line checked before anything is written) is a step of its own.
    assert re.search(r"week\.ndjson checked: [\d,]+ documents in [\d.]+ s$", imported.stderr.splitlines()[0])
    day_lines = [line for line in imported.stderr.splitlines() if " imported " in line]
    assert [re.search(r"imported (\S+):", line).group(1) for line in day_lines] == [str(d) for d in HARVEST]  # type: ignore[union-attr]
    assert all(re.search(r"written, [\d.]+ s$", line) for line in day_lines), day_lines
    assert re.search(
        r"import: 4 days, \d+ documents written in [\d.]+ s$",
        imported.stderr.splitlines()[-1],
    )

    checked = runner.invoke(cli, ["verify", "--config", str(copy)], env=env)
    assert checked.exit_code == 0, checked.output
    logged = [line for line in checked.stderr.splitlines() if "agrees" in line]
    assert [line.split()[3].rstrip(":") for line in logged] == [str(d) for d in HARVEST]
    assert re.search(r"verify: 4 days checked in [\d.]+ s$", checked.stderr.splitlines()[-1])


def test_demo_ends_with_a_short_table_and_what_to_try_next() -> None:
    result = CliRunner().invoke(cli, ["demo", "--days", "2", "--rows-per-day", "200"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("recordset "))
    assert lines[header].split() == [
        "recordset",
        "days",
        "search",
        "seen",
        "view",
        "download",
        "media",
        "view",
    ]
    table = lines[header + 1 : lines.index("what to try next:") - 1]
    assert 1 <= len(table) <= 10 and all(len(line) <= 110 for line in lines[header:])
    searches = [int(line.split()[2].replace(",", "")) for line in table]
    assert searches == sorted(searches, reverse=True)
    assert lines[-1].strip().startswith("your own telemetry database") and "idb-stats status" in result.stdout


def test_collect_prints_each_day_as_json_with_format_json(dsn: str) -> None:
    from helpers import load_week

    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_LOG_FORMAT": "text"}
    result = CliRunner().invoke(
        cli, ["collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    days = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["harvest_date"] for d in days] == [str(HARVEST[0]), str(HARVEST[1])] and all(
        d["rows"] for d in days
    )
    again = CliRunner().invoke(cli, ["collect-stats", "-d", str(HARVEST[0])], env=env)
    assert again.exit_code == 0 and again.stdout == ""  # text: the log on stderr, nothing on stdout
