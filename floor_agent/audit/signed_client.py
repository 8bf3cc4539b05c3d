"""HTTPS to the collector with every request signed by the agent's enrolled key.

For agent requests that are not audit batches (a door's credentials snapshot, a sealed
template, a camera's latest snapshot): the X-Floor-Agent header of
floor_agent/collector/request_auth.py proves which agent sent exactly this body, now.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.audit.agent import KEY_FILE
from floor_agent.audit.forwarder import pinned_client
from floor_agent.audit.keys import load_private_key
from floor_agent.collector.request_auth import HEADER, sign_header
from floor_agent.config import AuditClientConfig


class AgentClient:
    """The pinned-CA HTTPS client and the agent's key; `request` signs each request."""

    def __init__(self, client: httpx.Client, key: Ed25519PrivateKey, agent_id: str) -> None:
        self.client = client
        self._key = key
        self.agent_id = agent_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.agent_id!r}, {self.client.base_url})"

    @classmethod
    def from_config(cls, audit: AuditClientConfig, role: str = "door") -> Any:
        """The agent's key and pinned CA from its audit section (as `enroll` left them)."""
        key = load_private_key(audit.state_dir / KEY_FILE)
        client = pinned_client(audit.collector_url, audit.ca_path(),
                               audit.request_timeout_seconds)
        return cls(client, key, audit.resolved_agent_id(role))

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, body: Any = None, *,
                content: bytes | None = None, content_type: str | None = None
                ) -> httpx.Response:
        """Send one signed request (a JSON `body`, or raw `content`); raises httpx.HTTPError
        when the collector is unreachable."""
        if content is None:
            content = b"" if body is None else orjson.dumps(body)
            if body is not None:
                content_type = content_type or "application/json"
        headers = {"Content-Type": content_type} if content_type else None
        request = self.client.build_request(method, path, content=content, headers=headers)
        target = request.url.raw_path.decode("ascii")
        request.headers[HEADER] = sign_header(self._key, self.agent_id, method, target, content)
        return self.client.send(request)
