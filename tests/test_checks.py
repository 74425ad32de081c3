"""check-config --connect: every endpoint reached, its tables and the privileges the commands
need checked, every failure listed, against a real PostgreSQL, roles and osmem."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg2
from helpers import load_week, run

from idb_stats import embedded


def execute(dsn: str, *statements: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def as_role(dsn: str, role: str) -> str:
    return dsn.replace("user=postgres", f"user={role}")


def new_role(dsn: str) -> str:
    role = f"r_{uuid.uuid4().hex[:10]}"
    execute(dsn, f"CREATE ROLE {role} LOGIN PASSWORD 'unused-with-trust-auth'")
    return role


def lines(output: str, mark: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(mark)]


def test_all_endpoints_reachable_with_rights(dsn: str) -> None:
    load_week(dsn)
    execute(dsn, "CREATE TABLE uuids (id uuid, parent uuid, type text, deleted boolean)")
    env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_API_DSN": dsn}
    assert run("init", env=env).returncode == 0
    # Without the ingest tables monthly-report and show --publisher read, check-config says so.
    missing = run("check-config", "--connect", env=env)
    assert missing.returncode == 3 and "no table recordsets" in missing.stdout, missing.stdout
    execute(dsn, "CREATE TABLE recordsets (uuid uuid, publisher_uuid uuid, name text)")
    execute(dsn, "CREATE TABLE publishers (uuid uuid, name text)")
    result = run("check-config", "--connect", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result.stdout, "FAIL") == []
    ok = "\n".join(lines(result.stdout, "ok"))
    for needle in (
        "stats: SELECT granted",
        "queries: SELECT granted",
        "uuids: SELECT granted",
        "recordsets: SELECT granted",
        "publishers: SELECT granted",
        "idb_stats.daily owned",
    ):
        assert needle in ok


def test_role_without_rights_lists_every_missing_privilege(dsn: str) -> None:
    load_week(dsn)
    assert run("init", env={"IDB_STATS_SOURCE_DSN": dsn}).returncode == 0  # the store, owned by postgres
    role = new_role(dsn)
    execute(dsn, f"GRANT SELECT ON stats TO {role}", f"GRANT USAGE ON SCHEMA idb_stats TO {role}")
    result = run("check-config", "--connect", env={"IDB_STATS_SOURCE_DSN": as_role(dsn, role)})
    assert result.returncode == 3, result.stdout + result.stderr
    failed = "\n".join(lines(result.stdout, "FAIL"))
    assert f"{role} may not read queries: GRANT SELECT ON queries TO {role}" in failed
    assert f"{role} lacks CREATE on database" in failed
    assert f"{role} lacks CREATE on schema idb_stats" in failed
    assert f"{role} does not own idb_stats.daily" in failed
    assert f"{role} lacks SELECT, INSERT, UPDATE, DELETE on idb_stats.runs" in failed
    assert "stats: SELECT granted" in result.stdout  # what is granted is not reported missing
    assert "checks failed (FAIL above)" in result.stderr


def test_granted_writer_passes_where_it_can_work(dsn: str) -> None:
    load_week(dsn)
    role = new_role(dsn)
    database = dsn.split("dbname=")[1]
    execute(
        dsn, f"GRANT SELECT ON stats, queries TO {role}", f'GRANT CREATE ON DATABASE "{database}" TO {role}'
    )
    env = {"IDB_STATS_SOURCE_DSN": as_role(dsn, role)}
    result = run("check-config", "--connect", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "schema idb_stats not created yet" in result.stdout
    # What the check promised: the role can run the commands.
    assert run("init", env=env).returncode == 0
    assert run("check-config", "--connect", env=env).returncode == 0


def test_unreachable_endpoints_are_all_listed(dsn: str, pg_server: embedded.EmbeddedPostgres) -> None:
    env = {
        "IDB_STATS_SOURCE_DSN": dsn,  # no stats table in it
        "IDB_STATS_API_DSN": "host=127.0.0.1 port=1 user=postgres dbname=x password=hunter2",
        "IDB_STATS_STORE": "opensearch",
        "IDB_STATS_STORE_URL": "http://127.0.0.1:1",
    }
    result = run("check-config", "--connect", env=env)
    assert result.returncode == 3
    failed = lines(result.stdout, "FAIL")
    assert len(failed) == 4, result.stdout
    assert "no table stats" in failed[0] and "no table queries" in failed[1]
    assert (
        failed[2].startswith("FAIL statistics store (opensearch, http://127.0.0.1:1)")
        and "unreachable" in failed[2]
    )
    assert failed[3].startswith("FAIL ingest database (api.dsn)") and "port 1 failed" in failed[3]
    assert "hunter2" not in result.stdout + result.stderr
    # A closed port: where to look, by the setting's name (its value may hold the password).
    assert failed[2].endswith("(is the server running? are host and port right in store.url?)"), failed[2]
    assert failed[3].endswith("(is the server running? are host and port right in api.dsn?)"), failed[3]


def test_closed_port_of_the_postgres_store_names_the_setting(dsn: str) -> None:
    closed = "host=127.0.0.1 port=1 user=postgres dbname=x password=hunter2"
    for env, settings in (
        # the store defaults to the telemetry database
        ({"IDB_STATS_SOURCE_DSN": closed}, ["source.dsn?)", "source.dsn (store.url is not set)?)"]),
        ({"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_STORE_URL": closed}, ["store.url?)"]),
    ):
        result = run("check-config", "--connect", env=env)
        assert result.returncode == 3, result.stdout
        refused = [line for line in lines(result.stdout, "FAIL") if "Connection refused" in line]
        hints = [f"(is the server running? are host and port right in {setting}" for setting in settings]
        assert [line[line.index(" (is the") + 1 :] for line in refused] == hints, result.stdout
        assert "hunter2" not in result.stdout + result.stderr


def test_unknown_host_fails(dsn: str, tmp_path: Path) -> None:
    load_week(dsn)
    for kind in ("opensearch", "elasticsearch"):
        env = {
            "IDB_STATS_SOURCE_DSN": dsn,
            "IDB_STATS_STORE": kind,
            "IDB_STATS_STORE_URL": "http://idb-stats-test.invalid:9200",
        }
        result = run("check-config", "--connect", env=env)
        assert result.returncode == 3, result.stdout
        assert f"FAIL statistics store ({kind}, http://idb-stats-test.invalid:9200)" in result.stdout
    postgres_store = run(
        "check-config",
        "--connect",
        env={"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_STORE_URL": "host=idb-stats-test.invalid dbname=x"},
    )
    assert postgres_store.returncode == 3
    assert "FAIL statistics store (postgres, schema idb_stats): cannot connect" in postgres_store.stdout


def test_reachable_search_store_passes(dsn: str, osmem_url: str) -> None:
    load_week(dsn)
    env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_STORE": "opensearch", "IDB_STATS_STORE_URL": osmem_url}
    result = run("check-config", "--connect", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok   statistics store (opensearch, {osmem_url}): reachable" in result.stdout


def test_a_telemetry_database_not_in_utf8_fails_the_check(pg_server: embedded.EmbeddedPostgres) -> None:
    # collect-stats refuses it (ids are measured and ordered as UTF-8): the check says so first.
    name = f"latin1_{uuid.uuid4().hex[:8]}"
    execute(pg_server.dsn(), f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'")
    dsn = pg_server.dsn(name)
    load_week(dsn)
    result = run("check-config", "--connect", env={"IDB_STATS_SOURCE_DSN": dsn})
    assert result.returncode == 3, result.stdout + result.stderr
    assert [line for line in lines(result.stdout, "FAIL") if "telemetry database" in line] == [
        f"FAIL telemetry database (source.dsn): {name} is encoded in LATIN1; idb-stats reads UTF8 only"
    ]
