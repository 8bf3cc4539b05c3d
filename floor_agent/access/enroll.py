"""`floor-agent door enroll --person P --finger N`: a finger enrolled at a door's own sensor.

The person first presents their card at the door's entry reader (with the card proof when the
site requires it), so a finger is never enrolled under somebody else's name; `--no-card` skips
that for an enrolment desk without a reader. Two captures build the template on the module;
it is sealed under the site key here, uploaded to the collector over the agent's signed link,
and wiped from the module. The clear template never leaves this process and is never written
to disk. The enrolment is an audit event (`door.template_enrolled`) in the agent's spool.

The sensor and the reader belong to the running door agent: stop floor-door.service first (or
run this on an enrolment station with its own door.yaml).
"""

from __future__ import annotations

import argparse
import queue
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floor_agent.access import sitekey
from floor_agent.access.config import DoorConfig, DoorSection
from floor_agent.access.model import CardRead
from floor_agent.access.sync import SignedClient, SyncError
from floor_agent.access.templates import seal
from floor_agent.protocol.credentials import Template
from floor_agent.protocol.kinds.door import DoorKind


class EnrollError(RuntimeError):
    """Enrolment refused or failed; the message says why (never biometric data)."""


@dataclass(frozen=True, slots=True)
class Enrolled:
    template_id: str
    person_id: str
    finger: int
    version: int


def door_of(config: DoorConfig, door_id: str | None) -> DoorSection:
    doors = config.access.doors
    if not doors:
        raise EnrollError("access.doors is empty: no sensor to enroll at")
    if door_id is None:
        return doors[0]
    for door in doors:
        if door.door_id == door_id:
            return door
    raise EnrollError(f"no door {door_id!r} in access.doors "
                      f"({', '.join(d.door_id for d in doors)})")


def wait_for_card(config: DoorConfig, door: DoorSection, key: sitekey.SiteKey,
                  timeout: float) -> CardRead:
    """The next card at the door's first PC/SC reader."""
    from floor_agent.access.pcsc import PcscCardReader

    reader = next((r for r in door.readers if r.kind == "pcsc"), None)
    if reader is None:
        raise EnrollError(f"door {door.door_id} has no PC/SC reader; use --no-card")
    reads: queue.Queue[CardRead] = queue.Queue()
    master = key.card_master_key() if config.access.policy.require_card_proof else None
    driver = PcscCardReader.from_config(door.door_id, reader, on_card=reads.put,
                                        card_master_key=master)
    driver.start()
    try:
        return reads.get(timeout=timeout)
    except queue.Empty:
        raise EnrollError(f"no card at {reader.reader_id} within {timeout:g} s") from None
    finally:
        driver.stop()


def check_card(read: CardRead, person_id: str, cards: dict[str, str],
               require_proof: bool) -> None:
    """The card must be the person's, and (where required) prove its key (pure)."""
    if read.proof == "error" or not read.uid:
        raise EnrollError(f"card could not be read: {read.detail}")
    if require_proof and read.proof != "ok":
        raise EnrollError(f"card {read.uid} did not prove its key ({read.proof}: "
                          f"{read.detail})")
    owner = cards.get(read.uid)
    if owner != person_id:
        raise EnrollError(f"card {read.uid} is not {person_id}'s "
                          f"({'unknown card' if owner is None else 'it belongs to ' + owner})")


def enroll_finger(config: DoorConfig, person_id: str, finger: int, door_id: str | None,
                  card: bool, card_timeout: float) -> Enrolled:
    if not 1 <= finger <= 10:
        raise EnrollError(f"--finger: expected 1-10 (ISO/IEC 19794 finger position), got {finger}")
    door = door_of(config, door_id)
    try:
        key = sitekey.load(config.access.site_key_file)
    except sitekey.SiteKeyError as e:
        raise EnrollError(str(e)) from None
    client = SignedClient.from_config(config.audit, config.role)
    try:
        try:
            credentials = client.fetch_credentials()
        except SyncError as e:
            raise EnrollError(str(e)) from None
        assert credentials is not None  # no `since`: always the full snapshot
        person = credentials.people.get(person_id)
        if person is None or not person.active:
            raise EnrollError(f"{person_id}: not an active person on the collector")
        if card:
            print(f"present {person_id}'s card at door {door.door_id} ...", file=sys.stderr)
            read = wait_for_card(config, door, key, card_timeout)
            check_card(read, person_id, {uid: c.person_id for uid, c in
                                         credentials.cards.items() if c.active},
                       config.access.policy.require_card_proof)
        print(f"place finger {finger} on the sensor twice ...", file=sys.stderr)
        fp = door.fingerprint
        # Here, not at the top: `floor-agent` builds every role's parser, and pyserial is the
        # door's dependency alone (tests/test_role_imports.py).
        from floor_agent.access.fingerprint import FingerprintError, FingerprintModule

        try:
            with FingerprintModule.from_config(fp) as module:
                clear = module.enroll(fp.capture_timeout_seconds, fp.retries)
        except FingerprintError as e:
            raise EnrollError(f"fingerprint module: {e}") from None
        template_id = f"{person_id}-f{finger}-{secrets.token_hex(4)}"
        sealed = seal(key.template_key(), person_id, template_id, clear)
        del clear
        try:
            version = client.upload_template(Template(template_id, person_id, finger, sealed))
        except SyncError as e:
            raise EnrollError(str(e)) from None
    finally:
        client.close()
    return Enrolled(template_id, person_id, finger, version)


def cmd_door_enroll(args: argparse.Namespace) -> int:
    from floor_agent.audit.spool import open_spool
    from floor_agent.config import load_role

    config = load_role(args.config, DoorConfig)
    try:
        done = enroll_finger(config, args.person, args.finger, args.door, not args.no_card,
                             args.card_timeout)
    except EnrollError as e:
        print(f"door enroll: {e}", file=sys.stderr)
        return 2
    spool = open_spool(config.audit, config.role)
    try:
        spool.emit(DoorKind.TEMPLATE_ENROLLED, f"person {done.person_id}", "notice",
                   person_id=done.person_id, finger=done.finger, template_id=done.template_id,
                   credentials_version=done.version, card_checked=not args.no_card)
    finally:
        spool.close()
    print(f"enrolled finger {done.finger} of {done.person_id} as {done.template_id} "
          f"(credentials version {done.version})")
    return 0


def add_parser(door_sub: Any) -> None:
    p = door_sub.add_parser("enroll", help="enroll a finger at a door's sensor (card first)")
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="the door YAML file")
    p.add_argument("--person", required=True)
    p.add_argument("--finger", type=int, required=True, metavar="1-10")
    p.add_argument("--door", default=None, help="door_id (default: the first door)")
    p.add_argument("--no-card", action="store_true",
                   help="do not ask for the person's card first (enrolment desk)")
    p.add_argument("--card-timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_door_enroll)
