"""Typed keys for what the application holds."""

from __future__ import annotations

from aiohttp import web

from .cache import ResponseCache
from .index import UserIndex
from .pipeline import Pipeline
from .settings import Settings
from .sinks.output_csv import OutputWriter
from .sinks.postgres import PostgresMirror
from .stores import Store
from .watcher import Watcher

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
INDEX = web.AppKey("index", UserIndex)
DATA_CACHE = web.AppKey("data_cache", ResponseCache)  # bodies of recent GET /data answers
PIPELINE = web.AppKey("pipeline", Pipeline)
OUTPUT = web.AppKey("output", OutputWriter)
WATCHER = web.AppKey("watcher", Watcher)  # only set while a folder is watched
MIRROR = web.AppKey("mirror", PostgresMirror)  # only set with a database URL
