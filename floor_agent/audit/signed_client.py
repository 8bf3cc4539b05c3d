"""HTTPS to the collector with every request signed by the agent's enrolled key.

For agent requests that are not audit batches (a door's credentials snapshot, a sealed
template, a camera's latest snapshot): the X-Floor-Agent header of
floor_agent/protocol/request_signing.py proves which agent sent exactly this body, now.

"Now" is the collector's: its answers carry its clock (TIME_HEADER), the client keeps the
offset (`offset_ms`, None until an answer said it) and signs with its own clock corrected by
it. A request refused because its time was outside the collector's window is signed again,
once, with the offset that refusal gave (a new signature: the collector's replay memory and
window stay as strict as before).

Requests go to the agent's collector URLs with the forwarder's failover (audit/collector_link.py):
a request that gets no answer moves this client to the next URL, and the caller's own retry
(its backoff) goes there.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.audit.agent import KEY_FILE
from floor_agent.audit.collector_link import FAILOVER_ERRORS, CollectorLink
from floor_agent.audit.keys import load_private_key
from floor_agent.config.audit import AuditClientConfig
from floor_agent.protocol.request_signing import FRESH_MS, HEADER, TIME_HEADER, sign_header


class AgentClient:
    """The pinned-CA HTTPS clients and the agent's key; `request` signs each request."""

    def __init__(self, client: httpx.Client | CollectorLink, key: Ed25519PrivateKey,
                 agent_id: str, wall: Callable[[], float] | None = None) -> None:
        self.link = client if isinstance(client, CollectorLink) else CollectorLink([client])
        self._key = key
        self.agent_id = agent_id
        self.wall = wall or (lambda: time.time())  # this host's clock, read when asked
        self.offset_ms: int | None = None  # collector's clock - ours, from its last answer
        # ts of the last request the collector did not refuse for its time: the next one is
        # later, so a corrected clock stepping back cannot sign a message twice
        self._last_ts_ms = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.agent_id!r}, {self.link.url})"

    @property
    def client(self) -> httpx.Client:
        """The client of the collector in use now (its timeout, its base URL)."""
        return self.link.current

    @classmethod
    def from_config(cls, audit: AuditClientConfig, role: str = "door") -> Any:
        """The agent's key and pinned CA from its audit section (as `enroll` left them)."""
        key = load_private_key(audit.state_dir / KEY_FILE)
        link = CollectorLink.pinned(audit.collector_url, audit.ca_path(),
                                    audit.request_timeout_seconds,
                                    audit.collector_return_after_seconds)
        return cls(link, key, audit.resolved_agent_id(role))

    def close(self) -> None:
        self.link.close()

    def corrected_time(self) -> float:
        """Our clock corrected by the measured offset (Unix seconds); uncorrected while the
        offset is unknown."""
        return self.wall() + (self.offset_ms or 0) / 1000

    def request(self, method: str, path: str, body: Any = None, *,
                content: bytes | None = None, content_type: str | None = None,
                timeout: float | None = None, held: bool = False) -> httpx.Response:
        """Send one signed request (a JSON `body`, or raw `content`); raises httpx.HTTPError
        when the collector is unreachable. timeout: for this request; held: the collector
        holds the answer (a long poll), so only a refusal's clock is measured."""
        if content is None:
            content = b"" if body is None else orjson.dumps(body)
            if body is not None:
                content_type = content_type or "application/json"
        headers = {"Content-Type": content_type} if content_type else None
        response = None
        client = self.link.pick()
        for _ in range(2):
            request = client.build_request(
                method, path, content=content, headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
            target = request.url.raw_path.decode("ascii")
            sent = self.wall()
            ts_ms = max(int(sent * 1000) + (self.offset_ms or 0), self._last_ts_ms + 1)
            request.headers[HEADER] = sign_header(self._key, self.agent_id, method, target,
                                                  content, ts_ms)
            try:
                response = client.send(request)
            except FAILOVER_ERRORS as exc:
                self.link.failed(client, exc)  # the caller's retry goes to the next collector
                raise
            self.link.answered(client)
            collector_ms = collector_time_ms(response)
            if collector_ms is not None and not (held and response.status_code != 401):
                self.offset_ms = collector_ms - int((sent + self.wall()) * 500)
            if collector_ms is None or response.status_code != 401 or \
                    abs(collector_ms - ts_ms) <= FRESH_MS * 3 // 4:
                self._last_ts_ms = max(self._last_ts_ms, ts_ms)
                return response  # not refused for its time: no second try
            self._last_ts_ms = 0  # the collector's clock went back past our floor: drop it
        assert response is not None
        return response


def collector_time_ms(response: httpx.Response) -> int | None:
    """The collector's clock from an answer: TIME_HEADER (ms), else the HTTP Date (s)."""
    value = response.headers.get(TIME_HEADER)
    if value is not None and value.isdigit():
        return int(value)
    date = response.headers.get("date")
    if date is None or response.status_code >= 500:  # a proxy's error page has its own clock
        return None
    try:
        return int(email.utils.parsedate_to_datetime(date).timestamp() * 1000) + 500
    except (TypeError, ValueError):
        return None


def answer_detail(response: httpx.Response) -> str:
    """"<status>: <detail>" of a refusal, for logs and events (the collector's `detail`, else
    the start of the body)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    return f"{response.status_code}: {detail}"
