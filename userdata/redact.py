"""Secrets kept out of logs, /health, error messages and reprs: a database password in any form
a URL carries it (userinfo, a ``password`` query parameter, raw or percent-decoded), and the
webhook token."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ("HIDDEN", "Redactor", "redacted_url", "url_secrets")

HIDDEN = "***"
#: Query parameters of a database URL that hold a secret (libpq's names).
_SECRET_PARAMS = frozenset({"password", "passfile", "sslpassword"})


#: Schemes whose URLs may hold a token alone where a user name would be.
_TOKEN_SCHEMES = ("nats", "tls")


def url_secrets(url: str) -> set[str]:
    """The secrets ``url`` holds, in every form they may be printed in."""
    parts = urlsplit(url)
    found = set()
    if parts.password:
        found |= {parts.password, unquote(parts.password)}
    elif parts.username and parts.scheme in _TOKEN_SCHEMES:  # nats://token@host: the name is the token
        found |= {parts.username, unquote(parts.username)}
    for raw in parts.query.split("&"):
        name, _, value = raw.partition("=")
        if unquote(name).lower() in _SECRET_PARAMS and value:
            found |= {value, unquote(value.replace("+", " "))}
    return {secret for secret in found if secret}


def redacted_url(url: str) -> str:
    """``url`` with its password and secret query parameters shown as ``***``.

    >>> redacted_url("postgresql://u:p%40ss@db/x?sslmode=require&password=p2")
    'postgresql://u:***@db/x?sslmode=require&password=***'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{HIDDEN}@{host}"
    elif parts.username and parts.scheme in _TOKEN_SCHEMES:
        netloc = f"{HIDDEN}@{netloc.rpartition('@')[2]}"
    params = []
    for raw in parts.query.split("&") if parts.query else ():
        name = raw.partition("=")[0]
        params.append(f"{name}={HIDDEN}" if unquote(name).lower() in _SECRET_PARAMS else raw)
    query = "&".join(params)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class Redactor(logging.Filter):
    """A handler's filter: each secret in a record's message, traceback or string fields (an
    event's own, which JSON lines show) shown as ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first: a secret that contains another is hidden whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, HIDDEN)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        record.msg, record.args = self.redact(message), ()
        for name, value in list(vars(record).items()):
            if type(value) is str and name != "msg":
                setattr(record, name, self.redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True
