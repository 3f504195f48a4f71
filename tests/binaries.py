"""Programs from Debian's packages that some tests run (`make test` installs them where it can)."""

from __future__ import annotations

import os

import pytest

from bench.procs import find_program

__all__ = ("debian_binary",)


def debian_binary(name: str, purpose: str, require: str) -> str:
    """The path of program ``name`` (Debian's package of that name); where it is missing, the
    test skips saying why, or fails when the environment variable ``require`` is set (as
    .ci/run sets it)."""
    found = find_program(name)
    if found is None:
        reason = f"no {name} (Debian's {name} package) to {purpose}"
        if os.environ.get(require):
            pytest.fail(f"{reason} ({require} is set, so this is a failure)", pytrace=False)
        pytest.skip(reason)
    return found
