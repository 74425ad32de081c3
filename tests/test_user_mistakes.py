"""Every user mistake: its documented exit code and one line saying what to do, before any lock,
connection or write. Commands run as real processes against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from helpers import HARVEST, ROOT, exported_documents, holding_lock, insert_rows, load_week, run

from idb_stats.config import load_config

# Nothing listens on port 1: a command that connected would exit 4, not the code under test.
CLOSED = {"IDB_STATS_SOURCE_DSN": "host=127.0.0.1 port=1 user=postgres dbname=nothing"}


def schemas(dsn: str) -> set[str]:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT nspname FROM pg_namespace")
        names = {row[0] for row in cur}
    conn.close()
    return names


def collected(dsn: str) -> dict[str, str]:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), env=env).returncode == 0
    return env


@pytest.mark.parametrize(
    "command",
    [
        ["collect-stats"],
        ["export"],
        ["show", "00000001-0000-4000-8000-000000000000"],
        ["report", "--out", "/nonexistent/never-made"],
    ],
)
def test_reversed_range_exits_2_before_connecting(command: list[str]) -> None:
    result = run(*command, "--from", "2020-02-10", "--to", "2020-02-01", env=CLOSED)
    assert result.returncode == 2, result.stderr
    assert "--from 2020-02-10 is after --to 2020-02-01: swap them" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_telemetry_database_without_tables_exits_3_and_creates_nothing(dsn: str) -> None:
    result = run("collect-stats", "-d", "2020-02-18", env={"IDB_STATS_SOURCE_DSN": dsn})
    assert result.returncode == 3, result.stderr
    assert "has no table stats (source.stats_table)" in result.stderr and "Traceback" not in result.stderr
    assert "idb_stats" not in schemas(dsn)  # the store's schema was not made in the wrong database


# Hides an installed client from one process, as on a machine where the extra was not installed.
WITHOUT = "import sys; sys.modules[{module!r}] = None; sys.argv[0] = 'idb-stats'; " + (
    "from idb_stats.cli import main; main()"
)


@pytest.mark.parametrize(
    ("kind", "module"), [("opensearch", "opensearchpy"), ("elasticsearch", "elasticsearch")]
)
@pytest.mark.parametrize("command", [["collect-stats"], ["check-config", "--connect"]])
def test_missing_client_names_the_pip_extra(dsn: str, kind: str, module: str, command: list[str]) -> None:
    load_week(dsn)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IDB_STATS_")},
        "IDB_STATS_SOURCE_DSN": dsn,
        "IDB_STATS_STORE": kind,
        "IDB_STATS_STORE_URL": "http://127.0.0.1:1",
    }
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT.format(module=module), *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr
    assert f"pip install 'idb-stats[{kind}]'" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def run_unprivileged(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI without the power to ignore file modes: as root, with CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH dropped (setpriv), so a mode-000 directory is closed to it too."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("IDB_STATS_") and k != "JOURNAL_STREAM"}
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("running as root and setpriv (util-linux) is missing: file modes cannot be tested")
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*drop, sys.executable, "-m", "idb_stats.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        cwd=ROOT,
        timeout=120,
    )


def test_report_into_an_unwritable_directory_exits_2(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    result = run_unprivileged(
        "report", "--from", "2020-02-01", "--to", "2020-02-10", "--out", str(locked / "site"), env=CLOSED
    )
    assert result.returncode == 2, result.stderr
    assert f"--out {locked / 'site'}: cannot write there (Permission denied)" in result.stderr


def test_report_refuses_a_foreign_directory_and_replaces_its_own(dsn: str, tmp_path: Path) -> None:
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = run("report", "--from", "2020-02-01", "--to", "2020-02-10", "--out", str(foreign), env=CLOSED)
    assert result.returncode == 2 and "not empty and not an idb-stats report (notes.txt)" in result.stderr
    assert (foreign / "notes.txt").read_text() == "mine"
    (foreign / "notes.txt").unlink()
    (foreign / "recordsets").mkdir()
    (foreign / "recordsets" / "mine.html").write_text("<p>not a report page</p>")
    looks_alike = run(
        "report", "--from", "2020-02-01", "--to", "2020-02-10", "--out", str(foreign), env=CLOSED
    )
    assert looks_alike.returncode == 2 and "not an idb-stats report" in looks_alike.stderr

    env = collected(dsn)
    site = tmp_path / "site"
    first = run("report", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), "--out", str(site), env=env)
    assert first.returncode == 0, first.stderr
    pages = sorted(p.name for p in (site / "recordsets").iterdir())
    stale = site / "recordsets" / "ffffffff-0000-4000-8000-000000000000.html"
    stale.write_text((site / "recordsets" / pages[0]).read_text())  # a page of an earlier range
    again = run("report", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), "--out", str(site), env=env)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (site / "recordsets").iterdir()) == pages  # the stale page is gone


def test_report_of_an_empty_range_says_1_page(dsn: str, tmp_path: Path) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("init", env=env).returncode == 0
    result = run(
        "report", "--from", "2001-01-01", "--to", "2001-01-02", "--out", str(tmp_path / "r"), env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1 page, ")


@pytest.mark.parametrize("through", ["file", "pipe"])
def test_malformed_import_names_the_line_and_writes_nothing(dsn: str, tmp_path: Path, through: str) -> None:
    env = collected(dsn)
    dump = run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), env=env).stdout.splitlines()
    lines = [*dump[:2], '{"recordset_id": "x", "harvest_date": ', *dump[2:]]
    target = tmp_path / "restore.toml"
    target.write_text('[store]\nschema = "restored"\n')
    bad = tmp_path / "bad.ndjson"
    bad.write_text("\n".join(lines) + "\n")
    if through == "file":
        result = run("import", "--config", str(target), str(bad), env=env)
    else:
        result = run("import", "--config", str(target), env=env, input=bad.read_text())
    assert result.returncode == 2, result.stderr
    assert "line 3: not valid JSON" in result.stderr and "nothing was imported" in result.stderr
    assert "restored" not in schemas(dsn)  # no lock, no init, no day of the good lines before it


def test_import_refuses_documents_that_are_not_daily_documents(dsn: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"recordset_id": "a", "harvest_date": "2020-02-18"}\n[1, 2]\n')
    result = run("import", str(bad), env={"IDB_STATS_SOURCE_DSN": dsn})
    assert result.returncode == 2 and "line 2: not a daily document" in result.stderr
    assert "idb_stats" not in schemas(dsn)


def _tamper(doc: dict[str, Any], how: str) -> None:
    """Break one rule a document collect-stats made always keeps, in its first active block."""
    rt, ty = next(
        (rt, ty)
        for rt in ("records", "mediarecords")
        for ty in (("view", "seen") if how != "geocodes" else ("search", "view", "seen"))
        if doc[rt][ty]["count"]
    )
    block = doc[rt][ty]
    if how == "total":
        block["total"] += 1
    elif how == "geocodes":
        block["geocodes"][0]["count"] += 1
    else:
        block["items"][0]["count"] += 1


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("total", r"(view|seen) total \d+ is not its count \d+ \(one hit per (view|seen)\)"),
        ("geocodes", r"geocode counts add up to \d+, not its total \d+"),
        ("items", r"item counts add up to \d+, not its count \d+"),
    ],
)
def test_import_refuses_a_document_whose_numbers_contradict_the_rules(
    dsn: str, tmp_path: Path, how: str, message: str
) -> None:
    """A view is one hit: total == count; every entry has a geocode and a view or seen entry a
    record, so their lists add up. A document that says otherwise was not made by collect-stats."""
    env = collected(dsn)
    lines = run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[0]), env=env).stdout.splitlines()
    doc = json.loads(lines[3])
    _tamper(doc, how)
    lines[3] = json.dumps(doc)
    bad = tmp_path / "bad.ndjson"
    bad.write_text("\n".join(lines) + "\n")
    (tmp_path / "restore.toml").write_text('[store]\nschema = "restored"\n')
    result = run("import", "--config", str(tmp_path / "restore.toml"), str(bad), env=env)
    assert result.returncode == 2, result.stderr
    assert re.search(r"line 4: (records|mediarecords)\.", result.stderr), result.stderr
    assert re.search(message, result.stderr) and "nothing was imported" in result.stderr, result.stderr
    assert "restored" not in schemas(dsn)


def test_unquoted_space_in_a_dsn_password_exits_3_without_showing_it() -> None:
    result = run("status", env={"IDB_STATS_SOURCE_DSN": "host=127.0.0.1 port=1 password=open sesame"})
    assert result.returncode == 3, result.stderr
    assert "single-quoted (password='a b'" in result.stderr and "percent-encoded" in result.stderr
    assert "sesame" not in result.stderr and "Traceback" not in result.stderr


def test_untraversable_credentials_directory_exits_3_naming_it(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "source-dsn").write_text("host=127.0.0.1 port=1 password=hunter2\n")
    credentials.chmod(0)
    result = run_unprivileged("status", env={"CREDENTIALS_DIRECTORY": str(credentials)})
    credentials.chmod(0o700)
    assert result.returncode == 3, result.stderr
    assert f"$CREDENTIALS_DIRECTORY {credentials}: not readable" in result.stderr
    assert "idb-stats-as-service" in result.stderr and "hunter2" not in result.stderr


def test_unknown_recordsets_are_named(dsn: str) -> None:
    env = collected(dsn)
    known = json.loads(run("totals", env=env).stdout.splitlines()[0])["recordset_id"]
    unknown = "00000000-dead-4000-8000-000000000000"
    for command in (["totals"], ["show"]):
        only_unknown = run(*command, unknown, env=env)
        assert only_unknown.returncode == 2, only_unknown.stderr
        assert f"no statistics for 1 recordset: {unknown} (check the ids)" in only_unknown.stderr
        assert only_unknown.stdout == ""
        mixed = run(*command, known, unknown, env=env)
        assert mixed.returncode == 0, mixed.stderr
        assert known in mixed.stdout and unknown in mixed.stderr and unknown not in mixed.stdout


def test_verbosity_after_the_command(dsn: str) -> None:
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    verbose = run("check-config", "-v", env=env)
    assert verbose.returncode == 0, verbose.stderr
    assert "DEBUG" in verbose.stderr and '"dsn": "host=' in verbose.stderr
    load_week(dsn)
    quiet = run("collect-stats", "-d", str(HARVEST[0]), "-q", env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""
    single = run("collect-stats", "-d", str(HARVEST[0]), env=env)
    assert "(1 day)" in single.stderr and "finished: 1 day, " in single.stderr


def test_status_without_any_day_says_so(dsn: str) -> None:
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("init", env=env).returncode == 0
    result = run("status", "--max-lag", "1", env=env)
    assert result.returncode == 8
    assert "no complete harvest date yet (--max-lag 1)" in result.stderr and "None" not in result.stderr


def test_import_waits_for_the_lock_as_long_as_told(dsn: str, tmp_path: Path) -> None:
    env = collected(dsn)
    dump = tmp_path / "export.ndjson"
    dump.write_text(run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[0]), env=env).stdout)
    config = load_config(overrides={"source.dsn": dsn}, environ={})
    with holding_lock(config):
        result = run("import", "--lock-timeout", "0.5", str(dump), env=env)
    assert result.returncode == 7 and "waited 0.5 s" in result.stderr


def test_import_refuses_deep_nesting_and_bytes_that_are_not_utf8(dsn: str, tmp_path: Path) -> None:
    for content, message in (
        (b"[" * 100_000 + b"\n", "line 1: JSON nested too deeply"),
        (b'{"recordset_id": "a", "harvest_date": "2020-02-18"}\n{"a": "\xff"}\n', "line 2: not UTF-8 text"),
    ):
        bad = tmp_path / "bad.ndjson"
        bad.write_bytes(content)
        result = run("import", str(bad), env={"IDB_STATS_SOURCE_DSN": dsn})
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_an_unencoded_at_in_a_url_password_is_refused_without_showing_it(dsn: str) -> None:
    # libpq splits the user info at the first @: "ter2@127.0.0.1" would be shown as a host name.
    url = "postgresql://postgres:hun@ter2@127.0.0.1:1/db"
    for command in (["check-config", "--connect"], ["collect-stats", "-d", str(HARVEST[0])]):
        result = run(*command, env={"IDB_STATS_SOURCE_DSN": url})
        assert result.returncode == 3 and "%40" in result.stderr, result.stderr
        assert "ter2" not in result.stdout + result.stderr and "hun" not in result.stdout + result.stderr


def test_import_refuses_a_day_not_over_and_a_document_it_cannot_take_writing_nothing(
    dsn: str, tmp_path: Path
) -> None:
    env = collected(dsn)
    exported = run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), env=env).stdout
    lines = exported.splitlines()
    future, negative = json.loads(lines[-2]), json.loads(lines[1])  # documents, inside the envelope
    future["harvest_date"] = "2099-01-01"
    negative["records"]["search"]["count"] = -5
    restore = tmp_path / "restore.toml"
    restore.write_text('[store]\nschema = "restored"\n')
    for bad, needle in ((future, "not over yet"), (negative, "bad_count")):
        file = tmp_path / "bad.ndjson"
        file.write_text("\n".join([*lines[:1], json.dumps(bad), *lines[2:]]) + "\n")
        result = run("import", str(file), "--config", str(restore), env=env)
        assert result.returncode == 2 and "line 2" in result.stderr and needle in result.stderr, result.stderr
        assert "nothing was imported" in result.stderr
        empty = run(
            "export", "--from", str(HARVEST[0]), "--to", "2099-01-01", "--config", str(restore), env=env
        )
        assert empty.returncode == 5 and empty.stdout == "", empty.stderr  # no store, no output


def test_output_that_cannot_be_written_is_a_usage_error_and_a_closed_pipe_is_quiet(dsn: str) -> None:
    env = collected(dsn)
    days = ["--from", str(HARVEST[0]), "--to", str(HARVEST[-1])]
    unwritable = run("export", *days, "-o", "/nonexistent/dir/x", env=env)
    assert unwritable.returncode == 2 and "Traceback" not in unwritable.stderr, unwritable.stderr
    base = {k: v for k, v in os.environ.items() if not k.startswith("IDB_STATS_")}
    reader = subprocess.Popen(
        [sys.executable, "-m", "idb_stats.cli", "export", *days],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**base, **env},
        cwd=ROOT,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.readline()
    reader.stdout.close()  # what `| head -1` does
    errors = reader.stderr.read().decode()
    # A command whose reader went away (EPIPE) stops at once, exit 141 and nothing said; the
    # store's half-read stream must not add a traceback on its way out.
    code = reader.wait(timeout=120)
    assert errors == "" and code == 141, (code, errors)


def test_a_day_that_breaks_the_rules_does_not_hold_back_the_rest_of_a_range(dsn: str) -> None:
    # Harvest date 2020-02-17: every row's geocode is not an object; 2020-02-18: a good day.
    insert_rows(
        dsn,
        [
            (datetime(2020, 2, 16, 5), "search", "records", None, "US", {"rs": 1}),
            (datetime(2020, 2, 17, 5), "search", "records", None, {"country": "US"}, {"rs": 2}),
        ],
    )
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    result = run("collect-stats", "--from", "2020-02-17", "--to", "2020-02-18", env=env)
    assert result.returncode == 6 and "2020-02-17" in result.stderr, result.stderr
    status = json.loads(run("status", "--json", env=env).stdout)
    assert status["last_complete_harvest_date"] == "2020-02-18"  # the good day after it was published
    assert (
        len(exported_documents(run("export", "--from", "2020-02-18", "--to", "2020-02-18", env=env).stdout))
        == 1
    )


@pytest.mark.parametrize(
    "command", [["export", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1])], ["totals"]]
)
def test_an_output_that_cannot_be_written_is_exit_2_in_one_line(dsn: str, command: list[str]) -> None:
    """/dev/full: every write fails with ENOSPC, as on a full disk."""
    env = collected(dsn)
    result = run(*command, "-o", "/dev/full", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "cannot write /dev/full: No space left on device; free space or write elsewhere" in result.stderr


def test_an_export_cut_at_a_line_boundary_is_refused_and_an_older_one_warns(dsn: str, tmp_path: Path) -> None:
    """A file cut short (a full disk, an interrupted copy) would replace its last day with part of
    it: export's closing line counts each day's documents, and import refuses a file without it or
    with other counts. A file without the opening line (an older export) imports, with a warning."""
    env = collected(dsn)
    lines = run("export", "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), env=env).stdout.splitlines()
    first_day = sum(1 for line in lines if f'"harvest_date":"{HARVEST[0]}"' in line)
    restore = tmp_path / "restore.toml"
    restore.write_text('[store]\nschema = "restored"\n')
    cut = tmp_path / "cut.ndjson"
    for kept, needle in (
        (lines[:-5], "the file ends without the export's closing line, so it was cut short"),
        (lines[: 1 + first_day], "the file ends without the export's closing line"),  # at a day's end
        ([*lines[:3], *lines[4:]], "the closing line counts other documents than the file holds"),
        ([*lines, lines[1]], "a line after the export's closing line"),
    ):
        cut.write_text("\n".join(kept) + "\n")
        result = run("import", str(cut), "--config", str(restore), env=env)
        assert result.returncode == 2, result.stderr
        assert needle in result.stderr and "nothing was imported" in result.stderr, result.stderr
        assert "restored" not in schemas(dsn)

    older = tmp_path / "older.ndjson"
    older.write_text("\n".join(lines[1:-1]) + "\n")  # as exports were before the envelope
    imported = run("import", str(older), "--config", str(restore), env=env)
    assert imported.returncode == 0, imported.stderr
    assert "has no export opening line (an older export, or another tool's): whether it is complete" in (
        imported.stderr
    )
    whole = tmp_path / "whole.ndjson"
    whole.write_text("\n".join(lines) + "\n")
    again = run("import", str(whole), "--config", str(restore), env=env)
    assert again.returncode == 0 and "opening line" not in again.stderr, again.stderr
    restored = run(
        "export", "--from", str(HARVEST[0]), "--to", str(HARVEST[1]), "--config", str(restore), env=env
    )
    assert restored.stdout.splitlines() == lines


