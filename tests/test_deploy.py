"""The deployment: docker-compose.yml and the Dockerfile, checked statically, and the compose
topology run as plain processes.

No Docker engine runs here, so the end-to-end test plays the compose file itself: SeaweedFS
stands in for MinIO, the machine's PostgreSQL for the postgres service, and the service runs as
``python -m userdata`` with the environment of the compose file's services, their hostnames
mapped to loopback ports.
"""

from __future__ import annotations

import asyncio
import configparser
import csv
import datetime as dt
import importlib.metadata
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
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote_plus, urlsplit, urlunsplit

import asyncpg
import pytest
import yaml
from helpers import SpyStore, fast_settings, wait_until
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from pgserver import own_database, run_async
from seaweed import SeaweedFS, free_ports, s3_client

from userdata.settings import OPTIONS, Settings, resolve
from userdata.stores.folder import FolderStore

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CONSTRAINTS = ROOT / "constraints.txt"

MINIO_IMAGE = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
MC_IMAGE = "quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z"
MINIO_API_PORT = 9000  # MinIO's default; the compose file does not pass --address
POSTGRES_PORT = 5432  # the postgres image's default
#: Values for every variable the compose file reads, all unlike its defaults: a cross-check that
#: holds with both proves that both sides read the same variable.
OVERRIDES = {
    "MINIO_ROOT_USER": "alice",
    "MINIO_ROOT_PASSWORD": "alice-secret-1",
    "POSTGRES_PASSWORD": "pg-secret-2",
    "USERDATA_WEBHOOK_TOKEN": "token-3",
}
WAIT = 30.0  # seconds for any one condition of the end-to-end test

T = TypeVar("T")


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
        "minio": {},
        "createbuckets": {"minio": "service_healthy"},
        "demo": {"createbuckets": "service_completed_successfully"},
        "postgres": {},
        "app": {"minio": "service_healthy", "postgres": "service_healthy", "demo": "service_completed_successfully"},
    }


def test_what_is_awaited_can_be_awaited(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            target = services[dependency]
            if condition == "service_healthy":
                assert target["healthcheck"]["test"], f"{name} waits for {dependency}'s health"
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
    port = app_settings(compose).port
    assert published_ports(services["app"]) == {port: port}
    assert "ports" not in services["postgres"]  # reached with `docker compose exec`; 5432 may be taken


def test_minio_data_is_compose_data_and_read_only_for_the_app(compose: dict[str, Any]) -> None:
    services = compose["services"]
    minio_command = services["minio"]["command"]
    data_dir = minio_command[minio_command.index("server") + 1]
    (minio_data,) = [m for m in mounts(services["minio"]) if m.target == data_dir]
    assert posixpath.normpath(minio_data.source) == "compose-data/minio"
    settings = app_settings(compose)
    (app_view,) = [m for m in mounts(services["app"]) if m.target == str(settings.data_dir)]
    assert app_view.source == minio_data.source
    assert app_view.read_only
    assert settings.s3_endpoint  # the data dir is only a source of hints: objects come through S3


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
    assert settings.database_url and settings.webhook_token


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


def test_minio_webhook_reaches_the_app(compose_variants: dict[str, Any]) -> None:
    services = compose_variants["services"]
    minio = environment(services["minio"])
    settings = resolve({}, environment(services["app"]))
    # createbuckets subscribes the bucket to the target named in its ARN
    event = command_starting(shell_commands(services["createbuckets"]), "mc", "event", "add")
    (arn,) = [w for w in event if w.startswith("arn:")]
    target = re.fullmatch(r"arn:minio:sqs::(\w+):webhook", arn)
    assert target, arn
    suffix = target.group(1)
    assert minio[f"MINIO_NOTIFY_WEBHOOK_ENABLE_{suffix}"] == "on"
    endpoint = urlsplit(minio[f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{suffix}"])
    assert (endpoint.hostname, endpoint.port, endpoint.path) == ("app", settings.port, "/events")
    assert endpoint.hostname in services
    assert minio[f"MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{suffix}"] == settings.webhook_token
    assert settings.webhook_token
    # Queued events outlive a restart of MinIO's container only on a volume; not in the data
    # directory, which the app watches.
    queue = minio[f"MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_{suffix}"]
    (volume,) = [m for m in mounts(services["minio"]) if queue.startswith(m.target.rstrip("/") + "/")]
    assert volume.source in compose_variants["volumes"], volume
    # the subscription covers what the app reads: its bucket, its prefix, creations and deletions
    assert event[event.index("--prefix") + 1] == settings.prefix
    assert set(event[event.index("--event") + 1].split(",")) >= {"put", "delete"}
    assert f"local/{settings.bucket}" in event
    assert "--ignore-existing" in event  # createbuckets runs again on every `make up`


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


def wait_for(predicate: Callable[[], T | None], what: str, process: subprocess.Popen[bytes] | None = None) -> T:
    """Poll ``predicate`` until it returns something true; fail after WAIT seconds or if
    ``process`` exits."""
    deadline = time.monotonic() + WAIT
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT} s")
        time.sleep(0.05)


def http(method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


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


def table_rows(database_url: str) -> list[tuple[Any, ...]] | None:
    """The users table, sorted, or None while the service has not created it."""

    async def fetch() -> list[tuple[Any, ...]] | None:
        con = await asyncpg.connect(database_url, timeout=10)
        try:
            rows = await con.fetch("SELECT user_id, first_name, last_name, birthdate, img_path FROM users")
        except asyncpg.UndefinedTableError:
            return None
        finally:
            await con.close()
        return sorted(tuple(r) for r in rows)

    return run_async(fetch)


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


@dataclass(frozen=True)
class Topology:
    """The service running as compose would run it, and how this test reaches it."""

    process: subprocess.Popen[bytes]
    settings: Settings  # the service's, from its environment
    base: str  # the service's URL on loopback
    events_url: str  # MinIO's webhook endpoint, mapped to loopback
    webhook_token: str  # the token MinIO sends
    client: Any  # S3, to change objects as data engineers do
    database_url: str

    def wait_for(self, predicate: Callable[[], T | None], what: str) -> T:
        return wait_for(predicate, what, self.process)

    def get(self, path: str) -> Any:
        status, body = http("GET", self.base + path)
        assert status == 200, body
        return body

    def object(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.settings.bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
        except self.client.exceptions.NoSuchKey:
            return None


def test_compose_topology_as_processes(
    seaweedfs: SeaweedFS, database_url: str, compose: dict[str, Any], dockerfile: list[Instruction], tmp_path: Path
) -> None:
    services = compose["services"]
    s3_address = urlsplit(seaweedfs.endpoint).netloc
    bucket = f"deploy-{uuid.uuid4().hex[:12]}"
    client = s3_client(seaweedfs.endpoint)
    client.create_bucket(Bucket=bucket)  # what createbuckets does for MinIO
    (port,) = free_ports(1)

    # The demo one-shot, with its compose environment pointed at this test's S3 server and bucket.
    demo_env = environment(services["demo"])
    demo = subprocess.run(
        userdata_argv(services["demo"]["command"]),
        env=local_environment(
            demo_env,
            USERDATA_S3_ENDPOINT=moved(demo_env["USERDATA_S3_ENDPOINT"], "minio", MINIO_API_PORT, s3_address),
            USERDATA_BUCKET=bucket,
        ),
        cwd=tmp_path,  # so nothing lands in the project's minio-data/ by mistake
        capture_output=True,
        timeout=WAIT,
    )
    assert demo.returncode == 0, demo.stderr.decode(errors="replace")

    app_env = environment(services["app"])
    # The machine's server knows neither the compose file's user nor its database, so the URL is
    # this test's whole; test_database_url_is_the_postgres_service checks the compose one.
    moved(app_env["USERDATA_DATABASE_URL"], "postgres", POSTGRES_PORT, "127.0.0.1")
    env = local_environment(
        app_env,
        USERDATA_S3_ENDPOINT=moved(app_env["USERDATA_S3_ENDPOINT"], "minio", MINIO_API_PORT, s3_address),
        USERDATA_DATABASE_URL=database_url,
        USERDATA_BUCKET=bucket,
        USERDATA_HOST="127.0.0.1",  # loopback only; 0.0.0.0 is for the container
        USERDATA_PORT=str(port),
        # No MinIO data directory here (SeaweedFS keeps another tree), so no watcher: the webhook
        # alone tells the service about a change, and without periodic rescans only it can.
        USERDATA_DATA_DIR=None,
        USERDATA_RESCAN_INTERVAL="0",
    )
    minio_env = environment(services["minio"])
    log_path = tmp_path / "service.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            userdata_argv(only(dockerfile, "CMD").exec_form()),
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    topology = Topology(
        process=process,
        settings=resolve({}, env),
        base=f"http://127.0.0.1:{port}",
        events_url=moved(
            minio_env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_USERDATA"], "app", app_settings(compose).port, f"127.0.0.1:{port}"
        ),
        webhook_token=minio_env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_USERDATA"],
        client=client,
        database_url=database_url,
    )
    try:
        try:
            data = _check_loaded(topology)
            _check_webhook(topology, data)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- service log ---\n{log_path.read_text(errors='replace')[-4000:]}") from e
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log_path.read_text(errors="replace")[-4000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _check_loaded(topology: Topology) -> list[dict[str, Any]]:
    """Healthy with the demo users, and both sinks equal to /data; returns /data."""

    def healthy() -> dict[str, Any] | None:
        try:
            status, body = http("GET", topology.base + "/health")
        except OSError:  # not listening yet
            return None
        return body if status == 200 and body["status"] == "ok" else None

    health = topology.wait_for(healthy, "GET /health 200 ok")
    data: list[dict[str, Any]] = topology.get("/data")
    prefix = topology.settings.prefix
    listing = topology.client.list_objects_v2(Bucket=topology.settings.bucket, Prefix=prefix)["Contents"]
    uploaded = {o["Key"][len(prefix) : -len(".csv")] for o in listing if o["Key"].endswith(".csv")}
    assert len(data) == 100 == health["users"]
    assert {r["user_id"] for r in data} == uploaded

    topology.wait_for(lambda: table_rows(topology.database_url) == as_rows(data), "the users table equal to /data")

    def output_csv() -> list[dict[str, Any]] | None:
        body = topology.object(topology.settings.output_key)
        return None if body is None else parse_output_csv(body)

    assert topology.wait_for(output_csv, "output.csv in the bucket") == data
    return data


def _check_webhook(topology: Topology, data: list[dict[str, Any]]) -> None:
    """A CSV uploaded through S3 shows once MinIO's webhook names it, and only then."""
    key = f"{topology.settings.prefix}webhook.csv"
    csv_body = b"first_name, last_name, birthts\nWebb, Hook, 612302400000\n"
    topology.client.put_object(Bucket=topology.settings.bucket, Key=key, Body=csv_body)
    assert topology.get("/data") == data  # no watcher, no rescan: nothing has told the service yet
    record: dict[str, Any] = {
        "eventName": "s3:ObjectCreated:Put",
        "s3": {
            "bucket": {"name": topology.settings.bucket},
            "object": {"key": quote_plus(key), "size": len(csv_body)},  # MinIO sends the key URL-encoded
        },
    }
    event = {"EventName": "s3:ObjectCreated:Put", "Key": f"{topology.settings.bucket}/{key}", "Records": [record]}
    body = json.dumps(event).encode()

    status, answer = http("POST", topology.events_url, body, {"Authorization": "Bearer not-the-token"})
    assert status == 401, answer
    status, answer = http("POST", topology.events_url, body, {"Authorization": f"Bearer {topology.webhook_token}"})
    assert (status, answer) == (200, {"keys": 1})

    new_user: dict[str, Any] = {"user_id": "webhook", "first_name": "Webb", "last_name": "Hook"}
    new_user |= {"birthts": 612302400000, "img_path": None}
    expected = sorted([*data, new_user], key=lambda r: r["user_id"])
    topology.wait_for(lambda: topology.get("/data") == expected, "the webhook's user in /data")
    topology.wait_for(lambda: table_rows(topology.database_url) == as_rows(expected), "the webhook's user in the table")
