"""Which of an agent's collector URLs to talk to: a pure choice over the list, what answered
last, and the clock.

An agent lists its collectors in order of preference (all under the one pinned CA). It sticks
to the URL that works, so a batch and its retry go to the same place as long as that place
answers; a connection error or timeout there moves it to the next URL (wrapping around), and
the caller's backoff paces the attempts as before. Once it has been away from the first URL
for `return_after` seconds it tries the first again, so a site returns to its preferred
collector by itself after a repair; if the first still fails, that failure moves it on again
and the clock starts anew.

A switch is announced when a different URL than the last one that answered answers: one line
and one event per real change of collector, not one per attempt while every collector is down.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Route:
    """The URLs in order, the one in use, the one that answered last (the first until any
    did: that is where the agent means to report), and since when (monotonic s) the one in
    use is not the first."""

    urls: tuple[str, ...]
    index: int = 0
    answered: int = 0
    left_first_at: float | None = None
    moved_by: str = "failover"  # what last moved it: "failover" or "return"

    @property
    def url(self) -> str:
        return self.urls[self.index]


@dataclass(frozen=True, slots=True)
class Switch:
    """The agent now reports to another collector: for the log line and its own trail."""

    from_url: str
    to_url: str
    reason: str  # "failover" (the one before stopped answering) or "return" (to the first)


def before_request(route: Route, now: float, return_after: float) -> tuple[Route, bool]:
    """The route to send on, and whether it is a return to the first URL (to say so): back to
    the first once `return_after` seconds have passed since leaving it, else unchanged."""
    if route.index == 0 or route.left_first_at is None:
        return route, False
    if now - route.left_first_at < return_after:
        return route, False
    return replace(route, index=0, left_first_at=None, moved_by="return"), True


def after_failure(route: Route, now: float) -> Route:
    """A connection error or timeout on the URL in use: the next one in order, the first after
    the last. With one URL there is nowhere to go (the caller's backoff alone paces retries)."""
    if len(route.urls) == 1:
        return route
    index = (route.index + 1) % len(route.urls)
    left = None if index == 0 else (now if route.index == 0 else route.left_first_at)
    return replace(route, index=index, left_first_at=left, moved_by="failover")


def after_answer(route: Route) -> tuple[Route, Switch | None]:
    """The URL in use answered (any HTTP status: it is reachable): it sticks, and a URL other
    than the last one that answered makes a Switch."""
    if route.index == route.answered:
        return route, None
    return (replace(route, answered=route.index),
            Switch(route.urls[route.answered], route.url, route.moved_by))
