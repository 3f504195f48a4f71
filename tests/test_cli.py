"""The command line, run as a user would: ``python -m userdata serve | process | demo`` in subprocesses."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import wait_until
from served import START_TIMEOUT, Served, free_port

RUN_TIMEOUT = 60.0  # seconds for a one-shot command


@pytest.fixture
def run(tmp_path: Path, environ: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m userdata *args`` to completion (in tmp_path, so no default folder is touched)."""

    def run_(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "userdata", *args],
            cwd=tmp_path,
            env={**environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )

    return run_


def csv_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.suffix.lower() == ".csv"}


def output_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))


# Users written for process and serve: user_id -> (first_name, last_name, birthts, has image).
USERS = {
    "1000": ("Nathan", "Emery", 697237200000, True),
    "0042": ("Ann", "O'Brien", -31536000000, False),
    "7": ("Jean, Luc", "Picard", 0, True),  # a comma, quoted in the source and in output.csv
}


@pytest.fixture
def users(write_user: Callable[..., Path]) -> None:
    for user_id, (first_name, last_name, birthts, png) in USERS.items():
        quoted = f'"{first_name}"' if "," in first_name else first_name
        write_user(user_id, quoted, last_name, birthts, png=png)


def expected_output() -> list[list[str]]:
    return [["user_id", "first_name", "last_name", "birthts", "img_path"]] + [
        [uid, first, last, str(birthts), f"src-data/{uid}.png" if png else ""]
        for uid, (first, last, birthts, png) in sorted(USERS.items())
    ]


def expected_data() -> list[dict[str, Any]]:
    return [
        {
            "user_id": uid,
            "first_name": first,
            "last_name": last,
            "birthts": birthts,
            "img_path": f"src-data/{uid}.png" if png else None,
        }
        for uid, (first, last, birthts, png) in sorted(USERS.items())
    ]


# demo


def test_demo_writes_the_requested_number_of_users(run, data_dir: Path) -> None:
    done = run("demo", "--data-dir", str(data_dir), "--users", "30", "--seed", "1")
    assert done.returncode == 0, done.stderr
    source = data_dir / "datalake" / "src-data"
    assert len(csv_names(source)) == 30, sorted(source.iterdir())


def test_demo_if_empty_writes_nothing_where_there_are_csv_files(
    run, data_dir: Path, write_user: Callable[..., Path], source_dir: Path
) -> None:
    write_user("1", "Ann", "Lee", 0)
    before = {p.name: p.read_bytes() for p in source_dir.iterdir()}
    done = run("demo", "--data-dir", str(data_dir), "--users", "5", "--if-empty")
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_bytes() for p in source_dir.iterdir()} == before


def test_demo_if_empty_writes_into_an_empty_folder(run, data_dir: Path) -> None:
    done = run("demo", "--data-dir", str(data_dir), "--users", "5", "--if-empty")
    assert done.returncode == 0, done.stderr
    assert len(csv_names(data_dir / "datalake" / "src-data")) == 5


# process


def test_process_writes_output_csv_and_prints_a_summary(
    run, users: None, write_user: Callable[..., Path], data_dir: Path, output_path: Path
) -> None:
    write_user("9", csv="first_name,last_name\nA,B\n")  # rejected: not a user
    done = run("process", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["users"], summary["added"], summary["rejected"]) == (len(USERS), len(USERS), 1), summary
    assert output_rows(output_path) == expected_output()


def test_process_does_not_rewrite_an_unchanged_output_csv(run, users: None, data_dir: Path, output_path: Path) -> None:
    first = run("process", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    before = output_path.stat()
    content = output_path.read_bytes()

    second = run("process", "--data-dir", str(data_dir))
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    counts = {k: summary[k] for k in ("users", "added", "updated", "removed")}
    assert counts == {"users": len(USERS), "added": 0, "updated": 0, "removed": 0}, summary
    after = output_path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino), "output.csv was rewritten"
    assert output_path.read_bytes() == content


def test_process_on_an_empty_folder_writes_a_header_only_output(run, data_dir: Path, output_path: Path) -> None:
    done = run("process", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["users"] == 0, done.stdout
    assert output_rows(output_path) == [["user_id", "first_name", "last_name", "birthts", "img_path"]]


# serve


async def test_serve_answers_stops_on_sigterm_and_gives_the_same_answers_when_started_again(
    serve, users: None, data_dir: Path, output_path: Path
) -> None:
    first = await serve("--data-dir", str(data_dir), "--rescan-interval", "0", port=free_port())
    await first.wait_healthy()
    status, data = await first.get("/data")
    assert (status, data) == (200, expected_data()), first.output()

    assert await first.stop(signal.SIGTERM) == 0, first.output()
    assert output_rows(output_path) == expected_output()

    again = await serve("--data-dir", str(data_dir), "--rescan-interval", "0", port=free_port())
    await again.wait_healthy()
    assert await again.get("/data") == (200, data), again.output()
    assert await again.stop(signal.SIGTERM) == 0, again.output()


async def test_ctrl_c_stops_serve_with_status_0(serve, users: None, data_dir: Path, output_path: Path) -> None:
    served = await serve("--data-dir", str(data_dir), "--rescan-interval", "0", port=free_port())
    await served.wait_healthy()
    assert await served.stop(signal.SIGINT) == 0, served.output()
    assert output_rows(output_path) == expected_output()


async def test_serve_takes_its_options_from_userdata_variables(serve, users: None, data_dir: Path) -> None:
    port = free_port()
    served = await serve(
        env={"USERDATA_PORT": str(port), "USERDATA_DATA_DIR": str(data_dir), "USERDATA_RESCAN_INTERVAL": "0"}
    )
    served.port = port
    await served.wait_healthy()
    assert await served.get("/data") == (200, expected_data()), served.output()
    assert await served.stop(signal.SIGTERM) == 0, served.output()


async def test_a_command_line_option_wins_over_its_variable(serve, users: None, data_dir: Path) -> None:
    variable_port, option_port = free_port(), free_port()
    served = await serve(
        "--data-dir", str(data_dir),
        port=option_port,
        env={"USERDATA_PORT": str(variable_port), "USERDATA_RESCAN_INTERVAL": "0"},
    )  # fmt: skip
    await served.wait_healthy()
    with pytest.raises(aiohttp.ClientConnectionError):
        await Served(served.process, variable_port, served.log).get("/health")
    assert await served.stop(signal.SIGTERM) == 0, served.output()


def test_process_option_wins_over_variable(run, users: None, data_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    done = run("process", "--data-dir", str(data_dir), env={"USERDATA_DATA_DIR": str(elsewhere)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["users"] == len(USERS), done.stdout
    assert not (elsewhere / "datalake" / "processed_data" / "output.csv").exists()


def test_process_reads_the_data_dir_variable(run, users: None, data_dir: Path, output_path: Path) -> None:
    done = run("process", env={"USERDATA_DATA_DIR": str(data_dir)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["users"] == len(USERS), done.stdout
    assert output_rows(output_path) == expected_output()


# bad options


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        pytest.param(["serve", "--port", "x"], {}, "--port", id="port-x"),
        pytest.param(["serve", "--port", "70000"], {}, "--port", id="port-70000"),
        pytest.param(["serve", "--rescan-interval", "nan"], {}, "--rescan-interval", id="rescan-nan"),
        pytest.param(["serve", "--rescan-interval=-1"], {}, "--rescan-interval", id="rescan-negative"),
        pytest.param(["process", "--bucket", "a/b"], {}, "--bucket", id="bucket-slash"),
        pytest.param(["process", "--log-level", "loud"], {}, "--log-level", id="log-level"),
        pytest.param(["process", "--output-key", "src-data/out.csv"], {}, "--output-key", id="output-key"),
        pytest.param(["serve"], {"USERDATA_PORT": "x"}, "USERDATA_PORT", id="variable-port-x"),
        pytest.param(["serve"], {"USERDATA_PORT": "70000"}, "USERDATA_PORT", id="variable-port-70000"),
        pytest.param(["process", "--log-format", "xml"], {}, "--log-format", id="log-format"),
        pytest.param(["serve", "--access-log", "maybe"], {}, "--access-log", id="access-log"),
    ],
)
def test_a_bad_option_value_exits_2_with_one_line_naming_it(
    run, data_dir: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    done = run(*args, "--data-dir", str(data_dir), env=env)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], done.stderr


def test_process_against_an_unreachable_s3_endpoint_exits_1_naming_the_store(run, tmp_path: Path) -> None:
    done = run(
        "process",
        "--s3-endpoint",
        f"http://127.0.0.1:{free_port()}",
        env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "store unavailable" in done.stderr and "Cannot connect to host" in done.stderr, done.stderr


async def test_a_kill_during_output_csv_writes_loses_nothing_and_leaves_nothing(
    serve, data_dir: Path, source_dir: Path, output_path: Path
) -> None:
    # Many users, so that each write of output.csv takes a while; then changes, and SIGKILL as
    # soon as a write is seen under way (a temporary file beside output.csv), or at the end.
    for i in range(20_000):
        (source_dir / f"{i}.csv").write_text(f"first_name, last_name, birthts\nFirst{i}, Last, {i * 1000}\n")
    served = await serve("--data-dir", str(data_dir), "--rescan-interval", "0", port=free_port())
    await served.wait_healthy()
    await wait_until(output_path.exists, START_TIMEOUT)

    def writing() -> bool:
        return any(output_path.parent.glob(f".{output_path.name}.*.tmp"))

    # The write seen may end between the look and the kill: then another round, from the start
    # the last kill left (which must be whole too).
    added = 0
    for _ in range(4):
        for _ in range(40):
            (source_dir / f"new{added}.csv").write_text("first_name, last_name, birthts\nNew, User, 1\n")
            added += 1
            with contextlib.suppress(AssertionError):
                await wait_until(writing, 1.0)
                break
        await served.kill()
        caught = writing()
        # whole: the old file or the new one, never a part of one
        written = output_rows(output_path)
        assert written[0] == ["user_id", "first_name", "last_name", "birthts", "img_path"] and all(
            len(r) == 5 for r in written
        )
        ids = {row[0] for row in written[1:]}
        assert {str(i) for i in range(20_000)} <= ids and all(i.isdigit() or i.startswith("new") for i in ids)
        served = await serve("--data-dir", str(data_dir), "--rescan-interval", "0", port=free_port())
        await served.wait_healthy()
        status, answer = await served.get("/stats")
        assert (status, answer["count"]) == (200, 20_000 + added), served.output()
        assert not writing(), "the leftover of the killed write is removed at start"
        if caught:
            break
    assert caught, "no kill came during a write in 4 rounds"
    assert await served.stop(signal.SIGTERM) == 0, served.output()


def test_version_and_help_name_each_variable_and_give_examples(run) -> None:
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("userdata ") and version.stdout.split()[1][0].isdigit()
    helped = run("serve", "--help")
    assert helped.returncode == 0
    text = " ".join(helped.stdout.split())  # argparse wraps lines
    for option in ("port", "data_dir", "rescan_interval", "database_url", "max_object_size"):
        assert f"USERDATA_{option.upper()}" in text, option
    assert "(default 8080)" in text and "examples:" in text


@pytest.mark.parametrize("users", ["-5", "0", "many"])
def test_demo_with_a_bad_number_of_users_exits_2_naming_the_option(run, users: str) -> None:
    done = run("demo", "--users", users)
    assert done.returncode == 2 and "argument --users" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_serve_on_a_port_in_use_says_so_in_one_line_before_loading(run, data_dir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run("serve", "--port", str(port), "--data-dir", str(data_dir))
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"userdata: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert not data_dir.exists(), "nothing was loaded (the source folder would have been made)"


async def test_json_logs_are_one_object_a_line_with_the_access_log_fields(serve, users: None, data_dir: Path) -> None:
    port = free_port()
    served = await serve(
        "--data-dir", str(data_dir), "--rescan-interval", "0", "--log-format", "json", "--access-log", "on", port=port
    )
    await served.wait_healthy()
    assert (await served.get("/stats?min_age=1"))[0] == 200
    assert await served.stop(signal.SIGTERM) == 0, served.output()
    lines = [json.loads(line) for line in served.output().splitlines()]  # every line parses
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["logger"] == "userdata" and "serving on" in line["message"] for line in lines)
    (access,) = [line for line in lines if line["logger"] == "userdata.access" and "/stats" in line["path"]]
    assert access["method"] == "GET" and access["path"] == "/stats?min_age=1" and access["status"] == 200
    assert access["duration_ms"] >= 0 and access["remote"] == "127.0.0.1"


async def test_no_access_log_unless_asked(serve, users: None, data_dir: Path) -> None:
    served = await serve("--data-dir", str(data_dir), "--rescan-interval", "0", port=free_port())
    await served.wait_healthy()
    assert await served.stop(signal.SIGTERM) == 0
    assert "userdata.access" not in served.output() and "/health" not in served.output()
