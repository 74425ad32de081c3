"""sqltext.render, which the SQL snapshot tests read the statements through, is psycopg2's own
quoting: held equal to Composable.as_string on a real server, for hostile names and words and for
every statement the project builds."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg2 import sql
from sql_statements import statements

from idb_stats import embedded, sqltext

TEXT = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=40)


@pytest.fixture(scope="module")
def conn(pg_server: embedded.EmbeddedPostgres) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(pg_server.create_database("sql_quoting"))
    yield connection
    connection.close()


@settings(max_examples=300, deadline=None)
@given(
    names=st.lists(TEXT.filter(bool), min_size=1, max_size=3),
    word=TEXT,
    number=st.integers(-(2**63), 2**63 - 1),
    flag=st.booleans(),
)
def test_render_quotes_as_psycopg2_does(
    conn: psycopg2.extensions.connection, names: list[str], word: str, number: int, flag: bool
) -> None:
    query = sql.SQL("SELECT {} FROM {} WHERE {} = %(at)s OR {} OR {} = %s").format(
        sql.Literal(word),
        sql.Identifier(*names),
        sql.Literal(number),
        sql.Literal(flag),
        sql.Placeholder("x"),
    )
    assert sqltext.render(query) == query.as_string(conn)


def test_every_statement_renders_as_psycopg2_sends_it(conn: psycopg2.extensions.connection) -> None:
    built = statements()
    assert len(built) > 30
    for name, statement in built.items():
        assert sqltext.render(statement) == statement.as_string(conn), name
