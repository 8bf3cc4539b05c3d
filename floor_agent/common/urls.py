"""URLs shown to people (events, logs, manifests, summaries) never carry a password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str, *, keep_user: bool = True) -> str:
    """The URL with its password replaced by *** (user kept), or with keep_user=False its whole
    user:password part dropped; the host is kept as written (case, IPv6 brackets, port)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    if not keep_user:
        return urlunsplit(parts._replace(netloc=host))
    if parts.password is None:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
