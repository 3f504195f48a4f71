"""README.md's sample requests and answers, generated from the demo data by the real service.

    python tests/readme_samples.py          # rewrite the samples in README.md (make readme)
    python tests/readme_samples.py --check  # exit 1 if README.md differs from what it would write

A sample is a block of README.md between ``<!-- sample: METHOD TARGET -->`` and
``<!-- /sample -->``: the request it names is sent to ``userdata serve`` running on the demo data
(``userdata demo``: 100 users, seed 0) in a temporary folder, and the block becomes the curl
command and what it prints. Ages depend on the date, so the service runs with its wall clock
standing still at ``AS_OF``: the answers are those of that instant, on any day they are made.
Only ``duration_ms`` varies from run to run; ``comparable`` leaves it out of comparisons.
"""

from __future__ import annotations

import calendar
import http.client
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
#: The instant the samples are answered at (UTC); README.md names it.
AS_OF = "2026-12-01T00:00:00Z"
#: Where the README's curl commands send requests: `make run`'s address.
SHOWN_BASE = "http://127.0.0.1:8080"
#: The headers a sample shows (with ``curl -i``) when the answer has them.
SHOWN_HEADERS = ("Link",)
START_TIMEOUT = 30.0

_SAMPLE = re.compile(r"^<!-- sample: (\S+) (\S+) -->\n(.*?)^<!-- /sample -->$", re.DOTALL | re.MULTILINE)
_VOLATILE = re.compile(r'"duration_ms":\d+')

# The child: the service with time.time and time.time_ns standing still at the instant given
# (nanoseconds, the first argument), so every age it works out is that instant's. Timers and
# durations use the monotonic clocks, which keep running.
_CHILD = """\
import sys, time
now_ns = int(sys.argv.pop(1))
time.time_ns = lambda: now_ns
time.time = lambda: now_ns / 1e9
from userdata.__main__ import main
sys.exit(main())
"""


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    version: str
    headers: dict[str, str]
    body: str


def as_of_ns() -> int:
    return calendar.timegm(time.strptime(AS_OF, "%Y-%m-%dT%H:%M:%SZ")) * 1_000_000_000


def comparable(text: str) -> str:
    """``text`` with what differs from run to run (a rescan's duration) blanked."""
    return _VOLATILE.sub('"duration_ms":...', text)


def render(method: str, target: str, answer: Answer) -> str:
    """The sample's block: the curl command and what it prints (with ``-i``, the status line and
    the shown headers only)."""
    shown = [f"{name}: {answer.headers[name]}" for name in SHOWN_HEADERS if name in answer.headers]
    with_head = bool(shown) or answer.status != 200
    command = ["curl", "-si" if with_head else "-s", *(["-X", method] if method != "GET" else [])]
    lines = ["```sh", "$ " + shlex.join([*command, SHOWN_BASE + target])]
    if with_head:
        lines += [f"HTTP/{answer.version} {answer.status} {answer.reason}", *shown, ""]
    return "\n".join([*lines, answer.body, "```", ""])


def samples(readme: str) -> list[tuple[str, str]]:
    """The (method, target) of each sample block, in order."""
    found = [(m.group(1), m.group(2)) for m in _SAMPLE.finditer(readme)]
    opened = readme.count("<!-- sample: ")
    if len(found) != opened or readme.count("<!-- /sample -->") != opened:
        raise ValueError("README.md: every <!-- sample: METHOD TARGET --> needs its own <!-- /sample -->")
    return found


def answer(wanted: list[tuple[str, str]]) -> dict[tuple[str, str], Answer]:
    """The service's answer to each (method, target), asked in turn."""
    with serving() as port:
        return {sample: ask(port, *sample) for sample in wanted}


def fill(readme: str, answers: dict[tuple[str, str], Answer]) -> str:
    """``readme`` with each sample block rendered from its answer."""

    def block(m: re.Match[str]) -> str:
        method, target = m.group(1), m.group(2)
        return f"<!-- sample: {method} {target} -->\n{render(method, target, answers[method, target])}<!-- /sample -->"

    return _SAMPLE.sub(block, readme)


def ask(port: int, method: str, target: str) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, target, headers={"Accept": "*/*"})  # as curl asks
        response = connection.getresponse()
        body = response.read().decode()
        version = f"{response.version // 10}.{response.version % 10}"
        headers = {name.title(): value for name, value in response.getheaders()}
        return Answer(response.status, response.reason, version, headers, body)
    finally:
        connection.close()


@contextmanager
def serving() -> Iterator[int]:
    """``userdata serve`` on the demo data, on a free loopback port, its clock at AS_OF; yields
    the port once the first load is done."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USERDATA_", "AWS_"))}
    with tempfile.TemporaryDirectory(prefix="readme-samples-") as folder:
        # The default data dir (minio-data, here in the temporary folder), as `make run` has it.
        demo = subprocess.run(
            [sys.executable, "-m", "userdata", "demo"], cwd=folder, env=env, capture_output=True, text=True, timeout=60
        )
        if demo.returncode != 0:
            raise RuntimeError(f"userdata demo exited with {demo.returncode}:\n{demo.stderr}")
        port = _free_port()
        argv = [sys.executable, "-c", _CHILD, str(as_of_ns()), "serve", "--port", str(port)]
        log = Path(folder) / "serve.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(process, port, log)
            yield port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"userdata serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if ask(port, "GET", "/readyz").status == 200:
                return
        except OSError:  # not listening yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"userdata serve not ready within {START_TIMEOUT} s:\n{log.read_text()}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print(__doc__, file=sys.stderr)
        return 2
    current = README.read_text()
    answers = answer(samples(current))
    if check:
        same = comparable(fill(current, answers)) == comparable(current)
        print("README.md's samples are up to date" if same else "README.md's samples differ: make readme")
        return 0 if same else 1
    # Filled into the file as it is now: others may have edited it while the service ran.
    fresh = README.read_text()
    if missing := sorted(set(samples(fresh)) - set(answers)):
        answers |= answer(missing)
    generated = fill(fresh, answers)
    if comparable(generated) != comparable(fresh):  # not rewritten for a new duration alone
        README.write_text(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
