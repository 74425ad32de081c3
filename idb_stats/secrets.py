"""Secrets in DSNs and URLs: redacted by parsing them (never by pattern), scrubbed out of error
messages, and recognised so the command line can refuse them."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions


class Secret(str):
    """A string that never shows itself in repr, logs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('***')"


# A URL starts with its scheme; "://" elsewhere (a password such as '0://' in a key/value DSN)
# does not make one.
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _is_url(value: str) -> bool:
    return URL_SCHEME.match(value.strip()) is not None


def redact(value: str | None) -> str:
    """A DSN or URL with any password replaced by ***, found by parsing it, not by pattern.

    URLs (scheme://...) lose the password of their user info and any `password` query
    parameter; key/value DSNs are parsed as libpq does and rebuilt. Text that parses as
    neither is not shown at all: a fragment of it could be a password.
    """
    if not value:
        return ""
    if _is_url(value):
        return _redact_url(value)
    try:
        params = psycopg2.extensions.parse_dsn(value)
    except psycopg2.ProgrammingError:
        return "*** (not a valid DSN, not shown)"
    # In the operator's order where it can be told (cosmetic: every value comes from the parse).
    keys = sorted(params, key=lambda key: value.find(key))
    return " ".join(f"{key}=***" if key == "password" else f"{key}={_dsn_quote(params[key])}" for key in keys)


def scrub(message: str, dsn: str) -> str:
    """An error message with the DSN's password taken out wherever it appears (libpq's messages
    name hosts and ports, not passwords, but nothing is left to that)."""
    password = _password_of(dsn)
    if password:
        for spelling in {password, quote(password, safe="")}:
            message = message.replace(spelling, "***")
    return message


def _password_of(dsn: str) -> str | None:
    if _is_url(dsn):
        parts = _split_url(dsn)
        if parts is None:
            return None
        in_query = [text for key, text in parse_qsl(parts.query) if key.lower() == "password"]
        return parts.password or (in_query[0] if in_query else None)
    try:
        return psycopg2.extensions.parse_dsn(dsn).get("password")
    except psycopg2.ProgrammingError:
        return None


def _redact_url(url: str) -> str:
    parts = _split_url(url)
    if parts is None:
        return "*** (not a valid URL, not shown)"
    password = parts.password
    netloc = parts.netloc
    if password is not None or "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostport}" if password is not None else f"{user}@{hostport}"
    query = urlencode(
        [
            (key, "***" if key.lower() == "password" else text)
            for key, text in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _split_url(url: str) -> SplitResult | None:
    """The URL's parts, or None when a reserved character left unencoded in the user info (/, ?,
    #, a second @) makes the split ambiguous: then a fragment of a password could sit anywhere."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.fragment or "@" in parts.path + parts.query:
        return None
    return parts


def _dsn_quote(text: str) -> str:
    """A key/value DSN value as libpq reads it back: quoted when empty or holding space, ' or \\."""
    if text and not any(c.isspace() or c in "'\\" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def has_password(value: str) -> bool:
    """Whether a DSN or URL carries a password in any spelling: user info, a `password` query
    parameter or a password= key. Unparseable text that mentions a password counts as one."""
    if _is_url(value):
        parts = _split_url(value)
        if parts is None:
            return "password" in value.lower() or "@" in value
        return parts.password is not None or any(
            key.lower() == "password" for key, _ in parse_qsl(parts.query)
        )
    try:
        return "password" in psycopg2.extensions.parse_dsn(value)
    except psycopg2.ProgrammingError:
        return "password" in value.lower()


def dsn_problem(setting: str, dsn: str) -> str | None:
    """Why libpq cannot parse a PostgreSQL DSN, told without showing any of it, or None."""
    if _is_url(dsn) and urlsplit(dsn).netloc.count("@") > 1:
        # libpq splits the user info at the first @, urllib at the last: the two would disagree
        # on where the password ends, and a piece of it would be shown as a host name.
        return (
            f"{setting}: the URL's user info holds an unencoded @ (not shown: it may be in the "
            "password); percent-encode it as %40"
        )
    try:
        psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return (
            f"{setting}: the DSN cannot be parsed (not shown: it may hold a password); a value with "
            "spaces or quotes must be single-quoted (password='a b', \\' for a quote) or, in a "
            "postgresql:// URL, percent-encoded (%20 for a space)"
        )
    return None
