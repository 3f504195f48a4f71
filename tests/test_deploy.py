"""The deployment: docker-compose.yml, deploy/haproxy.cfg and the Dockerfile, checked statically,
and the compose topology run as plain processes.

No Docker engine runs here, so the end-to-end test plays the compose file itself: a nats-server
of the test's own for the nats service, SeaweedFS for MinIO (with bench/bridge.py publishing its
changes to JetStream as MinIO's NATS target would: MinIO's own publisher stays untested, its
settings are checked statically), a database of the test's own on the machine's PostgreSQL for
the postgres service, the app's replicas as ``python -m userdata`` with the environment of the
compose file's services (their hostnames mapped to loopback ports), and Debian's haproxy on
deploy/haproxy.cfg for the load balancer.
"""

from __future__ import annotations

import asyncio
import configparser
import csv
import datetime as dt
import importlib.metadata
import inspect
import io
import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import yaml
from haproxyserver import HAProxy, Section, haproxy_binary, local_config, sections
from helpers import SpyStore, fast_settings, wait_until
from natsserver import NatsServer, nats_binary
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from pgserver import own_database
from prometheus_client.parser import text_string_to_metric_families
from proxy import FaultProxy
from seaweed import SeaweedFS, free_ports, s3_client
from served import one_writer

from bench.bridge import PROBE, Bridge
from bench.procs import stop_process
from userdata.live import Broadcaster
from userdata.settings import OPTIONS, Settings, resolve
from userdata.stores.folder import FolderStore

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CONSTRAINTS = ROOT / "constraints.txt"
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy.cfg"

MINIO_IMAGE = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
MC_IMAGE = "quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z"
#: Exact versions, the alpine variants: NATS's has the busybox wget of its healthcheck, and both
#: are the images' small ones. HAProxy's is an LTS branch (2.8), whose configuration Debian's
#: 2.6 (the tests') reads alike.
NATS_IMAGE = re.compile(r"nats:\d+\.\d+\.\d+-alpine")
HAPROXY_IMAGE = re.compile(r"haproxy:2\.8\.\d+-alpine")
#: Where the haproxy image reads its configuration.
HAPROXY_IMAGE_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"
MINIO_API_PORT = 9000  # MinIO's default; the compose file does not pass --address
POSTGRES_PORT = 5432  # the postgres image's default
NATS_PORT = 4222  # nats-server's default client port
#: Values for every variable the compose file reads, all unlike its defaults: a cross-check that
#: holds with both proves that both sides read the same variable.
OVERRIDES = {
    "MINIO_ROOT_USER": "alice",
    "MINIO_ROOT_PASSWORD": "alice-secret-1",
    "POSTGRES_PASSWORD": "pg-secret-2",
}
WAIT = 30.0  # seconds for any one condition of the end-to-end test


# --- docker-compose.yml as compose reads it ---------------------------------------------------

_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?-)([^}]*))?\}|(\w+)|(.?))")


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's variable substitution in the values of a parsed file: ``$$``, ``$VAR``, ``${VAR}``,
    ``${VAR:-default}`` (unset or empty) and ``${VAR-default}`` (unset)."""
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        escaped, name, operator, default, bare, other = match.groups()
        if escaped:
            return "$"
        if other is not None:
            raise AssertionError(f"a $ compose cannot substitute in {value!r}")
        name = name or bare
        found = environ.get(name)
        if (operator == ":-" and not found) or (operator == "-" and found is None):
            return str(default)
        # compose would substitute an empty string (with a warning): here a variable needs a default
        assert found is not None, f"${name} has no default in {value!r}"
        return found

    return _VARIABLE.sub(substitute, value)


def load_compose(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as compose sees it when ``environ`` holds the user's variables."""
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), environ or {})  # type: ignore[no-any-return]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    for name, value in env.items():
        # An unquoted `on` or `yes` is a boolean to YAML 1.1 and not what compose passes on.
        assert isinstance(value, (str, int)) and not isinstance(value, bool), f"{name}: quote {value!r}"
    return {name: str(value) for name, value in env.items()}


def published_ports(service: Mapping[str, Any]) -> dict[int, int]:
    """Container port -> host port, from the short syntax ``[ip:]host:container``."""
    ports = {}
    for entry in service.get("ports", []):
        *_, host, container = str(entry).split(":")
        ports[int(container)] = int(host)
    return ports


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    found = []
    for entry in service.get("volumes", []):
        source, target, *mode = str(entry).split(":")
        found.append(Mount(source, target, "ro" in ",".join(mode).split(",")))
    return found


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    dependencies = service.get("depends_on") or {}
    # The list form has no conditions: a dependency would only be started, never awaited.
    assert isinstance(dependencies, dict), "depends_on needs conditions"
    return {name: spec["condition"] for name, spec in dependencies.items()}


def app_settings(compose: Mapping[str, Any]) -> Settings:
    """The settings the app's environment gives the service, as the CLI would resolve them."""
    return resolve({}, environment(compose["services"]["app"]))


def shell_commands(service: Mapping[str, Any]) -> list[list[str]]:
    """The commands of a ``/bin/sh -c`` script, as words, with the container's variables expanded."""
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    env = environment(service)
    commands = []
    for line in script.splitlines():
        words = shlex.split(line)
        if not words or words[:1] == ["set"]:
            continue
        commands.append([re.sub(r"\$(\w+)", lambda m: env[m.group(1)], word) for word in words])
    return commands


def command_starting(commands: list[list[str]], *prefix: str) -> list[str]:
    matching = [c for c in commands if c[: len(prefix)] == list(prefix)]
    assert len(matching) == 1, f"one {' '.join(prefix)!r} in {commands}"
    return matching[0]


def flag(command: list[str], *names: str) -> str | None:
    """The value after the one of ``names`` in ``command``, or None where none is given."""
    given = [n for n in command if n in names]
    assert len(given) <= 1, f"{names} given twice in {command}"
    return command[command.index(given[0]) + 1] if given else None


def nats_client_port(nats: Mapping[str, Any]) -> int:
    return int(flag(nats["command"], "-p", "--port") or NATS_PORT)


def nats_monitor_port(nats: Mapping[str, Any]) -> int:
    port = flag(nats["command"], "-m", "--http_port")
    assert port, f"no monitoring port in {nats['command']}: the healthcheck needs one"
    return int(port)


def nats_target(services: Mapping[str, Any]) -> str:
    """The ID of MinIO's NATS target that createbuckets subscribes the bucket to."""
    event = command_starting(shell_commands(services["createbuckets"]), "mc", "event", "add")
    (arn,) = [w for w in event if w.startswith("arn:")]
    target = re.fullmatch(r"arn:minio:sqs::(\w+):nats", arn)
    assert target, arn
    return target.group(1)


def lb_config() -> list[Section]:
    return sections(HAPROXY_CONFIG.read_text())


def section(found: list[Section], keyword: str, name: str | None = None) -> Section:
    matching = [s for s in found if s.keyword == keyword and name in (None, s.name)]
    assert len(matching) == 1, f"one {keyword} {name or ''} in {HAPROXY_CONFIG.name}: {matching}"
    return matching[0]


def haproxy_seconds(text: str) -> float:
    """An HAProxy time (``500ms``, ``10s``, ``5m``, ``1h``, ``1d``; a bare number is milliseconds)."""
    number, unit = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", text).groups()  # type: ignore[union-attr]
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit or "ms"]
    return int(number) * scale


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(params=["defaults", "overridden"], scope="module")
def compose_variants(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The compose file with its defaults, and with every variable set by the user."""
    return load_compose({} if request.param == "defaults" else OVERRIDES)


# --- Dockerfile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        argv = json.loads(self.args)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), self
        return argv


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their arguments; comments dropped, continued lines joined."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker skips these inside a continued instruction too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"one {keyword}: {found}"
    return found[0]


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.args):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def healthcheck_command(instruction: Instruction) -> list[str]:
    options = instruction.args
    while options.startswith("--"):
        options = options.split(None, 1)[1]
    keyword, _, argv = options.partition(" ")
    assert keyword == "CMD", instruction
    return Instruction("CMD", argv).exec_form()


def health_port(argv: list[str]) -> int:
    """The port of the liveness URL a healthcheck asks on the container's loopback: /livez, which
    answers during a first load of any length, so that never marks the container unhealthy."""
    (port,) = re.findall(r"http://127\.0\.0\.1:(\d+)/livez\b", " ".join(argv))
    return int(port)


# --- static checks: docker-compose.yml ----------------------------------------------------------


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["minio"]["image"] == MINIO_IMAGE
    assert services["createbuckets"]["image"] == MC_IMAGE
    assert re.fullmatch(r"postgres:\d+-alpine", services["postgres"]["image"]), services["postgres"]["image"]
    assert NATS_IMAGE.fullmatch(services["nats"]["image"]), services["nats"]["image"]
    assert HAPROXY_IMAGE.fullmatch(services["lb"]["image"]), services["lb"]["image"]
    for name, service in services.items():
        if "build" in service:
            assert service["build"] == ".", name  # the project's Dockerfile
            assert service["image"] == "userdata:local", name  # the name the demo job runs too
            continue
        if service.get("pull_policy") == "never":  # an image built here
            continue
        repository, _, tag = service["image"].rpartition(":")
        assert repository and "/" not in tag and tag not in ("", "latest"), f"{name}: {service['image']}"


def test_startup_order(compose: dict[str, Any]) -> None:
    order = {name: depends_on(service) for name, service in compose["services"].items()}
    assert order == {
        "nats": {},
        # MinIO's NATS target connects at start; events wait in its queue until the stream exists
        "minio": {"nats": "service_healthy"},
        "createbuckets": {"minio": "service_healthy"},
        "demo": {"createbuckets": "service_completed_successfully"},
        "postgres": {},
        "app": {
            "minio": "service_healthy",
            "nats": "service_healthy",
            "postgres": "service_healthy",
            "demo": "service_completed_successfully",
        },
        # HAProxy finds the replicas itself and sends requests only to the ready ones
        "lb": {"app": "service_started"},
    }


def test_what_is_awaited_can_be_awaited(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            target = services[dependency]
            if condition == "service_healthy":
                assert target["healthcheck"]["test"], f"{name} waits for {dependency}'s health"
            elif condition == "service_started":
                assert target.get("restart", "no") != "no", f"{name} waits for {dependency}, a one-shot, to start"
            else:
                assert condition == "service_completed_successfully", f"{name}: {condition}"
                # a one-shot that compose restarted would never count as completed
                assert target.get("restart", "no") == "no", dependency


def test_healthchecks(compose: dict[str, Any], dockerfile: list[Instruction]) -> None:
    services = compose["services"]
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    postgres = services["postgres"]
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"], test
    assert test[test.index("-U") + 1] == environment(postgres)["POSTGRES_USER"]
    app = services["app"]["healthcheck"]["test"]
    assert app[:2] == ["CMD", "python"], app  # the slim image has no curl
    assert health_port(app[1:]) == app_settings(compose).port
    assert app[1:] == healthcheck_command(only(dockerfile, "HEALTHCHECK"))
    # NATS: busybox's wget (the alpine image's) on the monitoring port; healthy once JetStream runs
    nats = services["nats"]["healthcheck"]["test"]
    assert nats[:2] == ["CMD", "wget"] and services["nats"]["image"].endswith("-alpine"), nats
    url = urlsplit(nats[-1])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", nats_monitor_port(services["nats"]), "/healthz")
    assert parse_qs(url.query) == {"js-enabled-only": ["true"]}


def test_every_long_running_service_restarts(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        one_shot = name in ("createbuckets", "demo")
        assert service.get("restart", "no") == ("no" if one_shot else "unless-stopped"), name


def test_the_package_says_it_is_typed() -> None:
    assert (ROOT / "userdata" / "py.typed").exists()
    text = (ROOT / "setup.cfg").read_text()
    assert "py.typed" in text and "Typing :: Typed" in text
    assert f"Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}" in text


def test_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    minio_command = services["minio"]["command"]
    console = int(minio_command[minio_command.index("--console-address") + 1].lstrip(":"))
    assert published_ports(services["minio"]) == {MINIO_API_PORT: MINIO_API_PORT, console: console}
    # The app is reached through the load balancer only, on the port it had alone
    port = app_settings(compose).port
    assert "ports" not in services["app"]  # replicas would fight over one host port
    ((_, bind),) = section(lb_config(), "frontend").starting("bind")
    assert published_ports(services["lb"]) == {int(bind.rpartition(":")[2]): port}
    assert "ports" not in services["postgres"]  # reached with `docker compose exec`; 5432 may be taken
    assert "ports" not in services["nats"]  # reached on the compose network only
    for name, service in services.items():
        for entry in service.get("ports", []):
            assert str(entry).startswith("127.0.0.1:"), f"{name}: {entry} is published beyond loopback"


def test_minio_data_is_compose_data_and_not_the_apps(compose: dict[str, Any]) -> None:
    services = compose["services"]
    minio_command = services["minio"]["command"]
    data_dir = minio_command[minio_command.index("server") + 1]
    (minio_data,) = [m for m in mounts(services["minio"]) if m.target == data_dir]
    assert posixpath.normpath(minio_data.source) == "compose-data/minio"
    # The stream names every change: a replica needs nothing of MinIO's disk, so it can run
    # anywhere, and no watcher repeats what the stream says.
    assert "volumes" not in services["app"]
    settings = app_settings(compose)
    assert settings.s3_endpoint and settings.data_dir is None


def test_the_app_runs_replicas(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]
    assert app["deploy"]["replicas"] >= 2
    assert "container_name" not in app  # one name cannot be given to several containers
    settings = app_settings(compose)
    # with the database, the replicas elect their writer; none is told to stay read-only
    assert settings.nats_url and settings.database_url and not settings.read_only


def test_nats_keeps_its_stream_on_a_volume(compose_variants: dict[str, Any]) -> None:
    nats = compose_variants["services"]["nats"]
    command = nats["command"]
    assert command[0] == "nats-server" and ("-js" in command or "--jetstream" in command), command
    store = flag(command, "-sd", "--store_dir")
    assert store, command
    (volume,) = [m for m in mounts(nats) if m.target == store]
    assert volume.source in compose_variants["volumes"] and not volume.read_only


def test_the_app_reads_the_nats_services_stream(compose_variants: dict[str, Any]) -> None:
    services = compose_variants["services"]
    settings = resolve({}, environment(services["app"]))
    url = urlsplit(settings.nats_url or "")
    assert (url.scheme, url.hostname, url.port) == ("nats", "nats", nats_client_port(services["nats"]))
    assert url.hostname in services


def test_no_service_shares_the_folder_store(compose: dict[str, Any]) -> None:
    folder_store = (ROOT / "minio-data").resolve()
    for name, service in compose["services"].items():
        for mount in mounts(service):
            if mount.is_bind:
                source = (ROOT / mount.source).resolve()
                assert not (source == folder_store or source in folder_store.parents), f"{name}: {mount}"
                assert folder_store not in source.parents, f"{name}: {mount}"


def test_app_environment_names_real_options(compose: dict[str, Any]) -> None:
    for name in ("app", "demo"):
        env = environment(compose["services"][name])
        unknown = {v for v in env if v.startswith("USERDATA_") and v.removeprefix("USERDATA_").lower() not in OPTIONS}
        assert not unknown, f"{name}: {unknown}"
    settings = app_settings(compose)  # resolves, so every value converts too
    assert settings.host == "0.0.0.0"  # reachable from the other containers
    assert settings.database_url and settings.nats_url
    # No webhook: through the load balancer, MinIO's posts would reach one replica only
    assert settings.webhook_token is None


def test_demo_uploads_where_the_app_reads(compose: dict[str, Any]) -> None:
    services = compose["services"]
    demo, app = services["demo"], services["app"]
    # The app's image, built once, never pulled (no registry has it)
    assert "build" not in demo and demo["image"] == app["image"] and demo["pull_policy"] == "never"
    assert demo["command"] == ["userdata", "demo", "--if-empty"]
    demo_settings = resolve({}, environment(demo))
    settings = app_settings(compose)
    where = ("s3_endpoint", "bucket", "prefix")
    assert [getattr(demo_settings, f) for f in where] == [getattr(settings, f) for f in where]
    credentials = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    assert [environment(demo).get(v) for v in credentials] == [environment(app).get(v) for v in credentials]


def test_s3_endpoint_is_minio(compose: dict[str, Any]) -> None:
    endpoint = urlsplit(app_settings(compose).s3_endpoint or "")
    assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", "minio", MINIO_API_PORT)
    assert endpoint.hostname in compose["services"]


def test_credentials_match_across_services(compose_variants: dict[str, Any]) -> None:
    services = compose_variants["services"]
    minio = environment(services["minio"])
    root = [minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]]
    for name in ("app", "demo"):
        env = environment(services[name])
        assert [env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]] == root, name
    alias = command_starting(shell_commands(services["createbuckets"]), "mc", "alias", "set")
    url = urlsplit(alias[4])
    assert (url.hostname, url.port) == ("minio", MINIO_API_PORT)
    assert alias[5:] == root


def test_database_url_is_the_postgres_service(compose_variants: dict[str, Any]) -> None:
    services = compose_variants["services"]
    postgres = environment(services["postgres"])
    url = urlsplit(resolve({}, environment(services["app"])).database_url or "")
    assert (url.hostname, url.port) == ("postgres", POSTGRES_PORT)
    assert url.hostname in services
    assert [url.username, url.password, url.path.lstrip("/")] == [
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    ]


def test_minio_publishes_to_the_apps_stream(compose_variants: dict[str, Any]) -> None:
    services = compose_variants["services"]
    minio = environment(services["minio"])
    settings = resolve({}, environment(services["app"]))
    # createbuckets subscribes the bucket to the target named in its ARN, the only one set up
    target = nats_target(services)
    enabled = {m.group(1) for v in minio if (m := re.fullmatch(r"MINIO_NOTIFY_(\w+?)_ENABLE_(\w+)", v))}
    assert enabled == {"NATS"} and minio[f"MINIO_NOTIFY_NATS_ENABLE_{target}"] == "on", sorted(minio)
    host, _, port = minio[f"MINIO_NOTIFY_NATS_ADDRESS_{target}"].rpartition(":")
    assert (host, int(port)) == ("nats", nats_client_port(services["nats"]))
    assert host in services
    assert minio[f"MINIO_NOTIFY_NATS_SUBJECT_{target}"] == settings.nats_subject
    # into the stream, acknowledged, not core NATS's fire and forget
    assert minio[f"MINIO_NOTIFY_NATS_JETSTREAM_{target}"] == "on"
    # a PUT or DELETE answers once its event is queued or sent
    assert minio["MINIO_API_SYNC_EVENTS"] == "on"
    # Queued events outlive a restart of MinIO's container only on a volume; not in the data
    # directory, MinIO's tree of objects.
    queue = minio[f"MINIO_NOTIFY_NATS_QUEUE_DIR_{target}"]
    minio_command = services["minio"]["command"]
    data_dir = minio_command[minio_command.index("server") + 1]
    assert not (queue + "/").startswith(data_dir.rstrip("/") + "/"), queue
    (volume,) = [m for m in mounts(services["minio"]) if queue.startswith(m.target.rstrip("/") + "/")]
    assert volume.source in compose_variants["volumes"], volume
    # the subscription covers what the app reads: its bucket, its prefix, creations and deletions
    event = command_starting(shell_commands(services["createbuckets"]), "mc", "event", "add")
    assert event[event.index("--prefix") + 1] == settings.prefix
    assert set(event[event.index("--event") + 1].split(",")) >= {"put", "delete"}
    assert f"local/{settings.bucket}" in event
    assert "--ignore-existing" in event  # createbuckets runs again on every `make up`


def test_the_load_balancer_sends_requests_to_ready_replicas(compose: dict[str, Any]) -> None:
    services = compose["services"]
    lb, settings = services["lb"], app_settings(compose)
    (config,) = mounts(lb)  # the file of this project, where the image reads it, read-only
    assert (ROOT / config.source).resolve() == HAPROXY_CONFIG and config.target == HAPROXY_IMAGE_CONFIG
    assert config.read_only
    found = lb_config()
    frontend = section(found, "frontend")
    ((_, backend_name),) = frontend.starting("default_backend")
    backend = section(found, "backend", backend_name)
    # one slot per replica to come, filled from the app service's name at its port
    ((_, _, slots, address, *options),) = backend.starting("server-template")
    host, _, port = address.rpartition(":")
    assert (host, int(port)) == ("app", settings.port) and host in services
    assert int(slots) >= 5 * services["app"]["deploy"]["replicas"], "room to scale"
    assert "check" in options
    resolvers = section(found, "resolvers", options[options.index("resolvers") + 1])
    assert resolvers.starting("nameserver")[0][2:] == ("127.0.0.11:53",)  # Docker's own DNS
    assert options[options.index("init-addr") + 1] == "none"  # starts before the replicas resolve
    # readiness decides: a replica loading or catching up gets nothing
    assert backend.starting("option", "httpchk") == [("option", "httpchk", "GET", "/readyz")]
    assert backend.starting("http-check", "expect") == [("http-check", "expect", "status", "200")]
    # /updates streams for as long as a page is open, with a comment at least every keepalive
    timeouts = {line[1]: haproxy_seconds(line[2]) for line in section(found, "defaults").starting("timeout")}
    keepalive = inspect.signature(Broadcaster).parameters["keepalive"].default
    assert min(timeouts["client"], timeouts["server"]) >= 2 * keepalive, timeouts


def test_haproxy_takes_the_config(tmp_path: Path) -> None:
    haproxy = HAProxy(haproxy_binary(), tmp_path)
    done = haproxy.check(HAPROXY_CONFIG)
    assert done.returncode == 0 and "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_nats_healthcheck_passes_on_a_nats_server(compose: dict[str, Any], tmp_path: Path) -> None:
    # The service's command, as written but for its addresses (loopback ports of this test's
    # own) and its store (a folder here); then the healthcheck's URL, as busybox's wget asks it.
    nats = compose["services"]["nats"]
    client, monitor = free_ports(2)
    command = list(nats["command"])
    assert command[0] == "nats-server", command
    command[0] = nats_binary()
    command[command.index("-sd") + 1] = str(tmp_path / "js")
    command[command.index("-m") + 1] = str(monitor)
    url = nats["healthcheck"]["test"][-1].replace(f":{nats_monitor_port(nats)}/", f":{monitor}/")
    log = tmp_path / "nats.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([*command, "-a", "127.0.0.1", "-p", str(client)], stdout=out, stderr=out)

    def healthy() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:  # not listening yet (an HTTP error is one too)
            return False

    try:
        deadline = time.monotonic() + WAIT
        while not healthy():
            assert time.monotonic() < deadline, f"{url}: no 200 within {WAIT} s\n{log.read_text()}"
            time.sleep(0.05)  # polled until the deadline above
    finally:
        stop_process(process, 10)


def test_createbuckets_makes_the_apps_bucket(compose: dict[str, Any]) -> None:
    commands = shell_commands(compose["services"]["createbuckets"])
    make = command_starting(commands, "mc", "mb")
    assert make[2:] == ["--ignore-existing", f"local/{app_settings(compose).bucket}"]
    assert commands[0][:3] == ["mc", "alias", "set"]  # before anything uses the alias


# --- static checks: Dockerfile, Makefile, ignore files ------------------------------------------


def test_dockerfile_base_is_a_pinned_slim_python(dockerfile: list[Instruction]) -> None:
    assert re.fullmatch(r"python:3\.\d+-slim(-[a-z]+)?", only(dockerfile, "FROM").args), only(dockerfile, "FROM")


def test_dockerfile_runs_as_a_user_that_is_not_root(dockerfile: list[Instruction]) -> None:
    keywords = [i.keyword for i in dockerfile]
    users = [i.args for i in dockerfile[: keywords.index("CMD")] if i.keyword == "USER"]
    assert users, "no USER before CMD"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert "USER" not in keywords[keywords.index("CMD") :]


def test_dockerfile_serves_on_the_composed_port(dockerfile: list[Instruction], compose: dict[str, Any]) -> None:
    assert only(dockerfile, "CMD").exec_form() == ["userdata", "serve"]
    port = app_settings(compose).port
    assert only(dockerfile, "EXPOSE").args == str(port)
    assert health_port(healthcheck_command(only(dockerfile, "HEALTHCHECK"))) == port
    env = env_of(dockerfile)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["USERDATA_HOST"] == "0.0.0.0"


async def test_the_images_healthcheck_passes_during_a_first_load(
    dockerfile: list[Instruction], start_service, data_dir: Path, source_dir: Path
) -> None:
    # A long first load must never mark the container unhealthy: the command, run as written
    # (its port made this service's), passes while the load is held.
    (source_dir / "1.csv").write_text("first_name, last_name, birthts\nAnn, Lee, 0\n")
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    held = asyncio.Event()

    async def hold(keys: object) -> None:
        await held.wait()

    store.after_read = hold
    service = await start_service(fast_settings(data_dir), store=store, loaded=False)
    await wait_until(lambda: store.reads, message="the first load under way")
    argv = healthcheck_command(only(dockerfile, "HEALTHCHECK"))
    port = health_port(argv)
    argv = [sys.executable, *(a.replace(f":{port}/", f":{service.client.port}/") for a in argv[1:])]
    try:
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert not service.pipeline.loaded.is_set()  # it passed during the load
    finally:
        held.set()


def test_dockerfile_installs_dependencies_before_the_code(dockerfile: list[Instruction]) -> None:
    copies = [(n, i.args.split()[:-1]) for n, i in enumerate(dockerfile) if i.keyword == "COPY"]
    installs = [n for n, i in enumerate(dockerfile) if i.keyword == "RUN" and "pip install" in i.args]
    (first_copy, metadata), *_ = copies
    assert set(metadata) <= {"setup.cfg", "pyproject.toml", "constraints.txt"}, metadata
    (code_copy,) = [n for n, sources in copies if "userdata" in sources]
    assert first_copy < installs[0] < code_copy < installs[-1]


def test_dockerfile_installs_the_pinned_versions(dockerfile: list[Instruction]) -> None:
    copies = [i.args.split()[:-1] for i in dockerfile if i.keyword == "COPY"]
    assert "constraints.txt" in copies[0]  # in the dependency layer, before the first install
    dependencies, *_ = [i.args for i in dockerfile if i.keyword == "RUN" and "pip install" in i.args]
    install = shlex.split(dependencies.split("&&")[-1])
    assert install[:3] == ["pip", "install", "-r"], dependencies
    assert install[install.index("-c") + 1] == "constraints.txt", dependencies
    # the pins are one Python minor's: the image's
    base = re.fullmatch(r"python:(\d+\.\d+)-.*", only(dockerfile, "FROM").args)
    assert base and pinned_python() == base.group(1)


# --- static checks: constraints.txt and the Makefile ---------------------------------------------


def read_pins() -> dict[str, Version]:
    """constraints.txt as canonical name -> version; each line an exact pin and nothing else."""
    pins: dict[str, Version] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pin = Requirement(line)
        (specifier,) = pin.specifier
        assert specifier.operator == "==" and "*" not in specifier.version, line
        assert not (pin.extras or pin.marker or pin.url), line
        name = canonicalize_name(pin.name)
        assert name not in pins, f"{pin.name} pinned twice"
        pins[name] = Version(specifier.version)
    return pins


def pinned_python() -> str:
    """The Python minor constraints.txt was written with, from its header."""
    found = re.search(r"\(Python (\d+\.\d+)\.\d+", CONSTRAINTS.read_text())
    assert found, "constraints.txt's header names no Python"
    return found.group(1)


def declared_requirements() -> dict[str, list[Requirement]]:
    """setup.cfg's install_requires and the test and lint extras."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    groups = {"install_requires": config["options"]["install_requires"]}
    groups |= {extra: config["options.extras_require"][extra] for extra in ("test", "lint")}
    return {
        group: [Requirement(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]
        for group, text in groups.items()
    }


def installed_closure(requirements: list[Requirement]) -> dict[str, str]:
    """Canonical name -> installed version of every distribution ``requirements`` pull in here,
    through their own requirements, as far as they are installed (`make test` leaves out lint)."""
    found: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(requirement, "") for requirement in requirements]
    while todo:
        requirement, extra = todo.pop()  # extra: the one of the dependent that listed it
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        for wanted in ("", *sorted(requirement.extras)):
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            try:
                distribution = importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                continue
            found[name] = distribution.version
            todo.extend((Requirement(r), wanted) for r in distribution.requires or ())
    return found


def test_constraints_pin_every_requirement_within_its_range() -> None:
    pins = read_pins()
    for group, requirements in declared_requirements().items():
        assert requirements, group
        for requirement in requirements:
            version = pins.get(canonicalize_name(requirement.name))
            assert version is not None, f"{group}: {requirement} is not pinned: make constraints"
            assert requirement.specifier.contains(version, prereleases=True), f"{group}: {requirement} but {version}"


def test_constraints_are_what_the_tests_run_with() -> None:
    # Every distribution the requirements pull in here, transitive ones too, is pinned, at the
    # version installed: `make install` installed these pins, and nothing is missing from them.
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == pinned_python()
    pins = read_pins()
    installed = installed_closure([r for group in declared_requirements().values() for r in group])
    unpinned = sorted(set(installed) - set(pins))
    assert not unpinned, f"installed but not pinned: {unpinned}: make constraints"
    moved = {name: (version, str(pins[name])) for name, version in installed.items() if Version(version) != pins[name]}
    assert not moved, f"installed (left) unlike the pins (right): {moved}: make install"


def test_constraints_are_sorted_and_say_how_to_refresh_them() -> None:
    lines = CONSTRAINTS.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert lines[: len(header)] == header and "make constraints" in " ".join(header)
    names = [canonicalize_name(Requirement(line).name) for line in lines[len(header) :]]
    assert names == sorted(names)
    assert not {"pip", "setuptools", "userdata"} & set(names)


def make_dry_run(tmp_path: Path, *args: str) -> list[str]:
    """The commands ``make -n ARGS`` would run, in a copy of the files the Makefile reads."""
    for name in ("Makefile", "setup.cfg", "pyproject.toml", "constraints.txt"):
        if not (tmp_path / name).exists():
            shutil.copy(ROOT / name, tmp_path / name)
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", *args], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_make_installs_the_pinned_versions(tmp_path: Path) -> None:
    installs = [line for line in make_dry_run(tmp_path, "lint") if "pip install" in line and " -e " in line]
    assert len(installs) == 2, installs  # make install's, then the lint extra's
    for line in installs:
        words = shlex.split(line)
        assert words[words.index("-c") + 1] == "constraints.txt", line


def test_editing_the_pins_reinstalls(tmp_path: Path) -> None:
    def stamp() -> tuple[str, list[str]]:
        """The stamp `make install` makes, and its prerequisites, from make's database."""
        database = make_dry_run(tmp_path, "-p", "install")
        (rule,) = [line for line in database if line.startswith("install:")]
        (name,) = rule.split(":", 1)[1].split()
        (prerequisites,) = [line.split(":", 1)[1].split() for line in database if line.startswith(f"{name}:")]
        return name, prerequisites

    name, prerequisites = stamp()
    assert "constraints.txt" in prerequisites
    with open(tmp_path / "constraints.txt", "a") as pins:
        pins.write("# edited\n")
    # named after the content too, so even an edit older than the stamp reinstalls
    assert stamp()[0] != name


def test_make_constraints_freezes_a_fresh_venv(tmp_path: Path) -> None:
    script = " ".join(make_dry_run(tmp_path, "constraints"))
    assert "-m venv" in script and "pip install --quiet -e '.[test,lint]'" in script
    assert "pip freeze --exclude-editable" in script and "> constraints.txt.new" in script
    assert "mv constraints.txt.new constraints.txt" in script


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert ignored >= {".git", ".venv", "minio-data", "compose-data"}


def test_compose_data_is_not_committed() -> None:
    assert "compose-data/" in (ROOT / ".gitignore").read_text().splitlines()


def test_make_up_and_down_run_compose() -> None:
    for target, expected in (("up", "docker compose up --build -d"), ("down", "docker compose down")):
        done = subprocess.run(
            ["make", "--no-print-directory", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [expected]


# --- the compose topology as plain processes ----------------------------------------------------


def moved(url: str, host: str, port: int, to: str) -> str:
    """``url`` with the compose address ``host:port`` replaced by ``to``, a loopback address."""
    parts = urlsplit(url)
    assert (parts.hostname, parts.port) == (host, port), url
    return urlunsplit(parts._replace(netloc=to))


def local_environment(service_env: Mapping[str, str], **changes: str | None) -> dict[str, str]:
    """This process's environment without USERDATA_* and AWS_* (it may not configure the service),
    then the service's, then ``changes`` (None removes a variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USERDATA_", "AWS_"))}
    env.update(service_env)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def userdata_argv(command: list[str]) -> list[str]:
    """A compose or Dockerfile command ``userdata ...`` as ``python -m userdata ...`` here."""
    assert command[0] == "userdata", command
    return [sys.executable, "-m", "userdata", *command[1:]]


async def table_rows(database_url: str) -> list[tuple[Any, ...]] | None:
    """The users table, sorted, or None while the service has not created it."""
    con = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await con.fetch("SELECT user_id, first_name, last_name, birthdate, img_path FROM users")
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await con.close()
    return sorted(tuple(r) for r in rows)


def birthdate(birthts: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=birthts)


def as_rows(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        (r["user_id"], r["first_name"], r["last_name"], birthdate(r["birthts"]), r["img_path"]) for r in records
    )


def parse_output_csv(data: bytes) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    return [r | {"birthts": int(r["birthts"]), "img_path": r["img_path"] or None} for r in rows]


@pytest.fixture
def database_url() -> Iterator[str]:
    """A database of this test's own on the machine's server, dropped at the end."""
    with own_database() as url:
        yield url


async def http(session: aiohttp.ClientSession, method: str, url: str) -> tuple[int, Any] | None:
    """(status, the body as JSON, or as text where it is not: HAProxy's own errors are HTML), or
    None where nothing answers (not listening yet, or any more)."""
    try:
        async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = await r.text()
    except (aiohttp.ClientConnectionError, TimeoutError):
        return None
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


@dataclass
class Replica:
    """One ``userdata serve`` replica of the app service, on a loopback port, under the name the
    load balancer gives its slot."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Topology:
    """The compose services running as processes, and how this test reaches them."""

    session: aiohttp.ClientSession
    settings: Settings  # the app's, from its environment
    client: Any  # S3, to change objects as data engineers do
    database_url: str
    haproxy: HAProxy
    lb: str = ""  # the load balancer's URL on loopback
    backend: str = ""  # the load balancer's backend of the replicas
    replicas: list[Replica] = field(default_factory=list)

    async def get(self, url: str, path: str) -> Any:
        answer = await http(self.session, "GET", url + path)
        assert answer is not None and answer[0] == 200, f"GET {url}{path}: {answer}"
        return answer[1]

    async def ready(self, replica: Replica) -> bool:
        if replica.process.poll() is not None:
            raise AssertionError(f"{replica.name} exited with {replica.process.returncode}")
        answer = await http(self.session, "GET", replica.url + "/readyz")
        return answer is not None and answer[0] == 200

    async def role(self, replica: Replica) -> str | None:
        answer = await http(self.session, "GET", replica.url + "/health")
        return None if answer is None else answer[1].get("role")  # none until loaded

    async def writers(self) -> list[Replica]:
        running = [r for r in self.replicas if r.process.poll() is None]
        return [r for r in running if await self.role(r) == "writer"]

    async def answered(self, replica: Replica, route: str) -> float:
        """How many requests for ``route`` the replica has answered (its /metrics)."""
        async with self.session.get(replica.url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = await r.text()
        (family,) = [f for f in text_string_to_metric_families(text) if f.name == "userdata_http_requests"]
        return sum(s.value for s in family.samples if s.name.endswith("_total") and s.labels["route"] == route)

    def object(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.settings.bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
        except self.client.exceptions.NoSuchKey:
            return None

    async def output_csv(self) -> list[dict[str, Any]] | None:
        body = await asyncio.to_thread(self.object, self.settings.output_key)
        return None if body is None else parse_output_csv(body)

    def lb_says(self, replica: Replica, state: str) -> bool:
        """Whether HAProxy has logged the replica's slot going ``UP`` or ``DOWN``."""
        return f"Server {self.backend}/{replica.name} is {state}" in self.haproxy.output()

    def logs(self) -> str:
        parts = [f"--- {r.name} ---\n{r.output()[-3000:]}" for r in self.replicas]
        return "\n".join([*parts, f"--- haproxy ---\n{self.haproxy.output()[-3000:]}"])


def start_replica(name: str, env: Mapping[str, str], command: list[str], directory: Path) -> Replica:
    (port,) = free_ports(1)
    directory.mkdir()
    log = directory / "service.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            userdata_argv(command),
            env={**env, "USERDATA_PORT": str(port)},
            cwd=directory,  # so nothing lands in the project's minio-data/ by mistake
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Replica(name, process, port, log)


def mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.timeout(180)
async def test_compose_topology_as_processes(
    seaweedfs: SeaweedFS, database_url: str, compose: dict[str, Any], dockerfile: list[Instruction], tmp_path: Path
) -> None:
    """nats, minio (SeaweedFS, MinIO's publisher played by bench/bridge.py), postgres, two app
    replicas and lb (Debian's haproxy on deploy/haproxy.cfg), as compose wires them."""
    services = compose["services"]
    s3_address = urlsplit(seaweedfs.endpoint).netloc
    bucket = f"deploy-{uuid.uuid4().hex[:12]}"
    client = s3_client(seaweedfs.endpoint)
    client.create_bucket(Bucket=bucket)  # what createbuckets does for MinIO
    nats = NatsServer(nats_binary(), mkdir(tmp_path / "nats"))
    haproxy = HAProxy(haproxy_binary(), mkdir(tmp_path / "lb"))

    # MinIO's publisher: what createbuckets subscribes (the prefix) goes to the NATS target's
    # address and subject, here from SeaweedFS's filer; it duplicates and swaps some events on
    # purpose, as MinIO's at-least-once delivery may.
    minio_env = environment(services["minio"])
    target = nats_target(services)
    event_add = command_starting(shell_commands(services["createbuckets"]), "mc", "event", "add")
    nats_host, nats_port = minio_env[f"MINIO_NOTIFY_NATS_ADDRESS_{target}"].rsplit(":", 1)
    assert (nats_host, int(nats_port)) == ("nats", nats_client_port(services["nats"]))
    filer = f"127.0.0.1:{seaweedfs.ports['filer.port']}.{seaweedfs.ports['filer.port.grpc']}"
    bridge = Bridge(
        seaweedfs.weed,
        filer,
        bucket,
        event_add[event_add.index("--prefix") + 1],
        nats.url,
        minio_env[f"MINIO_NOTIFY_NATS_SUBJECT_{target}"],
    )

    # The app's environment, its hostnames mapped to this test's servers. The machine's
    # PostgreSQL knows neither the compose file's user nor its database, so the URL is this
    # test's whole; test_database_url_is_the_postgres_service checks the compose one.
    app_env = environment(services["app"])
    moved(app_env["USERDATA_DATABASE_URL"], "postgres", POSTGRES_PORT, "127.0.0.1")
    env = local_environment(
        app_env,
        USERDATA_S3_ENDPOINT=moved(app_env["USERDATA_S3_ENDPOINT"], "minio", MINIO_API_PORT, s3_address),
        USERDATA_NATS_URL=moved(
            app_env["USERDATA_NATS_URL"], "nats", nats_client_port(services["nats"]), urlsplit(nats.url).netloc
        ),
        USERDATA_DATABASE_URL=database_url,
        USERDATA_BUCKET=bucket,
        USERDATA_HOST="127.0.0.1",  # loopback only; 0.0.0.0 is for the container
        # No periodic rescan: what a replica learns after its load, it learns from the stream.
        USERDATA_RESCAN_INTERVAL="0",
    )
    command = only(dockerfile, "CMD").exec_form()
    # A third replica whose S3 is cut until the test lets it through: it listens, and /readyz
    # answers 503, as long as its first load cannot end.
    held_s3 = FaultProxy(seaweedfs.ports["s3.port"]).start()
    held_s3.cut()
    async with aiohttp.ClientSession() as session:
        topology = Topology(session, resolve({}, env), client, database_url, haproxy)
        try:
            nats.start()
            await asyncio.to_thread(bridge.start, lambda: client.put_object(Bucket=bucket, Key=PROBE, Body=b"probe"))
            await _run_demo(services["demo"], s3_address, bucket, tmp_path)
            for n in (1, 2):
                topology.replicas.append(start_replica(f"app{n}", env, command, tmp_path / f"app{n}"))
            for replica in topology.replicas:
                await wait_until(partial(topology.ready, replica), WAIT, f"{replica.name} ready")
            held_env = {**env, "USERDATA_S3_ENDPOINT": held_s3.endpoint}
            held = start_replica("app3", held_env, command, tmp_path / "app3")
            topology.replicas.append(held)

            async def starting() -> bool:
                answer = await http(session, "GET", held.url + "/readyz")
                return answer is not None and answer[0] == 503

            await wait_until(starting, WAIT, "the held replica's /readyz 503")
            await _start_lb(topology)
            data = await _check_through_the_lb(topology, held)
            data = await _check_events_reach_every_replica(topology, data)
            held_s3.restore()
            await _check_a_replica_that_becomes_ready_gets_requests(topology, held, data)
            await _check_a_stopped_writer(topology, data)
            for replica in topology.replicas:
                if replica.process.poll() is None:
                    replica.process.send_signal(signal.SIGTERM)
                    code = await asyncio.to_thread(replica.process.wait, 15)
                    assert code == 0, f"{replica.name} exited with {code}"
        except AssertionError as e:
            raise AssertionError(f"{e}\n{topology.logs()}") from e
        finally:
            for replica in topology.replicas:
                if replica.process.poll() is None:
                    replica.process.kill()
                    replica.process.wait(10)
            haproxy.stop()
            counts = bridge.stop()
            nats.stop()
            held_s3.stop()
    assert counts["published"] >= counts["events"] > 100, counts  # the demo's, then the test's


async def _run_demo(demo: Mapping[str, Any], s3_address: str, bucket: str, tmp_path: Path) -> None:
    """The demo one-shot, with its compose environment pointed at this test's S3 server and bucket."""
    demo_env = environment(demo)
    done = await asyncio.to_thread(
        subprocess.run,
        userdata_argv(demo["command"]),
        env=local_environment(
            demo_env,
            USERDATA_S3_ENDPOINT=moved(demo_env["USERDATA_S3_ENDPOINT"], "minio", MINIO_API_PORT, s3_address),
            USERDATA_BUCKET=bucket,
        ),
        cwd=tmp_path,  # so nothing lands in the project's minio-data/ by mistake
        capture_output=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


async def _start_lb(topology: Topology) -> None:
    """deploy/haproxy.cfg with the slots of the app service filled by the replicas' addresses,
    once HAProxy has taken the held replica out (it counts every server up until a check says
    otherwise)."""
    text = HAPROXY_CONFIG.read_text()
    (frontend,) = [s for s in sections(text) if s.keyword == "frontend"]
    ((_, topology.backend),) = frontend.starting("default_backend")
    (port,) = free_ports(1)
    topology.haproxy.start(local_config(text, [r.address for r in topology.replicas], port), port)
    topology.lb = f"http://127.0.0.1:{port}"
    held = topology.replicas[-1]
    await wait_until(lambda: topology.lb_says(held, "DOWN"), WAIT, "HAProxy taking out the replica not ready")


async def _check_through_the_lb(topology: Topology, held: Replica) -> list[dict[str, Any]]:
    """The demo users through the LB, every answer from a ready replica, exactly one writer, and
    output.csv and the table written; returns /data."""
    prefix = topology.settings.prefix
    listing = topology.client.list_objects_v2(Bucket=topology.settings.bucket, Prefix=prefix)["Contents"]
    uploaded = {o["Key"][len(prefix) : -len(".csv")] for o in listing if o["Key"].endswith(".csv")}
    data: list[dict[str, Any]] = await topology.get(topology.lb, "/data")
    assert len(data) == 100 and {r["user_id"] for r in data} == uploaded

    # The held replica would answer /stats with a 503 (its first load not done), which HAProxy
    # would send on to another: its own count of /stats requests tells whether any reached it.
    ready = [r for r in topology.replicas if r is not held]
    before = {r.name: await topology.answered(r, "/stats") for r in topology.replicas}
    for _ in range(20):
        stats = await topology.get(topology.lb, "/stats")
        assert stats["count"] == len(data), stats
    after = {r.name: await topology.answered(r, "/stats") for r in topology.replicas}
    assert after[held.name] == before[held.name], (before, after)
    assert all(after[r.name] > before[r.name] for r in ready), (before, after)  # spread over both
    assert sum(after.values()) - sum(before.values()) == 20, (before, after)

    await one_writer([r.url for r in ready], WAIT)  # the other a reader
    assert await topology.role(held) is None  # not loaded: no role yet
    await _check_sinks(topology, data)
    return data


async def _check_sinks(topology: Topology, data: list[dict[str, Any]]) -> None:
    async def written() -> bool:
        return await topology.output_csv() == data and await table_rows(topology.database_url) == as_rows(data)

    await wait_until(written, WAIT, "output.csv and the users table equal to /data")


async def _check_events_reach_every_replica(topology: Topology, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A PUT and a DELETE in the bucket reach each ready replica through the stream; returns the
    new /data."""
    prefix, bucket = topology.settings.prefix, topology.settings.bucket
    gone = data[0]["user_id"]
    body = b"first_name, last_name, birthts\nNat, Stream, 612302400000\n"
    await asyncio.to_thread(topology.client.put_object, Bucket=bucket, Key=f"{prefix}deploy.csv", Body=body)
    await asyncio.to_thread(topology.client.delete_object, Bucket=bucket, Key=f"{prefix}{gone}.csv")
    new_user = {"user_id": "deploy", "first_name": "Nat", "last_name": "Stream", "birthts": 612302400000}
    expected = sorted([*(r for r in data if r["user_id"] != gone), new_user | {"img_path": None}], key=_user_id)
    for replica in topology.replicas[:2]:

        async def followed(r: Replica = replica) -> bool:
            return bool(await topology.get(r.url, "/data") == expected)

        await wait_until(followed, WAIT, f"the PUT and the DELETE in {replica.name}'s /data")
    assert await topology.get(topology.lb, "/data") == expected
    await _check_sinks(topology, expected)
    return expected


def _user_id(record: dict[str, Any]) -> str:
    return str(record["user_id"])


async def _check_a_replica_that_becomes_ready_gets_requests(
    topology: Topology, held: Replica, data: list[dict[str, Any]]
) -> None:
    # Its first load waits out the store's backoff (a few seconds after so many failures).
    await wait_until(lambda: topology.ready(held), 2 * WAIT, "the released replica ready")
    assert await topology.get(held.url, "/data") == data  # loaded, then the stream's events
    await wait_until(lambda: topology.lb_says(held, "UP"), WAIT, "HAProxy taking the replica in")
    before = await topology.answered(held, "/stats")

    async def served_by_it() -> bool:
        stats = await topology.get(topology.lb, "/stats")
        assert stats["count"] == len(data), stats
        return await topology.answered(held, "/stats") > before

    await wait_until(served_by_it, WAIT, "a request through the LB answered by the replica now ready")


async def _check_a_stopped_writer(topology: Topology, data: list[dict[str, Any]]) -> None:
    """The writer stopped with SIGTERM: every request through the LB meanwhile answered (by the
    others), and one of them takes over the writing."""
    (writer,) = await topology.writers()
    epoch = (await topology.get(writer.url, "/health"))["epoch"]
    writer.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + WAIT
    while not topology.lb_says(writer, "DOWN"):  # requests all along, until HAProxy takes it out
        assert time.monotonic() < deadline, f"HAProxy still counts {writer.name} up {WAIT} s after SIGTERM"
        stats = await topology.get(topology.lb, "/stats")
        assert stats["count"] == len(data), stats
    assert await asyncio.to_thread(writer.process.wait, 15) == 0

    rest = [r for r in topology.replicas if r.process.poll() is None]
    successor = rest[await one_writer([r.url for r in rest], WAIT)]
    assert (await topology.get(successor.url, "/health"))["epoch"] > epoch, "elected without a new term"
    await _check_sinks(topology, data)
