"""What a notification looks like on each channel, over plain data: the JSON document (the
webhook's body), the e-mail's subject and text, an RFC 5424 syslog message (structured data)
and a CEF record (ArcSight Common Event Format, as SIEMs read it). The webhook's HMAC too."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

import orjson

APP = "floor-agent"
VERSION = "0.1.0"
# RFC 5612's enterprise number for documentation: the SD-ID of our structured data
SD_ID = "floor@32473"
SYSLOG_SEVERITY = {"critical": 2, "error": 3, "warning": 4, "notice": 5, "info": 6}
CEF_SEVERITY = {"critical": 10, "error": 8, "warning": 6, "notice": 3, "info": 1}


def document(notification_id: int, kind: str, payload: dict[str, Any], created_at: str
             ) -> dict[str, Any]:
    """The one JSON shape every channel is built from: id (the outbox row's, the same on a
    retry: receivers deduplicate by it), type (alert | escalation | digest) and the payload."""
    return {"id": notification_id, "type": kind, "created_at": created_at, **payload}


def body(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def signature(key: bytes, timestamp: int, content: bytes) -> str:
    """X-Floor-Signature: HMAC-SHA256 over "<unix time>.<body>", hex, prefixed sha256=."""
    mac = hmac.new(key, str(timestamp).encode() + b"." + content, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(key: bytes, timestamp: str, content: bytes, header: str) -> bool:
    """The receiver's side (tests, and a reference for whoever writes one)."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(signature(key, int(timestamp), content), header)


def _severity(doc: dict[str, Any]) -> str:
    inner = doc.get("alert") or doc.get("digest") or {}
    return str(inner.get("severity", "info"))


def headline(doc: dict[str, Any]) -> str:
    """One line: what, how bad, where."""
    if doc["type"] == "digest":
        digest = doc["digest"]
        kinds = ", ".join(f"{k} x{n}" for k, n in digest["kinds"].items())
        return f"{digest['count']} alerts folded ({kinds})"
    alert = doc["alert"]
    where = alert["agent_id"] or alert["source"] or "collector"
    site = f" at {alert['site']}" if alert.get("site") else ""
    prefix = ("ESCALATED, unacknowledged for "
              f"{doc['unacknowledged_minutes']} min: " if doc["type"] == "escalation" else "")
    return f"{prefix}{alert['severity'].upper()} {alert['kind']} on {where}{site}"


def email_subject(doc: dict[str, Any]) -> str:
    return f"[floor-agent] {headline(doc)}"


def email_text(doc: dict[str, Any]) -> str:
    lines = [headline(doc), ""]
    alerts = doc["digest"]["alerts"] if doc["type"] == "digest" else [doc["alert"]]
    for alert in alerts:
        lines += [f"alert #{alert['id']}: {alert['severity']} {alert['kind']}",
                  f"  agent: {alert['agent_id'] or '-'}   site: {alert.get('site') or '-'}"
                  f"   source: {alert['source'] or '-'}",
                  f"  raised: {alert['created_at']}",
                  f"  {alert['detail']}", ""]
    if doc["type"] == "digest" and doc["digest"]["count"] > len(alerts):
        lines += [f"... and {doc['digest']['count'] - len(alerts)} more (on the dashboard)", ""]
    lines.append(f"notification {doc['id']} ({doc['type']}); acknowledge on the dashboard.")
    return "\n".join(lines) + "\n"


def _sd_value(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(text: str, limit: int = 48) -> str:
    """RFC 5424 header fields: printable US-ASCII without spaces, or '-'."""
    out = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return out or "-"


def rfc5424(doc: dict[str, Any], facility: int, hostname: str, timestamp: str,
            message: str | None = None) -> bytes:
    """<PRI>1 TIMESTAMP HOST floor-agent - MSGID [floor@32473 ...] MSG. MSGID is the type;
    the structured data carries the notification id and the alert's fields."""
    pri = facility * 8 + SYSLOG_SEVERITY.get(_severity(doc), 6)
    params: dict[str, object] = {"notification": doc["id"], "type": doc["type"]}
    if doc["type"] == "digest":
        params |= {"count": doc["digest"]["count"], "severity": doc["digest"]["severity"]}
    else:
        alert = doc["alert"]
        params |= {k: alert[k] for k in ("id", "kind", "severity", "agent_id", "site",
                                         "source", "created_at") if alert.get(k) is not None}
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()) + "]"
    text = message if message is not None else headline(doc)
    header = (f"<{pri}>1 {timestamp} {_printable(hostname, 255)} {APP} - "
              f"{_printable(doc['type'], 32)} {sd} ")
    return header.encode() + text.encode()  # no BOM: CEF readers want the bare text


def _cef_header(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _cef_ext(value: object) -> str:
    return (str(value).replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r")
            .replace("\n", "\\n"))


def _epoch_ms(timestamp: str) -> int | str:
    """CEF's rt: milliseconds since the epoch (the spec's unambiguous form)."""
    try:
        return int(datetime.fromisoformat(timestamp).timestamp() * 1000)
    except ValueError:
        return timestamp


def cef(doc: dict[str, Any]) -> str:
    """CEF:0|floor-agent|floor-agent|version|signature|name|severity|extension."""
    if doc["type"] == "digest":
        digest = doc["digest"]
        signature_id, severity = "digest", digest["severity"]
        ext: dict[str, object] = {"cnt": digest["count"], "msg": headline(doc),
                                  "cs2Label": "notification", "cs2": doc["id"]}
    else:
        alert = doc["alert"]
        signature_id, severity = alert["kind"], alert["severity"]
        ext = {"rt": _epoch_ms(str(alert["created_at"])), "msg": alert["detail"],
               "cs1Label": "alertId", "cs1": alert["id"],
               "cs2Label": "notification", "cs2": doc["id"]}
        if alert.get("agent_id"):
            ext["dvchost"] = alert["agent_id"]
        if alert.get("source"):
            ext["src"] = alert["source"]
        if alert.get("site"):
            ext |= {"cs3Label": "site", "cs3": alert["site"]}
        if doc["type"] == "escalation":
            ext |= {"cs4Label": "escalated", "cs4": "unacknowledged"}
    fields = [f"CEF:0|{APP}|{APP}|{VERSION}", _cef_header(signature_id),
              _cef_header(headline(doc)), str(CEF_SEVERITY.get(str(severity), 1))]
    return "|".join(fields) + "|" + " ".join(f"{k}={_cef_ext(v)}" for k, v in ext.items())


def octet_counted(message: bytes) -> bytes:
    """RFC 5425/6587 framing: the length, a space, the message."""
    return str(len(message)).encode() + b" " + message
