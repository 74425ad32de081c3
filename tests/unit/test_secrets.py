"""Secrets: never on the command line in any spelling, never shown; redaction parses the DSN."""

from __future__ import annotations

from urllib.parse import quote

import psycopg2.extensions
import pytest
from helpers import run
from hypothesis import example, given, settings
from hypothesis import strategies as st

from idb_stats.secrets import redact

# Passwords as operators type them: quotes, @, spaces, backslashes, %, = and non-ASCII.
PASSWORDS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"])
    | st.sampled_from("'\"@ %=\\:/?#&"),
    min_size=4,
    max_size=24,
)


def libpq_quote(text: str) -> str:
    """A key/value DSN value quoted as libpq documents: '...' with \\ before ' and \\."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def spellings(password: str) -> list[str]:
    """Every way a DSN or URL carries this password, each valid for its parser."""
    encoded = quote(password, safe="")
    return [
        f"host=db.example port=5432 user=reader password={libpq_quote(password)} dbname=telemetry",
        f"password={libpq_quote(password)} host=db.example",
        f"postgresql://reader:{encoded}@db.example:5432/telemetry?sslmode=require",
        f"postgresql://reader@db.example/telemetry?password={encoded}&sslmode=require",
        f"https://elastic:{encoded}@search.example:9200",
    ]


def leaks(password: str, shown: str, baseline: str) -> list[str]:
    """Pieces of 4+ characters of the password in the shown text that the text would hold anyway."""
    pieces = {password[i : i + n] for n in range(4, len(password) + 1) for i in range(len(password) - n + 1)}
    return sorted(p for p in pieces if p in shown and p not in baseline)


@settings(max_examples=150, deadline=None)
@given(PASSWORDS)
@example("s3cr3t'r3t-xyzzy")
@example("p@ss@word")
@example("two words")
@example("%41%42%43%44")
@example("0://")  # found by this test: "://" inside a key/value DSN was taken for a URL
def test_redaction_never_shows_any_part_of_the_password(password: str) -> None:
    for dsn, baseline in zip(spellings(password), spellings("XXXX"), strict=True):
        if "://" not in dsn:
            assert psycopg2.extensions.parse_dsn(dsn)["password"] == password  # a valid spelling
        shown = redact(dsn)
        assert leaks(password, shown, redact(baseline)) == [], (dsn, shown)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("host=db password='s3cr3t\\'r3t-xyzzy' dbname=t", "host=db password=*** dbname=t"),
        ("host=db password='a b\\'c' dbname=t", "host=db password=*** dbname=t"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=PW&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("https://search.example:9200", "https://search.example:9200"),
        ("host=db password=my secret dbname=t", "*** (not a valid DSN, not shown)"),
        ("postgresql://u:12/x@h/db", "*** (not a valid URL, not shown)"),
    ],
)
def test_redaction_of_known_spellings(dsn: str, shown: str) -> None:
    assert redact(dsn) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h/db?password=PW",
        "postgresql://u@h/db?sslmode=require&PASSWORD=PW",
        "postgresql://u:PW@h/db",
        "https://elastic:PW@search.example:9200",
        "host=h dbname=db password=PW",
        "host=h dbname=db password = 'P W'",
    ],
)
def test_store_url_with_a_password_is_refused_from_argv(url: str) -> None:
    result = run("check-config", "--store-url", url, env={"IDB_STATS_SOURCE_DSN": "host=db"})
    assert result.returncode == 3, result.stderr
    assert "visible to every user" in result.stderr and "PW" not in result.stderr.replace("PWord", "")


def test_store_url_without_a_password_is_accepted() -> None:
    result = run(
        "check-config",
        "--store-url",
        "postgresql://u@h/db?sslmode=require",
        env={"IDB_STATS_SOURCE_DSN": "host=db"},
    )
    assert result.returncode == 0, result.stderr
