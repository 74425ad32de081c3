"""Import's line checks against generated malformed lines (pure: no store). Any line derived from
a real document by random edits is either refused in one line naming it, or a document that
collect-stats could have written, stated here independently of ndjson.py."""

from __future__ import annotations

import copy
import io
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from idb_stats import importing, ndjson
from idb_stats.errors import UsageError
from idb_stats.legacy import normalise
from idb_stats.model import BLOCKS, DOCUMENT_RECORD_TYPES, ITEM_BLOCKS, OTHER_TERM

ROOT = Path(__file__).resolve().parents[2]
DAILY = json.loads((ROOT / "example-objects" / "daily.json").read_text())
for _rt, _ty in BLOCKS:  # blocks added since the example was made, as this version writes them
    DAILY.setdefault(_rt, {}).setdefault(
        _ty, {"count": 0, "total": 0, "items": [], "queries": [], "geocodes": []}
    )
REFUSAL = re.compile(r"^input line 1: [^\n]+; nothing was imported$")


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def current_shape(raw: dict[str, Any]) -> bool:
    """As this version writes documents: every block, integer counts. Others are the original
    collector's, which also wrote `term: null` (no query) and `geo: null` (no geocode) entries."""
    return all(
        isinstance(raw.get(rt), dict)
        and isinstance(raw[rt].get(ty), dict)
        and all(type(raw[rt][ty].get(f)) is int for f in ("count", "total"))
        for rt, ty in BLOCKS
    )


def has_null_entries(raw: dict[str, Any]) -> bool:
    """Entries only the original collector wrote (`term: null`: no query; `geo: null` or no `geo`:
    no geocode). Import reads them as the original meant them in any document, so a document
    holding one is judged by the original's rules, even when its blocks are this version's."""
    for rt, ty in BLOCKS:
        block = raw[rt][ty]
        for name, key in (("items", "term"), ("queries", "term"), ("geocodes", "geo")):
            for entry in block.get(name) or []:
                if isinstance(entry, dict) and entry.get("term") != OTHER_TERM and entry.get(key) is None:
                    return True
    return False


def could_be_collected(doc: dict[str, Any], original: bool) -> None:
    """The rules of README "What is counted" as they show in a document, restated plainly."""
    assert set(doc) == {"recordset_id", "harvest_date", *DOCUMENT_RECORD_TYPES}
    assert 0 < len(utf8(doc["recordset_id"])) <= 500 and "\x00" not in doc["recordset_id"]
    doc["recordset_id"].encode("utf-8")  # no lone surrogate
    for rt, ty in BLOCKS:
        block = doc[rt][ty]
        assert set(block) == {"count", "total", "items", "queries", "geocodes"}
        if (rt, ty) not in ITEM_BLOCKS:  # the blocks of records seen or viewed
            assert block["items"] == []
        for name in ("items", "queries"):
            terms = [entry["term"] for entry in block[name]]
            assert len(terms) == len(set(terms))
            assert original or None not in terms
            for term in filter(None, terms):
                assert "\x00" not in term
                term.encode("utf-8")
                assert name == "queries" or len(utf8(term)) <= 500
        geos = [
            json.dumps(e.get("geo"), sort_keys=True) for e in block["geocodes"] if e.get("term") != OTHER_TERM
        ]
        assert len(geos) == len(set(geos))
        for entry in block["geocodes"]:
            geo = entry.get("geo")
            if entry.get("term") == OTHER_TERM or (original and geo is None):
                continue
            assert all(isinstance(v, str) for v in geo.values())
            assert sum(len(utf8(k)) + len(utf8(v)) for k, v in geo.items()) <= 1000


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["", "x" * 501, "é" * 251, "\x00", "\ud800", OTHER_TERM, "view", "items"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value: dict keys and list indexes, containers first."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += paths(child, (*prefix, index))
    return out


@st.composite
def edited_line(draw: st.DrawFn) -> bytes:
    doc = copy.deepcopy(DAILY)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(doc)[1:]))
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "add key", "delete"]))
        if action == "replace":
            parent[where[-1]] = draw(JSON)
        elif action == "add key" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["like", "note", "term", "geo", "count", "country"]))] = draw(JSON)
        elif action == "delete":
            del parent[where[-1]]
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    objects = list(re.finditer(r'\{"(\w+)": ', text))
    twice: bool = draw(st.booleans())
    if objects and twice:  # the same key twice in one object
        match = draw(st.sampled_from(objects))
        text = text[: match.end()] + '0, "' + match[1] + '": ' + text[match.end() :]
    return utf8(text) + b"\n"


@settings(max_examples=500, deadline=None)
@given(edited_line())
@example(utf8(json.dumps({**DAILY, "recordset_id": "r" * 501})) + b"\n")
# An original collector's no-geocode entry (`term: null`, no `geo`) and date (epoch
# milliseconds) in this version's blocks.
@example(
    utf8(
        json.dumps(
            {
                **DAILY,
                "harvest_date": 0,
                "records": {
                    **DAILY["records"],
                    "seen": {
                        **DAILY["records"]["seen"],
                        "geocodes": [
                            *DAILY["records"]["seen"]["geocodes"][:-1],
                            {"term": None, "count": 894},
                        ],
                    },
                },
            }
        )
    )
    + b"\n"
)
def test_an_edited_document_is_refused_in_one_line_or_could_be_collected(line: bytes) -> None:
    try:
        with importing.check_file(io.BytesIO(line), "input") as checked:
            spooled = list(checked.documents(checked.days[0]))
    except UsageError as exc:
        assert REFUSAL.match(str(exc)), str(exc)
        event("refused")
        return
    event("accepted")
    (doc,) = spooled
    raw = json.loads(line)
    could_be_collected(doc, original=not current_shape(raw) or has_null_entries(raw))
    assert normalise(doc) == doc  # what was spooled is what a re-check would make of it


def test_the_example_document_passes_unchanged() -> None:
    """A document collect-stats made (with a breakdown limit: __other__ entries) is written as is."""
    with importing.check_file(io.BytesIO(utf8(json.dumps(DAILY)) + b"\n"), "input") as checked:
        assert list(checked.documents(checked.days[0])) == [DAILY]


@pytest.mark.parametrize(
    ("opening", "accepted"),
    [
        ({"format": 1}, True),
        ({"format": 2}, False),
        ({"format": "1"}, False),
        ({"format": True}, False),
        ({}, False),
    ],
)
def test_only_format_1_is_read(opening: dict[str, Any], accepted: bool) -> None:
    lines = [
        utf8(json.dumps({"idb_stats_export": opening})) + b"\n",
        utf8(json.dumps(DAILY)) + b"\n",
        utf8(json.dumps({"idb_stats_export_end": {"documents": 1, "days": {DAILY["harvest_date"]: 1}}}))
        + b"\n",
    ]
    try:
        ndjson.check_export(lines, "input")
    except UsageError as exc:
        assert not accepted and "line 1: an export in format" in str(exc)
    else:
        assert accepted


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.from_regex(
                rb'\{"recordset_id": "[a-z]{1,3}", "harvest_date": "2020-0[12]-1[0-9]"\}', fullmatch=True
            ),
            st.integers(1, 3000).map(lambda depth: b"[" * depth),
        ),
        max_size=8,
    )
)
@example([b"\x1c"])  # whitespace to str.strip(), not to JSON: refused, not skipped
@example([b"\xe2\x80\xa8"])  # U+2028
def test_any_input_is_checked_or_refused_with_its_line(lines: list[bytes]) -> None:
    try:
        documents = ndjson.check_export([line + b"\n" for line in lines], "input").documents
    except UsageError as exc:
        assert re.match(r"input line [1-9]\d*: .*; nothing was imported$", str(exc)), str(exc)
    else:
        assert documents == sum(1 for line in lines if line.strip())


def test_every_prefix_of_an_export_is_refused() -> None:
    docs: list[dict[str, Any]] = [
        {"recordset_id": rs, "harvest_date": day} | {rt: {} for rt in ("records", "mediarecords")}
        for day in ("2020-02-17", "2020-02-18")
        for rs in ("a", "b")
    ]
    lines = [line.encode() for line in ndjson.export_lines(docs, date(2020, 2, 17), date(2020, 2, 18))]
    checked = ndjson.check_export(lines, "input")
    assert (checked.documents, checked.complete, checked.envelope) == (4, True, {1, 6})
    for end in range(1, len(lines)):  # an empty file has nothing to import (and no opening line)
        with pytest.raises(UsageError, match=r"cut short"):
            ndjson.check_export(lines[:end], "input")

