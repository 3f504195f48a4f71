"""docs/dashboard.png, README.md's picture of the dashboard, made from a real run.

    python tests/screenshot.py                     # make screenshot
    python tests/screenshot.py --dark --out docs/dashboard-dark.png

Writes the demo data (``userdata demo``: 100 users, seed 0, as ``make run`` does) and a few files
that are rejected into a temporary folder, serves them with ``userdata serve`` on a free port,
opens the dashboard in headless Chromium (Debian's, driven by Playwright: see bench/browser.py)
and saves a screenshot of what a window of that size shows, once the page has shown its counts,
chart and first page.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench.browser, the launcher the tests use too

from bench.browser import CHROMIUM, CHROMIUM_ARGS, missing  # noqa: E402

OUT = ROOT / "docs" / "dashboard.png"
START_TIMEOUT = 30.0
#: Files the demo has none of, so the rejected list shows what it is for.
REJECTED = {
    "2001.csv": "first_name, last_name\nAnn, Lee\n",
    "2002.csv": "first_name, last_name, birthts\nBob, Ray, yesterday\n",
    "2003.csv": "first_name, last_name, birthts\n",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"userdata serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise SystemExit(f"userdata serve did not get ready within {START_TIMEOUT:g} s")


def shoot(out: Path, *, dark: bool, width: int, height: int) -> None:
    from playwright.sync_api import sync_playwright

    env = {k: v for k, v in os.environ.items() if not k.startswith("USERDATA_")}
    with tempfile.TemporaryDirectory(prefix="userdata-screenshot-") as tmp:
        data_dir = Path(tmp) / "data"
        cli = [sys.executable, "-m", "userdata"]
        subprocess.run([*cli, "demo", "--data-dir", str(data_dir)], check=True, env=env, capture_output=True)
        source = data_dir / "datalake" / "src-data"
        for name, body in REJECTED.items():
            (source / name).write_text(body)
        port = _free_port()
        args = ["serve", "--data-dir", str(data_dir), "--port", str(port), "--rescan-interval", "0"]
        with open(Path(tmp) / "serve.log", "wb") as log:
            process = subprocess.Popen([*cli, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, process)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(
                    viewport={"width": width, "height": height},
                    color_scheme="dark" if dark else "light",
                    locale="en-US",
                    timezone_id="UTC",
                )
                page.goto(url + "/")
                page.wait_for_selector("body[data-ready='1']")
                # The thumbnails load lazily: those in view, once they have.
                page.wait_for_function(
                    "[...document.images].filter((i) => i.getBoundingClientRect().top < innerHeight)"
                    ".every((i) => i.complete)"
                )
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            process.terminate()
            process.wait(15)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNG goes (docs/dashboard.png)")
    parser.add_argument("--dark", action="store_true", help="prefers-color-scheme: dark")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    why = missing()
    if why:
        print(f"screenshot: {why}", file=sys.stderr)
        return 1
    shoot(args.out, dark=args.dark, width=args.width, height=args.height)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
