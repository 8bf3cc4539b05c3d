"""retention.yaml: the image servers the retention sweep visits, and when a job's images go."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from floor_agent.config.audit import AgentRoleConfig
from floor_agent.config.base import (
    ConfigPath,
    StrictFloat,
    StrictInt,
    StrictModel,
    require_unique,
)

RETENTION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
RETENTION_IMAGE_PATTERNS = [
    "*.jpg", "*.jpeg", "*.png", "*.tif", "*.tiff", "*.psd", "*.psb", "*.heic", "*.webp",
    "*.bmp", "*.gif", "*.dng", "*.cr2", "*.cr3", "*.nef", "*.arw", "*.orf", "*.raf", "*.rw2",
    "*.raw", "*.xmp",
]


def _check_regex(value: str) -> str:
    """Compiled here so a broken pattern is a config error, not a crash during a sweep."""
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression ({exc})") from None
    return value


Regex = Annotated[str, Field(strict=True, min_length=1), AfterValidator(_check_regex)]


class CompletionMarker(StrictModel):
    """When a job counts as complete: a marker file (its mtime) or a manifest timestamp."""

    # a file in the job folder, e.g. ".done"; the job completed at the file's modification time
    file: Annotated[str, Field(strict=True, min_length=1)] | None = None
    # or a JSON manifest in the job folder, e.g. "job.json", whose `field` holds an ISO 8601
    # time with a UTC offset, e.g. "2026-01-31T17:00:00Z"
    manifest: Annotated[str, Field(strict=True, min_length=1)] | None = None
    field: Annotated[str, Field(strict=True, min_length=1)] = "completed_at"

    @field_validator("file", "manifest")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        """A name inside the job folder: a path could point the check somewhere else."""
        if value is not None and ("/" in value or value in (".", "..")):
            raise ValueError("must be a file name inside the job folder, not a path")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> CompletionMarker:
        if (self.file is None) == (self.manifest is None):
            raise ValueError("set exactly one of 'file' (e.g. .done) or 'manifest' "
                             "(e.g. job.json)")
        return self


class RetentionServer(StrictModel):
    """One image server whose completed jobs lose their images after retention_days."""

    name: Annotated[str, Field(strict=True, pattern=RETENTION_NAME_RE.pattern)]
    host: Annotated[str, Field(strict=True, min_length=1)] = "127.0.0.1"
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(strict=True, min_length=1)] = "floor-retention"
    # our key (OpenSSH private key, mode 0600); key authentication only, no agent, no password
    key_file: ConfigPath = Path("/etc/floor-agent/retention.key")
    # the server's pinned host key: a known_hosts file, or the known_hosts line itself
    # (host_key wins when both are set); an unknown or changed key is refused
    known_hosts_file: ConfigPath = Path("/etc/floor-agent/retention.known_hosts")
    host_key: Annotated[str, Field(strict=True, min_length=1)] | None = None
    # absolute path on the server; jobs are ROOT/CLIENT_CODE/JOB_CODE/
    root: Annotated[str, Field(strict=True, min_length=2)]
    # images of a job go this many days after its completion
    retention_days: Annotated[StrictInt, Field(ge=1, le=3650)]
    completion: CompletionMarker = Field(default_factory=lambda: CompletionMarker(file=".done"))
    # what counts as an image (shell patterns, case-insensitive); everything else stays
    image_patterns: Annotated[list[Annotated[str, Field(strict=True, min_length=1)]],
                              Field(min_length=1)] = Field(
        default_factory=lambda: list(RETENTION_IMAGE_PATTERNS))
    # refuse the sweep when more than this share of the root's files would go at once
    # (a wrong clock, root or marker); --force overrides after a human looked
    max_share: Annotated[StrictFloat, Field(gt=0, le=1)] = 0.5
    # folder names that are client codes and job codes; any other folder is left alone and
    # reported (a folder named after a customer must not exist)
    client_pattern: Regex = r"^C-?[0-9]{3,8}$"
    job_pattern: Regex = r"^J-?[0-9]{3,10}$"
    timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=600)] = 30.0

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, value: str) -> str:
        """A relative or non-normal root depends on the login's home and is too easy to get
        wrong on a tool that deletes."""
        if not value.startswith("/") or value.rstrip("/") == "":
            raise ValueError("must be an absolute path on the server below '/', "
                             "e.g. /srv/images/online")
        parts = value.rstrip("/").split("/")[1:]
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError("must be a normalized path (no '//', '.' or '..')")
        return value.rstrip("/")


def _demo_retention_servers() -> list[RetentionServer]:
    """The seed company's promise: 15 days on the online server, 30 on the offline one."""
    return [
        RetentionServer(name="online", root="/srv/images/online", retention_days=15,
                        known_hosts_file=Path("/etc/floor-agent/retention-online.known_hosts")),
        RetentionServer(name="offline", root="/srv/images/offline", retention_days=30,
                        known_hosts_file=Path("/etc/floor-agent/retention-offline.known_hosts"),
                        completion=CompletionMarker(manifest="job.json")),
    ]


class RetentionSection(StrictModel):
    """The image servers the daily sweep visits."""

    servers: Annotated[list[RetentionServer], Field(min_length=1)] = Field(
        default_factory=_demo_retention_servers)

    @field_validator("servers")
    @classmethod
    def _unique_names(cls, servers: list[RetentionServer]) -> list[RetentionServer]:
        require_unique((server.name for server in servers), "name")
        return servers


class RetentionConfig(AgentRoleConfig):
    """retention.yaml: the image retention sweep and its receipts in the audit chain."""

    role: Literal["retention"] = "retention"
    retention: RetentionSection = Field(default_factory=RetentionSection)
