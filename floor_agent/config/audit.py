"""The audit-client section every agent role has (how it reaches the collector), and the base
of the agent roles' files: the section's state_dir defaults to the role's own directory."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from floor_agent.config.base import (
    STATE_ROOT,
    ConfigPath,
    LogLevel,
    StrictFloat,
    StrictInt,
    StrictModel,
    default_state_dir,
)

AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_AGENT_ID_MAX = 64


class AuditClientConfig(StrictModel):
    """How an agent reaches the collector; shared by the workstation, door and cctv roles."""

    agent_id: Annotated[str, Field(strict=True)] | None = None
    state_dir: ConfigPath = STATE_ROOT / "agent"
    # one URL, or a list in order of preference (audit/failover.py): always a tuple here
    collector_url: tuple[str, ...] = ("https://127.0.0.1:8443",)
    collector_return_after_seconds: Annotated[StrictFloat, Field(gt=0)] = 300
    ca_cert: ConfigPath | None = None
    batch_max_events: Annotated[StrictInt, Field(ge=1, le=5000)] = 500
    heartbeat_seconds: Annotated[StrictFloat, Field(ge=1, le=60)] = 30
    spool_max_events: Annotated[StrictInt, Field(ge=100)] = 1_000_000
    spool_alarm_ratio: Annotated[StrictFloat, Field(ge=0.1, le=0.99)] = 0.8
    backoff_initial_seconds: Annotated[StrictFloat, Field(gt=0)] = 0.5
    backoff_max_seconds: StrictFloat = 30
    request_timeout_seconds: Annotated[StrictFloat, Field(gt=0)] = 10

    @field_validator("agent_id")
    @classmethod
    def _check_agent_id(cls, value: str | None) -> str | None:
        """The id names the agent's chain on the collector, so keep it path- and log-safe."""
        if value is not None and not AGENT_ID_RE.match(value):
            raise ValueError(
                "must be 1-64 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("collector_url", mode="before")
    @classmethod
    def _check_collector_urls(cls, value: Any) -> tuple[str, ...]:
        """One URL is a list of one; a list is the collectors in order of preference, each
        named once (they share the pinned CA: ca_cert)."""
        if isinstance(value, str):
            return (_check_collector_url(value),)
        if not isinstance(value, list | tuple) or not value:
            raise ValueError("must be an https:// URL or a non-empty list of them")
        urls: list[str] = []
        for n, item in enumerate(value, 1):
            if not isinstance(item, str):
                raise ValueError(f"entry {n} must be an https:// URL, not {item!r}")
            try:
                url = _check_collector_url(item)
            except ValueError as exc:
                raise ValueError(f"entry {n} {exc}") from None
            if url in urls:
                raise ValueError(f"entry {n} {url!r} appears twice")
            urls.append(url)
        return tuple(urls)

    @field_validator("backoff_max_seconds")
    @classmethod
    def _check_backoff_max(cls, value: float, info: ValidationInfo) -> float:
        """Checked on the field (not the model) so the error points at this key's line."""
        initial = info.data.get("backoff_initial_seconds")
        if value <= 0:
            raise ValueError("must be greater than 0")
        if initial is not None and value < initial:
            raise ValueError(f"must be >= backoff_initial_seconds ({initial:g})")
        return value

    def resolved_agent_id(self, role: str) -> str:
        """Explicit agent_id, else "<hostname>-<role>" made to match AGENT_ID_RE."""
        if self.agent_id is not None:
            return self.agent_id
        suffix = f"-{role}"
        host = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname())
        host = re.sub(r"^[^A-Za-z0-9]+", "", host) or "host"
        host = host[: max(1, _AGENT_ID_MAX - len(suffix))]
        return (host + suffix)[:_AGENT_ID_MAX]

    def ca_path(self) -> Path:
        """Pinned collector CA: explicit path, else the copy kept in the state directory."""
        return self.ca_cert if self.ca_cert is not None else self.state_dir / "collector-ca.pem"


def _check_collector_url(value: str) -> str:
    """Events only ever travel over TLS; a plain http:// URL is a configuration error."""
    try:
        parts = urlsplit(value.strip())
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"must be an https:// URL with a host ({exc})") from None
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ValueError("must be an https:// URL with a host, e.g. https://collector:8443")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not contain credentials, a query or a fragment")
    return urlunsplit(("https", parts.netloc, parts.path.rstrip("/"), "", ""))


def none_section_to_empty(data: Any, key: str) -> Any:
    """`audit:` with every option commented out is YAML null; treat it as "all defaults"."""
    if isinstance(data, dict) and key in data and data[key] is None:
        data = {**data, key: {}}
    return data


class AgentRoleConfig(StrictModel):
    """What every agent role's file has (log level, audit client), and the shared wiring: the
    audit state_dir default depends on the role."""

    role: str  # each role narrows it to its own literal; declared here so it comes first
    log_level: LogLevel = "info"
    audit: AuditClientConfig = Field(default_factory=AuditClientConfig)

    @model_validator(mode="before")
    @classmethod
    def _role_state_dir(cls, data: Any) -> Any:
        data = none_section_to_empty(data, "audit")
        if not isinstance(data, dict):
            return data
        role = cls.model_fields["role"].default
        audit = data.get("audit", {})
        if isinstance(audit, dict) and "state_dir" not in audit:
            data = {**data, "audit": {**audit, "state_dir": default_state_dir(role)}}
        elif isinstance(audit, AuditClientConfig) and "state_dir" not in audit.model_fields_set:
            updated = audit.model_copy(update={"state_dir": default_state_dir(role)})
            data = {**data, "audit": updated}
        return data

