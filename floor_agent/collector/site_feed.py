"""The live feeds of a site's collectors: what one collector stores, every collector's
dashboard shows (issue 23, point 4).

A collector's dashboard hears of its own batches and alerts in the process (Collector.listeners,
dashboard/live.py). What the other collectors of the site store it hears of through the store's
feed channel (PostgreSQL LISTEN/NOTIFY, store/pg_feed.py): after a batch committed, its
collector sends a short note naming the agent and the seqs stored; a collector that has
browsers watching reads those rows back from the database, so a feed only ever shows what the
store holds, byte for byte what the sending collector's own feed showed. Alerts travel in the
note itself (kind, severity, agent, detail: what the /alerts page is told). A SQLite store has
no channel: one box, one collector, the in-process path alone.

Notes are pointers, parsed as hostile input (anyone who may NOTIFY on the database can send
one); a bad one is dropped. Sending is off the ingest path (a queue and a thread of its own):
a slow or lost channel loses live lines, never events, and never slows ingest.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from floor_agent.collector.core import Collector
from floor_agent.protocol.event import AGENT_ID_RE, SEVERITIES, TS_RE
from floor_agent.store.interface import NOTE_BYTES, FeedChannel, Store, StoreError
from floor_agent.store.records import AlertDraft, EventRow

log = logging.getLogger(__name__)

VERSION = 1
MAX_RANGE = 100_000  # seqs one range of a note may span (a batch holds far fewer)
MAX_RANGES = 64  # ranges one note may carry (a batch is one range)
DETAIL_CHARS = 300  # of an alert's detail, as live.alert_note shows it
QUEUE_NOTES = 10_000  # notes waiting to be sent; past that, new ones are dropped
SEND_AT_ONCE = 200  # notes sent in one transaction
RECEIVE_SECONDS = 0.5  # a listener's longest wait, so it sees stop() that soon
RETRY_SECONDS = 1.0  # after the channel failed


@dataclass(frozen=True, slots=True)
class BatchNote:
    origin: str
    agent_id: str
    ranges: tuple[tuple[int, int], ...]  # (low, high) seqs stored, inclusive
    at: str  # received_at of the rows


@dataclass(frozen=True, slots=True)
class AlertsNote:
    origin: str
    alerts: tuple[AlertDraft, ...]
    at: str


Note = BatchNote | AlertsNote


def seq_ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Ascending seqs as inclusive runs: [1, 2, 3, 7] -> [(1, 3), (7, 7)] (pure)."""
    out: list[tuple[int, int]] = []
    for seq in seqs:
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def batch_notes(origin: str, agent_id: str, rows: Sequence[EventRow], at: str) -> list[str]:
    """The notes telling of one committed batch (one, unless its seqs are scattered)."""
    runs = seq_ranges(sorted(row.seq for row in rows))
    return [orjson.dumps({"v": VERSION, "o": origin, "b": agent_id,
                          "r": runs[i:i + MAX_RANGES], "at": at}).decode()
            for i in range(0, len(runs), MAX_RANGES)]


def alert_notes(origin: str, alerts: Sequence[AlertDraft], at: str) -> list[str]:
    """The notes telling of stored alerts, as many as keep each under NOTE_BYTES."""
    notes: list[str] = []
    items: list[list[Any]] = []

    def note(chunk: list[list[Any]]) -> str:
        return orjson.dumps({"v": VERSION, "o": origin, "a": chunk, "at": at}).decode()

    for alert in alerts:
        item = [alert.kind, alert.severity, alert.agent_id, alert.detail[:DETAIL_CHARS]]
        if items and len(note([*items, item]).encode()) > NOTE_BYTES:
            notes.append(note(items))
            items = []
        items.append(item)
    if items:
        notes.append(note(items))
    return notes


def _text(value: Any, limit: int = 200) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= limit and "\x00" not in value


def _seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


def parse_note(text: str) -> Note | None:
    """A note as sent by batch_notes/alert_notes, or None for anything else (pure)."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        return None
    origin, at = data.get("o"), data.get("at")
    if not _text(origin, 64) or not isinstance(at, str) or not TS_RE.match(at):
        return None
    if "b" in data:
        agent_id, runs = data["b"], data.get("r")
        if not isinstance(agent_id, str) or not AGENT_ID_RE.match(agent_id):
            return None
        if not isinstance(runs, list) or not 0 < len(runs) <= MAX_RANGES:
            return None
        ranges: list[tuple[int, int]] = []
        for run in runs:
            if not (isinstance(run, list) and len(run) == 2 and _seq(run[0]) and _seq(run[1])
                    and 0 <= run[1] - run[0] < MAX_RANGE):
                return None
            ranges.append((run[0], run[1]))
        return BatchNote(origin, agent_id, tuple(ranges), at)
    items = data.get("a")
    if not isinstance(items, list) or not items:
        return None
    alerts = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 4 and _text(item[0], 64)
                and item[1] in SEVERITIES and (item[2] is None or _text(item[2], 64))
                and isinstance(item[3], str) and len(item[3]) <= DETAIL_CHARS):
            return None
        alerts.append(AlertDraft(item[0], item[1], item[2], item[3]))
    return AlertsNote(origin, tuple(alerts), at)


class SiteFeed:
    """Sends this collector's commits to the site's other collectors and hands theirs to
    this collector's live listeners; two threads, started by start(), ended by stop()."""

    def __init__(self, store: Store, collector: Collector, channel: FeedChannel) -> None:
        self.store = store
        self.collector = collector
        self.channel = channel
        self.origin = secrets.token_hex(8)  # this process's notes come back to it: skipped
        self.dropped = 0  # notes not sent (queue full, channel failed)
        self.received = 0  # other collectors' notes handed on
        self._out: queue.Queue[str | None] = queue.Queue(QUEUE_NOTES)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send_loop, name="site-feed-send",
                                          daemon=True),
                         threading.Thread(target=self._listen_loop, name="site-feed-listen",
                                          daemon=True)]

    @classmethod
    def start(cls, store: Store, collector: Collector) -> SiteFeed | None:
        """The site feed of a collector whose store others may share; None for SQLite."""
        channel = store.feed_channel()
        if channel is None:
            return None
        feed = cls(store, collector, channel)
        collector.listeners.append(feed.on_batch)
        collector.alert_listeners.append(feed.on_alerts)
        for thread in feed._threads:
            thread.start()
        return feed

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):  # full: the sender sees _stop after a send
            self._out.put_nowait(None)
        for thread in self._threads:
            thread.join(10)
        self.channel.close()

    # -- this collector's commits, from ingest threads: quick, never raising --------------
    def on_batch(self, agent_id: str, rows: list[EventRow], at: str) -> None:
        if rows:
            self._queue(batch_notes(self.origin, agent_id, rows, at))

    def on_alerts(self, alerts: list[AlertDraft], at: str) -> None:
        if alerts:
            self._queue(alert_notes(self.origin, alerts, at))

    def _queue(self, notes: list[str]) -> None:
        for note in notes:
            try:
                self._out.put_nowait(note)
            except queue.Full:
                self.dropped += 1

    def _send_loop(self) -> None:
        failing = False
        while True:
            note = self._out.get()
            notes = [note]
            while len(notes) < SEND_AT_ONCE:
                try:
                    notes.append(self._out.get_nowait())
                except queue.Empty:
                    break
            sending = [n for n in notes if n is not None]
            try:
                self.channel.send(sending)
            except StoreError as exc:
                self.dropped += len(sending)
                if not failing:
                    log.warning("live feed: cannot tell the other collectors (%s); their "
                                "dashboards miss this collector's lines until it is back", exc)
                failing = True
            else:
                if failing:
                    log.info("live feed: telling the other collectors again")
                failing = False
            if None in notes or self._stop.is_set():
                return

    # -- the other collectors' commits ---------------------------------------------------
    def _listen_loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                notes = self.channel.receive(RECEIVE_SECONDS)
                for text in notes:
                    self._deliver(parse_note(text))
            except Exception as exc:  # StoreError, or the database gone mid-read
                if not failing:
                    log.warning("live feed: not hearing the other collectors (%s); this "
                                "dashboard misses their lines until it is back", exc)
                failing = True
                self._stop.wait(RETRY_SECONDS)
                continue
            if failing:
                log.info("live feed: hearing the other collectors again")
            failing = False

    def _deliver(self, note: Note | None) -> None:
        if note is None or note.origin == self.origin:
            return
        self.received += 1
        if isinstance(note, AlertsNote):
            for alert_listener in list(self.collector.alert_listeners):
                if alert_listener != self.on_alerts:
                    _call(alert_listener, list(note.alerts), note.at)
            return
        if not any(watching() for watching in self.collector.watching):
            return  # nobody looks: no read-back
        rows = [row for low, high in note.ranges
                for row in self.store.event_rows(note.agent_id, low, high)]
        if rows:
            for listener in list(self.collector.listeners):
                if listener != self.on_batch:
                    _call(listener, note.agent_id, rows, note.at)


def _call(listener: Any, *args: Any) -> None:
    """A listener's failure is logged; the other listeners still hear of it."""
    try:
        listener(*args)
    except Exception:
        log.exception("live feed listener failed")
