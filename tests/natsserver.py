"""A NATS server with JetStream of the tests' own (Debian's nats-server), on a free loopback port.

Tests that need one skip with the reason where nats-server is missing, unless TESTS_REQUIRE_NATS
is set (as .ci/run does): then they fail.
"""

from __future__ import annotations

from binaries import debian_binary

from bench.natsserver import NatsServer

__all__ = ("NatsServer", "nats_binary")


def nats_binary() -> str:
    return debian_binary("nats-server", "run a NATS server", "TESTS_REQUIRE_NATS")
