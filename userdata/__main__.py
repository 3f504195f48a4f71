"""Command line: ``userdata serve | process | demo`` (also ``python -m userdata``)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import logging
import os
import socket
import sys
from collections.abc import Sequence
from importlib import metadata

import orjson
from aiohttp import web

from . import demo, logs
from .app import create_app, create_store, follow_catalog
from .index import UserIndex
from .pipeline import Pipeline
from .settings import OPTIONS, Settings, SettingsError, resolve
from .sinks.output_csv import OutputWriter
from .sinks.postgres import DatabaseUnavailable, mirror_once
from .stores import Store, StoreUnavailable
from .stores.folder import FolderStore

logger = logging.getLogger("userdata")

_HELP = {
    "data_dir": "folder holding <bucket>/<key> objects (default minio-data)",
    "s3_endpoint": "S3 endpoint URL; reads objects through S3 instead of the folder",
    "bucket": "bucket of the source objects and output.csv (default datalake)",
    "prefix": "prefix of the source objects (default src-data/)",
    "output_key": "key of the aggregate CSV (default processed_data/output.csv)",
    "host": "address to listen on (default 127.0.0.1)",
    "port": "port to listen on (default 8080)",
    "rescan_interval": "seconds between incremental rescans; 0 turns them off (default 60)",
    "database_url": "PostgreSQL URL to mirror the users to",
    "webhook_token": "token that enables POST /events for MinIO bucket notifications",
    "log_level": "debug, info, warning or error (default info)",
    "max_object_size": "bytes a source object may have at most; larger ones are rejected unread (default 1048576)",
    "log_format": "text, or json: one JSON object a line (default text)",
    "access_log": "on: a line per request, logger userdata.access (default off)",
    "nats_url": "S3 mode: NATS server whose JetStream stream holds MinIO's bucket notifications",
    "nats_stream": "the JetStream stream, made when missing (default userdata)",
    "nats_subject": "the subject MinIO publishes to (default minio.events)",
    "read_only": "on: never write output.csv nor the database (no --database-url: all replicas but one; default off)",
}
_SERVE_ONLY = (
    "host",
    "port",
    "rescan_interval",
    "webhook_token",
    "access_log",
    "nats_url",
    "nats_stream",
    "nats_subject",
    "read_only",
)
_EXAMPLES = """\
examples:
  userdata serve                          the folder store minio-data/ on http://127.0.0.1:8080
  userdata demo --users 1000              1,000 demo users into the source folder first
  userdata serve --s3-endpoint http://127.0.0.1:9000
                                          MinIO or S3 (credentials: AWS_ACCESS_KEY_ID and
                                          AWS_SECRET_ACCESS_KEY, or the usual AWS files)
  USERDATA_PORT=9000 userdata serve       any option as its variable; the command line wins
  userdata process --database-url postgresql://user@db/userdata
                                          one pass: output.csv and the table, then exit
"""


def _version() -> str:
    try:
        return metadata.version("userdata")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _count(text: str) -> int:
    """A whole number of 1 or more, for argparse."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number of 1 or more")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="userdata",
        description="Index per-user CSV and PNG objects and serve them over HTTP. "
        "Every option can also be given as a USERDATA_<NAME> variable; the command line wins.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"userdata {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_ in (
        ("serve", "run the service"),
        ("process", "one batch pass: read the source, write output.csv and the database if configured, exit"),
        ("demo", "write a demo data set into the source folder"),
    ):
        sub = commands.add_parser(
            name, help=help_, description=help_, epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        for option in OPTIONS:
            if name == "serve" or option not in _SERVE_ONLY:
                variable = f"USERDATA_{option.upper()}"
                sub.add_argument(
                    "--" + option.replace("_", "-"), dest=option, metavar="X", help=f"{_HELP[option]}; {variable}"
                )
        if name == "demo":
            sub.add_argument("--users", type=_count, default=100, help="number of users (default 100)")
            sub.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
            sub.add_argument(
                "--if-empty", action="store_true", help="do nothing if the source prefix already has CSV files"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = resolve({name: getattr(args, name, None) for name in OPTIONS})
    except SettingsError as e:
        print(f"userdata: {e}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format, settings.secrets())
    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "process":
            return asyncio.run(process(settings))
        return asyncio.run(write_demo(settings, args.users, args.seed, if_empty=args.if_empty))
    except NotImplementedError as e:
        print(f"userdata: {e}", file=sys.stderr)
        return 2


def serve(settings: Settings) -> int:
    """Run the service until SIGTERM or Ctrl-C."""
    # Bound before anything is loaded: a port in use is told at once, in one line.
    try:
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.create_server((settings.host, settings.port), family=family)
    except OSError as e:
        why = os.strerror(e.errno) if e.errno and e.errno > 0 else (e.strerror or str(e))
        print(f"userdata: cannot listen on {settings.host}:{settings.port}: {why}", file=sys.stderr)
        return 2
    logger.info("serving on http://%s:%d with %s", settings.host, settings.port, settings.chosen())
    web.run_app(
        create_app(settings),
        sock=sock,
        print=None,
        shutdown_timeout=3.0,
        access_log=logging.getLogger("userdata.access") if settings.access_log else None,
        access_log_class=logs.AccessLogger,
    )
    logger.info("stopped")
    return 0


async def process(settings: Settings) -> int:
    """One batch pass: load the source as the service would, write output.csv (and the database
    when configured), print a summary."""
    store = create_store(settings)
    await store.open()
    index = UserIndex()
    output = OutputWriter(store, index, settings.output_key)
    pipeline = Pipeline(store, index, settings.prefix)
    follow_catalog(output, pipeline, settings)
    try:
        report = await pipeline.load(restore=output.restore)
        written = await output.flush()
    except StoreUnavailable as e:
        print(f"userdata: store unavailable: {e}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    summary = dataclasses.asdict(report) | {"rejected_files": pipeline.rejected}
    database_error = None
    if settings.database_url:
        try:
            summary["database"] = dataclasses.asdict(await mirror_once(settings.database_url, index))
        except DatabaseUnavailable as e:
            database_error = f"database unavailable: {e}"
    sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    if not written:
        print(f"userdata: {output.error}", file=sys.stderr)
        return 1
    if database_error is not None:
        print(f"userdata: {database_error}", file=sys.stderr)
        return 1
    return 0


async def write_demo(settings: Settings, users: int, seed: int, *, if_empty: bool) -> int:
    """Write the demo data set: plain files in folder mode, uploads through S3 in S3 mode."""
    store = create_store(settings)
    await store.open()
    try:
        if if_empty and any(key.lower().endswith(".csv") for key in await store.list_objects()):
            logger.info("%s already has CSV files: no demo data written", store.describe())
            return 0
        if isinstance(store, FolderStore):
            written = demo.write_demo(store.source_dir, users=users, seed=seed)
        else:
            written = await _upload_demo(store, settings.prefix, users, seed)
    except StoreUnavailable as e:
        print(f"userdata: store unavailable: {e}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    logger.info("wrote %d demo users to %s", written, store.describe())
    return 0


async def _upload_demo(store: Store, prefix: str, users: int, seed: int) -> int:
    files = demo.iter_demo(users, seed)
    while batch := list(itertools.islice(files, 256)):
        await asyncio.gather(*(store.write(prefix + name, data) for name, data in batch))
    return users


if __name__ == "__main__":
    sys.exit(main())
