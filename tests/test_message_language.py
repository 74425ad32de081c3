"""Errors are classified by SQLSTATE, never by the server's message, which PostgreSQL writes in
its lc_messages language: a statement timeout in German is still exit 3 (telemetry) or the store's
timeout hint (exit 5), and a server error that merely says "statement timeout" in English is not one.

A server of our own runs with LANGUAGE=de, so sessions with lc_messages = 'C.utf8' get the German
translation where Debian's postgresql package installed it (/usr/share/locale/de/LC_MESSAGES);
where it did not, that test skips, saying so, and the made-up messages below (real server errors
raised with SQLSTATE 57014 and text in no language we could match) carry the proof alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import psycopg2
import pytest
from helpers import HARVEST, execute, load_week, run

from idb_stats import embedded

DAY = str(HARVEST[0])


@pytest.fixture(scope="module")
def german_server() -> Iterator[embedded.EmbeddedPostgres]:
    with mock.patch.dict(os.environ, {"LANGUAGE": "de"}), embedded.running() as server:
        yield server


def german_database(server: embedded.EmbeddedPostgres, name: str) -> str:
    dsn = server.create_database(name)
    execute(dsn, f"ALTER DATABASE {name} SET lc_messages = 'C.utf8'")
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1/0")
    except psycopg2.Error as exc:
        english = "division by zero" in str(exc)
    finally:
        conn.close()
    if english:
        pytest.skip("this PostgreSQL has no German translation installed (postgres-*.mo): no other language")
    return dsn


def slow_view(dsn: str, tmp_path: Path) -> Path:
    """The telemetry read through a view that sleeps 20 ms a row."""
    load_week(dsn)
    execute(
        dsn,
        "CREATE VIEW slow_stats AS SELECT s.*, s.xmin FROM stats s "
        "CROSS JOIN LATERAL pg_sleep(0.02 + 0 * s.id) z",
    )
    toml = tmp_path / "config.toml"
    toml.write_text('[source]\nstats_table = "slow_stats"\n')
    return toml


def test_a_telemetry_statement_timeout_in_german_is_exit_3(
    german_server: embedded.EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = german_database(german_server, "telemetry_de")
    toml = slow_view(dsn, tmp_path)
    execute(dsn, "ALTER DATABASE telemetry_de SET statement_timeout = '200ms'")
    result = run("collect-stats", "-d", DAY, "--config", str(toml), env={"IDB_STATS_SOURCE_DSN": dsn})
    assert result.returncode == 3, result.stderr
    assert "Zeitüberschreitung" in result.stderr  # the server spoke German
    assert (
        "cancelled the query at its statement_timeout" in result.stderr and "went away" not in result.stderr
    )


def test_a_store_statement_timeout_in_german_names_the_setting(
    german_server: embedded.EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = german_database(german_server, "store_de")
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("init", env=env).returncode == 0
    slow_trigger(dsn, "PERFORM pg_sleep(2)")
    toml = tmp_path / "config.toml"
    toml.write_text("[store]\nstatement_timeout = 0.3\n")
    result = run("collect-stats", "-d", DAY, "--config", str(toml), env=env)
    assert result.returncode == 5, result.stderr
    assert "Zeitüberschreitung" in result.stderr
    assert "store.statement_timeout = 0.3 s" in result.stderr


def slow_trigger(dsn: str, body: str) -> None:
    """A trigger on the store's day markers running `body` (plpgsql) before each insert."""
    execute(
        dsn,
        f"CREATE FUNCTION marker_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body}; "
        "RETURN NEW; END $$; CREATE TRIGGER marker BEFORE INSERT ON idb_stats.days "
        "FOR EACH ROW EXECUTE FUNCTION marker_trigger()",
    )


CANCELLED = "RAISE EXCEPTION USING ERRCODE = 'query_canceled', MESSAGE = 'Anfrage storniert (erfunden)'"
# Another error whose English text says "statement timeout": matching the text would misread it.
NOT_CANCELLED = "RAISE EXCEPTION 'canceling statement due to statement timeout'"


@pytest.mark.parametrize(("body", "code"), [(CANCELLED, 3), (NOT_CANCELLED, 6)])
def test_the_telemetry_error_is_told_by_sqlstate_not_text(
    dsn: str, tmp_path: Path, body: str, code: int
) -> None:
    load_week(dsn)
    execute(
        dsn,
        f"CREATE FUNCTION fails() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN {body}; END $$; "
        "CREATE VIEW failing_stats AS SELECT s.*, s.xmin FROM stats s WHERE fails()",
    )
    toml = tmp_path / "config.toml"
    toml.write_text('[source]\nstats_table = "failing_stats"\n')
    result = run("collect-stats", "-d", DAY, "--config", str(toml), env={"IDB_STATS_SOURCE_DSN": dsn})
    assert result.returncode == code, result.stderr
    assert ("lift it for idb-stats' role" in result.stderr) == (code == 3), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("body", "hint"), [(CANCELLED, True), (NOT_CANCELLED, False)])
def test_the_store_error_is_told_by_sqlstate_not_text(
    dsn: str, tmp_path: Path, body: str, hint: bool
) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn}
    assert run("init", env=env).returncode == 0
    slow_trigger(dsn, body)
    result = run("collect-stats", "-d", DAY, env=env)
    assert result.returncode == 5, result.stderr
    assert ("store.statement_timeout = 3600 s" in result.stderr) == hint, result.stderr
