"""Collector ingest and query benchmark; prints one line per figure (notes go to stderr).

    .venv/bin/python bench/collector_ingest.py                # ingest x3 + query p95 on 1M events
    .venv/bin/python bench/collector_ingest.py --large        # query p95 on 10M events
    .venv/bin/python bench/collector_ingest.py --store /var/tmp/q1m.db   # keep/reuse the store

1. ingest_https: a real collector process (`floor-agent collector run`) on a free loopback
   port, N agents enrolled with one-time tokens (core.create_token, /api/v1/enroll). Each
   agent's batches are built before the clock starts exactly as Forwarder.step builds them
   (real Spool, signed Checkpoint, batch.batch_body); N client threads then send them over
   HTTPS keep-alive with the pinned CA, each agent's batches in order. Only events acknowledged
   (acked_seq) count, and the store must hold all of them afterwards.
2. raw_sqlite_insert: after each HTTPS run, the same rows (ingest.event_params), schema,
   indexes and PRAGMAs (WAL, synchronous=FULL) into a fresh SQLite file, one transaction per
   batch of the same size: the baseline of that run's ratio. --repeat runs (fresh collector,
   fresh agents each) give medians, since this shared 2-core VM is noisy.
3. query_p95: a store of 1,000,000 events (10,000,000 with --large) bulk-loaded with realistic
   distributions (50 agents, ~25 kinds with skewed frequencies, mostly info, 30 days), read
   once into the page cache, then a mix of queries through SqlStore.query_events (the API's
   code), cursor pages included. --store PATH keeps the store for later runs of the same size.

--profile FILE records the collector with py-spy during the first ingest run (py-spy must be
on PATH; .json gives speedscope, anything else a flame graph SVG).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.audit.agent import KEY_FILE, enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.audit.keys import load_private_key
from floor_agent.audit.spool import Spool
from floor_agent.collector import core, ingest, server
from floor_agent.collector.config import CollectorConfig, CollectorSection
from floor_agent.config.audit import AuditClientConfig
from floor_agent.protocol.batch import batch_body, parse
from floor_agent.protocol.checkpoint import Checkpoint
from floor_agent.roles.config import WorkstationConfig
from floor_agent.store import migrations, open_store
from floor_agent.store.interface import EventQuery
from floor_agent.store.sql import INSERT_EVENT
from floor_agent.store.sqlite import SCHEMA, SqliteStore, connect

TARGET_EVENTS_PER_S = 20_000
TARGET_RATIO = 0.5
TARGET_P95_MS = 100.0


def figure(name: str, text: str) -> None:
    print(f"{name}: {text}", flush=True)


def note(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ event mix
# What a floor's agents report, by role: (kind, relative frequency, severity).
# Mostly info; critical is rare.
WORKSTATION_KINDS: list[tuple[str, float, str]] = [
    ("net.check", 40, "info"), ("proc.start", 25, "info"), ("file.access", 15, "info"),
    ("usb.inserted", 6, "info"), ("usb.allowed", 4, "info"), ("auth.login", 4, "info"),
    ("usb.blocked", 2, "warning"), ("auth.failed", 1.5, "warning"),
    ("net.blocked", 1, "warning"), ("policy.changed", 0.3, "notice"),
    ("agent.started", 0.1, "notice"), ("agent.stopped", 0.1, "notice"),
    ("net.isolation_lost", 0.02, "critical"),
]
DOOR_KINDS: list[tuple[str, float, str]] = [
    ("door.granted", 70, "info"), ("door.denied", 8, "notice"), ("door.held_open", 1, "warning"),
    ("door.forced", 0.05, "critical"), ("agent.started", 0.1, "notice"),
]
CCTV_KINDS: list[tuple[str, float, str]] = [
    ("cctv.segment", 90, "info"), ("cctv.motion", 8, "info"), ("cctv.offline", 0.3, "error"),
    ("cctv.tamper", 0.03, "critical"), ("agent.started", 0.1, "notice"),
]
ROLE_KINDS = {"workstation": WORKSTATION_KINDS, "door": DOOR_KINDS, "cctv": CCTV_KINDS}
ALL_KINDS = sorted({k for kinds in ROLE_KINDS.values() for k, _, _ in kinds})
KIND_PREFIXES = sorted({k.split(".")[0] + "." for k in ALL_KINDS})


def sample_event(rng: random.Random, role: str, kind: str, severity: str, i: int
                 ) -> tuple[str, str, str, dict[str, Any]]:
    """(kind, subject, severity, data) of one realistic event."""
    if kind.startswith("usb."):
        dev = rng.choice(("0781:5567 SanDisk Cruzer", "046d:c52b Logitech Unifying",
                          "0951:1666 Kingston DataTraveler", "05ac:12a8 Apple iPhone"))
        data = {"bus": f"1-{rng.randint(1, 8)}", "device": dev, "interface_class": "08",
                "serial": f"{rng.getrandbits(48):012x}"}
        if kind == "usb.blocked":
            data["reason"] = "mass storage (08) is not allowed"
        return kind, f"usb 1-{rng.randint(1, 8)} ({dev})", severity, data
    if kind.startswith("net."):
        return kind, "egress", severity, {"result": "isolated", "probe": "198.51.100.7:443",
                                          "latency_ms": rng.randint(1, 40)}
    if kind.startswith("door."):
        return kind, f"door {rng.choice(('front', 'cleanroom', 'store', 'loading'))}", severity, {
            "person": f"P-{rng.randint(1, 900):04d}", "badge": f"{rng.getrandbits(32):08x}",
            "reader": "in" if i % 2 else "out"}
    if kind.startswith("cctv."):
        cam = f"cam-{rng.randint(1, 4)}"
        return kind, cam, severity, {"segment": f"{cam}/2026-11-29/08/{i % 10000:04d}.mp4",
                                     "bytes": rng.randint(10**6, 10**8),
                                     "sha256": f"{rng.getrandbits(256):064x}"}
    if kind.startswith("proc."):
        return kind, rng.choice(("/usr/bin/plc-hmi", "/usr/bin/ssh", "/usr/bin/python3")), \
            severity, {"pid": rng.randint(100, 60000), "uid": 1000, "ppid": 1}
    if kind.startswith("file."):
        return kind, f"/srv/recipes/line-{rng.randint(1, 9)}.xml", severity, {
            "op": rng.choice(("read", "write")), "uid": 1000}
    if kind.startswith("auth."):
        return kind, f"operator{rng.randint(1, 60):02d}", severity, {"tty": "seat0",
                                                                       "method": "password"}
    return kind, role, severity, {"note": "benchmark", "n": i}


def pick(rng: random.Random, kinds: list[tuple[str, float, str]], n: int
         ) -> list[tuple[str, str]]:
    chosen = rng.choices(kinds, weights=[w for _, w, _ in kinds], k=n)
    return [(k, s) for k, _, s in chosen]


# ------------------------------------------------------------------------------ ingest
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class AgentBatches:
    agent_id: str
    bodies: list[bytes] = field(default_factory=list)
    last_seqs: list[int] = field(default_factory=list)


class CollectorProcess:
    """`floor-agent collector run` in its own process; stopped by its PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.config = CollectorConfig(log_level="warning", collector=CollectorSection(
            state_dir=root / "collector", listen_port=self.port))
        self.config_path = root / "collector.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config.model_dump(mode="json")))
        self.files = server.init(self.config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    @property
    def db_path(self) -> Path:
        return Path(self.config.collector.resolved_database_url().removeprefix("sqlite:///"))

    def tokens(self, n: int) -> list[str]:
        store = open_store(self.config.collector.resolved_database_url())
        try:
            return [core.create_token(store, "workstation", 3600) for _ in range(n)]
        finally:
            store.close()

    def start(self) -> None:
        self.log = (self.root / "collector.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "floor_agent.cli", "collector", "run", "--config",
             str(self.config_path)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        with pinned_client(self.url, self.files.ca_cert, 2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("collector exited: "
                                       + (self.root / "collector.log").read_text()[-2000:])
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/healthz").status_code == 200:
                        return
                time.sleep(0.05)
        raise RuntimeError("collector did not become healthy in 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_batches(collector: CollectorProcess, agent_id: str, token: str, events: int, batch: int,
                  seed: int) -> AgentBatches:
    """Enroll one agent, spool its events, and build every batch as Forwarder.step does."""
    audit = AuditClientConfig(agent_id=agent_id, state_dir=collector.root / agent_id,
                              collector_url=collector.url, ca_cert=collector.files.ca_cert,
                              batch_max_events=min(batch, 5000))
    config = WorkstationConfig(audit=audit)
    enroll(config.audit, "workstation", token, collector.files.ca_cert)
    key = load_private_key(audit.state_dir / KEY_FILE)
    out = AgentBatches(agent_id)
    out.bodies, out.last_seqs = signed_batches(audit.state_dir / "spool.db", agent_id, key,
                                               events, batch, seed)
    return out


def signed_batches(spool_path: Path, agent_id: str, key: Ed25519PrivateKey, events: int,
                   batch: int, seed: int) -> tuple[list[bytes], list[int]]:
    """Spool `events` realistic workstation events and sign every batch as Forwarder.step
    builds them, each chained on the one before (as once the collector acknowledged it): the
    bodies and each one's last seq."""
    spool = Spool(spool_path, agent_id, max_events=max(1_000_000, 2 * events))
    rng = random.Random(seed)
    bodies: list[bytes] = []
    last_seqs: list[int] = []
    try:
        done = 0
        while done < events:
            n = min(5000, events - done)
            spool.emit_many([sample_event(rng, "workstation", k, s, done + i)
                             for i, (k, s) in enumerate(pick(rng, WORKSTATION_KINDS, n))])
            done += n
        while True:
            acked, pending = spool.batch(batch)
            if not pending:
                break
            checkpoint = Checkpoint(agent_id, pending[-1].seq, pending[-1].hash,
                                    spool.next_checkpoint_ts(), spool.boot_id).sign(key)
            bodies.append(batch_body(agent_id, acked.hash, [(p.body, p.hash) for p in pending],
                                     checkpoint))
            last_seqs.append(pending[-1].seq)
            spool.acknowledge(pending[-1].seq)
    finally:
        spool.close()
    return bodies, last_seqs


def send_all(url: str, ca: Path, agents: list[AgentBatches]) -> tuple[int, float]:
    """Every agent's batches from its own thread and connection; (events acked, seconds)."""
    clients = [pinned_client(url, ca, 120.0) for _ in agents]
    for client in clients:  # TLS handshake and keep-alive connection before the clock starts
        client.get("/healthz").raise_for_status()
    barrier = threading.Barrier(len(agents) + 1)
    acked = [0] * len(agents)
    errors: list[str] = []

    def run(index: int) -> None:
        agent, client = agents[index], clients[index]
        barrier.wait()
        try:
            for body, last in zip(agent.bodies, agent.last_seqs, strict=True):
                response = client.post("/api/v1/ingest", content=body)
                if response.status_code != 200:
                    errors.append(f"{agent.agent_id}: {response.status_code} {response.text}")
                    return
                acked_seq = response.json()["acked_seq"]
                if acked_seq != last:
                    errors.append(f"{agent.agent_id}: acked {acked_seq}, expected {last}")
                    return
                acked[index] = acked_seq
        except Exception as exc:  # report, do not hang the barrier or the other threads
            errors.append(f"{agent.agent_id}: {exc!r}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(agents))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    if errors:
        raise RuntimeError("ingest failed: " + "; ".join(errors[:5]))
    return sum(acked), elapsed


def raw_insert(path: Path, agents: list[AgentBatches]) -> tuple[int, float]:
    """The same rows, schema, PRAGMAs and batch size, straight into SQLite."""
    received_at = "2026-11-29T08:00:00.000000Z"
    per_agent = [[[ingest.event_params(w, received_at) for w in parse(body, 100_000).events]
                  for body in agent.bodies] for agent in agents]
    # Interleaved as the collector sees them: one batch of each agent in turn.
    batches = [rows for group in zip(*per_agent, strict=True) for rows in group]
    db = connect(path)
    db.executescript(SCHEMA)
    total = 0
    started = time.perf_counter()
    for rows in batches:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(INSERT_EVENT, rows)
        db.execute("COMMIT")
        total += len(rows)
    elapsed = time.perf_counter() - started
    db.close()
    return total, elapsed


@dataclass
class IngestRun:
    rate: float  # events/s acknowledged over HTTPS
    raw_rate: float  # events/s of the same rows straight into SQLite
    server_cpu: float  # collector process CPU seconds per timed second


def ingest_once(root: Path, n_agents: int, total: int, batch: int, profile: str | None
                ) -> IngestRun:
    """One fresh collector and fresh agents; the HTTPS run, then its raw baseline."""
    per_agent = total // n_agents
    collector = CollectorProcess(root)
    try:
        collector.start()
        assert collector.proc is not None
        tokens = collector.tokens(n_agents)
        started = time.perf_counter()
        agents = [build_batches(collector, f"bench-ws-{i + 1:02d}", tokens[i], per_agent, batch,
                                seed=i) for i in range(n_agents)]
        size = sum(len(b) for a in agents for b in a.bodies)
        note(f"built {n_agents} x {len(agents[0].bodies)} signed batches ({size / 1e6:.1f} MB, "
             f"{size / total:.0f} B/event) in {time.perf_counter() - started:.1f} s")
        spy = None
        if profile:
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(collector.proc.pid),
                                    "--rate", "200", "--threads", "--idle", "--output", profile,
                                    "--format", "speedscope" if profile.endswith(".json")
                                    else "flamegraph"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu_before = process_cpu(collector.proc.pid)
        acked, elapsed = send_all(collector.url, collector.files.ca_cert, agents)
        server_cpu = process_cpu(collector.proc.pid) - cpu_before
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
    finally:
        collector.stop()
    db = sqlite3.connect(collector.db_path)
    # the bench agents' events only: the collector's own audit trail (its start, say) is
    # stored in the same table
    stored = db.execute("SELECT count(*) FROM events WHERE agent_id LIKE 'bench-ws-%'"
                        ).fetchone()[0]
    db.close()
    if acked != total or stored != total:
        raise SystemExit(f"acked {acked}, stored {stored}, expected {total}")
    raw_total, raw_elapsed = raw_insert(root / "raw.db", agents)
    run = IngestRun(acked / elapsed, raw_total / raw_elapsed, server_cpu / elapsed)
    shutil.rmtree(root, ignore_errors=True)
    note(f"run: ingest_https {run.rate:,.0f} events/s in {elapsed:.2f} s (collector CPU "
         f"{run.server_cpu:.0%} of one core), raw_sqlite_insert {run.raw_rate:,.0f} events/s "
         f"in {raw_elapsed:.2f} s, ratio {run.rate / run.raw_rate:.2f}")
    return run


def bench_ingest(root: Path, n_agents: int, total: int, batch: int, repeat: int,
                 profile: str | None) -> None:
    if total % (n_agents * batch):
        raise SystemExit(f"--total ({total}) must be a multiple of --agents x --batch "
                         f"({n_agents * batch})")
    runs = [ingest_once(root / f"run-{i + 1}", n_agents, total, batch,
                        profile if i == 0 else None) for i in range(repeat)]
    rate = statistics.median(r.rate for r in runs)
    raw_rate = statistics.median(r.raw_rate for r in runs)
    each = f"median of {repeat}" if repeat > 1 else "1 run"

    def listing(values: list[float], form: str) -> str:
        return ", ".join(format(v, form) for v in values) if repeat > 1 else ""

    figure("ingest_https", f"{rate:,.0f} events/s ({n_agents} agents, batch {batch}, total "
                           f"{total:,}; {each}: {listing([r.rate for r in runs], ',.0f')})")
    figure("raw_sqlite_insert", f"{raw_rate:,.0f} events/s (same rows, batch {batch}, WAL, "
                                f"synchronous=FULL; {each}: "
                                f"{listing([r.raw_rate for r in runs], ',.0f')})")
    ratios = [r.rate / r.raw_rate for r in runs]
    ratio = statistics.median(ratios)
    figure("ratio", f"{ratio:.2f} (ingest_https / raw_sqlite_insert of the same run; "
                    f"{each}: {listing(ratios, '.2f')})")
    figure("ingest_target_rate", f"{'met' if rate >= TARGET_EVENTS_PER_S else 'MISSED'} "
                                 f"(>= {TARGET_EVENTS_PER_S:,} events/s)")
    figure("ingest_target_ratio", f"{'met' if ratio >= TARGET_RATIO else 'MISSED'} "
                                  f"(>= {TARGET_RATIO} of raw)")


# ------------------------------------------------------------------------------ query store
N_AGENTS = 50
SPAN_DAYS = 30
START_EPOCH = 1_762_000_000  # 2025-11-01, whole seconds


def agents_for_store() -> list[tuple[str, str, float]]:
    """(agent_id, role, activity weight): 40 workstations, 5 doors, 5 cameras, skewed."""
    out: list[tuple[str, str, float]] = []
    for i in range(40):
        out.append((f"ws-{i + 1:03d}", "workstation", 1.0 / (1 + i % 10) ** 0.7))
    for i in range(5):
        out.append((f"door-{i + 1:02d}", "door", 0.6))
    for i in range(5):
        out.append((f"cam-{i + 1:02d}", "cctv", 0.8))
    return out


def ts_text(micros: int) -> str:
    sec, us = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{us:06d}Z"


def store_rows(n: int, seed: int = 7) -> Iterator[list[tuple[Any, ...]]]:
    """n event rows in chunks, in arrival (ts) order, with per-agent seqs."""
    rng = random.Random(seed)
    agents = agents_for_store()
    weights = [w for _, _, w in agents]
    seqs = dict.fromkeys((a for a, _, _ in agents), 0)
    boot = {a: uuid.UUID(int=rng.getrandbits(128)).hex for a, _, _ in agents}
    # Pre-rendered (subject, data) per kind: the store's size and shape matter, not variety.
    variants: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for role, kinds in ROLE_KINDS.items():
        for kind, _, severity in kinds:
            variants[(role, kind)] = []
            for i in range(64):
                _, subject, _, data = sample_event(rng, role, kind, severity, i)
                variants[(role, kind)].append((subject, orjson.dumps(data).decode()))
    role_choice = {role: (kinds, [w for _, w, _ in kinds]) for role, kinds in ROLE_KINDS.items()}
    step = SPAN_DAYS * 86400 * 1_000_000 / n
    base = START_EPOCH * 1_000_000
    chunk = 100_000
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        picked = rng.choices(agents, weights=weights, k=count)
        rows = []
        for offset, (agent_id, role, _) in enumerate(picked):
            i = start + offset
            kinds, kweights = role_choice[role]
            kind, _, severity = rng.choices(kinds, weights=kweights)[0]
            if severity == "info" and rng.random() < 0.003:
                severity = "error"
            seqs[agent_id] += 1
            ts = ts_text(base + int((i + rng.random()) * step))
            subject, data = variants[(role, kind)][rng.getrandbits(6)]
            rows.append((agent_id, seqs[agent_id], boot[agent_id], ts, kind, severity,
                         {"debug": 0, "info": 1, "notice": 2, "warning": 3, "error": 4,
                          "critical": 5}[severity], subject, data, rng.randbytes(32), ts))
        yield rows


def store_size(path: Path) -> int:
    if not path.exists():
        return -1
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
    except sqlite3.Error:
        return -1
    finally:
        db.close()


def build_store(path: Path, n: int) -> None:
    """Bulk load: no fsync, indexes created after the rows (same schema and indexes at the end)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")
    # Created (and version-stamped) as the store creates itself, so the store opens it as
    # current rather than as a version 1 store to upgrade.
    migrations.upgrade(db.cursor(), migrations.SQLITE, str(path))
    indexes = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index' "
                                        "AND tbl_name='events' AND sql IS NOT NULL")]
    for name in indexes:
        db.execute(f"DROP INDEX {name}")
    started = time.perf_counter()
    for rows in store_rows(n):
        db.execute("BEGIN")
        db.executemany(INSERT_EVENT, rows)
        db.execute("COMMIT")
    note(f"inserted {n:,} rows in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    db.executescript(SCHEMA)  # recreates the dropped indexes
    now = "2026-11-29T08:00:00.000000Z"
    for agent_id, role, _ in agents_for_store():
        db.execute("INSERT OR IGNORE INTO agents (agent_id, role, public_key, enrolled_at, "
                   "head_hash, events_total) VALUES (?, ?, '', ?, zeroblob(32), "
                   "(SELECT count(*) FROM events WHERE agent_id = ?))",
                   (agent_id, role, now, agent_id))
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    note(f"indexes built in {time.perf_counter() - started:.0f} s")


@dataclass
class QueryCase:
    label: str
    query: EventQuery
    pages: int = 1  # follow next_cursor this many pages, each timed as one query


def window(rng: random.Random, hours: float) -> tuple[str, str]:
    span = SPAN_DAYS * 86400 - hours * 3600
    start = START_EPOCH + rng.random() * span
    return (ts_text(int(start * 1_000_000)), ts_text(int((start + hours * 3600) * 1_000_000)))


def query_cases(rng: random.Random, n: int) -> list[QueryCase]:
    agents = agents_for_store()
    makers: list[Callable[[], QueryCase]] = []

    def agent() -> tuple[str, str]:
        agent_id, role, _ = rng.choice(agents)
        return agent_id, role

    def role_kind(role: str) -> str:
        return rng.choice(ROLE_KINDS[role])[0]

    makers.append(lambda: QueryCase("newest", EventQuery()))
    makers.append(lambda: QueryCase("agent", EventQuery(agent_id=agent()[0])))
    makers.append(lambda: QueryCase("kind", EventQuery(kind=rng.choice(ALL_KINDS))))
    makers.append(lambda: QueryCase("kind_prefix",
                                    EventQuery(kind_prefix=rng.choice(KIND_PREFIXES))))
    makers.append(lambda: QueryCase("severity", EventQuery(severities=rng.choice(
        (("critical",), ("error", "critical"), ("warning", "error", "critical"), ("warning",))))))
    makers.append(lambda: QueryCase("time_window", EventQuery(
        since=(w := window(rng, rng.choice((1, 24))))[0], until=w[1])))

    def agent_kind() -> QueryCase:
        agent_id, role = agent()
        return QueryCase("agent+kind", EventQuery(agent_id=agent_id, kind=role_kind(role)))

    def agent_window() -> QueryCase:
        since, until = window(rng, 24)
        return QueryCase("agent+window", EventQuery(agent_id=agent()[0], since=since,
                                                    until=until))

    def kind_window() -> QueryCase:
        since, until = window(rng, 24 * 7)
        return QueryCase("kind+window", EventQuery(kind=rng.choice(ALL_KINDS), since=since,
                                                   until=until))

    def severity_window() -> QueryCase:
        since, until = window(rng, 24)
        return QueryCase("severity+window", EventQuery(
            severities=rng.choice((("critical",), ("warning", "error", "critical"))),
            since=since, until=until))

    def agent_severity() -> QueryCase:
        return QueryCase("agent+severity", EventQuery(
            agent_id=agent()[0], severities=rng.choice((("critical",), ("warning",)))))

    def prefix_agent() -> QueryCase:
        agent_id, role = agent()
        return QueryCase("kind_prefix+agent", EventQuery(
            agent_id=agent_id, kind_prefix=role_kind(role).split(".")[0] + "."))

    def paged() -> QueryCase:
        base = rng.choice((EventQuery(), EventQuery(agent_id=agent()[0]),
                           EventQuery(kind=rng.choice(("net.check", "door.granted",
                                                       "usb.blocked"))),
                           EventQuery(severities=("warning", "error", "critical"))))
        return QueryCase("paginate", base, pages=5)

    def deep_cursor() -> QueryCase:
        # A cursor far back in history: what page 5,000 of a long listing looks like.
        since, _ = window(rng, 1)
        base = rng.choice((EventQuery(), EventQuery(agent_id=agent()[0]),
                           EventQuery(kind=rng.choice(ALL_KINDS))))
        return QueryCase("deep_cursor", EventQuery(base.agent_id, base.kind, cursor=(since,
                                                                                     2**62)))

    makers += [agent_kind, agent_window, kind_window, severity_window, agent_severity,
               prefix_agent, paged, deep_cursor]
    cases: list[QueryCase] = []
    queries = 0
    while queries < n:
        case = makers[len(cases) % len(makers)]()
        cases.append(case)
        queries += case.pages
    return cases


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def bench_query(path: Path, n: int, queries: int) -> None:
    have = store_size(path)
    if have != n:
        started = time.perf_counter()
        build_store(path, n)
        note(f"built query store of {n:,} events at {path} in "
             f"{time.perf_counter() - started:.0f} s ({path.stat().st_size / 1e9:.2f} GB)")
    else:
        note(f"reusing query store of {n:,} events at {path}")
    started = time.perf_counter()
    with path.open("rb") as handle:  # into the page cache: a store being queried stays there
        while handle.read(8 << 20):
            pass
    note(f"read the store once to warm the page cache in {time.perf_counter() - started:.1f} s")
    store = SqliteStore(f"sqlite:///{path}")
    timings: list[tuple[str, float, int]] = []
    try:
        for case in query_cases(random.Random(11), 10):  # warm the page cache a little
            store.query_events(case.query)
        for case in query_cases(random.Random(3), queries):
            query = case.query
            for _ in range(case.pages):
                started = time.perf_counter()
                page = store.query_events(query)
                timings.append((case.label, (time.perf_counter() - started) * 1000,
                                len(page.events)))
                if page.next_cursor is None:
                    break
                query = EventQuery(query.agent_id, query.kind, query.kind_prefix,
                                   query.severities, query.since, query.until, query.limit,
                                   page.next_cursor)
    finally:
        store.close()
    ms = [t for _, t, _ in timings]
    p95 = percentile(ms, 95)
    figure("query_p95", f"{p95:.1f} ms (store of {n:,} events, {len(ms)} queries, limit 100)")
    figure("query_p50", f"{percentile(ms, 50):.1f} ms")
    figure("query_max", f"{max(ms):.1f} ms")
    labels = sorted({label for label, _, _ in timings})
    for label in labels:
        mine = [t for lab, t, _ in timings if lab == label]
        figure(f"query_p95[{label}]", f"{percentile(mine, 95):.1f} ms "
                                      f"(n={len(mine)}, max {max(mine):.1f} ms)")
    figure("query_target", f"{'met' if p95 <= TARGET_P95_MS else 'MISSED'} "
                           f"(p95 <= {TARGET_P95_MS:.0f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=4, help="concurrent agents (default 4)")
    parser.add_argument("--total", type=int, default=200_000,
                        help="events sent in all (default 200,000)")
    parser.add_argument("--batch", type=int, default=500, help="events per batch (default 500)")
    parser.add_argument("--large", action="store_true",
                        help="query store of 10,000,000 events instead of 1,000,000")
    parser.add_argument("--store", type=Path,
                        help="query store file, kept and reused by later runs of the same size")
    parser.add_argument("--repeat", type=int, default=3,
                        help="ingest runs, each with its own baseline; medians (default 3)")
    parser.add_argument("--queries", type=int, default=200, help="queries timed (default 200)")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-query", action="store_true")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temp dir, removed)")
    parser.add_argument("--profile", metavar="FILE",
                        help="record the collector with py-spy during ingest (.svg or .json)")
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= 5000:
        parser.error("--batch: 1 to 5000 (the agents' and the collector's limit)")
    root = Path(tempfile.mkdtemp(prefix="bench-collector-", dir=args.dir))
    try:
        if not args.skip_ingest:
            bench_ingest(root, args.agents, args.total, args.batch, args.repeat, args.profile)
        if not args.skip_query:
            n = 10_000_000 if args.large else 1_000_000
            bench_query(args.store or root / f"query-{n}.db", n, args.queries)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
