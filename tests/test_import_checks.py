"""`import` is check-then-write of the same bytes: each file the hardening probe crafted is refused
whole (exit 2 naming its line, or 6 for duplicates), with the store unchanged to the byte (md5 of
its export, totals and day markers), on PostgreSQL and OpenSearch; a file cut in place while the
run waits for the lock imports what was checked; a line over the limit is refused before it is
held whole. The commands run as real processes against a real PostgreSQL and osmem."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import HARVEST, ROOT, MakeConfig, collect, load_week, run

from idb_stats import ndjson
from idb_stats.config import Config
from idb_stats.json_text import compact
from idb_stats.pg import run_lock
from idb_stats.stores import open_store

BOTH = pytest.mark.parametrize("store_kind", ["postgres", "opensearch"], indirect=True)
Doc = dict[str, Any]


def cli_setup(config: Config, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The --config option and environment that make the CLI use the test's store."""
    toml = tmp_path / "store.toml"
    if config.store == "postgres":
        toml.write_text(f'[store]\nschema = "{config.store_schema}"\n')
        env = {"IDB_STATS_SOURCE_DSN": config.source_dsn}
    else:
        toml.write_text(
            "[store]\n"
            + "".join(
                f'{role}_index = "{getattr(config, role + "_index")}"\n'
                for role in ("daily", "totals", "runs", "api")
            )
        )
        env = {
            "IDB_STATS_SOURCE_DSN": config.source_dsn,
            "IDB_STATS_STORE": config.store,
            "IDB_STATS_STORE_URL": config.store_url or "",
        }
    return ["--config", str(toml)], env


def store_md5(config: Config) -> str:
    """What the store holds, to the byte: every document, every totals document, the day markers."""
    digest = hashlib.md5()
    with open_store(config) as store:
        for doc in store.export(HARVEST[0], HARVEST[-1]):
            digest.update(compact(doc).encode())
        for doc in store.totals():
            digest.update(compact(doc).encode())
        for day, marker in sorted(store.completed_days().items()):
            digest.update(f"{day} {marker['run_id']}".encode())
    return digest.hexdigest()


def exported(config: Config) -> list[Doc]:
    """The store's export, as parsed lines (opening line, documents, closing line)."""
    with open_store(config) as store:
        text = "".join(ndjson.export_lines(store.export(HARVEST[0], HARVEST[-1]), HARVEST[0], HARVEST[-1]))
    return [json.loads(line) for line in text.splitlines()]


def changed_first_documents(lines: list[Doc]) -> list[Doc]:
    """Every day's first document with two more searches (consistent, found nothing): so that any
    day the import wrote would change the store."""
    out, seen = copy.deepcopy(lines), set()
    for doc in out[1:-1]:
        if doc["harvest_date"] not in seen:
            seen.add(doc["harvest_date"])
            doc["records"]["search"]["count"] += 2
    return out


def last_day_document(lines: list[Doc], test: Callable[[Doc], bool]) -> int:
    """Index of a document of the file's last day for which test holds."""
    last = lines[-2]["harvest_date"]
    return next(
        i for i in range(len(lines) - 2, 0, -1) if lines[i]["harvest_date"] == last and test(lines[i])
    )


def first_block(doc: Doc, ty: str, has: str) -> dict[str, Any] | None:
    return next((doc[rt][ty] for rt in ("records", "mediarecords") if doc[rt][ty][has]), None)


def spoil(how: str, lines: list[Doc]) -> tuple[list[str], int]:
    """The export with one document (of its last day, so that other days come first) spoiled as
    the probe did; the file's text lines and the spoiled line's number."""
    docs = copy.deepcopy(lines)
    if how == "recordset id over 500 bytes":
        i = last_day_document(docs, lambda d: True)
        docs[i]["recordset_id"] = "r" * 501
    elif how == "item id over 500 bytes":
        i = last_day_document(docs, lambda d: first_block(d, "view", "items") is not None)
        block = first_block(docs[i], "view", "items")
        assert block is not None
        block["items"][0]["term"] = "é" * 251  # 502 bytes
    elif how == "geocode value not a string":
        i = last_day_document(docs, lambda d: first_block(d, "search", "geocodes") is not None)
        block = first_block(docs[i], "search", "geocodes")
        assert block is not None
        block["geocodes"][0]["geo"] = {"country": 7}
    elif how == "geocode entry repeated":
        i = last_day_document(docs, lambda d: first_block(d, "search", "geocodes") is not None)
        block = first_block(docs[i], "search", "geocodes")
        assert block is not None
        entry = block["geocodes"][0]
        block["geocodes"][0:1] = [{"geo": entry["geo"], "count": 0}, entry]
    elif how == "items in a download block":
        i = last_day_document(docs, lambda d: first_block(d, "download", "geocodes") is not None)
        block = first_block(docs[i], "download", "geocodes")
        assert block is not None
        block["items"] = [{"term": "00000002-0000-4000-8000-000000000001", "count": block["count"]}]
    elif how == "unknown block":
        i = last_day_document(docs, lambda d: True)
        docs[i]["records"]["like"] = docs[i]["records"]["view"]
    elif how == "unknown key":
        i = last_day_document(docs, lambda d: True)
        docs[i]["note"] = "edited"
    elif how == "format 2":
        i, docs[0]["idb_stats_export"]["format"] = 0, 2
    elif how == "format as a string":
        i, docs[0]["idb_stats_export"]["format"] = 0, "1"
    else:
        i = last_day_document(docs, lambda d: True)
    text = [compact(doc) for doc in docs]
    if how == "recordset_id twice":
        text[i] = text[i].replace('{"recordset_id":', '{"recordset_id":"other","recordset_id":', 1)
    elif how == "count twice":
        text[i] = text[i].replace('"search":{"count":', '"search":{"count":0,"count":', 1)
    elif how == "NaN count":
        text[i] = re.sub(r'"search":\{"count":\d+', '"search":{"count":NaN', text[i], count=1)
    return text, i + 1


REFUSED = [
    ("recordset id over 500 bytes", r"recordset_id is longer than 500 bytes"),
    ("item id over 500 bytes", r"item 'é+…' is longer than 500 bytes"),
    ("recordset_id twice", r"the key 'recordset_id' appears twice in one object"),
    ("count twice", r"the key 'count' appears twice in one object"),
    ("NaN count", r"not valid JSON \(NaN is not a JSON number\)"),
    ("format 2", r"an export in format 2, which this idb-stats does not read"),
    ("format as a string", r"an export in format '1', which this idb-stats does not read"),
    ("geocode value not a string", r"geocode value 'country' is not a string"),
    ("geocode entry repeated", r"geocodes list has '.+' twice"),
    ("items in a download block", r"(records|mediarecords)\.download has items, which only the blocks of"),
    ("unknown block", r"unknown block records\.'like'"),
    ("unknown key", r"unknown key 'note'"),
]


@BOTH
def test_each_refused_file_leaves_the_store_unchanged(
    make_config: MakeConfig, dsn: str, tmp_path: Path
) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    lines = changed_first_documents(exported(config))
    option, env = cli_setup(config, tmp_path)
    before = store_md5(config)
    bad = tmp_path / "bad.ndjson"
    for how, message in REFUSED:
        text, number = spoil(how, lines)
        bad.write_text("\n".join(text) + "\n")
        result = run("import", *option, str(bad), env=env)
        assert result.returncode == 2, (how, result.stderr)
        assert re.search(
            rf"bad\.ndjson line {number}: (\S+ )?{message}.*; nothing was imported$", result.stderr.strip()
        ), (
            how,
            result.stderr,
        )
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert store_md5(config) == before, how
    # The same file unspoiled imports, and changes the store: the checks above were what held it.
    bad.write_text("\n".join(compact(doc) for doc in lines) + "\n")
    assert run("import", *option, str(bad), env=env).returncode == 0
    assert store_md5(config) != before


@BOTH
def test_duplicates_of_a_later_day_refuse_the_whole_file(
    make_config: MakeConfig, dsn: str, tmp_path: Path
) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    lines = changed_first_documents(exported(config))
    duplicated = [*lines[:-1], lines[-2], lines[-1]]  # the last document twice
    duplicated[-1] = {"idb_stats_export_end": {**lines[-1]["idb_stats_export_end"]}}
    end = duplicated[-1]["idb_stats_export_end"]
    end["documents"] += 1
    end["days"] = {**end["days"], lines[-2]["harvest_date"]: end["days"][lines[-2]["harvest_date"]] + 1}
    option, env = cli_setup(config, tmp_path)
    before = store_md5(config)
    bad = tmp_path / "duplicates.ndjson"
    bad.write_text("\n".join(compact(doc) for doc in duplicated) + "\n")
    result = run("import", *option, str(bad), env=env)
    assert result.returncode == 6, result.stderr
    assert (
        "more than one document for a recordset and day" in result.stderr
        and "nothing was imported" in result.stderr
    )
    assert store_md5(config) == before


@BOTH
def test_a_sum_beyond_long_is_refused_by_search_stores_before_any_write(
    make_config: MakeConfig, dsn: str, tmp_path: Path
) -> None:
    """2^63 searches: the PostgreSQL store holds the sum exactly; a search engine's long cannot,
    and had taken the file's earlier days before failing (exit 6), its marker gone."""
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    lines = changed_first_documents(exported(config))
    i = last_day_document(lines, lambda d: True)
    lines[i]["records"]["search"]["count"] = 2**63
    option, env = cli_setup(config, tmp_path)
    before = store_md5(config)
    big = tmp_path / "big.ndjson"
    big.write_text("\n".join(compact(doc) for doc in lines) + "\n")
    result = run("import", *option, str(big), env=env)
    if config.store == "postgres":
        assert result.returncode == 0, result.stderr
        assert exported(config)[i]["records"]["search"]["count"] == 2**63
        return
    assert result.returncode == 2, result.stderr
    assert (
        f"line {i + 1}: records.search.count = {2**63} is more than the store's numbers hold" in result.stderr
    )
    assert store_md5(config) == before


@pytest.mark.parametrize("store_kind", ["opensearch"], indirect=True)
def test_totals_that_would_pass_long_are_refused_before_any_write(
    make_config: MakeConfig, dsn: str, tmp_path: Path
) -> None:
    """Each document fits, but a recordset's totals would not: refused (exit 6) before a day is
    written. Re-importing the same days stays possible (their old share leaves the totals first)."""
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    lines = exported(config)
    rs = lines[1]["recordset_id"]
    of_rs = [doc for doc in lines[1:-1] if doc["recordset_id"] == rs]
    assert len(of_rs) >= 2
    for doc in of_rs:
        doc["records"]["search"]["count"] = 2**62  # each day fits; two days pass 2^63 - 1
    option, env = cli_setup(config, tmp_path)
    before = store_md5(config)
    file = tmp_path / "totals.ndjson"
    file.write_text("\n".join(compact(doc) for doc in lines) + "\n")
    result = run("import", *option, str(file), env=env)
    assert result.returncode == 6, result.stderr
    assert f"the totals of {rs!r} would hold records.search.count = " in result.stderr
    assert store_md5(config) == before
    # One such day fits; importing it again fits too: its old share leaves the totals before the
    # new one comes in, so the bound (totals now plus the file, past 2^63 - 1) is checked exactly.
    day = of_rs[0]["harvest_date"]
    of_day = [doc for doc in lines[1:-1] if doc["harvest_date"] == day]
    end = {"idb_stats_export_end": {"documents": len(of_day), "days": {day: len(of_day)}}}
    file.write_text("\n".join(compact(doc) for doc in [lines[0], *of_day, end]) + "\n")
    for _ in range(2):
        again = run("import", *option, str(file), env=env)
        assert again.returncode == 0, again.stderr
    with open_store(config) as store:
        assert next(store.totals([rs]))["records"]["search"]["count"] > 2**62


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_a_file_cut_during_the_lock_wait_imports_what_was_checked(
    make_config: MakeConfig, dsn: str, tmp_path: Path
) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    lines = changed_first_documents(exported(config))
    option, env = cli_setup(config, tmp_path)
    file = tmp_path / "export.ndjson"
    file.write_text("\n".join(compact(doc) for doc in lines) + "\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("IDB_STATS_")}
    with open_store(config) as store, run_lock(config, store.identity, 0):
        importer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "idb_stats.cli",
                "import",
                "-v",
                *option,
                "--lock-timeout",
                "60",
                str(file),
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**base, **env},
            cwd=ROOT,
        )
        assert importer.stderr is not None
        said: list[str] = []
        while not any(f"{len(lines) - 2} documents" in line for line in said):  # the check is done
            said.append(importer.stderr.readline())
            assert said[-1], "".join(said)
        with file.open("r+") as cut:  # cut in place, as a second copy over it would
            cut.truncate(len(compact(lines[0])) + 1)
    rest = importer.stderr.read()
    assert importer.wait(timeout=120) == 0, "".join(said) + rest
    assert exported(config) == lines  # every checked document, not the one-line remainder


def test_a_line_over_the_limit_is_refused_before_it_is_held(tmp_path: Path) -> None:
    """A 70 MB line had taken 917 MB to import; now the line is refused after 64 MiB are read,
    without connecting anywhere (nothing listens on port 1)."""
    big = tmp_path / "big.ndjson"
    with big.open("w") as out:
        out.write('{"recordset_id": "rs", "harvest_date": "2020-02-18", "note": "')
        chunk = "x" * 2**20
        for _ in range(70):
            out.write(chunk)
        out.write('"}\n')
    probe = (
        "import resource, subprocess, sys;"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.stderr.strip()[-300:])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "idb_stats.cli", "import", str(big)],
        capture_output=True,
        text=True,
        env={**os.environ, "IDB_STATS_SOURCE_DSN": "host=127.0.0.1 port=1 dbname=x"},
        cwd=ROOT,
        timeout=300,
    )
    code, peak_kb, message = result.stdout.split(" ", 2)
    assert code == "2", result.stdout
    assert "line 1: longer than 64 MiB, the most import reads in one line" in message
    assert int(peak_kb) < 250_000, f"peak RSS {int(peak_kb) // 1024} MB"  # the 64 MiB read, not 13x it
