"""Report page names: one file per recordset, whatever the ids, on any file system (pure)."""

from __future__ import annotations

import hashlib

from hypothesis import example, given, settings
from hypothesis import strategies as st

from idb_stats.report import WINDOWS_DEVICES, page_name

# Characters Windows refuses in a file name, besides controls.
WINDOWS_FORBIDDEN = set('<>:"/\\|?*')


def old_hashed_name(recordset_id: str) -> str:
    """How an earlier version named the page of an id that was not a plain name."""
    return f"id-{hashlib.sha256(recordset_id.encode()).hexdigest()[:20]}"


IDS = st.one_of(
    st.text(st.sampled_from("aA0-_. \u202e\x1b\x00é/\\:"), min_size=1, max_size=12),
    st.sampled_from(
        ["CON", "con", "aux.txt", "Aux", "nul.tar.gz", "com1", "LPT9", "rs.", "rs ", "rs..x", ".rs", "rs"]
    ),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.text(min_size=1, max_size=30),
)


@settings(max_examples=1000)
@given(st.lists(IDS, min_size=1, max_size=20, unique=True), st.data())
@example(["Rs", "rS", "rs"], None)
@example(["a b", old_hashed_name("a b")], None)
@example(["0\n", "0"], None)  # a regex `$` also matches before a final newline
def test_every_id_gets_its_own_page_on_any_file_system(ids: list[str], data: st.DataObject | None) -> None:
    if data is not None:  # ids equal to another id's page name, as a crafted id would be
        ids = list(dict.fromkeys([*ids, *(page_name(i).removesuffix(".html") for i in ids[:3])]))
    names = [page_name(i) for i in ids]
    assert len({name.casefold() for name in names}) == len(ids)  # distinct where case is ignored
    for name in names:
        stem = name.removesuffix(".html")
        assert name.endswith(".html") and len(name.encode()) <= 255
        assert stem.split(".")[0].casefold() not in WINDOWS_DEVICES
        assert not WINDOWS_FORBIDDEN & set(name) and all(ord(c) >= 0x20 for c in name)
        assert not stem.endswith((".", " ")) and stem == stem.strip()
        assert name.isascii()  # no bidi override or normalisation-sensitive character in a link


def test_plain_lowercase_ids_keep_readable_names() -> None:
    assert page_name("00000001-0000-4000-8000-000000000000") == "00000001-0000-4000-8000-000000000000.html"
    assert page_name("herbarium.v2") == "herbarium.v2.html"
    # What an earlier version hashed ids to is a plain name now: hashed names begin with "_".
    assert page_name("id-0123456789abcdef0123") == "id-0123456789abcdef0123.html"
    for hashed in ("CON", "aux.txt", "Rs", "rs.", "rs ", "_rs", "a..b"):
        assert page_name(hashed).startswith("_") and len(page_name(hashed)) == len("_.html") + 32
