"""The part of a collector's start that needs its database, as one step that can wait.

A collector may start before its database answers: the whole site powered up at once, the
database restarting or failing over. Under systemd an exit then is a restart loop for a
database outage, and a box that boots first has no collector until someone looks. So the
process serves at once (/healthz, READY, the watchdog) and runs this step when the database
answers: now, or later from the database watch (database_watch.py), while every other route
answers 503 (start_gate.py). A database that answers no, or a store that cannot be used,
ends the start with the message, as it always did.

Everything up to the background threads only reads or repeats idempotent writes (the schema,
the collector's own audit identity, its endorsement): a database lost halfway through runs
the step again from the top. The threads are started once, last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from floor_agent.collector import self_audit
from floor_agent.collector.anchor import Anchor
from floor_agent.collector.config import CollectorConfig
from floor_agent.collector.core import Collector
from floor_agent.collector.notify import Notifier
from floor_agent.collector.notify_senders import Sender
from floor_agent.collector.policy_admin import ExpiryWatch
from floor_agent.collector.self_audit import OwnAudit
from floor_agent.collector.site_feed import SiteFeed
from floor_agent.store.interface import Store

log = logging.getLogger(__name__)


def rebuild_latest_if_needed(store: Store) -> None:
    """A store from before the dashboard: the overview's state comes from the newest state
    event per agent and topic, kept at ingest from now on; fill it once from the events."""
    if not store.latest_states() and store.stats()["events"]:
        rows = store.rebuild_latest()
        log.info("dashboard state rebuilt from the stored events: %d entries", rows)


@dataclass
class DatabaseStart:
    """What start does with the database; `run()` until it returns, then `stop()` at the end."""

    config: CollectorConfig
    store: Store
    collector: Collector
    signer: Anchor
    own: OwnAudit
    senders: dict[str, Sender]
    notifier: Notifier | None = field(default=None, init=False)
    expiry: ExpiryWatch | None = field(default=None, init=False)
    feed: SiteFeed | None = field(default=None, init=False)

    def run(self) -> None:
        """StoreUnavailable: the database is away (call again later); anything else, a
        StoreRefused included, ends the start."""
        section = self.config.collector
        self.store.open()  # schema to this release's
        rebuild_latest_if_needed(self.store)
        self_audit.ensure_registered(self.store, self.config)
        self.collector.anchor = self.signer.endorse_own(self.store, self.config)
        # nothing below waits on the database: started once
        if self.senders:  # alerts to people: the outbox, delivered from its own thread
            self.notifier = Notifier(self.store, section.notifications, self.own, self.senders)
            self.collector.alert_listeners.append(self.notifier.alert_listener)
            self.notifier.start()
        self.expiry = ExpiryWatch(self.store, self.own, section.policy.expiry_check_seconds)
        self.expiry.start()
        # the site's other collectors (PostgreSQL): our commits to their live feeds, theirs
        # to ours
        self.feed = SiteFeed.start(self.store, self.collector)

    def stop(self) -> None:
        """Stop what run() started (nothing when it never completed)."""
        if self.expiry is not None:
            self.expiry.stop()
        if self.feed is not None:
            self.feed.stop()
        if self.notifier is not None:
            self.notifier.stop()
