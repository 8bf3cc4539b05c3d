"""A second collector joins a site: its own key and certificate, the CA key never copied.

Three steps, one command on each box (the shell is join_cli.py; this file decides):

1. `collector join-request` on the new box: a server key that never leaves it, a CSR for its
   `server_names`, a one-time X25519 *join key*, and its own audit identity (key and id); the
   request file carries the public halves only. Its SHA-256 is the fingerprint the admin reads
   on both boxes.
2. `collector sign-collector REQUEST` on the first collector (which holds the CA key): checks the
   request (the CSR's signature by the key it carries, P-256, the names in the CSR are the names
   asked for and the admin allowed, the id is free in the store), issues the server certificate
   and answers with a *bundle*: the certificate, the CA certificate, the site's anchor and policy
   keys sealed to the join key (X25519, HKDF-SHA256, ChaCha20-Poly1305), what identifies the
   site's database, all signed with the anchor key.
3. `collector join BUNDLE` on the new box: opens the secrets with its join key, checks the anchor
   signature over everything, that the certificate is for its own key and names and issued by
   the CA in the bundle, and (join_cli) that its database_url reaches the same database: the
   first collector's identity is stored there, endorsed by this anchor.

Why the anchor and policy keys travel and the CA key does not: a collector uses the first two on
every request it serves (the anchor endorses each agent enrolled there and its own key, the
policy key signs every workstation's policy, which workstations check against the key they
pinned: a collector with a policy key of its own would be refused by every workstation), while
the CA key only issues certificates, which only this command needs, so it stays on one box
(and can be moved offline). Sealed to a key made for this one request, the secrets are useless
to whoever copies the bundle on its way.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID
from pydantic import TypeAdapter, ValidationError

from floor_agent.audit.keys import KeyFileError, public_key_b64, public_key_from_b64
from floor_agent.collector import anchor, tls
from floor_agent.config.base import ServerName

REQUEST_FORMAT = "floor-agent-collector-join-request/1"
BUNDLE_FORMAT = "floor-agent-collector-join-bundle/1"
BUNDLE_DOMAIN = b"floor-agent/anchor/join-bundle/v1\x00"  # the anchor's signature over a bundle
SECRETS_DOMAIN = b"floor-agent/join/secrets/v1\x00"
MAX_FILE_BYTES = 64 * 1024  # a request or bundle is a few kB; anything larger is not one
MAX_NAMES = 32
_SERVER_NAME: TypeAdapter[str] = TypeAdapter(ServerName)
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class JoinError(ValueError):
    """A request or bundle refused, or a join that cannot go on: the message says why."""


def digest(raw: bytes) -> str:
    """The fingerprint of a request file, as admins compare it on both boxes."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _canonical(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _load(raw: bytes, what: str, fmt: str) -> dict[str, Any]:
    if len(raw) > MAX_FILE_BYTES:
        raise JoinError(f"{what}: {len(raw)} bytes, more than any {what} ({MAX_FILE_BYTES})")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JoinError(f"{what}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise JoinError(f"{what}: not a {fmt} document")
    return doc


def _text(doc: dict[str, Any], key: str, what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise JoinError(f"{what}: '{key}' missing or not text")
    return value


def check_names(names: Any, what: str) -> list[str]:
    """server_names as the config takes them: 1-32 valid DNS names or IP literals, once each."""
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_NAMES:
        raise JoinError(f"{what}: server_names must be a list of 1-{MAX_NAMES} names")
    out: list[str] = []
    for name in names:
        try:
            out.append(_SERVER_NAME.validate_python(name))
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise JoinError(f"{what}: server name {name!r}: {reason}") from None
    if len(set(out)) != len(out):
        raise JoinError(f"{what}: server_names names one name twice")
    return out


def _cert_names(ext_owner: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        san = ext_owner.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in san if isinstance(n, (x509.DNSName, x509.IPAddress))]


# --------------------------------------------------------------------------- the request

def make_request(collector_id: str, server_names: list[str],
                 server_key: ec.EllipticCurvePrivateKey, join_key: X25519PrivateKey,
                 audit_key: Ed25519PrivateKey) -> bytes:
    """The request file: public halves only, and a CSR signed by the new server key."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_names[0])]))
           .add_extension(tls.san(server_names), critical=False)
           .sign(server_key, hashes.SHA256()))
    raw_join = join_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                  serialization.PublicFormat.Raw)
    return _canonical({
        "format": REQUEST_FORMAT, "collector_id": collector_id, "server_names": server_names,
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "join_key": base64.b64encode(raw_join).decode(), "audit_key": public_key_b64(audit_key),
    })


@dataclass(frozen=True)
class JoinRequest:
    """A request whose every check passed (parse_request)."""

    collector_id: str
    server_names: list[str]
    public_key: ec.EllipticCurvePublicKey  # the new server key, from the CSR
    join_key: X25519PublicKey
    audit_key: str  # base64 Ed25519, the new collector's own audit key
    digest: str


def parse_request(raw: bytes, allowed_names: list[str] | None = None) -> JoinRequest:
    """Every check sign-collector makes before the CA signs anything. allowed_names: the
    names the admin said this collector may carry (--server-names); the CSR must ask for
    exactly those."""
    what = "join request"
    doc = _load(raw, what, REQUEST_FORMAT)
    collector_id = _text(doc, "collector_id", what)
    if not ID_RE.match(collector_id):
        raise JoinError(f"{what}: collector_id {collector_id!r} is not a valid agent id")
    names = check_names(doc.get("server_names"), what)
    try:
        csr = x509.load_pem_x509_csr(_text(doc, "csr", what).encode())
    except ValueError as exc:
        raise JoinError(f"{what}: the CSR is not a PEM certificate request ({exc})") from None
    if not csr.is_signature_valid:
        raise JoinError(f"{what}: the CSR's signature does not verify with the key it carries "
                        f"(signed by another key, or altered on its way)")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or \
            not isinstance(public.curve, ec.SECP256R1):
        raise JoinError(f"{what}: the CSR's key is not an EC P-256 key (join-request makes one)")
    common = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    asked = _cert_names(csr)
    if common != [names[0]] or asked != names:
        raise JoinError(f"{what}: the CSR asks for names {asked} (CN {common}), the request "
                        f"says {names}: the request or its CSR was altered")
    if allowed_names is not None and sorted(allowed_names) != sorted(names):
        raise JoinError(f"{what}: the new collector asks for names {names}, you allowed "
                        f"{allowed_names}; nothing was signed")
    try:
        join_key = X25519PublicKey.from_public_bytes(
            base64.b64decode(_text(doc, "join_key", what), validate=True))
        audit_key = public_key_b64(public_key_from_b64(_text(doc, "audit_key", what)))
    except (ValueError, KeyFileError) as exc:
        raise JoinError(f"{what}: a public key in it is malformed ({exc})") from None
    return JoinRequest(collector_id, names, public, join_key, audit_key, digest(raw))


# --------------------------------------------------------------------------- the bundle

def _secrets_key(shared: bytes, context: bytes) -> ChaCha20Poly1305:
    key = HKDF(hashes.SHA256(), 32, salt=None, info=SECRETS_DOMAIN + context).derive(shared)
    return ChaCha20Poly1305(key)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seal(recipient: X25519PublicKey, context: bytes, plaintext: bytes) -> dict[str, str]:
    """plaintext readable only with the recipient's private join key, bound to context."""
    ephemeral = X25519PrivateKey.generate()
    bound = context + _raw(ephemeral.public_key()) + _raw(recipient)
    nonce = os.urandom(12)
    box = _secrets_key(ephemeral.exchange(recipient), bound).encrypt(nonce, plaintext, bound)
    b64 = base64.b64encode
    return {"ephemeral": b64(_raw(ephemeral.public_key())).decode(),
            "nonce": b64(nonce).decode(), "ciphertext": b64(box).decode()}


def unseal(join_key: X25519PrivateKey, context: bytes, block: Any) -> bytes:
    try:
        ephemeral = X25519PublicKey.from_public_bytes(base64.b64decode(block["ephemeral"],
                                                                       validate=True))
        nonce = base64.b64decode(block["nonce"], validate=True)
        box = base64.b64decode(block["ciphertext"], validate=True)
        bound = context + _raw(ephemeral) + _raw(join_key.public_key())
        return _secrets_key(join_key.exchange(ephemeral), bound).decrypt(nonce, box, bound)
    except (KeyError, TypeError, ValueError, InvalidTag):
        raise JoinError("join bundle: its secrets do not open with this collector's join key "
                        "(altered, or made for another request)") from None


def _private_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.private_bytes(serialization.Encoding.Raw,
                                              serialization.PrivateFormat.Raw,
                                              serialization.NoEncryption())).decode()


def make_bundle(request: JoinRequest, ca_cert: x509.Certificate,
                ca_key: ec.EllipticCurvePrivateKey, signer: Ed25519PrivateKey,
                policy: Ed25519PrivateKey, site: dict[str, str], schema_version: int,
                now: datetime) -> bytes:
    """The answer to a checked request: its certificate and the site's keys, anchor-signed.
    site: the signing collector's own identity in the store ({collector_id, audit_key}), what
    `join` looks for to know it reaches the same database."""
    cert = tls.server_certificate(request.public_key, request.server_names, ca_cert, ca_key, now)
    secrets = orjson.dumps({"anchor_key": _private_b64(signer),
                            "policy_key": _private_b64(policy)})
    body = {
        "format": BUNDLE_FORMAT, "request": request.digest,
        "collector_id": request.collector_id, "server_names": request.server_names,
        "audit_key": request.audit_key,
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "ca_certificate": ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
        "site": site, "schema_version": schema_version,
        "anchor_public_key": public_key_b64(signer), "policy_public_key": public_key_b64(policy),
        "secrets": seal(request.join_key, request.digest.encode(), secrets),
        "signed_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return _canonical(anchor.sign_manifest(signer, body, BUNDLE_DOMAIN))


@dataclass(frozen=True)
class JoinBundle:
    """A bundle whose every check passed (open_bundle): what `join` installs."""

    certificate: x509.Certificate
    ca_certificate: x509.Certificate
    anchor_key: Ed25519PrivateKey
    policy_key: Ed25519PrivateKey
    site: dict[str, str]
    schema_version: int
    collector_id: str


def _ed25519(text: Any) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (TypeError, ValueError):
        raise JoinError("join bundle: a key in its secrets is malformed") from None


def open_bundle(raw: bytes, request_digest: str, join_key: X25519PrivateKey,
                server_key: ec.EllipticCurvePublicKey, server_names: list[str],
                collector_id: str, now: datetime,
                pinned_anchor: str | None = None, ca_fingerprint: str | None = None
                ) -> JoinBundle:
    """Every check `join` makes of the bundle itself (the database is join_cli's): it answers
    this box's request, its secrets open with this box's join key, the anchor key in them
    signed all of it, the certificate is for this box's key, names and id, issued by the CA
    in the bundle and valid now. pinned_anchor: the config's anchor_public_key, when set;
    ca_fingerprint: the CA fingerprint the admin read on the first collector, when given."""
    what = "join bundle"
    doc = _load(raw, what, BUNDLE_FORMAT)
    if doc.get("request") != request_digest:
        raise JoinError(f"{what}: it answers request {doc.get('request')}, this collector's "
                        f"pending request is {request_digest}")
    try:
        secrets = orjson.loads(unseal(join_key, request_digest.encode(), doc.get("secrets")))
    except orjson.JSONDecodeError:
        secrets = None
    if not isinstance(secrets, dict):
        raise JoinError(f"{what}: its secrets are not the keys a bundle carries")
    signer = _ed25519(secrets.get("anchor_key"))
    policy = _ed25519(secrets.get("policy_key"))
    if doc.get("anchor_public_key") != public_key_b64(signer) or \
            doc.get("policy_public_key") != public_key_b64(policy):
        raise JoinError(f"{what}: the public keys it names are not those of its secrets "
                        f"(altered)")
    state, words = anchor.check_manifest(signer.public_key(), doc, BUNDLE_DOMAIN, what)
    if state != anchor.VALID:
        raise JoinError(words)
    if pinned_anchor is not None and \
            anchor.key_id(anchor.parse_public_key(pinned_anchor)) != anchor.key_id(signer):
        raise JoinError(f"{what}: signed by anchor {anchor.key_id(signer)}, this collector's "
                        f"config pins anchor_public_key "
                        f"{anchor.key_id(anchor.parse_public_key(pinned_anchor))}")
    try:
        cert = x509.load_pem_x509_certificate(_text(doc, "certificate", what).encode())
        ca = x509.load_pem_x509_certificate(_text(doc, "ca_certificate", what).encode())
    except ValueError as exc:
        raise JoinError(f"{what}: a certificate in it is malformed ({exc})") from None
    return JoinBundle(_check_certificate(cert, ca, server_key, server_names, now,
                                         ca_fingerprint),
                      ca, signer, policy, _site(doc), _schema(doc),
                      _own_id(doc, collector_id))


def _check_certificate(cert: x509.Certificate, ca: x509.Certificate,
                       server_key: ec.EllipticCurvePublicKey, server_names: list[str],
                       now: datetime, ca_fingerprint: str | None) -> x509.Certificate:
    what = "join bundle"
    if cert.public_key() != server_key:
        raise JoinError(f"{what}: the certificate is not for this collector's server key")
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.verify_directly_issued_by(ca)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        raise JoinError(f"{what}: the certificate is not issued by the CA it names") from None
    if not constraints.ca:
        raise JoinError(f"{what}: the CA certificate is not a CA")
    if _cert_names(cert) != server_names:
        raise JoinError(f"{what}: the certificate names {_cert_names(cert)}, this collector's "
                        f"server_names are {server_names}")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise JoinError(f"{what}: the certificate is not valid now")
    if ca_fingerprint is not None:
        seen = "sha256:" + hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()
        if seen != ca_fingerprint.strip().lower():
            raise JoinError(f"{what}: the CA is {seen}, you expected {ca_fingerprint}")
    return cert


def _site(doc: dict[str, Any]) -> dict[str, str]:
    site = doc.get("site")
    if not isinstance(site, dict) or not all(isinstance(site.get(k), str)
                                             for k in ("collector_id", "audit_key")):
        raise JoinError("join bundle: 'site' missing or malformed")
    return {"collector_id": site["collector_id"], "audit_key": site["audit_key"]}


def _schema(doc: dict[str, Any]) -> int:
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise JoinError("join bundle: 'schema_version' missing or not a number")
    return version


def _own_id(doc: dict[str, Any], collector_id: str) -> str:
    if doc.get("collector_id") != collector_id:
        raise JoinError(f"join bundle: made for collector {doc.get('collector_id')!r}, this is "
                        f"{collector_id!r}")
    return collector_id


# --------------------------------------------------------------------------- the database

def check_site(stored: dict[str, Any] | None, site: dict[str, str],
               signer: Ed25519PrivateKey) -> None:
    """The database this collector reaches is the signing collector's: the signer's own
    identity is stored there with the same key, endorsed by the anchor in the bundle.
    stored: store.agent_identity(site's id)."""
    where = "database_url"
    if stored is None:
        raise JoinError(f"{where}: the database holds no collector {site['collector_id']!r}: "
                        f"this is not the database of the collector that signed the bundle")
    if stored.get("public_key") != site["audit_key"]:
        raise JoinError(f"{where}: collector {site['collector_id']!r} has another key in this "
                        f"database than in the bundle: not the same site's database")
    if anchor.check_endorsement(signer.public_key(), stored) != anchor.VALID:
        raise JoinError(f"{where}: collector {site['collector_id']!r} is not endorsed by the "
                        f"bundle's anchor in this database: not the same site")


def derived_id(host_based: str, audit_key: Ed25519PrivateKey) -> str:
    """A new collector's id when the config sets none: the host's usual id with 8 hex digits of
    its audit key, so two collectors on one host name never share an id."""
    tag = hashlib.sha256(base64.b64decode(public_key_b64(audit_key))).hexdigest()[:8]
    return f"{host_based[:64 - 9]}-{tag}"
