"""Doors: the access log (who, which card, which door, granted or not, why), and for admins
the people and their access levels."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from floor_agent.dashboard import filters
from floor_agent.dashboard.auth import User, require
from floor_agent.dashboard.context import dashboard_of
from floor_agent.dashboard.csv_export import csv_response
from floor_agent.dashboard.pages_events import export_allowed
from floor_agent.dashboard.render import csv_link, page
from floor_agent.dashboard.tables import Table, short, time_cell
from floor_agent.protocol.kinds.door import DoorKind
from floor_agent.store.interface import EventQuery

router = APIRouter()
SCAN = 5000  # newest access events read per outcome; person/card/door are matched on these
SHOWN = 500
FIELDS = [("person", "Person", "text", "person id"), ("card", "Card", "text", "uid"),
          ("door", "Door", "text", "door id"),
          ("outcome", "Outcome", "select", [("", "any"), ("granted", "granted"),
                                            ("denied", "denied")]),
          ("since", "Since", "text", "2026-11-29T08:00:00Z"), ("until", "Until", "text", "UTC")]


def access_matches(e: dict[str, Any], person: str | None, card: str | None,
                   door: str | None) -> bool:
    """Whether an access event matches the text filters (pure; case-insensitive substrings,
    the door exactly)."""
    d = e["data"]
    if person and person.lower() not in str(d.get("person_id") or "").lower():
        return False
    if card and card.lower() not in str(d.get("uid") or "").lower():
        return False
    return not (door and str(d.get("door_id") or "") != door)


@router.get("/doors")
def doors(request: Request, user: Annotated[User, Depends(require("read"))],
          person: str | None = None, card: str | None = None, door: str | None = None,
          outcome: str | None = None, since: str | None = None, until: str | None = None,
          format: str | None = None) -> Response:  # noqa: A002
    dash = dashboard_of(request)
    form = {"person": person or "", "card": card or "", "door": door or "",
            "outcome": outcome or "", "since": since or "", "until": until or ""}
    table = Table(["person", "card", "door", "outcome", "reason", "time"], testid="access-log")
    try:
        who = filters.text("person", person, 64)
        uid = filters.text("card", card, 64)
        door_id = filters.text("door", door, 64)
        if outcome not in (None, "", "granted", "denied"):
            raise filters.FilterError("outcome: expected granted or denied")
        start, end = filters.timestamp("since", since), filters.timestamp("until", until)
    except filters.FilterError as exc:
        return page(request, "list.html", user, 422, title="Doors", tables=[("", table)],
                    fields=FIELDS, form=form, error=str(exc), csv_url=None)
    found: list[dict[str, Any]] = []
    for name, kind in (("granted", DoorKind.GRANTED), ("denied", DoorKind.DENIED)):
        if outcome and outcome != name:
            continue
        events = dash.store.query_events(EventQuery(kind=kind, since=start, until=end,
                                                    limit=SCAN)).events
        found += [e for e in events if access_matches(e, who, uid, door_id)]
    found.sort(key=lambda e: (e["ts"], e["id"]), reverse=True)
    for e in found[:SHOWN]:
        d = e["data"]
        granted = e["kind"] == DoorKind.GRANTED
        table.add([str(d.get("person_id") or ""), short(str(d.get("uid") or "")),
                   short(str(d.get("door_id") or "")),
                   short("granted" if granted else "denied", cls="ok" if granted else "bad"),
                   str(d.get("reason") or ""),
                   time_cell(e["ts"], link=f"/events/{e['agent_id']}/{e['seq']}")],
                  data_testid="access-row")
    if export_allowed(user, format):
        return csv_response(table, "access-log")
    links = [("/doors/people", "People and access levels")] if user.may("people") else []
    return page(request, "list.html", user, title="Doors: access log", tables=[("", table)],
                fields=FIELDS, form=form, error=None, links=links,
                intro=f"matches among the newest {SCAN} granted and {SCAN} denied access "
                      f"events in the time range, newest first, at most {SHOWN}",
                csv_url=csv_link(request) if user.may("export") else None)


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def window_text(window: Any) -> str:
    days = ",".join(DAYS[d] for d in sorted(window.days))
    return f"{days} {window.start:%H:%M}-{window.end:%H:%M}"


@router.get("/doors/people")
def people(request: Request, user: Annotated[User, Depends(require("people"))],
           format: str | None = None) -> Response:  # noqa: A002
    dash = dashboard_of(request)
    snapshot = dash.store.credentials_snapshot()
    table = Table(["person", "name", "active", "access levels", "doors", "cards", "fingers"],
                  testid="people")
    for p in dash.store.list_people():
        doors_of = sorted({door for level in p["access_levels"]
                           if level in snapshot.levels for door in snapshot.levels[level].doors})
        table.add([p["person_id"], p["name"], "yes" if p["active"] else "no",
                   ", ".join(p["access_levels"]), ", ".join(doors_of),
                   ", ".join(c["uid"] + ("" if c["active"] else " (inactive)")
                             for c in p["cards"]),
                   str(len(p["templates"]))], data_testid="person-row",
                  data_person=p["person_id"])
    levels = Table(["level", "doors", "windows", "on holidays"], testid="levels")
    for level in sorted(snapshot.levels.values(), key=lambda lv: lv.level_id):
        levels.add([level.level_id, ", ".join(sorted(level.doors)),
                    "; ".join(window_text(w) for w in level.windows),
                    "yes" if level.on_holidays else "no"], data_testid="level-row")
    if export_allowed(user, format):
        return csv_response(table, "people")
    return page(request, "list.html", user, title="Doors: people and access levels",
                tables=[("People", table), ("Access levels", levels)], fields=None, form={},
                intro=f"credentials version {snapshot.version}",
                csv_url=csv_link(request) if user.may("export") else None)
