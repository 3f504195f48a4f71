"""HAProxy for tests (Debian's haproxy): deploy/haproxy.cfg read as sections, made to run on
loopback, and run as a process of the test's own.

Tests that need it skip with the reason where haproxy is missing, unless TESTS_REQUIRE_HAPROXY is
set (as .ci/run does): then they fail.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from binaries import debian_binary

from bench.procs import stop_process

__all__ = ("HAProxy", "Section", "haproxy_binary", "local_config", "sections")

#: The keywords that open a section of an HAProxy configuration.
SECTION_KEYWORDS = frozenset(
    {"global", "defaults", "frontend", "backend", "listen", "resolvers", "peers", "userlist", "mailers", "program"}
    | {"http-errors", "ring", "cache"}
)
#: server-template options that only make sense with DNS: left out for a fixed address.
DNS_OPTIONS = ("resolvers", "resolve-prefer", "init-addr", "resolve-opts", "resolve-net")


def haproxy_binary() -> str:
    return debian_binary("haproxy", "run the load balancer", "TESTS_REQUIRE_HAPROXY")


def _words(line: str) -> list[str]:
    return line.split("#", 1)[0].split()


@dataclass(frozen=True)
class Section:
    """One section: its keyword (``backend``), its name (or ``""``) and its lines as words."""

    keyword: str
    name: str
    lines: tuple[tuple[str, ...], ...]

    def starting(self, *prefix: str) -> list[tuple[str, ...]]:
        """The lines that start with these words."""
        return [line for line in self.lines if line[: len(prefix)] == prefix]


def sections(text: str) -> list[Section]:
    """The sections of a configuration, comments and blank lines left out."""
    found: list[Section] = []
    keyword, name = "", ""
    lines: list[tuple[str, ...]] = []
    for line in text.splitlines():
        words = _words(line)
        if not words:
            continue
        if words[0] in SECTION_KEYWORDS:
            if keyword:
                found.append(Section(keyword, name, tuple(lines)))
            keyword, name, lines = words[0], " ".join(words[1:]), []
        else:
            assert keyword, f"a line before any section: {line!r}"
            lines.append(tuple(words))
    if keyword:
        found.append(Section(keyword, name, tuple(lines)))
    return found


def local_config(text: str, addresses: Sequence[str], bind_port: int) -> str:
    """``text`` made to run here: the ``resolvers`` sections left out, each ``server-template``
    line replaced by one ``server`` line per address (named as the template names its slots,
    with its options but those of DNS), and each ``bind`` on ``127.0.0.1:bind_port``; every
    other line as it is."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        words = _words(line)
        indent = line[: len(line) - len(line.lstrip())]
        if words and words[0] in SECTION_KEYWORDS:
            skipping = words[0] == "resolvers"
        if skipping:
            continue
        if words[:1] == ["server-template"]:
            prefix, slots, _address, *options = words[1:]
            assert len(addresses) <= int(slots), f"{len(addresses)} servers for {slots} slots"
            kept: list[str] = []
            while options:
                option = options.pop(0)
                if option in DNS_OPTIONS:
                    options.pop(0)  # its value
                else:
                    kept.append(option)
            out += [f"{indent}server {prefix}{n} {a} {' '.join(kept)}" for n, a in enumerate(addresses, 1)]
        elif words[:1] == ["bind"]:
            out.append(f"{indent}bind 127.0.0.1:{bind_port} {' '.join(words[2:])}".rstrip())
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class HAProxy:
    """``haproxy -f CONFIG`` in the foreground, its output (the log: ``log stdout`` and its
    warnings) in a file; stopped at once with SIGTERM."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory = binary, directory
        self.config = directory / "haproxy.cfg"
        self.log = directory / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def check(self, config: Path) -> subprocess.CompletedProcess[str]:
        """``haproxy -c``: whether this HAProxy takes the configuration."""
        return subprocess.run([self.binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)

    def start(self, config: str, port: int, timeout: float = 10.0) -> None:
        self.config.write_text(config)
        done = self.check(self.config)
        assert done.returncode == 0, f"haproxy -c:\n{done.stdout}{done.stderr}\n{config}"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-f", str(self.config)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.process.returncode}:\n{self.output()}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy not accepting connections within {timeout} s:\n{self.output()}")
            time.sleep(0.02)  # polled until the deadline above

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)  # SIGTERM: HAProxy quits at once
        self.process = None
