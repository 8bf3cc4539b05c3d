"""`floor-agent collector join-request | sign-collector | join`: a second collector for a site
(the checks are join.py's; this is the files, the store and the words for the admin), and
`join --via-ssh`, the three in one command run on the new box (the ssh leg is join_ssh.py).

Exit status: 0 done, 2 refused (the message says why; nothing was signed or installed).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from floor_agent.collector.config import CollectorConfig
from floor_agent.collector.join import JoinError
from floor_agent.config import load_role
from floor_agent.protocol.kinds.collector import CollectorKind

if TYPE_CHECKING:
    from floor_agent.collector.join_ssh import SshSigning

DEFAULT_CONFIG = "/etc/floor-agent/collector.yaml"
JOIN_DIR = "join"  # in state_dir, until the bundle is installed: the request and the join key
REQUEST_FILE = "request.json"
JOIN_KEY_FILE = "join.key"
SERVER_KEY_FILE = "server.key"  # the new server key, until its certificate is installed


def _private_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


STDIO = Path("-")  # sign-collector's request from stdin, its bundle to stdout (join --via-ssh)


def _read(path: Path, what: str) -> bytes:
    from floor_agent.collector.join import MAX_FILE_BYTES

    if path == STDIO:
        return sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise JoinError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def make_join_request(config: CollectorConfig, out: Path | None, renew: bool = False
                      ) -> tuple[Path, str, str]:
    """On the new box: its server key, join key and audit key, the request file; returns
    (request path, fingerprint, collector id)."""
    raw, fingerprint, collector_id = new_request(config, renew)
    target = out if out is not None else Path(f"{collector_id}.join-request")
    target.write_bytes(raw)
    return target, fingerprint, collector_id


def new_request(config: CollectorConfig, renew: bool = False) -> tuple[bytes, str, str]:
    """The pending request in state_dir/join (keys kept there until the bundle is installed);
    returns (the request's bytes, its fingerprint, the collector id)."""
    from floor_agent.audit.agent import KEY_FILE
    from floor_agent.audit.keys import load_or_create_private_key
    from floor_agent.collector import join, self_audit, tls
    from floor_agent.config.audit import AuditClientConfig

    section = config.collector
    files = tls.TlsFiles.in_dir(section.state_dir)
    if files.ca_key.exists():
        raise JoinError(f"{files.ca_key} exists: this is a site's first collector, which signs "
                        f"requests ('collector sign-collector'); a joining collector needs a "
                        f"state_dir of its own")
    if files.server_cert.exists() and not renew:
        raise JoinError(f"{files.server_cert} exists: this collector has joined already; "
                        f"--renew asks for a new certificate (same id, new server key), a fresh "
                        f"state_dir makes a new collector")
    section.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(section.state_dir, 0o700)
    audit_key = load_or_create_private_key(section.state_dir / "self-audit" / KEY_FILE)
    collector_id = section.collector_id or self_audit.joined_id(section.state_dir)
    if collector_id is None:
        host_based = AuditClientConfig().resolved_agent_id(self_audit.ROLE)
        collector_id = join.derived_id(host_based, audit_key)
        (section.state_dir / self_audit.ID_FILE).write_text(collector_id + "\n")
    server_key = ec.generate_private_key(ec.SECP256R1())
    join_key = X25519PrivateKey.generate()
    pending = section.state_dir / JOIN_DIR  # tls/ changes only when the bundle is installed
    _private_write(pending / SERVER_KEY_FILE, tls.key_pem(server_key))
    _private_write(pending / JOIN_KEY_FILE, join_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    raw = join.make_request(collector_id, list(section.server_names), server_key, join_key,
                            audit_key)
    _private_write(pending / REQUEST_FILE, raw)
    return raw, join.digest(raw), collector_id


def sign_collector(config: CollectorConfig, request_path: Path, out: Path | None,
                   server_names: list[str] | None, fingerprint: str | None) -> tuple[Path, Any]:
    """On the collector holding the CA: check the request, issue, answer with the bundle, and
    record it on this collector's own audit trail; returns (bundle path, the request).
    request_path "-": read from stdin; out "-" (and the default with a request from stdin):
    the bundle goes to stdout, as `join --via-ssh` reads it over ssh."""
    from floor_agent.collector import anchor, join, policy_key, self_audit, tls
    from floor_agent.store import migrations, open_store

    section = config.collector
    files = tls.TlsFiles.in_dir(section.state_dir)
    if not files.ca_key.exists():
        raise JoinError(f"{files.ca_key}: no CA key here; requests are signed on the site's "
                        f"first collector (the one 'collector init' made the CA on)")
    raw = _read(request_path, "join request")
    request = join.parse_request(raw, server_names)
    if fingerprint is not None and fingerprint.strip().lower() != request.digest:
        raise JoinError(f"{request_path}: its fingerprint is {request.digest}, you expected "
                        f"{fingerprint}: not the request the new collector made")
    try:
        signer = anchor.load(config)
        policy = policy_key.load(section)
    except (anchor.AnchorError, policy_key.PolicyKeyError) as exc:
        raise JoinError(str(exc)) from None
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    store = open_store(section.resolved_database_url())
    try:
        own = self_audit.ensure_registered(store, config)
        if request.collector_id == own:
            raise JoinError(f"join request: the new collector calls itself {own!r}, the id of "
                            f"this collector; give it another collector_id")
        known = store.get_agent(request.collector_id) or (
            store.get_agent(like) if (like := store.enrolled_id_like(request.collector_id))
            else None)
        if known is not None and known.public_key != request.audit_key:
            raise JoinError(f"join request: {known.agent_id!r} is enrolled already with "
                            f"another key; give the new collector another collector_id")
        site_key = store.get_agent(own)
        assert site_key is not None
        bundle = join.make_bundle(request, ca_cert, ca_key, signer.key, policy,
                                  {"collector_id": own, "audit_key": site_key.public_key},
                                  migrations.SCHEMA_VERSION, datetime.now(UTC))
    finally:
        store.close()
    target = out if out is not None else (
        STDIO if request_path == STDIO else request_path.with_suffix(".join-bundle"))
    if target == STDIO:
        sys.stdout.buffer.write(bundle)
        sys.stdout.buffer.flush()
    else:
        _private_write(target, bundle)
    writer = self_audit.open_writer(config)
    try:
        writer.emit(CollectorKind.JOINED, request.collector_id, "notice", step="signed",
                    request=request.digest, server_names=request.server_names,
                    ca=tls.fingerprint(files.ca_cert))
    finally:
        writer.close()
    return target, request


def install_bundle(config: CollectorConfig, bundle_path: Path | bytes,
                   ca_fingerprint: str | None, via: str | None = None) -> dict[str, str]:
    """On the new box: check the bundle (a file, or the bytes join --via-ssh read) and the
    database, then install; returns what the admin is told. via: how the bundle came, put on
    the `installed` event."""
    from floor_agent.audit.agent import KEY_FILE as AGENT_KEY_FILE
    from floor_agent.audit.keys import load_private_key, public_key_b64, write_private_key
    from floor_agent.collector import anchor, join, policy_key, self_audit, tls
    from floor_agent.store import migrations, open_store

    section = config.collector
    files = tls.TlsFiles.in_dir(section.state_dir)
    pending = section.state_dir / JOIN_DIR
    if files.ca_key.exists():
        raise JoinError(f"{files.ca_key} exists: this is a site's first collector")
    if not all((pending / name).exists() for name in (REQUEST_FILE, JOIN_KEY_FILE,
                                                      SERVER_KEY_FILE)):
        raise JoinError(f"{pending}: no pending join request; run 'floor-agent collector "
                        f"join-request' first")
    join_key = serialization.load_pem_private_key((pending / JOIN_KEY_FILE).read_bytes(), None)
    server_key = serialization.load_pem_private_key((pending / SERVER_KEY_FILE).read_bytes(),
                                                    None)
    assert isinstance(join_key, X25519PrivateKey)
    assert isinstance(server_key, ec.EllipticCurvePrivateKey)
    collector_id = self_audit.agent_id(config)
    raw = bundle_path if isinstance(bundle_path, bytes) else _read(bundle_path, "join bundle")
    bundle = join.open_bundle(
        raw, join.digest((pending / REQUEST_FILE).read_bytes()),
        join_key, server_key.public_key(), list(section.server_names), collector_id,
        datetime.now(UTC), section.anchor_public_key, ca_fingerprint)
    if bundle.schema_version != migrations.SCHEMA_VERSION:
        raise JoinError(f"the first collector's store is at schema version "
                        f"{bundle.schema_version}, this release's is "
                        f"{migrations.SCHEMA_VERSION}: run the same release on both")
    for path, key in ((anchor.anchor_dir(section) / anchor.KEY_FILE, bundle.anchor_key),
                      (policy_key.key_dir(section) / policy_key.KEY_FILE, bundle.policy_key)):
        if path.exists() and path.read_bytes() != _ed25519_pem(key):
            raise JoinError(f"{path} exists with another key than the site's; this state_dir "
                            f"belongs to another collector")
    try:
        store = open_store(section.resolved_database_url())
    except Exception as exc:  # noqa: BLE001  (whatever the driver raises: said, not traced)
        raise JoinError(f"database_url: cannot open the store ({exc})") from None
    try:
        join.check_site(store.agent_identity(bundle.site["collector_id"]), bundle.site,
                        bundle.anchor_key)
        audit_key = self_audit.self_audit_config(config).state_dir / AGENT_KEY_FILE
        known = store.get_agent(collector_id)
        if known is not None and known.public_key != public_key_b64(load_private_key(audit_key)):
            raise JoinError(f"{collector_id!r} is enrolled in this database with another key: "
                            f"set another collector_id and run join-request again")
        tls.write_pem(files.ca_cert, bundle.ca_certificate.public_bytes(
            serialization.Encoding.PEM), private=False)
        tls.write_pem(files.server_key, tls.key_pem(server_key), private=True)
        tls.write_pem(files.server_cert, bundle.certificate.public_bytes(
            serialization.Encoding.PEM), private=False)
        for path, key in ((anchor.anchor_dir(section) / anchor.KEY_FILE, bundle.anchor_key),
                          (policy_key.key_dir(section) / policy_key.KEY_FILE,
                           bundle.policy_key)):
            if not path.exists():
                write_private_key(path, key)
        signer = anchor.create(config)  # anchor.pub beside the key; a pinned key is checked
        policy_key.create(section)
        try:
            self_audit.ensure_registered(store, config)
        except RuntimeError as exc:
            raise JoinError(str(exc)) from None
        signer.endorse_own(store, config)
    finally:
        store.close()
    writer = self_audit.open_writer(config)
    try:
        writer.emit(CollectorKind.JOINED, collector_id, "notice", step="installed",
                    site=bundle.site["collector_id"], ca=tls.fingerprint(files.ca_cert),
                    **({"via": via} if via else {}))
    finally:
        writer.close()
    for name in (JOIN_KEY_FILE, SERVER_KEY_FILE, REQUEST_FILE):
        (pending / name).unlink()
    pending.rmdir()
    return {"collector_id": collector_id, "site": bundle.site["collector_id"],
            "ca": tls.fingerprint(files.ca_cert), "anchor": signer.key_id,
            "policy_key": policy_key.fingerprint(bundle.policy_key)}


def join_via_ssh(config: CollectorConfig, plan: SshSigning, ca_fingerprint: str | None,
                 renew: bool = False) -> tuple[dict[str, str], str]:
    """The three steps from the new box: the request made here, signed by the first collector
    over ssh (join_ssh.py), the bundle installed here with every check `join` makes. A refusal
    anywhere leaves the pending request as the three-step form does and installs nothing.
    Returns (what the admin is told, what the first collector said)."""
    from floor_agent.collector import join_ssh

    raw, fingerprint, _ = new_request(config, renew)
    bundle, said = join_ssh.run(plan, raw, fingerprint)
    return install_bundle(config, bundle, ca_fingerprint, via=f"ssh {plan.target}"), said


def _ed25519_pem(key: Any) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


# --------------------------------------------------------------------------- commands

def _config(args: argparse.Namespace) -> CollectorConfig:
    return load_role(args.config, CollectorConfig)


def cmd_join_request(args: argparse.Namespace) -> int:
    try:
        path, fingerprint, collector_id = make_join_request(_config(args), args.out,
                                                            args.renew)
    except JoinError as exc:
        print(f"join-request: {exc}", file=sys.stderr)
        return 2
    print(f"join request for collector {collector_id}: {path}")
    print(f"fingerprint {fingerprint}")
    print("take the file to the site's first collector and run there: floor-agent collector "
          f"sign-collector {path.name} --fingerprint {fingerprint}")
    return 0


def cmd_sign_collector(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.server_names.split(",")] if args.server_names else None
    try:
        path, request = sign_collector(_config(args), args.request, args.out, names,
                                       args.fingerprint)
    except JoinError as exc:
        print(f"sign-collector: {exc}", file=sys.stderr)
        return 2
    say = sys.stderr if path == STDIO else sys.stdout  # stdout is the bundle's alone
    print(f"signed collector {request.collector_id} for {', '.join(request.server_names)} "
          f"(request {request.digest})", file=say)
    if path != STDIO:
        print(f"bundle: {path} (the site's anchor and policy keys inside are sealed to the new "
              f"collector's join key)")
        print(f"on the new collector: floor-agent collector join {path.name}")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    if (args.bundle is None) == (args.via_ssh is None):
        print("join: give the bundle file, or --via-ssh [user@]first-collector to have it "
              "signed there now", file=sys.stderr)
        return 2
    ssh_only = [flag for flag, value in (("--remote-config", args.remote_config),
                                         ("--server-names", args.server_names),
                                         ("--ssh-config", args.ssh_config),
                                         ("--renew", args.renew)) if value]
    if args.via_ssh is None and ssh_only:
        print(f"join: {', '.join(ssh_only)}: only with --via-ssh", file=sys.stderr)
        return 2
    try:
        if args.via_ssh is None:
            done = install_bundle(_config(args), args.bundle, args.ca_fingerprint)
        else:
            done = _join_via_ssh(args)
    except JoinError as exc:
        print(f"join: {exc}", file=sys.stderr)
        return 2
    print(f"collector {done['collector_id']} joined the site of {done['site']}: same database, "
          f"CA {done['ca']}, anchor {done['anchor']}, policy key {done['policy_key']}")
    print("start it: floor-agent collector run (agents pinned to this CA can use it now)")
    return 0


def _join_via_ssh(args: argparse.Namespace) -> dict[str, str]:
    from floor_agent.collector import join_ssh

    names = tuple(n.strip() for n in args.server_names.split(",")) if args.server_names \
        else None
    plan = join_ssh.SshSigning(args.via_ssh, args.remote_command, args.remote_config, names,
                               args.ssh_config)
    done, said = join_via_ssh(_config(args), plan, args.ca_fingerprint, args.renew)
    for line in said.splitlines():
        print(f"{args.via_ssh}: {line}")
    return done


def add_parsers(collector_subparsers: Any) -> None:
    """Add `join-request`, `sign-collector` and `join` under `floor-agent collector`."""
    p = collector_subparsers.add_parser(
        "join-request", help="on a new collector: its key and the request for the site's CA")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="collector.yaml")
    p.add_argument("--out", type=Path, help="request file (default ./<collector-id>.join-request)")
    p.add_argument("--renew", action="store_true",
                   help="a joined collector asks for a new certificate (its id and keys stay)")
    p.set_defaults(func=cmd_join_request)
    p = collector_subparsers.add_parser(
        "sign-collector", help="on the first collector: sign a join request, make the bundle")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="collector.yaml")
    p.add_argument("request", type=Path, help="the file 'collector join-request' wrote "
                                              "('-': stdin, as join --via-ssh sends it)")
    p.add_argument("--out", type=Path, help="bundle file (default: the request's name, "
                                            ".join-bundle; '-' and with a request from "
                                            "stdin: stdout)")
    p.add_argument("--server-names", metavar="NAME,NAME",
                   help="the names the new collector may carry; refused unless the request "
                        "asks for exactly these")
    p.add_argument("--fingerprint", metavar="SHA256",
                   help="the request's fingerprint as join-request printed it on the new box")
    p.set_defaults(func=cmd_sign_collector)
    p = collector_subparsers.add_parser(
        "join", help="on the new collector: check and install the bundle, check the database; "
                     "with --via-ssh, the whole join in one command")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="collector.yaml")
    p.add_argument("bundle", type=Path, nargs="?",
                   help="the file 'collector sign-collector' wrote (not with --via-ssh)")
    p.add_argument("--ca-fingerprint", metavar="SHA256",
                   help="the site CA's fingerprint (as 'collector init' printed it), checked")
    p.add_argument("--via-ssh", metavar="[USER@]HOST",
                   help="make the request here, have the first collector sign it over ssh "
                        "(its host key checked against known_hosts), install the bundle")
    p.add_argument("--remote-command", default="floor-agent", metavar="WORDS",
                   help="how the first collector's CLI is run there (default floor-agent; "
                        "logged in as root: 'runuser -u floor-collector -- floor-agent')")
    p.add_argument("--remote-config", metavar="PATH",
                   help="the first collector's collector.yaml (default: its CLI's default)")
    p.add_argument("--server-names", metavar="NAME,NAME",
                   help="the names this collector may carry: the first collector refuses "
                        "unless the request asks for exactly these")
    p.add_argument("--ssh-config", metavar="FILE", help="ssh -F FILE (default: ssh's own)")
    p.add_argument("--renew", action="store_true",
                   help="with --via-ssh: a joined collector gets a new certificate")
    p.set_defaults(func=cmd_join)
