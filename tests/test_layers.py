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
    """Top-level packages ``path`` imports, and its imports within userdata as ``.module``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            inner = node.module or ""
            names.update(
                f".{inner}.{alias.name}".replace("..", ".") if not inner else f".{inner}" for alias in node.names
            )
    return names


def test_only_the_tuning_module_touches_the_collector() -> None:
    users = [path.relative_to(PACKAGE).as_posix() for path in MODULES if "gc" in _imports(path)]
    assert users == ["tuning.py"]


@pytest.mark.parametrize("module", ["userdata.views", "userdata.health", "userdata.dashboard_api", "userdata.live"])
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


#: What the domain's pure modules may import from the package: records, the store's types, each other.
_PURE = {".records", ".stores", ".catalog", ".objects", ".days", ".names"}


@pytest.mark.parametrize(
    "name", ["catalog.py", "scan.py", "index.py", "days.py", "ages.py", "records.py", "objects.py", "names.py"]
)
def test_the_domain_knows_no_io_no_event_loop_and_no_later_layer(name: str) -> None:
    imports = _imports(PACKAGE / name)
    assert not imports & {"asyncio", "aiohttp", "aiobotocore", "asyncpg", "watchfiles", "os", "gc"}
    assert {i for i in imports if i.startswith(".")} <= _PURE
