"""/healthz and /metrics: loopback by default; any other bind works but is logged loudly."""

from __future__ import annotations

import pytest
import structlog

from maild.core.status import StatusBoard
from maild.health import HealthServer
from maild.metrics import Metrics


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("0.0.0.0", True)])
async def test_non_loopback_bind_is_warned(host: str, warned: bool) -> None:
    """Binding all interfaces is allowed (no traffic is sent here) and says why it is risky."""
    server = HealthServer(f"{host}:0", StatusBoard(), Metrics())
    with structlog.testing.capture_logs() as logs:
        await server.start()
    await server.stop()
    expected = [("health_listening", "info")] + ([("health_exposed", "warning")] if warned else [])
    assert [(e["event"], e["log_level"]) for e in logs] == expected
