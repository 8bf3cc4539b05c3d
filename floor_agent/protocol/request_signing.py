"""Agent-signed requests: how a door controller proves who it is on an ordinary HTTP request.

Ingest batches carry their own signed checkpoint; other agent requests (the credentials
snapshot, a sealed template upload) carry this header instead, signed with the agent's
enrolled Ed25519 key:

    X-Floor-Agent: agent_id=door-1;ts=1764403200123;sig=<base64 Ed25519 signature>

over the message (UTF-8, lines joined by "\\n"):

    floor-agent-request/v1
    <METHOD>                e.g. GET
    <path[?query]>          exactly as sent, e.g. /api/v1/credentials?since=7
    <ts>                    Unix time in milliseconds, the header's ts
    <sha256(body) hex>      of the raw body bytes (the empty body for a GET)

The collector accepts it when the agent is enrolled, the signature verifies against its public
key, ts is within FRESH_MS of the collector's clock (old and future requests are refused), and
that signature has not been seen within the window (a replay is refused). ReplayGuard here
remembers in memory; the collector remembers in its store instead
(collector/replay_memory.py), so every collector of a site, and a restarted one, refuses it.

Every answer to an agent request, a refusal too, carries the collector's clock in TIME_HEADER,
so an agent whose clock is off can measure the offset and sign the next request (a new
signature) with the collector's time; the window and the replay memory stay as they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER = "X-Floor-Agent"
# the collector's clock (Unix ms) on its answers to agent requests, refusals included: an
# agent whose clock is off measures the offset from it and signs with corrected time
TIME_HEADER = "X-Floor-Time"
PREFIX = b"floor-agent-request/v1"
FRESH_MS = 60_000
HEADER_RE = re.compile(r"^agent_id=([A-Za-z0-9][A-Za-z0-9._-]{0,63});ts=(\d{1,16});"
                       r"sig=([A-Za-z0-9+/]{86}==)$")


class RequestAuthError(ValueError):
    """Why a signed request was refused (safe to send back: names no key material)."""


def request_message(method: str, target: str, ts_ms: int, body: bytes) -> bytes:
    return b"\n".join((PREFIX, method.upper().encode(), target.encode(), str(ts_ms).encode(),
                       hashlib.sha256(body).hexdigest().encode()))


def sign_header(key: Ed25519PrivateKey, agent_id: str, method: str, target: str, body: bytes,
                ts_ms: int | None = None) -> str:
    """The X-Floor-Agent value for one request (ts: now unless given)."""
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    signature = key.sign(request_message(method, target, ts_ms, body))
    return f"agent_id={agent_id};ts={ts_ms};sig={base64.b64encode(signature).decode()}"


@dataclass(frozen=True, slots=True)
class SignedHeader:
    agent_id: str
    ts_ms: int
    signature: bytes


def parse_header(value: str | None) -> SignedHeader:
    if value is None:
        raise RequestAuthError(f"missing {HEADER} header (agent_id=..;ts=..;sig=..)")
    match = HEADER_RE.match(value.strip())
    if match is None:
        raise RequestAuthError(f"{HEADER}: expected agent_id=ID;ts=MILLISECONDS;sig=BASE64")
    try:
        signature = base64.b64decode(match[3], validate=True)
    except (binascii.Error, ValueError):
        raise RequestAuthError(f"{HEADER}: sig is not base64") from None
    return SignedHeader(match[1], int(match[2]), signature)


class ReplayGuard:
    """Remembers accepted signatures for the freshness window; thread-safe."""

    def __init__(self, fresh_ms: int = FRESH_MS, max_entries: int = 100_000) -> None:
        self.fresh_ms = fresh_ms
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, int] = OrderedDict()  # signature -> ts_ms, by arrival
        self._lock = threading.Lock()

    def check_fresh(self, header: SignedHeader, now_ms: int) -> None:
        """Refuse a request whose ts is outside the window (before any key lookup)."""
        age = now_ms - header.ts_ms
        if age > self.fresh_ms:
            raise RequestAuthError(f"{HEADER}: ts is {age / 1000:.0f} s old (more than "
                                   f"{self.fresh_ms // 1000} s); check the agent's clock")
        if age < -self.fresh_ms:
            raise RequestAuthError(f"{HEADER}: ts is {-age / 1000:.0f} s in the future; "
                                   "check the agent's clock")

    def remember(self, header: SignedHeader, now_ms: int) -> None:
        """Refuse a signature already accepted within the window; remember this one. Call
        after the signature verified, so forgeries cannot fill the memory."""
        self.check_fresh(header, now_ms)
        with self._lock:
            while self._seen and (len(self._seen) >= self.max_entries
                                  or next(iter(self._seen.values())) < now_ms - 2 * self.fresh_ms):
                self._seen.popitem(last=False)
            if header.signature in self._seen:
                raise RequestAuthError(f"{HEADER}: replayed request refused")
            self._seen[header.signature] = header.ts_ms


def verify(header: SignedHeader, public_key: Ed25519PublicKey, method: str, target: str,
           body: bytes) -> None:
    try:
        public_key.verify(header.signature, request_message(method, target, header.ts_ms, body))
    except InvalidSignature:
        raise RequestAuthError(f"{HEADER}: signature does not verify for agent "
                               f"{header.agent_id!r}") from None
