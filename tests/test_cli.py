"""The command line as operators use it: real processes, real exit codes, no secrets shown."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import HARVEST, ROOT, exported_documents, insert_rows, load_week, reference, run

from idb_stats.cli import cli
from idb_stats.collect import Selection, collect
from idb_stats.config import load_config
from idb_stats.errors import IdbStatsError
from idb_stats.pg import run_lock
from idb_stats.stores import open_store


def test_every_command_is_documented() -> None:
    usage = (ROOT / "docs" / "usage.md").read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    for name, command in cli.commands.items():
        assert command.help and len(command.help) > 20, f"{name} has no help text"
        assert f"| `idb-stats {name}" in usage, f"{name} is not in docs/usage.md's table"
        assert f"idb-stats {name}" in usage + operations, f"{name} is not documented"


def test_readme_first_screen_says_what_it_is_and_how_to_start() -> None:
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:40])
    assert "usage statistics" in first_screen and "idb-stats demo" in first_screen
    assert len(readme.splitlines()) <= 100  # read in five minutes; the details live in docs/
    for heading in (
        "## Try it, then test it",
        "## Quick start against your own database",
        "## Where to go next",
    ):
        assert heading in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
    for doc in (ROOT / "docs").glob("*.md"):  # links between the documents resolve too
        for link in re.findall(r"\]\(([a-z_]+\.md)", doc.read_text()):
            assert (ROOT / "docs" / link).is_file(), (doc.name, link)


def test_config_errors_are_listed_together(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[source]\ntimezone = "Mars/Olympus"\nstats_table = "drop table"\n'
        '[store]\nkind = "mongo"\n[collect]\nmax_skipped_share = 3\njobs = 0\nbogus = 1\n'
    )
    result = run("check-config", "--config", str(config))
    assert result.returncode == 3
    for needle in (
        "Mars/Olympus",
        "drop table",
        "mongo",
        "max_skipped_share",
        "collect.jobs",
        "collect.bogus",
        "source.dsn",
    ):
        assert needle in result.stderr


def test_precedence_flag_over_env_over_file_and_secrets_hidden(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[source]\ndsn = "postgresql://reader:file-secret@db/telemetry"\n'
        '[store]\nkind = "elasticsearch"\nurl = "http://file:9200"\napi_key = "key-secret"\n'
    )
    env = {
        "IDB_STATS_STORE": "opensearch",
        "IDB_STATS_STORE_URL": "https://user:env-secret@os:9200",
        "IDB_STATS_SOURCE_DSN": "host=db password=dsn-secret dbname=t",
    }
    shown = json.loads(run("check-config", "--config", str(config), env=env).stdout)
    assert shown["store"]["kind"] == "opensearch" and shown["store"]["url"] == "https://user:***@os:9200"
    assert shown["source"]["dsn"] == "host=db password=*** dbname=t"
    flagged = run("check-config", "--config", str(config), "--store", "postgres", env=env)
    assert json.loads(flagged.stdout)["store"]["kind"] == "postgres"
    for result in (flagged, run("check-config", "--config", str(config), env=env)):
        assert "secret" not in result.stdout + result.stderr
    refused = run("check-config", "--store-url", "https://u:pw@os:9200", env=env)
    assert refused.returncode == 3 and "pw" not in refused.stderr.replace("pw@", "")


def test_collect_export_totals_status_through_the_cli(dsn: str) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    dry = run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert [json.loads(line)["harvest_date"] for line in dry.stdout.splitlines()] == [
        str(HARVEST[0]),
        str(HARVEST[1]),
    ]
    untouched = json.loads(run("status", "--json", env=env).stdout)  # a dry run writes nothing
    assert untouched["last_complete_harvest_date"] is None and untouched["last_run"] is None
    done = run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), env=env)
    assert done.returncode == 0, done.stderr
    assert re.search(
        rf"{HARVEST[0]}: \d+ rows, \d+ entries, \d+ recordsets, "
        r"(\d+ (recordset|publisher) page views, )*0 skipped",
        done.stderr,
    )
    assert "recordset page views" in done.stderr and "publisher page views" in done.stderr
    exported = run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), env=env)
    expected = [doc for h in HARVEST for doc in reference(dsn, h)[0]]
    assert exported_documents(exported.stdout) == expected
    some = expected[0]["recordset_id"]
    totals = [json.loads(line) for line in run("totals", some, env=env).stdout.splitlines()]
    assert [t["recordset_id"] for t in totals] == [some]
    status = json.loads(run("status", "--json", env=env).stdout)
    assert status["last_complete_harvest_date"] == str(HARVEST[-1]) and status["missing_days"] == []
    assert status["last_run"]["outcome"] == "ok"
    assert run("status", "--max-lag", "100000", env=env).returncode == 0
    lagging = run("status", "--max-lag", "1", env=env)
    assert lagging.returncode == 8 and "lag" in lagging.stderr


def test_skipped_rows_over_threshold_exit_6_and_write_nothing(dsn: str) -> None:
    insert_rows(
        dsn,
        [
            (datetime(2020, 2, 17, 5), "search", "records", None, None, {"rs": 1}),
            (datetime(2020, 2, 17, 6), "search", "records", None, None, {"rs": -4}),
        ],
    )
    result = run("collect-stats", "-d", "2020-02-18", env={"IDB_STATS_SOURCE_DSN": dsn})
    assert result.returncode == 6
    assert "bad_hit_count" in result.stderr and "nothing was written" in result.stderr
    config = load_config(overrides={"source.dsn": dsn, "collect.max_skipped_share": 0.5}, environ={})
    collect(config, Selection(day=date(2020, 2, 18)))
    store = open_store(config)
    assert store.completed_days()[date(2020, 2, 18)]["skipped"] == 1
    store.close()


def test_catch_up_refuses_a_long_span(dsn: str) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("collect-stats", "-d", str(HARVEST[0]), env=env).returncode == 0
    result = run("collect-stats", env=env)  # from 2020 to today: years
    assert result.returncode == 9 and "--force-span" in result.stderr


def test_unreachable_source_and_store_have_their_codes(dsn: str) -> None:
    bad_source = run("collect-stats", env={"IDB_STATS_SOURCE_DSN": "host=127.0.0.1 port=1 password=hunter2"})
    assert bad_source.returncode == 4 and "hunter2" not in bad_source.stderr
    load_week(dsn)  # a telemetry database with its tables: only the store is wrong
    bad_store = run(
        "collect-stats",
        env={
            "IDB_STATS_SOURCE_DSN": dsn,
            "IDB_STATS_STORE": "opensearch",
            "IDB_STATS_STORE_URL": "http://127.0.0.1:1",
        },
    )
    assert bad_store.returncode == 5


def test_lock_held_exits_7(dsn: str) -> None:
    load_week(dsn)
    config = load_config(overrides={"source.dsn": dsn}, environ={})
    store = open_store(config)
    with run_lock(config, store.identity, 0):
        result = run(
            "collect-stats", "-d", str(HARVEST[0]), "--lock-timeout", "0.5", env={"IDB_STATS_SOURCE_DSN": dsn}
        )
    store.close()
    assert result.returncode == 7 and "lock" in result.stderr


def test_import_round_trip_through_files(dsn: str, tmp_path: Path) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), env=env)
    dump = tmp_path / "export.ndjson"
    assert (
        run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), "-o", str(dump), env=env).returncode
        == 0
    )
    config = tmp_path / "restore.toml"
    config.write_text('[store]\nschema = "restored"\n')
    assert run("import", "--config", str(config), str(dump), env=env).returncode == 0
    again = run(
        "export", "--config", str(config), "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), env=env
    )
    assert again.stdout == dump.read_text()


@pytest.mark.parametrize("args", [["--help"], ["collect-stats", "--help"]])
def test_help_lists_exit_codes(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 0 and "Exit codes" in result.stdout


def _error_types(base: type[IdbStatsError]) -> list[type[IdbStatsError]]:
    found: list[type[IdbStatsError]] = []
    for sub in base.__subclasses__():
        found += [sub, *_error_types(sub)]
    return found


def test_every_command_help_has_the_exit_code_table_of_every_error_type() -> None:
    import importlib
    import pkgutil

    import idb_stats
    from idb_stats.errors import EXIT_CODE_MEANINGS

    for module in pkgutil.walk_packages(idb_stats.__path__, "idb_stats."):
        importlib.import_module(module.name)  # every error type defined anywhere
    codes = {int(t.exit_code) for t in _error_types(IdbStatsError)}
    assert codes and codes <= set(EXIT_CODE_MEANINGS), codes - set(EXIT_CODE_MEANINGS)
    assert {130, 143} <= set(EXIT_CODE_MEANINGS)  # interrupt.Interrupted's
    runner = CliRunner()
    for name in cli.commands:
        shown = runner.invoke(cli, [name, "--help"], terminal_width=10_000).stdout
        for code, meaning in EXIT_CODE_MEANINGS.items():
            assert f"{code} {meaning}" in " ".join(shown.split()), (name, code)


def test_options_are_documented_and_required_ones_marked() -> None:
    runner = CliRunner()
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"{name} {param.opts[0]} has no help"
    for name in ("report", "export"):
        shown = " ".join(runner.invoke(cli, [name, "--help"]).stdout.split())
        assert "First harvest date (inclusive). [required]" in shown, name
        missing = runner.invoke(
            cli, [name, "--to", "2020-02-18", "--out", "x"] if name == "report" else [name]
        )
        assert missing.exit_code == 2 and "Missing option '--from'" in missing.output


def test_config_path_from_idb_stats_config(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('[source]\ndsn = "host=db dbname=t"\n[store]\nschema = "from_env_file"\n')
    runner = CliRunner()
    shown = runner.invoke(cli, ["check-config"], env={"IDB_STATS_CONFIG": str(config)})
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["store"]["schema"] == "from_env_file"
    as_text = runner.invoke(cli, ["check-config", "--format", "text"], env={"IDB_STATS_CONFIG": str(config)})
    assert 'store.schema = "from_env_file"' in as_text.stdout.splitlines()
    # The flag still wins over the variable.
    other = tmp_path / "other.toml"
    other.write_text('[source]\ndsn = "host=db dbname=t"\n')
    flagged = runner.invoke(
        cli, ["check-config", "--config", str(other)], env={"IDB_STATS_CONFIG": str(config)}
    )
    assert json.loads(flagged.stdout)["store"]["schema"] == "idb_stats"


def test_completion_script_is_what_the_docs_say() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "_IDB_STATS_COMPLETE=bash_source idb-stats" in operations
    # The installed entry point, as the docs run it (click names the variable after the program).
    import os
    import subprocess
    import sys

    script = subprocess.run(
        [str(Path(sys.executable).parent / "idb-stats")],
        env={**os.environ, "_IDB_STATS_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert script.returncode == 0 and "_idb_stats_completion" in script.stdout, script.stderr
