"""Settings: command-line options, then USERDATA_* variables, then defaults.

This module is the only reader of the environment, and only when :func:`resolve` is called.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .backoff import DEFAULT_DELAYS
from .redact import HIDDEN, redacted_url, url_secrets
from .stores import MAX_OBJECT_SIZE

__all__ = ("OPTIONS", "Settings", "SettingsError", "resolve")


class SettingsError(ValueError):
    """An option or variable has a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    """How the service runs. Tests build it directly; the CLI builds it with :func:`resolve`."""

    #: folder mode: the store; S3 mode: MinIO's data directory to watch for change hints, if any
    data_dir: Path | None = None
    s3_endpoint: str | None = None
    bucket: str = "datalake"
    prefix: str = "src-data/"
    output_key: str = "processed_data/output.csv"
    host: str = "127.0.0.1"
    port: int = 8080
    rescan_interval: float = 60.0
    database_url: str | None = None
    webhook_token: str | None = None
    log_level: str = "info"
    max_object_size: int = MAX_OBJECT_SIZE
    log_format: str = "text"
    access_log: bool = False
    #: S3 mode: MinIO's bucket notifications from a JetStream stream on this NATS server
    nats_url: str | None = None
    nats_stream: str = "userdata"
    nats_subject: str = "minio.events"
    #: never write output.csv, its hint or the database (replicas without --database-url but one)
    read_only: bool = False
    # Tuning, not on the command line: tests pass small values, or switch parts off.
    watch: bool = True
    watch_debounce_ms: int = 200
    watch_step_ms: int = 20
    output_settle: float = 0.3
    output_max_delay: float = 3.0
    retry_delays: tuple[float, ...] = DEFAULT_DELAYS
    #: seconds of lag after which the database mirror counts as behind, even before an error says why
    mirror_lag_limit: float = 30.0

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir))
        elif not self.s3_endpoint:
            object.__setattr__(self, "data_dir", Path("minio-data"))
        if not self.bucket or "/" in self.bucket:
            raise SettingsError(f"bucket: not a bucket name: {self.bucket!r}")
        prefix = self.prefix.strip("/")
        object.__setattr__(self, "prefix", prefix + "/" if prefix else "")
        if not self.output_key or self.output_key.endswith("/"):
            raise SettingsError(f"output_key: not an object key: {self.output_key!r}")
        if self.output_key.startswith(self.prefix) and "/" not in self.output_key[len(self.prefix) :]:
            raise SettingsError(f"output_key: {self.output_key!r} must not be a source object")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"log_level: {self.log_level!r} is not debug, info, warning or error")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"log_format: {self.log_format!r} is not text or json")
        self._check_numbers()
        if self.database_url is not None and urlsplit(self.database_url).scheme not in ("postgresql", "postgres"):
            raise SettingsError(f"database_url: not a postgresql:// URL: {redacted_url(self.database_url)!r}")
        self._check_nats()

    def _check_nats(self) -> None:
        if self.nats_url is None:
            return
        if urlsplit(self.nats_url).scheme not in ("nats", "tls"):
            raise SettingsError(f"nats_url: not a nats:// or tls:// URL: {redacted_url(self.nats_url)!r}")
        if not self.s3_endpoint:
            raise SettingsError(
                "nats_url: needs --s3-endpoint (MinIO publishes the events; folder mode is one process)"
            )
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.nats_stream):
            raise SettingsError(f"nats_stream: not a stream name (letters, digits, - and _): {self.nats_stream!r}")
        if not re.fullmatch(r"[^\s*>]+", self.nats_subject) or ".." in f".{self.nats_subject}.":
            raise SettingsError(f"nats_subject: not a subject without wildcards: {self.nats_subject!r}")

    def _check_numbers(self) -> None:
        if self.max_object_size < 1:
            raise SettingsError(f"max_object_size: {self.max_object_size} is not a number of bytes >= 1")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port: {self.port} is not 0..65535")
        if not (math.isfinite(self.rescan_interval) and self.rescan_interval >= 0):
            raise SettingsError(f"rescan_interval: {self.rescan_interval} is not a number of seconds >= 0")

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{f.name}={self._shown(f.name)!r}' for f in fields(self))})"

    def chosen(self) -> str:
        """The settings users choose (the command line's), secrets hidden: for the startup line."""
        return " ".join(f"{name}={'' if (value := self._shown(name)) is None else value}" for name in OPTIONS)

    def _shown(self, name: str) -> Any:
        """The value of setting ``name`` as it may be shown: the token hidden, URLs without secrets."""
        value = getattr(self, name)
        if name == "webhook_token" and value:
            return HIDDEN
        if name in ("database_url", "nats_url") and value:
            return redacted_url(value)
        return value

    def secrets(self) -> set[str]:
        """What no log line may show: the database's and NATS's passwords, the webhook token."""
        found = {secret for url in (self.database_url, self.nats_url) if url for secret in url_secrets(url)}
        return found | {self.webhook_token} if self.webhook_token else found


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError("expected a whole number")
    return int(text)


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a number of seconds >= 0")
    return value


def _text(text: str) -> str:
    return text


_SWITCH = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _switch(text: str) -> bool:
    try:
        return _SWITCH[text.strip().lower()]
    except KeyError:
        raise ValueError("expected on or off (true/false, yes/no, 1/0)") from None


#: option name -> how to convert its text; every one is also USERDATA_<NAME>
OPTIONS: dict[str, Any] = {
    "data_dir": Path,
    "s3_endpoint": _text,
    "bucket": _text,
    "prefix": _text,
    "output_key": _text,
    "host": _text,
    "port": _positive_int,
    "rescan_interval": _seconds,
    "database_url": _text,
    "webhook_token": _text,
    "log_level": str.lower,
    "max_object_size": _positive_int,
    "log_format": str.lower,
    "access_log": _switch,
    "nats_url": _text,
    "nats_stream": _text,
    "nats_subject": _text,
    "read_only": _switch,
}


def resolve(options: Mapping[str, str | None], environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from command-line ``options`` (None where not given), then the environment.

    >>> resolve({"port": "9000"}, {"USERDATA_PORT": "8000", "USERDATA_BUCKET": "b"}).port
    9000
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # where each value came from, to name it in errors
    for name, convert in OPTIONS.items():
        text = options.get(name)
        source = "--" + name.replace("_", "-")
        if text is None:
            source = "USERDATA_" + name.upper()
            text = env.get(source) or None  # an empty variable counts as unset
        if text is None:
            continue
        try:
            values[name] = convert(text)
        except ValueError as e:
            raise SettingsError(f"{source}: {text!r}: {e}") from None
        sources[name] = source
    values.update(overrides)
    try:
        return Settings(**values)
    except SettingsError as e:
        name, _, message = str(e).partition(": ")
        raise SettingsError(f"{sources.get(name, name)}: {message}") from None
