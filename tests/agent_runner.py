"""A real agent process for integration tests.

    python agent_runner.py CONFIG emit N      emit N events, print "ok SEQ" after each emit()
                                              returns, then "emitted", then run until drained
    python agent_runner.py CONFIG forever     emit until killed, printing "ok SEQ"
    python agent_runner.py CONFIG drain       start, wait until the spool is empty, stop
"""

from __future__ import annotations

import logging
import sys
import time

from floor_agent.audit.agent import AuditAgent
from floor_agent.roles.config import WorkstationConfig, load_config


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)  # what an agent says: stderr
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    config = load_config(sys.argv[1], "workstation")
    assert isinstance(config, WorkstationConfig)
    mode = sys.argv[2]
    agent = AuditAgent(config.audit, "workstation")
    agent.start()
    out = sys.stdout
    if mode in ("emit", "forever"):
        total = int(sys.argv[3]) if mode == "emit" else sys.maxsize
        first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
        for n in range(first, first + total):
            event = agent.emit("test.load", f"item {n}", "info", n=n)
            assert event is not None
            out.write(f"ok {event.seq} {n}\n")
            out.flush()
        out.write("emitted\n")
        out.flush()
    deadline = time.monotonic() + 300
    while agent.spool.pending_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    agent.stop(drain_seconds=30)
    out.write("drained\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
