"""Browsers of a real collector process: users made in its store, logins from chosen loopback
addresses (127.0.0.x, so per-address limits can be told apart), and its own audit trail."""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpx
from collector_process import CollectorProcess
from test_web_support import PASSWORD, csrf_of

from floor_agent.collector import self_audit
from floor_agent.dashboard import passwords
from floor_agent.protocol.event import utc_timestamp
from floor_agent.store.interface import EventQuery

__all__ = ["PASSWORD", "add_user", "browser", "csrf_of", "login", "login_form", "own_events",
           "post_login"]


def add_user(collector: CollectorProcess, name: str, role: str,
             password: str = PASSWORD) -> None:
    """A user who can log in at once (no one-time password), straight into the store."""
    store = collector.store()
    try:
        assert store.add_user(name, role, passwords.hash_password(password), False,
                              utc_timestamp())
    finally:
        store.close()


def browser(collector: CollectorProcess, address: str = "127.0.0.1",
            timeout: float = 60) -> httpx.Client:
    """A client whose connections come from `address` (a loopback address)."""
    context = ssl.create_default_context(cafile=str(collector.ca))
    transport = httpx.HTTPTransport(verify=context, local_address=address)
    return httpx.Client(base_url=collector.url, transport=transport, timeout=timeout)


def login_form(client: httpx.Client) -> str:
    """The login form's CSRF token (its cookie is kept by the client)."""
    form = client.get("/login")
    assert form.status_code == 200
    return csrf_of(form.text)


def post_login(client: httpx.Client, token: str, name: str,
               password: str = PASSWORD) -> httpx.Response:
    return client.post("/login", data={"username": name, "password": password,
                                       "csrf_token": token, "next": "/"},
                       follow_redirects=False)


def login(client: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    return post_login(client, login_form(client), name, password)


def own_events(collector: CollectorProcess, kind: str, wanted: int = 1,
               seconds: float = 30) -> list[dict[str, Any]]:
    """The collector's own `kind` events once at least `wanted` are delivered (newest first)."""
    agent = self_audit.agent_id(collector.config)
    store = collector.store()
    try:
        deadline = time.monotonic() + seconds
        while True:
            events = store.query_events(EventQuery(agent_id=agent, kind=kind, limit=100)).events
            if len(events) >= wanted or time.monotonic() > deadline:
                return events
            time.sleep(0.2)
    finally:
        store.close()
