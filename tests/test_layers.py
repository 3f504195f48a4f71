"""The package's shape: imports follow the layers, and each module stays small enough to read."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "userdata"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


def test_only_the_tuning_module_touches_the_collector() -> None:
    users = [path.relative_to(PACKAGE).as_posix() for path in MODULES if "gc" in _imports(path)]
    assert users == ["tuning.py"]


@pytest.mark.parametrize("module", ["userdata.views", "userdata.health"])
def test_the_http_side_imports_neither_watchfiles_nor_asyncpg(module: str) -> None:
    code = f"import sys, {module}; print(sorted({{'watchfiles', 'asyncpg'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_modules_and_classes_stay_small(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= 300, f"{path.name}: {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            assert lines <= 210, f"class {node.name}: {lines} lines"


def test_the_catalog_and_the_scans_know_no_store_io_nor_event_loop() -> None:
    for name in ("catalog.py", "scan.py", "index.py", "days.py"):
        assert not _imports(PACKAGE / name) & {"asyncio", "aiohttp", "aiobotocore", "asyncpg", "watchfiles", "os"}, name
