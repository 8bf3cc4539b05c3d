"""An agent whose clock ran into the future and was put right delivers again (issue 15, 12).

The collector refuses a checkpoint stamped beyond its clock skew (409, `clock_skew`) without
moving its replay mark. The agent stamps checkpoints strictly after the last one it stored, so
without being told it would go on signing future stamps for ever once its clock is right; the
refusal names the problem and the agent stamps its next checkpoint by its clock again.
"""

from __future__ import annotations

from collector_process import CollectorProcess
from test_spool_damage import alerts_of, running_agent, stored_events, wait_until

from floor_agent.collector.ingest import CHAIN_BREAKS


def test_a_clock_put_right_after_running_ahead_delivers_everything(
        collector: CollectorProcess) -> None:
    with running_agent(collector, "ws-ahead") as agent:
        spool = agent.spool
        right = spool._clock  # type: ignore[attr-defined]
        spool._clock = lambda: "2099-01-01T00:00:00.000000Z"  # type: ignore[attr-defined]
        ahead = agent.emit("test.event", "while the clock runs ahead", "info")
        wait_until("the future checkpoint refused as clock_skew", lambda: any(
            a["kind"] == "clock_skew" for a in alerts_of(collector, "ws-ahead")))
        assert ahead.seq not in stored_events(collector, "ws-ahead")  # kept in the spool
        spool._clock = right  # type: ignore[attr-defined]  # the admin fixes the clock
        later = agent.emit("test.event", "after the clock is right", "info")
        wait_until("both events delivered", lambda: {ahead.seq, later.seq}
                   <= set(stored_events(collector, "ws-ahead")), seconds=30)
        kinds = {a["kind"] for a in alerts_of(collector, "ws-ahead")}
        assert not kinds & set(CHAIN_BREAKS), kinds  # no replay, no broken chain
