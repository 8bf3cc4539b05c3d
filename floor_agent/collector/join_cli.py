"""`floor-agent collector join-request | sign-collector | join`: a second collector for a site
(the checks are join.py's; this is the files, the store and the words for the admin).

Exit status: 0 done, 2 refused (the message says why; nothing was signed or installed).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from floor_agent.collector.config import CollectorConfig
from floor_agent.collector.join import JoinError
from floor_agent.config import load_role
from floor_agent.protocol.kinds.collector import CollectorKind

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


def _read(path: Path, what: str) -> bytes:
    from floor_agent.collector.join import MAX_FILE_BYTES

    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise JoinError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def make_join_request(config: CollectorConfig, out: Path | None, renew: bool = False
                      ) -> tuple[Path, str, str]:
    """On the new box: its server key, join key and audit key, the request file; returns
    (request path, fingerprint, collector id)."""
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
    target = out if out is not None else Path(f"{collector_id}.join-request")
    target.write_bytes(raw)
    return target, join.digest(raw), collector_id


def sign_collector(config: CollectorConfig, request_path: Path, out: Path | None,
                   server_names: list[str] | None, fingerprint: str | None) -> tuple[Path, Any]:
    """On the collector holding the CA: check the request, issue, answer with the bundle, and
    record it on this collector's own audit trail; returns (bundle path, the request)."""
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
    target = out if out is not None else request_path.with_suffix(".join-bundle")
    _private_write(target, bundle)
    writer = self_audit.open_writer(config)
    try:
        writer.emit(CollectorKind.JOINED, request.collector_id, "notice", step="signed",
                    request=request.digest, server_names=request.server_names,
                    ca=tls.fingerprint(files.ca_cert))
    finally:
        writer.close()
    return target, request


def install_bundle(config: CollectorConfig, bundle_path: Path, ca_fingerprint: str | None
         ) -> dict[str, str]:
    """On the new box: check the bundle and the database, then install; returns what the
    admin is told."""
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
    bundle = join.open_bundle(
        _read(bundle_path, "join bundle"), join.digest((pending / REQUEST_FILE).read_bytes()),
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
                    site=bundle.site["collector_id"], ca=tls.fingerprint(files.ca_cert))
    finally:
        writer.close()
    for name in (JOIN_KEY_FILE, SERVER_KEY_FILE, REQUEST_FILE):
        (pending / name).unlink()
    pending.rmdir()
    return {"collector_id": collector_id, "site": bundle.site["collector_id"],
            "ca": tls.fingerprint(files.ca_cert), "anchor": signer.key_id,
            "policy_key": policy_key.fingerprint(bundle.policy_key)}


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
    print(f"signed collector {request.collector_id} for {', '.join(request.server_names)} "
          f"(request {request.digest})")
    print(f"bundle: {path} (the site's anchor and policy keys inside are sealed to the new "
          f"collector's join key)")
    print(f"on the new collector: floor-agent collector join {path.name}")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    try:
        done = install_bundle(_config(args), args.bundle, args.ca_fingerprint)
    except JoinError as exc:
        print(f"join: {exc}", file=sys.stderr)
        return 2
    print(f"collector {done['collector_id']} joined the site of {done['site']}: same database, "
          f"CA {done['ca']}, anchor {done['anchor']}, policy key {done['policy_key']}")
    print("start it: floor-agent collector run (agents pinned to this CA can use it now)")
    return 0


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
    p.add_argument("request", type=Path, help="the file 'collector join-request' wrote")
    p.add_argument("--out", type=Path, help="bundle file (default: the request's name, "
                                            ".join-bundle)")
    p.add_argument("--server-names", metavar="NAME,NAME",
                   help="the names the new collector may carry; refused unless the request "
                        "asks for exactly these")
    p.add_argument("--fingerprint", metavar="SHA256",
                   help="the request's fingerprint as join-request printed it on the new box")
    p.set_defaults(func=cmd_sign_collector)
    p = collector_subparsers.add_parser(
        "join", help="on the new collector: check and install the bundle, check the database")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="collector.yaml")
    p.add_argument("bundle", type=Path, help="the file 'collector sign-collector' wrote")
    p.add_argument("--ca-fingerprint", metavar="SHA256",
                   help="the site CA's fingerprint (as 'collector init' printed it), checked")
    p.set_defaults(func=cmd_join)
