"""SQL composed one way, with psycopg2.sql, and rendered without a connection.

Every statement the project sends is a psycopg2.sql object: a template (sql.SQL) whose names are
sql.Identifier and whose words of the model (record and event types, skip reasons, limits) are
sql.Literal; values known only at run time travel as query parameters (%(name)s). Built by pure
functions, the statements can be read and pinned in tests (tests/unit/test_sql_snapshots.py).

psycopg2 renders a Composable only through a live connection (Composable.as_string), so `render`
does the same quoting here for the kinds of values the statements use; tests/test_sql_quoting.py
holds it equal to psycopg2's own quoting on a real server, for every statement and for hostile
names and words.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg2 import sql


def render(query: sql.Composable) -> str:
    """The text psycopg2 sends for `query` to a server with standard_conforming_strings on (the
    default since PostgreSQL 9.1; a server with it off is refused by the literals' parser anyway
    only for backslashes, which no model word holds)."""
    if isinstance(query, sql.Composed):
        return "".join(render(part) for part in query.seq)
    if isinstance(query, sql.SQL):
        return query.string
    if isinstance(query, sql.Identifier):
        return ".".join(quote_identifier(part) for part in query.strings)
    if isinstance(query, sql.Literal):
        return quote_literal(query.wrapped)
    if isinstance(query, sql.Placeholder):
        return f"%({query.name})s" if query.name else "%s"
    raise TypeError(f"cannot render {type(query).__name__}")


def quote_identifier(name: str) -> str:
    """libpq's PQescapeIdentifier: double quotes around, inner double quotes doubled."""
    if "\0" in name:
        raise ValueError("an SQL identifier cannot hold a NUL character")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: object) -> str:
    """psycopg2's adaptation of the literal kinds the statements use: booleans, integers (a
    negative one after a space, so that `-` cannot follow another `-` into a comment) and
    strings (single quotes doubled; backslashes are plain characters in standard strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f" {value}" if value < 0 else str(value)
    if isinstance(value, str):
        if "\0" in value:
            raise ValueError("an SQL string cannot hold a NUL character")
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__} here: pass it as a query parameter")


def words(values: Iterable[str]) -> sql.Composed:
    """Words of the model as a comma-separated list of SQL literals, for IN (...)."""
    return sql.SQL(", ").join(sql.Literal(value) for value in values)


def table(name: str) -> sql.Identifier:
    """A configured table name (`stats` or `schema.stats`, validated by config) as an identifier,
    quoted as given so that case and reserved words are kept."""
    return sql.Identifier(*name.split("."))
