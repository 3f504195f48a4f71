"""The service fed by JetStream (--nats-url): real SeaweedFS, a NATS server of the test's own.

SeaweedFS publishes no bucket notifications: the tests publish MinIO-shaped events themselves
after each change, as MinIO's nats target would (tests/test_jetstream.py covers the feed alone).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import S3Bucket, Service, SpyStore, wait_until
from natsserver import NatsServer, nats_binary
from test_jetstream import event, publisher

from userdata.app import create_store
from userdata.settings import Settings, SettingsError, resolve

SUBJECT = "minio.events"


def _settings(s3: S3Bucket, server: NatsServer) -> Settings:
    # No periodic rescan and no watched folder: what the index learns after the load, it learns
    # from the stream.
    return s3.settings(nats_url=server.url, nats_stream="userdata", nats_subject=SUBJECT, rescan_interval=0)


async def _publish(server: NatsServer, *payloads: bytes) -> None:
    async with publisher(server.url) as js:
        for payload in payloads:
            await js.publish(SUBJECT, payload)


async def test_changes_arrive_through_the_stream(start_service, s3: S3Bucket, nats_server: NatsServer):
    s3.put_user("1", "Ann")
    service: Service = await start_service(_settings(s3, nats_server))
    assert await service.user_ids() == ["1"]
    health = await service.get("/health")
    assert health["status"] == "ok" and health["events"]["stream"] == "userdata", health
    assert (await service.get("/readyz"))["status"] == "ready"

    s3.put_user("2", "Bob")
    s3.delete(f"{s3.prefix}1.csv")
    put = event(f"{s3.prefix}2.csv", bucket=s3.name)
    removal = event(f"{s3.prefix}1.csv", bucket=s3.name, name="s3:ObjectRemoved:Delete")
    await _publish(nats_server, put, removal)

    async def followed() -> bool:
        return await service.user_ids() == ["2"]

    await wait_until(followed, message="for the stream's events to reach /data")
    summary = (await service.get("/health"))["events"]
    assert summary["position"] == summary["stream_last"] == 2 and summary["lag"] == 0, summary


async def test_a_nats_outage_degrades_health_and_the_replica_catches_up(
    start_service, s3: S3Bucket, nats_server: NatsServer
):
    service: Service = await start_service(_settings(s3, nats_server))
    nats_server.stop()

    async def degraded() -> bool:
        body = await service.get("/health", status=200)
        return bool(body["status"] == "degraded" and "NATS" in body.get("cause", ""))

    await wait_until(degraded, message="for /health to say NATS is unreachable")
    assert await service.user_ids() == []  # still served
    nats_server.start()

    async def ok() -> bool:
        return bool((await service.get("/health"))["status"] == "ok")

    await wait_until(ok, timeout=15, message="for /health to recover with NATS")
    s3.put_user("7", "Eve")
    await _publish(nats_server, event(f"{s3.prefix}7.csv", bucket=s3.name))

    async def seen() -> bool:
        return await service.user_ids() == ["7"]

    await wait_until(seen, message="for an event published after the outage")


async def test_without_nats_a_loaded_replica_is_ready_and_degraded(start_service, s3: S3Bucket, tmp_path: Path):
    # An outage must not take every replica out of a load balancer: the index is served, and the
    # rescan asked for once NATS is back covers what it missed.
    server = NatsServer(nats_binary(), tmp_path)  # never started: nothing listens on its port
    service: Service = await start_service(_settings(s3, server))
    assert (await service.get("/readyz"))["status"] == "ready"
    assert "NATS" in (await service.get("/health"))["cause"]


@pytest.mark.parametrize(
    ("options", "named"),
    [({"nats_url": "nats://127.0.0.1:4222"}, "needs --s3-endpoint"),
     ({"nats_url": "http://127.0.0.1:4222", "s3_endpoint": "http://s3"}, "not a nats:// or tls:// URL"),
     ({"nats_url": "nats://h:1", "s3_endpoint": "http://s3", "nats_stream": "a.b"}, "--nats-stream"),
     ({"nats_url": "nats://h:1", "s3_endpoint": "http://s3", "nats_subject": "minio.>"}, "--nats-subject")],
)  # fmt: skip
def test_bad_nats_settings_are_named(options: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        resolve(options, {})


def test_a_nats_token_or_password_is_never_shown() -> None:
    settings = resolve({"nats_url": "nats://s3cr3t@127.0.0.1:4222", "s3_endpoint": "http://s3"}, {})
    assert "s3cr3t" not in settings.chosen() and "s3cr3t" not in repr(settings)
    assert "s3cr3t" in settings.secrets()
    with_password = resolve({"nats_url": "nats://u:pw9@h:1", "s3_endpoint": "http://s3"}, {})
    assert "pw9" not in with_password.chosen() and "pw9" in with_password.secrets()


async def test_a_replica_answers_no_data_before_its_first_load(start_service, s3: S3Bucket, nats_server: NatsServer):
    # Behind a load balancer another replica answers (HAProxy tries again on a 503): never one
    # whose index is partial. A service alone answers from what it has so far.
    s3.put_user("1", "Ann")
    store = SpyStore(create_store(_settings(s3, nats_server)))
    held = asyncio.Event()

    async def hold(keys: object) -> None:
        await held.wait()

    store.after_read = hold
    service: Service = await start_service(_settings(s3, nats_server), store=store, loaded=False)
    await wait_until(lambda: store.reads, message="for the first load to be under way")
    try:
        for path in ("/data", "/data?limit=10", "/stats", "/stats/ages"):
            r = await service.client.get(path)
            assert r.status == 503 and r.headers["Retry-After"] == "1", (path, r.status)
            assert "first load" in (await r.json())["error"]
        assert (await service.client.get("/livez")).status == 200  # alive, and said to be starting
        assert (await service.get("/readyz", status=503))["status"] == "starting"
        assert (await service.get("/health", status=503))["status"] == "starting"
    finally:
        held.set()
    await service.pipeline.loaded.wait()
    assert await service.user_ids() == ["1"]
    assert (await service.get("/stats"))["count"] == 1
