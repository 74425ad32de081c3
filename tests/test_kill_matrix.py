"""SIGKILL at random moments of every write command, on PostgreSQL and OpenSearch: afterwards
`status --json` lists every day the kill left damaged (and never says "missing days: none" while
one is), and the plain catch-up, or the same command re-run, gives back a clean run's export with
totals equal to the sum of the days.

A day counts as damaged here, independently of idb-stats' own classification, when it is not in
one of the two clean states: marked complete with exactly the clean run's documents and totals
listing exactly those recordsets, or unmarked with no documents and no totals listing it.
IDB_STATS_KILLS sets the kills per store kind and command (default 2). Each test prints its
outcomes (run with -s to see them)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from damage import RawStore, config_toml
from helpers import ROOT, MakeConfig, Row, assert_consistent, insert_rows, other_store, run

from idb_stats.config import Config
from idb_stats.importing import import_documents
from idb_stats.stores import open_store
from idb_stats.synthetic import fake_uuid
from idb_stats.totals import Totals

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("IDB_STATS_KILLS", "2"))
# Recent days, so the plain catch-up (which runs through today) is the recovery it is in production.
TODAY = datetime.now(UTC).date()
HARVEST = [TODAY - timedelta(days=n) for n in (3, 2, 1, 0)]
RECORDSETS = 80
COMMANDS = ["collect-stats", "import", "forget-day", "verify --repair"]


def cli(toml: Path, *args: str, input_file: Path | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDB_STATS_") and k != "JOURNAL_STREAM"}
    stdin = open(input_file) if input_file else subprocess.DEVNULL  # noqa: SIM115 (closed by the child's exit)
    return subprocess.Popen(
        [sys.executable, "-m", "idb_stats.cli", *args, "--config", str(toml)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def export_of(config: Config) -> list[dict[str, Any]]:
    with open_store(config) as store:
        store.init()  # a run killed before it made the schema leaves none
        return list(store.export(HARVEST[0], HARVEST[-1]))


def totals_of(config: Config) -> list[dict[str, Any]]:
    with open_store(config) as store:
        store.init()
        return list(store.totals())


def truly_damaged(config: Config, clean: list[dict[str, Any]]) -> set[date]:
    """Days in neither clean state (see the module's docstring), judged from the raw store."""
    daily, totals = export_of(config), totals_of(config)
    with open_store(config) as store:
        marked = set(store.completed_days())
    damaged = set()
    for day in HARVEST:
        iso = day.isoformat()
        docs = [d for d in daily if d["harvest_date"] == iso]
        listing = sorted(t["recordset_id"] for t in totals if Totals.from_doc(t).includes(day))
        whole = day in marked and docs == [d for d in clean if d["harvest_date"] == iso]
        absent = day not in marked and not docs
        if not (whole and listing == sorted(d["recordset_id"] for d in docs)) and not (
            absent and not listing
        ):
            damaged.add(day)
    return damaged


def wide_rows(harvest_date: date) -> list[Row]:
    """A day's telemetry over RECORDSETS recordsets: enough documents and totals that a good
    part of each command's time is spent writing them (where a kill does damage)."""
    rng = random.Random(harvest_date.toordinal())
    start = datetime.combine(harvest_date - timedelta(days=1), datetime.min.time())
    rows: list[Row] = []
    for i in range(300):
        at = start + timedelta(seconds=rng.uniform(0, 86399))
        kind = rng.choice(["search", "seen", "view", "download"])
        if kind in ("seen", "view"):
            payload: Any = {fake_uuid(2, rng.randrange(500)): fake_uuid(3, rng.randrange(RECORDSETS))}
        else:
            payload = {fake_uuid(3, rng.randrange(RECORDSETS)): rng.randint(1, 50) for _ in range(4)}
        geo = rng.choice([{"country": "US"}, {"country": "BR"}, None])
        rows.append((at, kind, "records", f"q{i % 7}", geo, payload))
    return rows


@pytest.fixture
def world(make_config: MakeConfig, dsn: str, tmp_path: Path) -> dict[str, Any]:
    """Four recent days of telemetry, a clean run of them, and its export file."""
    insert_rows(dsn, [row for day in HARVEST for row in wide_rows(day)])
    reference = make_config()
    toml = tmp_path / "reference.toml"
    toml.write_text(config_toml(reference))
    started = time.monotonic()
    done = run("collect-stats", "--from", str(HARVEST[0]), "--to", str(HARVEST[-1]), "--config", str(toml))
    assert done.returncode == 0, done.stderr
    seconds = time.monotonic() - started
    export = tmp_path / "clean.ndjson"
    written = run(
        "export",
        "--from",
        str(HARVEST[0]),
        "--to",
        str(HARVEST[-1]),
        "-o",
        str(export),
        "--config",
        str(toml),
    )
    assert written.returncode == 0, written.stderr
    return {
        "clean": export_of(reference),
        "totals": totals_of(reference),
        "export": export,
        "tmp": tmp_path,
        "seconds": seconds,  # of a clean collect-stats: the scale of the random delays
    }


def prepare(
    make_config: MakeConfig, world: dict[str, Any], command: str, n: int
) -> tuple[Config, Path, list[str]]:
    """A store in the state the command starts from, its config file, and the command's arguments."""
    config = other_store(make_config, f"kill{n}")
    toml = world["tmp"] / f"kill{n}.toml"
    toml.write_text(config_toml(config))
    clean = world["clean"]
    if command == "collect-stats":
        # Every other time a republish of every day (the earliest-day case), else a first
        # publish of the last three after the first one.
        republish = n % 2 == 0
        import_documents(
            config, clean if republish else [d for d in clean if d["harvest_date"] == str(HARVEST[0])]
        )
        first = HARVEST[0] if republish else HARVEST[1]
        return config, toml, ["collect-stats", "--from", str(first), "--to", str(HARVEST[-1])]
    if command == "import":
        if n % 2:
            import_documents(config, clean)
        return config, toml, ["import", str(world["export"])]
    import_documents(config, clean)
    if command == "forget-day":
        return config, toml, ["forget-day", str(HARVEST[1])]
    # verify --repair: documents lost from a day, and a totals document tampered with.
    raw = RawStore(config)
    lost = sorted(d["recordset_id"] for d in clean if d["harvest_date"] == str(HARVEST[2]))[:3]
    for rs in lost:
        raw.delete_document(rs, HARVEST[2])
    return config, toml, ["verify", "--repair"]


def recover(toml: Path, command: list[str]) -> None:
    """The same command again where it is one that finishes a job (import, forget-day, verify
    --repair), then the plain catch-up, which must redo whatever is left."""
    if command[0] != "collect-stats":
        again = run(*command, "--config", str(toml))
        assert again.returncode == 0, (command, again.stderr[-3000:])
    catch_up = run("collect-stats", "--config", str(toml))
    assert catch_up.returncode == 0, catch_up.stderr[-3000:]
    assert "Traceback" not in catch_up.stderr


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("store_kind", ["postgres", "opensearch"], indirect=True)
def test_sigkill_at_random_moments_then_status_and_one_recovery(
    make_config: MakeConfig, world: dict[str, Any], command: str, store_kind: str
) -> None:
    rng = random.Random()
    outcomes: Counter[str] = Counter()
    for n in range(KILLS):
        config, toml, args = prepare(make_config, world, command, n)
        process = cli(toml, *args)
        time.sleep(rng.uniform(0.1, 1.0) * world["seconds"])
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            outcomes["killed"] += 1
        else:
            outcomes[f"finished before the kill, exit {process.returncode}"] += 1
        process.communicate(timeout=60)
        damaged = truly_damaged(config, world["clean"])
        shown = run("status", "--json", "--config", str(toml))
        status = json.loads(shown.stdout)
        listed = {date.fromisoformat(d["harvest_date"]) for d in status["damaged"]}
        assert damaged <= listed, (args, damaged, status["damaged"])
        assert listed <= set(map(date.fromisoformat, status["missing_days"]))
        text = run("status", "--config", str(toml)).stdout
        assert not listed or "missing days:          none" not in text, text
        outcomes[f"{len(damaged)} days damaged"] += 1
        if not listed:
            assert_consistent(export_of(config), totals_of(config))
        recover(toml, args)
        assert export_of(config) == world["clean"], args
        assert totals_of(config) == world["totals"]
        after = json.loads(run("status", "--json", "--config", str(toml)).stdout)
        assert after["damaged"] == [] and after["missing_days"] == []
    print(f"\n{store_kind} {command}: clean collect {world['seconds']:.1f} s; {dict(outcomes)}")
