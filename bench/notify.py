"""Notifications: alert raised to notification handed to the receiver, per channel.

    .venv/bin/python bench/notify.py                 # ~1 min: 100 alerts, 3 channels
    .venv/bin/python bench/notify.py --alerts 300 --pause 0.2

Prints one line per figure on stdout; progress goes to stderr.

A real collector process (`floor-agent collector run`, SQLite store) with three channels, each
a real receiver on loopback: e-mail to an SMTP server demanding STARTTLS and AUTH (aiosmtpd),
a signed webhook (http.server, the HMAC checked), syslog RFC 5424 over TLS to Debian's
rsyslogd (its own reception time, `timegenerated`). One route sends door.* alerts to all three.
An enrolled door agent sends --alerts (100) batches of one `door.forced` event each (a new
door each time: a new alert each time), over HTTPS, a random 0..--pause s (0.5) apart. The
clock runs from the alert's created_at (stamped by the collector in ingest, just before the
store commits it) to the receiver's own record of the arrival: `notify_<channel>_p50/p95/max`
and `notify_all_p95` over every (alert, channel). Digests are set out of the way
(max_per_window above --alerts): a folded alert waits for its window by design.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))

from batches import BatchMaker  # noqa: E402
from collector_process import CollectorProcess  # noqa: E402
from notify_receivers import (  # noqa: E402
    Certs,
    Rsyslog,
    SmtpReceiver,
    WebhookReceiver,
    wait_until,
)

from floor_agent.audit.forwarder import pinned_client  # noqa: E402

KEY = b"bench-hook-key-0123456789"
PASSWORD = "bench-smtp-password"


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def figure(name: str, value: str, details: str = "") -> None:
    print(f"{name}: {value}" + (f" ({details})" if details else ""), flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def seconds_of(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100)
    parser.add_argument("--pause", type=float, default=0.5)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="notify-bench-", dir=args.dir))
    certs = Certs.make(root / "certs")
    smtp = SmtpReceiver(certs, "floor-agent", PASSWORD)
    hook = WebhookReceiver(KEY)
    rsyslog = Rsyslog(root / "rsyslog", certs)
    collector: CollectorProcess | None = None
    try:
        smtp.start()
        hook.start()
        rsyslog.start()
        (root / "hook.key").write_bytes(KEY)
        (root / "smtp.pass").write_text(PASSWORD)
        for secret in ("hook.key", "smtp.pass"):
            (root / secret).chmod(0o600)
        ca = str(certs.files.ca_cert)
        collector = CollectorProcess(root / "collector", notifications={
            "channels": {
                "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port,
                         "username": "floor-agent", "password": {"file": str(root / "smtp.pass")},
                         "from_address": "floor-agent@bench.example",
                         "to": ["security@bench.example"], "ca_file": ca},
                "hook": {"type": "webhook", "url": hook.url,
                         "hmac_key": {"file": str(root / "hook.key")}},
                "syslog": {"type": "syslog", "host": "127.0.0.1", "port": rsyslog.port,
                           "format": "cef", "ca_file": ca}},
            "routes": [{"name": "doors", "kinds": ["door.*"], "to": ["mail", "hook", "syslog"]}],
            "digest": {"window_seconds": 60, "max_per_window": args.alerts + 10}})
        collector.start()
        maker = BatchMaker(root, "door-bench")
        with pinned_client(collector.url, collector.ca, 10.0) as client:
            answer = client.post("/api/v1/enroll",
                                 json=maker.enroll_payload(collector.token("door"), "door"))
            assert answer.status_code == 201, answer.text
            note(f"sending {args.alerts} alerts, 0-{args.pause} s apart")
            rng = random.Random(19)
            for i in range(args.alerts):
                maker.spool.emit_many([("door.forced", f"door b{i}", "critical",
                                        {"door": f"b{i}"})])
                answer = client.post("/api/v1/ingest", content=maker.body())
                assert answer.status_code == 200, answer.text
                maker.ack(answer.json()["acked_seq"])
                time.sleep(rng.uniform(0, args.pause))
        wait_until(lambda: len(hook.hooks) >= args.alerts and len(smtp.mails) >= args.alerts
                   and len(rsyslog.lines()) >= args.alerts, 120, 0.1)

        store = collector.store()
        try:
            raised = {int(a["id"]): seconds_of(a["created_at"])
                      for a in store.list_alerts(limit=args.alerts * 2)}
        finally:
            store.close()
        latency: dict[str, list[float]] = {"mail": [], "hook": [], "syslog": []}
        for h in hook.hooks:
            latency["hook"].append(h.received - raised[h.doc["alert"]["id"]])
        for m in smtp.mails:
            doc = next(p for p in m.message.iter_attachments())
            alert_id = int(json.loads(doc.get_content())["alert"]["id"])
            latency["mail"].append(m.received - raised[alert_id])
        for line in rsyslog.lines():
            received, sd = line.split("|")[0], line.split("|")[5]
            alert_id = int(sd.split(' id="')[1].split('"')[0])
            latency["syslog"].append(seconds_of(received) - raised[alert_id])
        everything = [v for values in latency.values() for v in values]
        for name, values in latency.items():
            figure(f"notify_{name}_p50/p95/max",
                   f"{statistics.median(values) * 1000:.0f}/{percentile(values, 95) * 1000:.0f}"
                   f"/{max(values) * 1000:.0f} ms", f"{len(values)} notifications")
        figure("notify_all_p95", f"{percentile(everything, 95) * 1000:.0f} ms",
               f"{len(everything)} notifications, target <= 2000 ms")
        return 0 if percentile(everything, 95) <= 2.0 else 1
    finally:
        if collector is not None:
            collector.stop()
        rsyslog.stop()
        hook.stop()
        smtp.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
