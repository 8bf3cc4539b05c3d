"""Dashboard benchmark: overview first render and ingest-to-browser latency on a full store.

    .venv/bin/python bench/dashboard.py                    # 1M events, 200 agents reporting
    .venv/bin/python bench/dashboard.py --keep /var/tmp/dash1m    # keep/reuse the built store

1. A store of --events (1,000,000) chained, checkpointed events from 200 agents (190
   workstations, 4 door controllers, 6 camera boxes; bench/dashboard_data.py) is bulk-loaded
   through Store.commit_batch, then a real collector process (`floor-agent collector run`)
   serves it on loopback HTTPS.
2. "200 agents reporting": bench/dashboard_data.py report, a separate process, sends the same
   agents' signed batches (5 events each) at --rate events/s overall, all the time the browser
   is measured.
3. Debian's Chromium (Playwright, tests/browser.py) logs in through the login form.
   overview_first_render: navigation start to the moment the overview's three tables
   (workstations, doors, cameras) are all in the DOM, recorded in the page by a
   MutationObserver (performance.now(), whose zero is the navigation start). cold: a fresh
   browser context per load (no cache, new TLS connection); warm: the same tab navigating again
   (static files cached, connection kept). p50/p95 over --loads loads each. The same for
   /events (its feed table in the DOM), and how often an open overview reloads itself or
   redraws its tables in 30 s (its script fetches /overview/state when /overview/stream says a
   state or an alert moved, at most every 5 s).
4. ingest_to_browser: the /events page (no filters: it receives everything the 200 agents
   send) is open and live; a probe agent sends --probes single-event batches, one every
   --probe-interval s. For each: wall clock just before the POST, the collector's received_at,
   and the wall clock (performance.timeOrigin + now()) at which a MutationObserver in the page
   sees the row with that seq. Same machine, same clock. p50/p95/max of post->row, and the
   split post->received_at (ingest) and received_at->row (push and render).

Targets: overview first render 500 ms, ingest to browser 1 s. Work files go to a temporary
directory removed at the end unless --keep names one. Prints one line per figure, then a
markdown block for BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))  # tests/browser.py: Debian's Chromium

from browser import DESKTOP, chromium, new_context  # noqa: E402
from collector_ingest import CollectorProcess, figure, note, percentile  # noqa: E402
from dashboard_data import (  # noqa: E402
    SimAgent,
    bulk_load,
    enroll_all,
    floor_agents,
    load_state,
    progress_note,
    save_state,
)
from playwright.sync_api import Browser, BrowserContext, Page  # noqa: E402

from floor_agent.audit.forwarder import pinned_client  # noqa: E402
from floor_agent.collector import self_audit  # noqa: E402
from floor_agent.dashboard import passwords, user_admin  # noqa: E402
from floor_agent.protocol.event import utc_timestamp  # noqa: E402
from floor_agent.store import open_store  # noqa: E402
from floor_agent.store.interface import EventQuery  # noqa: E402

TARGET_RENDER_MS = 500.0
TARGET_LATENCY_MS = 1000.0
USER, PASSWORD = "bench", "bench password 1234"
PROBE = "bench-probe"

# Records, in the page, when the overview's tables are all in the DOM, or /events' feed table
# (ms since navigation start). Injected by Playwright before any page script runs (not subject
# to the page's CSP).
RENDER_PROBE = """
(() => {
  const wanted = location.pathname === "/events" ? ["table#feed"]
    : ["workstations", "doors", "cameras"].map(t => `[data-testid=${t}]`);
  const done = () => wanted.every(s => document.querySelector(s));
  const mark = () => { if (window.__tablesAt === undefined && done()) {
      window.__tablesAt = performance.now(); observer.disconnect(); } };
  const observer = new MutationObserver(mark);
  observer.observe(document, {childList: true, subtree: true});
})();
"""
# Reports each feed row of the probe agent, with the wall clock it appeared at, to Python.
FEED_PROBE = """
(() => {
  const seen = (row) => {
    if (row.nodeType === 1 && row.matches("tr[data-testid=event-row]")
        && row.dataset.agent === "PROBE_AGENT") {
      window.__probeSeen(Number(row.dataset.seq), performance.timeOrigin + performance.now());
    }
  };
  const observer = new MutationObserver(list => list.forEach(m => m.addedNodes.forEach(seen)));
  observer.observe(document, {childList: true, subtree: true});
})();
""".replace("PROBE_AGENT", PROBE)


def summary(values: list[float]) -> str:
    return (f"p50 {statistics.median(values):.0f} ms, p95 {percentile(values, 95):.0f} ms, "
            f"max {max(values):.0f} ms, n={len(values)}")


# ------------------------------------------------------------------------------ the floor
def build(collector: CollectorProcess, work: Path, events: int) -> list[SimAgent]:
    """Bulk-load the store (or reuse a kept one) and make the bench user and the probe."""
    state = work / "agents.json"
    if state.exists():
        note(f"reusing the store and agents of {work}")
        return load_state(state)
    store = open_store(collector.config.collector.resolved_database_url())
    agents = floor_agents()
    probe = SimAgent(PROBE, "workstation", floor_agents(seed=99)[0].key, "boot-probe")
    started = time.perf_counter()
    try:
        enroll_all(store, [*agents, probe])
        stored = bulk_load(store, agents, events, progress=progress_note(100_000))
        own = self_audit.open_writer(collector.config)
        try:
            user_admin.create(store, own, USER, "admin", "bench", utc_timestamp())
        finally:
            own.close()
        # the one-time password is replaced here: the benchmark measures pages, not that form
        store.update_user(USER, utc_timestamp(), password_hash=passwords.hash_password(PASSWORD),
                          must_change=False)
    finally:
        store.close()
    figure("store_build", f"{stored} events from {len(agents)} agents in "
                          f"{time.perf_counter() - started:.0f} s (Store.commit_batch, "
                          f"5000-event signed batches)")
    save_state(state, [*agents, probe])
    return [*agents, probe]


def start_reporters(collector: CollectorProcess, work: Path, rate: float
                    ) -> subprocess.Popen[bytes]:
    """The 200 agents reporting (not the probe), continuing their chains, until SIGTERM."""
    agents = [a for a in load_state(work / "agents.json") if a.agent_id != PROBE]
    save_state(work / "reporters.json", agents)
    log = (work / "reporters.log").open("ab")
    return subprocess.Popen(
        [sys.executable, str(BENCH / "dashboard_data.py"), "report", "--state",
         str(work / "reporters.json"), "--url", collector.url, "--ca",
         str(collector.files.ca_cert), "--rate", str(rate)], stdout=log, stderr=log)


def stop_reporters(proc: subprocess.Popen[bytes], work: Path) -> bool:
    """Stop them; True when they stopped cleanly and wrote back where their chains are."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    lines = (work / "reporters.log").read_text().strip().splitlines()
    note(lines[-1] if lines else "reporters: no output")
    return proc.returncode == 0


# ------------------------------------------------------------------------------ the browser
def log_in(page: Page, url: str) -> None:
    page.goto(f"{url}/login")
    page.fill("form#login input[name=username]", USER)
    page.fill("form#login input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form#login button[type=submit]")
    if page.url.rstrip("/") != url:
        raise RuntimeError(f"login did not reach the overview: {page.url}")


def render_ms(page: Page, url: str, path: str = "/") -> float:
    """One navigation: ms from navigation start to the page's tables in the DOM."""
    page.goto(f"{url}{path}", wait_until="domcontentloaded")
    page.wait_for_function("window.__tablesAt !== undefined", timeout=30_000)
    return float(page.evaluate("window.__tablesAt"))


def page_loads(browser: Browser, url: str, cookies: list[Any], loads: int, path: str = "/"
               ) -> tuple[list[float], list[float]]:
    cold: list[float] = []
    for _ in range(loads):
        context = new_context(browser, DESKTOP)
        try:
            context.add_cookies(cookies)
            context.add_init_script(RENDER_PROBE)
            cold.append(render_ms(context.new_page(), url, path))
        finally:
            context.close()
    warm: list[float] = []
    context = new_context(browser, DESKTOP)
    try:
        context.add_cookies(cookies)
        context.add_init_script(RENDER_PROBE)
        page = context.new_page()
        render_ms(page, url, path)  # fills the cache and opens the connection
        for _ in range(loads):
            warm.append(render_ms(page, url, path))
    finally:
        context.close()
    return cold, warm


def self_reloads(context: BrowserContext, url: str, seconds: float) -> tuple[int, int]:
    """Full reloads and table redraws (/overview/state fetches) of an open overview."""
    loads: list[float] = []
    redraws: list[str] = []
    context.expose_function("__loaded", lambda: loads.append(time.monotonic()))
    # a new page's first document is about:blank: only the dashboard's own loads count
    context.add_init_script("if (location.protocol === 'https:') window.__loaded();")
    page = context.new_page()
    page.on("request", lambda r: redraws.append(r.url) if "/overview/state" in r.url else None)
    page.goto(f"{url}/")
    page.wait_for_timeout(seconds * 1000)
    return len(loads) - 1, len(redraws)


def ingest_to_browser(context: BrowserContext, collector: CollectorProcess, probe: SimAgent,
                      n: int, interval: float) -> tuple[list[float], list[float], list[float]]:
    seen: dict[int, float] = {}
    context.expose_function("__probeSeen", lambda seq, at: seen.setdefault(int(seq), at))
    context.add_init_script(FEED_PROBE)
    page = context.new_page()
    page.goto(f"{collector.url}/events")
    page.wait_for_function(
        "document.querySelector('[data-testid=live-status]').textContent === 'live'",
        timeout=30_000)
    posted: dict[int, float] = {}
    with pinned_client(collector.url, collector.files.ca_cert, 30.0) as client:
        client.get("/healthz").raise_for_status()  # connection open before the clock
        for _ in range(n):
            prev = probe.head
            now = utc_timestamp()
            chained = probe.chain([("bench.probe", "latency", "info", {"n": probe.seq + 1})],
                                  [now])
            body = probe.batch(prev, chained, now)
            posted[probe.seq] = time.time() * 1000
            answer = client.post("/api/v1/ingest", content=body)
            if answer.status_code != 200:
                raise RuntimeError(f"probe batch refused: {answer.status_code} {answer.text}")
            page.wait_for_timeout(interval * 1000)  # lets Playwright deliver the callbacks
    deadline = time.monotonic() + 10
    while len(seen) < len(posted) and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    missing = sorted(set(posted) - set(seen))
    if missing:
        raise RuntimeError(f"{len(missing)} probe events never appeared in the browser "
                           f"(first seqs {missing[:5]})")
    received = received_ms(collector, sorted(posted))
    total = [seen[s] - posted[s] for s in posted]
    ingest = [received[s] - posted[s] for s in posted]
    push = [seen[s] - received[s] for s in posted]
    return total, ingest, push


def received_ms(collector: CollectorProcess, seqs: list[int]) -> dict[int, float]:
    store = open_store(collector.config.collector.resolved_database_url())
    try:
        events = store.query_events(EventQuery(agent_id=PROBE, limit=len(seqs) + 10)).events
    finally:
        store.close()
    out = {}
    for e in events:
        stamp = datetime.strptime(e["received_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        out[e["seq"]] = stamp.timestamp() * 1000
    return out


# ------------------------------------------------------------------------------ main
def run(args: argparse.Namespace, work: Path) -> dict[str, str]:
    collector = CollectorProcess(work)
    agents = build(collector, work, args.events)
    probe = next(a for a in agents if a.agent_id == PROBE)
    collector.start()
    reporters = start_reporters(collector, work, args.rate)
    results: dict[str, str] = {}
    try:
        time.sleep(3)  # the reporters' first round reaches the collector
        if reporters.poll() is not None:
            raise RuntimeError("the reporting agents stopped: "
                               + (work / "reporters.log").read_text()[-1000:])
        with chromium(collector.files.server_cert) as browser:
            context = new_context(browser, DESKTOP)
            page = context.new_page()
            log_in(page, collector.url)
            cookies = context.cookies()
            context.close()
            cold, warm = page_loads(browser, collector.url, cookies, args.loads)
            events_cold, events_warm = page_loads(browser, collector.url, cookies, args.loads,
                                                  "/events")
            results["overview_first_render_cold"] = summary(cold)
            results["overview_first_render_warm"] = summary(warm)
            figure("overview_first_render_cold", results["overview_first_render_cold"]
                   + f" (target {TARGET_RENDER_MS:.0f} ms at p95)")
            figure("overview_first_render_warm", results["overview_first_render_warm"])
            results["events_first_render_cold"] = summary(events_cold)
            results["events_first_render_warm"] = summary(events_warm)
            figure("events_first_render_cold", results["events_first_render_cold"])
            figure("events_first_render_warm", results["events_first_render_warm"])
            context = new_context(browser, DESKTOP)
            try:
                context.add_cookies(cookies)
                reloads, redraws = self_reloads(context, collector.url, 30)
            finally:
                context.close()
            results["overview_self_reloads"] = (f"{reloads} full reloads, {redraws} table "
                                                f"redraws in 30 s")
            figure("overview_self_reloads", f"{reloads} full reloads, {redraws} table redraws "
                                            f"in 30 s of an open overview (live stream at "
                                            f"{args.rate:g} events/s)")
            context = new_context(browser, DESKTOP)
            try:
                context.add_cookies(cookies)
                total, ingest, push = ingest_to_browser(context, collector, probe, args.probes,
                                                        args.probe_interval)
            finally:
                context.close()
        results["ingest_to_browser"] = summary(total)
        results["ingest_part"] = summary(ingest)
        results["push_render_part"] = summary(push)
        figure("ingest_to_browser", results["ingest_to_browser"]
               + f" (target {TARGET_LATENCY_MS:.0f} ms at p95)")
        figure("ingest_to_browser_split", f"POST to received_at {results['ingest_part']}; "
                                          f"received_at to row {results['push_render_part']}")
        results["verdict"] = (
            f"render p95 cold {percentile(cold, 95):.0f} ms "
            f"{'met' if percentile(cold, 95) <= TARGET_RENDER_MS else 'NOT met'}; "
            f"latency p95 {percentile(total, 95):.0f} ms "
            f"{'met' if percentile(total, 95) <= TARGET_LATENCY_MS else 'NOT met'}")
        figure("verdict", results["verdict"])
    finally:
        clean = stop_reporters(reporters, work)
        collector.stop()
        # --keep: the chains moved on during the run; the saved heads must follow them, or the
        # next run would fork every chain. Anything short of a clean stop drops the state.
        if clean and "verdict" in results:
            save_state(work / "agents.json", [*load_state(work / "reporters.json"), probe])
        else:
            (work / "agents.json").unlink(missing_ok=True)
    return results


def markdown(args: argparse.Namespace, results: dict[str, str]) -> str:
    command = "    .venv/bin/python bench/dashboard.py " + " ".join(sys.argv[1:])
    return "\n".join([
        f"### Dashboard (bench/dashboard.py, {datetime.now(UTC):%Y-%m-%d})",
        "",
        command.rstrip(),
        "",
        f"Store: {args.events:,} events from 200 agents (SQLite); 200 agents reporting "
        f"{args.rate:g} events/s over HTTPS throughout; Debian Chromium headless, 1366x768.",
        "",
        "| figure | result | target |",
        "|---|---|---|",
        f"| overview first render, cold (new context) | {results['overview_first_render_cold']} "
        f"| p95 <= {TARGET_RENDER_MS:.0f} ms |",
        f"| overview first render, warm (same tab) | {results['overview_first_render_warm']} | |",
        f"| /events first render, cold | {results['events_first_render_cold']} | |",
        f"| /events first render, warm | {results['events_first_render_warm']} | |",
        f"| open overview reloads / table redraws (live) | {results['overview_self_reloads']} | |",
        f"| ingest to browser (POST to row in /events) | {results['ingest_to_browser']} "
        f"| p95 <= {TARGET_LATENCY_MS:.0f} ms |",
        f"| of which POST to received_at | {results['ingest_part']} | |",
        f"| of which received_at to row | {results['push_render_part']} | |",
        "",
        f"Verdict: {results['verdict']}.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="events/s the 200 agents send overall while measuring")
    parser.add_argument("--loads", type=int, default=30, help="overview loads, cold and warm")
    parser.add_argument("--probes", type=int, default=120, help="latency probe events")
    parser.add_argument("--probe-interval", type=float, default=0.25)
    parser.add_argument("--keep", type=Path, help="work directory to keep (and reuse the "
                                                  "store from, when its agent state is there)")
    parser.add_argument("--dir", type=Path, help="where the temporary work directory goes")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep
    else:
        work = Path(tempfile.mkdtemp(prefix="dashbench-", dir=args.dir))
    try:
        results = run(args, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown(args, results))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
