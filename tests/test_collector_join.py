"""A second collector joins a site (collector/join.py, join_cli.py): its own key, certificate and
audit identity, the CA key never leaves the first box, and every forged or altered request or
bundle is refused before anything is signed or installed.

The in-process tests put both collectors on one SQLite file (what the join checks is the same on
PostgreSQL); the end-to-end test runs the three commands and both collectors as processes on one
real PostgreSQL, with an agent enrolled at the first sending to the second.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from collector_process import CollectorProcess, wait_for_kind
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from floor_agent.audit.agent import AuditAgent, enroll
from floor_agent.collector import anchor, join, policy_key, self_audit, server, state_lock, tls
from floor_agent.collector.config import CollectorConfig, CollectorSection
from floor_agent.collector.join import JoinError
from floor_agent.collector.join_cli import install_bundle, make_join_request, sign_collector
from floor_agent.store import open_store
from floor_agent.store.interface import EventQuery

B_NAMES = ["collector-b.floor", "127.0.0.1"]


def _config(state_dir: Path, database: Path, names: list[str] | None = None) -> CollectorConfig:
    return CollectorConfig(collector=CollectorSection(
        state_dir=state_dir, database_url=f"sqlite:///{database}",
        server_names=names or ["collector-a.floor", "127.0.0.1"]))


@pytest.fixture
def site(tmp_path: Path) -> tuple[CollectorConfig, CollectorConfig]:
    """The first collector, initialised (CA, anchor, policy key, store), and a second one's
    config on the same database with a state dir of its own, nothing in it yet."""
    first = _config(tmp_path / "a", tmp_path / "site.db")
    server.init(first)
    return first, _config(tmp_path / "b", tmp_path / "site.db", B_NAMES)


def _files_under(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file()}


def _request(second: CollectorConfig, tmp_path: Path) -> Path:
    return make_join_request(second, tmp_path / "b.join-request")[0]


def test_join_gives_the_new_collector_its_certificate_keys_and_identity_not_the_ca_key(
        site: tuple[CollectorConfig, CollectorConfig], tmp_path: Path) -> None:
    first, second = site
    request = _request(second, tmp_path)
    bundle, _ = sign_collector(first, request, None, list(B_NAMES), join.digest(
        request.read_bytes()))
    ca_print = tls.fingerprint(tls.TlsFiles.in_dir(first.collector.state_dir).ca_cert)
    done = install_bundle(second, bundle, ca_print)

    mine = tls.TlsFiles.in_dir(second.collector.state_dir)
    assert "ca.key" not in _files_under(second.collector.state_dir)
    assert not (second.collector.state_dir / "join").exists()  # the join key is gone
    cert = x509.load_pem_x509_certificate(mine.server_cert.read_bytes())
    key = serialization.load_pem_private_key(mine.server_key.read_bytes(), None)
    assert cert.public_key() == key.public_key()  # type: ignore[union-attr]
    ca = x509.load_pem_x509_certificate(
        tls.TlsFiles.in_dir(first.collector.state_dir).ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert mine.ca_cert.read_bytes() == tls.TlsFiles.in_dir(
        first.collector.state_dir).ca_cert.read_bytes()
    # the site's anchor and policy key, not keys of its own (workstations pin the policy key)
    assert anchor.load(second).key_id == anchor.load(first).key_id
    assert policy_key.fingerprint(policy_key.load(second.collector)) == \
        policy_key.fingerprint(policy_key.load(first.collector))
    # both collectors run on this one host name, and still have identities of their own
    a_id, b_id = self_audit.agent_id(first), self_audit.agent_id(second)
    assert a_id != b_id == done["collector_id"]
    store = open_store(second.collector.resolved_database_url())
    try:
        trusted = anchor.load(first).key.public_key()
        for ident in (a_id, b_id):
            identity = store.agent_identity(ident)
            assert identity is not None and identity["role"] == "collector"
            assert anchor.check_endorsement(trusted, identity) == anchor.VALID
    finally:
        store.close()
    # the new collector's TLS context loads, and `init --renew-certificate` there is refused
    # (it would make a CA of its own)
    tls.server_context(mine)
    with pytest.raises(tls.JoinedCollectorError):
        server.init(second, force_certs=True)

    # renewal: asked for explicitly, same id and audit key, a new server key and certificate
    with pytest.raises(JoinError, match="--renew"):
        make_join_request(second, tmp_path / "again")
    old_cert = mine.server_cert.read_bytes()
    again = make_join_request(second, tmp_path / "again", renew=True)[0]
    assert mine.server_cert.read_bytes() == old_cert  # untouched until the bundle is in
    assert install_bundle(second, sign_collector(first, again, None, None, None)[0], None
                          )["collector_id"] == b_id
    renewed = x509.load_pem_x509_certificate(mine.server_cert.read_bytes())
    assert renewed.serial_number != cert.serial_number
    renewed.verify_directly_issued_by(ca)
    tls.server_context(mine)  # the new key goes with the new certificate


def test_a_request_is_signed_only_on_the_ca_box_and_made_only_on_a_fresh_one(
        site: tuple[CollectorConfig, CollectorConfig], tmp_path: Path) -> None:
    first, second = site
    request = _request(second, tmp_path)
    with pytest.raises(JoinError, match="no CA key here"):
        sign_collector(second, request, None, None, None)
    with pytest.raises(JoinError, match="first collector"):
        make_join_request(first, tmp_path / "x")


def test_names_the_admin_did_not_allow_are_refused_and_nothing_is_signed(
        site: tuple[CollectorConfig, CollectorConfig], tmp_path: Path) -> None:
    first, second = site
    request = _request(second, tmp_path)
    out = tmp_path / "bundle"
    with pytest.raises(JoinError, match="you allowed"):
        sign_collector(first, request, out, ["collector-a.floor", "127.0.0.1"], None)
    with pytest.raises(JoinError, match="fingerprint"):
        sign_collector(first, request, out, None, "sha256:" + "0" * 64)
    assert not out.exists()


def _edit(path: Path, **fields: Any) -> bytes:
    doc = orjson.loads(path.read_bytes())
    doc.update(fields)
    return orjson.dumps(doc)


def _csr(names: list[str], key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .add_extension(tls.san(names), critical=False).sign(key, hashes.SHA256()))


def _der_items(der: bytes) -> list[bytes]:
    """The DER elements inside the outer SEQUENCE (a CSR: info, algorithm, signature)."""

    def header(data: bytes, at: int) -> tuple[int, int]:
        length = data[at + 1]
        if length < 0x80:
            return at + 2, length
        count = length & 0x7F
        return at + 2 + count, int.from_bytes(data[at + 2:at + 2 + count], "big")

    start, length = header(der, 0)
    items, at = [], start
    while at < start + length:
        body, size = header(der, at)
        items.append(der[at:body + size])
        at = body + size
    return items


def _sequence(items: list[bytes]) -> bytes:
    body = b"".join(items)
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return b"\x30" + (bytes([len(body)]) if len(body) < 0x80 else bytes([0x80 | len(size)]) + size
                      ) + body


def test_altered_or_foreign_requests_are_refused(
        site: tuple[CollectorConfig, CollectorConfig], tmp_path: Path) -> None:
    first, second = site
    request = _request(second, tmp_path)
    doc = orjson.loads(request.read_bytes())
    hostile = tmp_path / "hostile"

    def refused(raw: bytes, match: str) -> None:
        hostile.write_bytes(raw)
        with pytest.raises(JoinError, match=match):
            sign_collector(first, hostile, tmp_path / "never", None, None)
        assert not (tmp_path / "never").exists()

    # the names in the request are not those of its CSR (someone edited the request)
    refused(_edit(request, server_names=["collector-a.floor", "127.0.0.1"]), "was altered")
    # a CSR for the first collector's name, under the request's names
    other = ec.generate_private_key(ec.SECP256R1())
    wrong = _csr(["collector-a.floor", "127.0.0.1"], other)
    refused(_edit(request, csr=wrong.public_bytes(serialization.Encoding.PEM).decode()),
            "was altered")
    # a CSR whose public key is not the key that signed it: one CSR's info, another's signature
    mine = x509.load_pem_x509_csr(doc["csr"].encode()).public_bytes(serialization.Encoding.DER)
    theirs = _csr(B_NAMES, other).public_bytes(serialization.Encoding.DER)
    spliced = _sequence([_der_items(theirs)[0], *_der_items(mine)[1:]])
    pem = x509.load_der_x509_csr(spliced).public_bytes(serialization.Encoding.PEM).decode()
    refused(_edit(request, csr=pem), "signed by another key")
    # names that are no names, a key of the wrong kind, garbage
    refused(_edit(request, server_names=["*.floor"]), "server name")
    rsa_like = _csr(B_NAMES, ec.generate_private_key(ec.SECP384R1()))
    refused(_edit(request, csr=rsa_like.public_bytes(serialization.Encoding.PEM).decode()),
            "P-256")
    refused(_edit(request, csr="-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"), "not a PEM")
    refused(_edit(request, collector_id="../../etc"), "not a valid agent id")
    refused(b"\x00" * (join.MAX_FILE_BYTES + 1), "more than any")
    refused(b"[1, 2]", "not a floor-agent-collector-join-request")
    # an id the store knows with another key (the first collector's own)
    refused(_edit(request, collector_id=self_audit.agent_id(first)), "this collector")


def _signed(first: CollectorConfig, second: CollectorConfig, tmp_path: Path) -> Path:
    return sign_collector(first, _request(second, tmp_path), tmp_path / "b.bundle", None,
                          None)[0]


def _not_installed(second: CollectorConfig) -> None:
    assert not tls.TlsFiles.in_dir(second.collector.state_dir).server_cert.exists()
    assert not (second.collector.state_dir / "anchor").exists()
    assert (second.collector.state_dir / "join" / "join.key").exists()  # still pending


def test_a_tampered_bundle_is_refused_and_nothing_installed(
        site: tuple[CollectorConfig, CollectorConfig], tmp_path: Path) -> None:
    first, second = site
    bundle = _signed(first, second, tmp_path)
    doc = orjson.loads(bundle.read_bytes())
    hostile = tmp_path / "hostile"

    def refused(raw: bytes, match: str, ca_print: str | None = None) -> None:
        hostile.write_bytes(raw)
        with pytest.raises(JoinError, match=match):
            install_bundle(second, hostile, ca_print)
        _not_installed(second)

    # one bit of the sealed keys
    box = bytearray(base64.b64decode(doc["secrets"]["ciphertext"]))
    box[5] ^= 1
    refused(_edit(bundle, secrets={**doc["secrets"],
                                   "ciphertext": base64.b64encode(bytes(box)).decode()}),
            "do not open")
    # any signed field: names, the site, the schema, the CA
    refused(_edit(bundle, server_names=["evil.floor", "127.0.0.1"]), "does not verify")
    refused(_edit(bundle, site={"collector_id": "x", "audit_key": doc["site"]["audit_key"]}),
            "does not verify")
    refused(_edit(bundle, schema_version=1), "does not verify")
    stranger = tmp_path / "stranger"
    tls.create(tls.TlsFiles.in_dir(stranger), ["stranger"])
    refused(_edit(bundle, ca_certificate=tls.TlsFiles.in_dir(stranger).ca_cert.read_text()),
            "does not verify")
    # the signature removed, the bundle truncated, a CA that is not the one the admin read
    refused(orjson.dumps({k: v for k, v in doc.items() if k != "anchor"}), "not signed")
    refused(bundle.read_bytes()[:-40], "not JSON")
    refused(bundle.read_bytes(), "you expected", ca_print="sha256:" + "1" * 64)
    # the bundle is good: it installs (and only once: the join key is then gone)
    install_bundle(second, bundle, None)
    with pytest.raises(JoinError, match="no pending join request"):
        install_bundle(second, bundle, None)


def test_a_bundle_resigned_by_someone_holding_only_the_join_key_public_half_is_refused(
        site: tuple[CollectorConfig, CollectorConfig], tmp_path: Path) -> None:
    """An attacker on the way sees the request (public halves) and answers it with a bundle of
    their own making, sealed and signed with keys they made: it opens, checks by itself, and
    is refused at the database, which holds no collector endorsed by that anchor."""
    first, second = site
    request = _request(second, tmp_path)
    parsed = join.parse_request(request.read_bytes())
    rogue = tmp_path / "rogue"
    tls.create(tls.TlsFiles.in_dir(rogue), ["rogue"])
    files = tls.TlsFiles.in_dir(rogue)
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    forged = join.make_bundle(
        parsed, x509.load_pem_x509_certificate(files.ca_cert.read_bytes()), ca_key,
        Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(),
        {"collector_id": self_audit.agent_id(first),
         "audit_key": base64.b64encode(b"\x01" * 32).decode()},
        4, datetime.now(UTC))
    (tmp_path / "forged").write_bytes(forged)
    with pytest.raises(JoinError, match="another key in this database|not endorsed|schema"):
        install_bundle(second, tmp_path / "forged", None)
    _not_installed(second)


def test_a_bundle_for_another_request_or_another_database_is_refused(
        site: tuple[CollectorConfig, CollectorConfig], tmp_path: Path) -> None:
    first, second = site
    third = _config(tmp_path / "c", tmp_path / "site.db", ["collector-c.floor"])
    bundle_b = _signed(first, second, tmp_path)
    make_join_request(third, tmp_path / "c.join-request")
    with pytest.raises(JoinError, match="answers request"):
        install_bundle(third, bundle_b, None)
    # the same bundle, to a B whose database_url names another (empty) database
    elsewhere = _config(second.collector.state_dir, tmp_path / "other.db", B_NAMES)
    with pytest.raises(JoinError, match="holds no collector"):
        install_bundle(elsewhere, bundle_b, None)
    _not_installed(second)


def test_one_state_dir_one_running_collector(tmp_path: Path) -> None:
    held = state_lock.hold(tmp_path)
    try:
        with pytest.raises(state_lock.StateDirBusy, match=r"pid \d+.*state_dir of its own"):
            state_lock.hold(tmp_path)
    finally:
        os.close(held)
    os.close(state_lock.hold(tmp_path))  # free again once its holder closed it


def _cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floor_agent.cli", "collector",
                           *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.mark.postgres
def test_two_collectors_join_run_and_serve_one_site_on_postgres(
        postgres_server: Any, tmp_path: Path) -> None:
    url = postgres_server.new_database()
    a = CollectorProcess(tmp_path / "a", url)
    b = CollectorProcess(tmp_path / "b", url, init=False, server_names=B_NAMES)
    a.start()
    try:
        made = _cli("join-request", "--config", b.config_path, "--out", tmp_path / "b.req")
        assert made.returncode == 0, made.stderr
        fingerprint = made.stdout.split("fingerprint ")[1].split()[0]
        signed = _cli("sign-collector", "--config", a.config_path, tmp_path / "b.req",
                      "--fingerprint", fingerprint, "--server-names", ",".join(B_NAMES),
                      "--out", tmp_path / "b.bundle")
        assert signed.returncode == 0, signed.stderr
        joined = _cli("join", "--config", b.config_path, tmp_path / "b.bundle",
                      "--ca-fingerprint", tls.fingerprint(a.ca))
        assert joined.returncode == 0, joined.stderr
        assert "ca.key" not in _files_under(b.root)
        b.start()
        # a second `collector run` on A's state dir is refused at start, naming the holder
        twin = yaml.safe_load(a.config_path.read_text())
        twin["collector"]["listen_port"] = b.port + 1 if b.port < 65535 else b.port - 1
        (tmp_path / "twin.yaml").write_text(yaml.safe_dump(twin))
        refused = subprocess.run([sys.executable, "-m", "floor_agent.cli", "collector", "run",
                                  "--config", str(tmp_path / "twin.yaml")],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2
        assert f"pid {a.proc.pid}" in refused.stderr and "state_dir of its own" in \
            refused.stderr  # type: ignore[union-attr]

        _an_agent_enrolled_at_a_delivers_to_b(a, b)
    finally:
        b.stop()
        a.stop()


def _an_agent_enrolled_at_a_delivers_to_b(a: CollectorProcess, b: CollectorProcess) -> None:
    """With A and B running: an agent enrolled at A (pinning A's CA) delivers to B, so B's
    certificate verifies; both collectors' own trails record the join (A's signing, B's
    install), each under its own id; no chain alert. (Also tests/test_collector_join_ssh.py.)"""
    config = a.agent_config("ws-1")
    enroll(config.audit, "workstation", a.token(), None)
    moved = config.audit.model_copy(update={"collector_url": (b.url,)})  # a list of one
    agent = AuditAgent(moved, "workstation")
    agent.start()
    try:
        for n in range(50):
            agent.emit("test.load", f"item {n}", "info", n=n)
        deadline = time.monotonic() + 60
        while agent.spool.pending_count() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert agent.spool.pending_count() == 0
    finally:
        agent.stop(drain_seconds=10)
    store = a.store()
    try:
        page = store.query_events(EventQuery(agent_id="ws-1", kind="test.load", limit=100))
        assert sorted(e["data"]["n"] for e in page.events) == list(range(50))
        a_id, b_id = self_audit.agent_id(a.config), self_audit.agent_id(b.config)
        assert a_id != b_id
        assert wait_for_kind(store, a_id, "collector.joined")["subject"] == b_id
        assert wait_for_kind(store, b_id, "collector.joined")["data"]["site"] == a_id
        assert not [x for x in store.list_alerts() if x["kind"] in
                    ("replay", "rollback", "fork", "gap", "bad_signature")]
    finally:
        store.close()
