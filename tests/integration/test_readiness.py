"""``/readyz`` of a running sensor follows the broker: ready, not ready while it is away,
ready again once it is back; ``/metrics`` counts what was published and dropped."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.brokers import TansuBroker, free_port
from tests.integration.test_end_to_end import (
    Children,
    children,  # noqa: F401  (fixture)
    create_topics,
    kafka_flags,
    scenario_capture,
    tansu,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening (yet)


async def wait_status(port: int, status: int, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await asyncio.to_thread(get, port, "/readyz"))[0] != status:
        assert asyncio.get_running_loop().time() < deadline, f"/readyz never became {status}"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(150)
async def test_readyz_follows_the_broker(
        tansu: TansuBroker, children: Children, tmp_path: Path) -> None:  # noqa: F811
    capture = scenario_capture(tmp_path / "steady.pcap", "steady-plus-burst", connections=10)
    await create_topics(children, tansu)
    port = free_port()
    sensor = children.start(
        "sensor", "sensor", "--pcap", str(capture), "--speed", "300", "--max-queued", "20",
        "--metrics-port", str(port), *kafka_flags(tansu),
        env={"CERTWATCH_KAFKA_REQUEST_TIMEOUT_MS": "1000"})
    await wait_status(port, 200, 15)
    await asyncio.to_thread(tansu.stop)
    await wait_status(port, 503, 15)
    _, metrics = await asyncio.to_thread(get, port, "/metrics")
    dropped = re.search(r"^certwatch_events_dropped_total (\S+)$", metrics, re.M)
    assert dropped is not None
    await asyncio.to_thread(tansu.start)
    await create_topics(children, tansu, "topics-again")
    # Generous: the client's reconnect backoff and metadata refresh are slower on a busy CI box.
    await wait_status(port, 200, 45)
    assert await sensor.wait(60) == 0, sensor.err()[-3000:]
