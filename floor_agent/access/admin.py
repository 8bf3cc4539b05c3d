"""`floor-agent door people|cards|levels|holidays ...`: credential administration on the collector.

Each command checks its input with the collector's own rules (protocol/credentials.py), so a
typo is refused here with the field named, then sends one request over the pinned HTTPS client
with an API key (`--api-key-file FILE`, else the FLOOR_AGENT_API_KEY environment variable).
The collector URL and CA come from the door config's audit section. Exit codes: 0 done, 1 the
collector refused, 2 bad input, no API key, or the collector unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

API_KEY_ENV = "FLOOR_AGENT_API_KEY"


class AdminError(Exception):
    """Stops a command before or instead of its request; the message says why."""


def _api_key(args: argparse.Namespace) -> str:
    if args.api_key_file is not None:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AdminError(f"--api-key-file {args.api_key_file}: cannot read ({exc})"
                             ) from None
    else:
        key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise AdminError(f"no API key: pass --api-key-file or set {API_KEY_ENV} "
                         "(from 'floor-agent collector apikey create')")
    return key


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """One request with the API key; the answer's JSON, or AdminError naming the refusal."""
    import httpx

    from floor_agent.access.config import DoorConfig
    from floor_agent.audit.collector_link import pinned_client
    from floor_agent.config import load_role

    config = load_role(args.config, DoorConfig)
    audit = config.audit
    key = _api_key(args)
    response = None
    # the first collector that takes the connection (they share a database); only a request
    # never sent goes on to the next, so an admin change is never made twice
    for url in audit.collector_url:
        try:
            with pinned_client(url, audit.ca_path(), audit.request_timeout_seconds) as client:
                response = client.request(method, path, json=body,
                                          headers={"authorization": f"Bearer {key}"})
            break
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if url == audit.collector_url[-1]:
                raise AdminError(f"{url}: cannot reach the collector ({exc})") from None
        except (httpx.HTTPError, OSError) as exc:
            raise AdminError(f"{url}: cannot reach the collector ({exc})") from None
    assert response is not None
    if response.status_code >= 300:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise RefusedError(f"collector refused ({response.status_code}): {detail}")
    return response.json()


class RefusedError(AdminError):
    """The collector answered with an error (exit 1, not 2)."""


def _run(action: Any) -> int:
    from floor_agent.protocol.credentials import CredentialError

    try:
        print(action())
    except RefusedError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (AdminError, CredentialError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


def cmd_people_add(args: argparse.Namespace) -> int:
    from floor_agent.protocol import credentials as wire

    def action() -> str:
        person = wire.person_from_json({
            "person_id": args.person_id, "name": args.name, "active": not args.inactive,
            "access_levels": args.level or [], "duress_fingers": args.duress_finger or []})
        answer = _call(args, "POST", "/api/v1/people", wire.person_to_json(person))
        return f"person {person.person_id} saved (credentials version {answer['version']})"

    return _run(action)


def cmd_people_list(args: argparse.Namespace) -> int:
    import orjson

    def action() -> str:
        answer = _call(args, "GET", "/api/v1/people")
        if args.json:
            return orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode()
        lines = [f"{'PERSON':<20} {'STATE':<8} {'LEVELS':<20} {'CARDS':<24} FINGERS  NAME"]
        for p in answer["people"]:
            cards = ",".join(c["uid"] + ("" if c["active"] else "(off)") for c in p["cards"])
            fingers = ",".join(str(t["finger"]) for t in p["templates"])
            state = "active" if p["active"] else "revoked" if p["revoked_at"] else "inactive"
            lines.append(f"{p['person_id']:<20} {state:<8} {','.join(p['access_levels']):<20} "
                         f"{cards or '-':<24} {fingers or '-':<8} {p['name']}")
        lines.append(f"# {len(answer['people'])} people, credentials version "
                     f"{answer['version']}")
        return "\n".join(lines)

    return _run(action)


def cmd_people_revoke(args: argparse.Namespace) -> int:
    from floor_agent.protocol import credentials as wire

    def action() -> str:
        person_id = wire.check_id(args.person_id, "person")
        answer = _call(args, "POST", f"/api/v1/people/{person_id}/revoke")
        return (f"person {person_id} revoked: {answer['cards_deactivated']} card(s) "
                f"deactivated, {answer['templates_deleted']} fingerprint template(s) deleted "
                f"(credentials version {answer['version']})")

    return _run(action)


def cmd_cards_add(args: argparse.Namespace) -> int:
    from floor_agent.protocol import credentials as wire

    def action() -> str:
        card = wire.card_from_json({
            "uid": args.uid, "person_id": args.person, "active": not args.inactive,
            "valid_from": args.valid_from, "valid_until": args.valid_until,
            "keyed": not args.not_keyed})
        answer = _call(args, "POST", "/api/v1/cards", wire.card_to_json(card))
        return (f"card {card.uid} of {card.person_id} saved (credentials version "
                f"{answer['version']})")

    return _run(action)


def cmd_levels_add(args: argparse.Namespace) -> int:
    from floor_agent.protocol import credentials as wire

    def action() -> str:
        windows = [wire.parse_window(w, f"--window {w!r}") for w in args.window]
        level = wire.level_from_json({"level_id": args.level_id, "doors": args.door,
                                      "windows": windows, "on_holidays": args.on_holidays})
        answer = _call(args, "POST", "/api/v1/levels", wire.level_to_json(level))
        return (f"access level {level.level_id} saved: {len(level.doors)} door(s), "
                f"{len(level.windows)} window(s) (credentials version {answer['version']})")

    return _run(action)


def cmd_holidays_add(args: argparse.Namespace) -> int:
    from floor_agent.protocol import credentials as wire

    def action() -> str:
        day, name = wire.holiday_from_json({"date": args.date, "name": args.name or ""})
        answer = _call(args, "POST", "/api/v1/holidays", {"date": day.isoformat(), "name": name})
        return f"holiday {day.isoformat()} saved (credentials version {answer['version']})"

    return _run(action)


def add_parsers(door_sub: Any) -> None:
    """The admin commands under `floor-agent door` (door_sub: its add_subparsers() action).

    Each takes --config here as well as before the command word; SUPPRESS keeps the value
    given to `door --config X` when the command does not repeat it."""

    def leaf(parent: Any, name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                       help="the door YAML file (its audit section names the collector)")
        p.add_argument("--api-key-file", type=Path, default=None,
                       help=f"file holding the API key (default: ${API_KEY_ENV})")
        p.set_defaults(func=func)
        return p

    from floor_agent.access.enroll import add_parser as add_enroll

    add_enroll(door_sub)
    people = door_sub.add_parser("people", help="people on the collector").add_subparsers(
        dest="people_action", required=True)
    p = leaf(people, "add", "add or update a person", cmd_people_add)
    p.add_argument("--id", dest="person_id", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--level", action="append", help="access level id, repeatable")
    p.add_argument("--duress-finger", type=int, action="append", metavar="1-10",
                   help="finger whose match opens with a silent alarm, repeatable")
    p.add_argument("--inactive", action="store_true")
    p = leaf(people, "list", "people with their cards and enrolled fingers", cmd_people_list)
    p.add_argument("--json", action="store_true")
    p = leaf(people, "revoke", "deactivate a person and their cards, delete their templates",
             cmd_people_revoke)
    p.add_argument("person_id", metavar="PERSON")

    cards = door_sub.add_parser("cards", help="key cards on the collector").add_subparsers(
        dest="cards_action", required=True)
    p = leaf(cards, "add", "add or update a card", cmd_cards_add)
    p.add_argument("--uid", required=True, help="hex, 4/7/10 bytes (e.g. 04A224B2C35E80)")
    p.add_argument("--person", required=True)
    p.add_argument("--valid-from", help="ISO 8601 with zone, e.g. 2026-01-01T00:00:00Z")
    p.add_argument("--valid-until")
    p.add_argument("--not-keyed", action="store_true",
                   help="UID-only card (opens nothing where card proof is required)")
    p.add_argument("--inactive", action="store_true")

    levels = door_sub.add_parser("levels", help="access levels on the collector"
                                 ).add_subparsers(dest="levels_action", required=True)
    p = leaf(levels, "add", "add or update an access level", cmd_levels_add)
    p.add_argument("--id", dest="level_id", required=True)
    p.add_argument("--door", action="append", required=True, help="door id, repeatable")
    p.add_argument("--window", action="append", required=True,
                   help="'mon-fri 07:00-19:00', 'sat,sun 08:00-12:00', 'daily 22:00-06:00'")
    p.add_argument("--on-holidays", action="store_true", help="open on holidays as well")

    holidays = door_sub.add_parser("holidays", help="holidays on the collector"
                                   ).add_subparsers(dest="holidays_action", required=True)
    p = leaf(holidays, "add", "add or rename a holiday (closes levels without --on-holidays)",
             cmd_holidays_add)
    p.add_argument("date", metavar="YYYY-MM-DD")
    p.add_argument("--name")
