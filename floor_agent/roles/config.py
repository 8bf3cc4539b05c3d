"""The role files: which model reads which role's YAML file, and the one loader over them.

The workstation composes two capabilities (usb_guard, netlock), so its file's model lives
here, above both; every other role's model lives beside its code."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

from pydantic import Field

from floor_agent.access.config import DoorConfig
from floor_agent.cctv.config import CctvConfig
from floor_agent.collector.config import CollectorConfig
from floor_agent.collector.footage_config import FootageSettings
from floor_agent.collector.notify_config import NotificationSettings
from floor_agent.common.urls import redact_url
from floor_agent.config.audit import AgentRoleConfig
from floor_agent.config.base import ROLES
from floor_agent.config.loader import load_role_file
from floor_agent.netlock.config import NetlockConfig
from floor_agent.retention.config import RetentionConfig
from floor_agent.usb_guard.config import UsbGuardConfig
from floor_agent.ws_policy.config import PolicyConfig


class WorkstationConfig(AgentRoleConfig):
    """workstation.yaml: USB guard and network lock agent on an operator workstation."""

    role: Literal["workstation"] = "workstation"
    usb_guard: UsbGuardConfig = Field(default_factory=UsbGuardConfig)
    netlock: NetlockConfig = Field(default_factory=NetlockConfig)
    # the collector's signed policy for this workstation; usb_guard.rules_file and
    # netlock.allow are then only the bootstrap
    policy: PolicyConfig = Field(default_factory=PolicyConfig)


AgentConfig = WorkstationConfig | DoorConfig | CctvConfig | RetentionConfig
RoleConfig = CollectorConfig | AgentConfig
ROLE_MODELS: dict[str, type[RoleConfig]] = {
    "collector": CollectorConfig,
    "workstation": WorkstationConfig,
    "door": DoorConfig,
    "cctv": CctvConfig,
    "retention": RetentionConfig,
}


def load_config(path: str | Path, expected_role: str | None = None) -> RoleConfig:
    """Load and validate one role's YAML file; raise ConfigError listing every problem."""
    if expected_role is not None and expected_role not in ROLE_MODELS:
        raise ValueError(f"expected_role must be one of {', '.join(ROLES)}, not {expected_role!r}")
    return cast(RoleConfig, load_role_file(path, ROLE_MODELS, expected_role))


def _notifications(n: NotificationSettings) -> str:
    if not n.channels:
        return "notifications off (no channels)"
    channels = ", ".join(f"{name} ({channel.type})" for name, channel in n.channels.items())
    escalation = (f", critical alerts unacknowledged for {n.escalation.after_minutes} min "
                  f"escalate to {', '.join(n.escalation.to)}" if n.escalation.to else "")
    return (f"notifications to {channels} by {len(n.routes)} route(s), times in "
            f"{n.timezone}, more than {n.digest.max_per_window} per "
            f"{n.digest.window_seconds} s folded into a digest{escalation}")


def _footage(f: FootageSettings) -> str:
    if not f.enabled:
        return "footage behind alerts off"
    s = f.sftp
    return (f"footage behind alerts from {len(f.cameras)} camera(s), {f.before_seconds} s "
            f"before to {f.after_seconds} s after, read from {s.user}@{s.host}:{s.port} "
            f"{s.remote_dir!r} (host key pinned in {s.known_hosts_file})")


def _policy(config: WorkstationConfig) -> str:
    p = config.policy
    if not p.enabled:
        return (f"Central policy off: {config.usb_guard.rules_file} and the netlock section "
                "are the policy.")
    return (f"Central policy on: signed by the collector's key pinned in "
            f"{config.audit.state_dir}/policy.pub (at enrollment, else on first use), the "
            f"last verified one cached in {config.audit.state_dir}/policy.json; watched with "
            f"long polls of {p.watch_wait_seconds:g} s, retry backoff "
            f"{p.backoff_initial_seconds:g}-{p.backoff_max_seconds:g} s; "
            f"{config.usb_guard.rules_file} and netlock.allow are only the bootstrap.")


def _collectors(urls: tuple[str, ...], return_after: float) -> str:
    if len(urls) == 1:
        return urls[0]
    order = ", ".join(f"{n}. {url}" for n, url in enumerate(urls, 1))
    return (f"{len(urls)} collectors in order ({order}; the next on no answer, back to the "
            f"first after {return_after:g} s)")


def check_file(path: str | Path) -> str:
    """One-paragraph summary for `floor-agent config check FILE`; raises ConfigError."""
    config = load_config(path)
    head = f"{path}: OK, role {config.role}, log level {config.log_level}."
    if isinstance(config, CollectorConfig):
        c = config.collector
        return (
            f"{head} Listening on {c.listen_host}:{c.listen_port} with a TLS certificate for "
            f"{', '.join(c.server_names)}; state in {c.state_dir}; database "
            f"{redact_url(c.resolved_database_url())}; batches up to {c.max_batch_events} "
            f"events and {c.max_request_bytes} bytes per request; an agent is stale after "
            f"{c.stale_checkpoint_seconds} s without a checkpoint; tokens live "
            f"{c.token_ttl_seconds} s; {_footage(c.dashboard.footage)}; "
            f"{_notifications(c.notifications)}; policy: unassigned workstations in group "
            f"{c.policy.default_group!r}, expired device exceptions looked for every "
            f"{c.policy.expiry_check_seconds} s."
        )
    a = config.audit
    source = "" if a.agent_id is not None else " (from hostname)"
    policy = f" {_policy(config)}" if isinstance(config, WorkstationConfig) else ""
    return (
        f"{head} Agent id {a.resolved_agent_id(config.role)}{source}; reports to "
        f"{_collectors(a.collector_url, a.collector_return_after_seconds)} pinned to CA "
        f"{a.ca_path()}; state in {a.state_dir}; heartbeat "
        f"every {a.heartbeat_seconds:g} s; batches of up to {a.batch_max_events} events; "
        f"spool holds {a.spool_max_events} events (alarm at {a.spool_alarm_ratio:.0%}); "
        f"retry backoff {a.backoff_initial_seconds:g}-{a.backoff_max_seconds:g} s; "
        f"request timeout {a.request_timeout_seconds:g} s.{policy}"
    )
