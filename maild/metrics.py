"""Prometheus metrics in a registry of their own, so several daemons can live in one test process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 86400)


class Metrics:
    """The daemon's counters; labelled by account and folder only, never by sender or Message-ID."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.letters_ingested = Counter(
            "maild_letters_ingested",
            "Letters stored in the database.",
            ["account", "folder"],
            registry=self.registry,
        )
        self.letters_failed = Counter(
            "maild_letters_failed",
            "Letters kept raw and flagged failed or oversize.",
            ["account", "folder"],
            registry=self.registry,
        )
        self.reconnects = Counter(
            "maild_imap_reconnects",
            "IMAP connections thrown away after an error.",
            ["account", "folder"],
            registry=self.registry,
        )
        self.fetch_lag = Histogram(
            "maild_fetch_lag_seconds",
            "Seconds between a letter's arrival on the server (INTERNALDATE) and its storage.",
            ["account"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.connected = Gauge(
            "maild_folder_connected",
            "1 while the folder's IMAP connection is up.",
            ["account", "folder"],
            registry=self.registry,
        )

        self.outbox = Counter(
            "maild_outbox_effects",
            "Outbox effects attempted, by kind and outcome (done, retry, dead).",
            ["account", "kind", "outcome"],
            registry=self.registry,
        )

        self.outbox_rows = Gauge(
            "maild_outbox_rows",
            "Outbox rows by status (pending, done, dead), read after each dispatcher pass.",
            ["status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """Give the Prometheus text exposition."""
        return generate_latest(self.registry)
