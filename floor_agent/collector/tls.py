"""The collector's own small CA and its server certificate.

The floor is offline and has no public PKI, so the collector makes a CA of its own at
`floor-agent collector init`; agents pin that CA (they are given the CA file with their
enrollment token), so nobody on the LAN can stand in for the collector.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class JoinedCollectorError(RuntimeError):
    """A CA operation asked of a collector that joined a site (it has the CA certificate but
    never the CA key): making a new CA there would fork the site's trust."""


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_dir(cls, state_dir: Path) -> TlsFiles:
        tls = Path(state_dir) / "tls"
        return cls(tls / "ca.pem", tls / "ca.key", tls / "server.pem", tls / "server.key")

    def exist(self) -> bool:
        return all(p.exists() for p in (self.ca_cert, self.server_cert, self.server_key))


# TLS 1.2 only with forward secrecy and an AEAD cipher (no CBC, no RSA key exchange); TLS 1.3's
# suites are all AEAD and are not affected by this string.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The listener's TLS: 1.2 with ECDHE AEAD suites or 1.3, no compression, no renegotiation."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                        | ssl.OP_NO_RENEGOTIATION)
    context.load_cert_chain(str(files.server_cert), str(files.server_key))
    return context


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write with `mode` from the start; the tls directory is 0700 (it holds the CA key)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def create(files: TlsFiles, server_names: list[str], organisation: str = "floor-agent",
           days: int = 3650, force: bool = False) -> None:
    """Make the CA (unless it exists) and a fresh server certificate for server_names."""
    now = datetime.now(UTC)
    if not force and files.ca_cert.exists() and not files.ca_key.exists():
        raise JoinedCollectorError(
            f"{files.ca_cert.parent}: this collector joined a site and holds no CA key; its "
            f"certificate is renewed by the site's first collector: 'floor-agent collector "
            f"join-request' here, 'sign-collector' there, then 'join' (docs/ADMIN.md)")
    if force or not files.ca_cert.exists() or not files.ca_key.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                             x509.NameAttribute(NameOID.COMMON_NAME, "floor-agent collector CA")])
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(files.ca_key, _key_pem(ca_key), 0o600)
        _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    ca_key_loaded = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
    assert isinstance(ca_key_loaded, ec.EllipticCurvePrivateKey)
    ca_cert_loaded = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = server_certificate(key.public_key(), server_names, ca_cert_loaded, ca_key_loaded, now)
    _write(files.server_key, _key_pem(key), 0o600)
    _write(files.server_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def server_certificate(public_key: ec.EllipticCurvePublicKey, server_names: list[str],
                       ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                       now: datetime, days: int = 825) -> x509.Certificate:
    """A collector's server certificate for server_names, signed by the site's CA: the first
    collector's own (create) and a joining collector's, from its request (collector/join.py).
    Never past the CA's own end."""
    not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_names[0])]))
        .issuer_name(ca_cert.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(not_after)
        .add_extension(san(server_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def write_pem(path: Path, data: bytes, private: bool) -> None:
    """A certificate (0644) or key (0600) in the tls directory (0700)."""
    _write(path, data, 0o600 if private else 0o644)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return _key_pem(key)


def fingerprint(cert_path: Path) -> str:
    """SHA-256 of the DER certificate, for admins to compare by eye when handing out the CA."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return "sha256:" + digest
