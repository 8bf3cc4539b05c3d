"""Debian's Chromium driven by Playwright, for the dashboard's browser tests and benchmark.

Pytest-independent (bench/dashboard.py uses it too). The browser is always /usr/bin/chromium:
Playwright is never allowed to download one (the floor is offline, and the tests must exercise
the browser the machine has). The collector's HTTPS is trusted by pinning its server key
(`--ignore-certificate-errors-spki-list`, the SHA-256 of the certificate's public key), not by
ignoring every certificate error: a page served under another key still fails to load.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

# Never fetch a browser: the pip package ships its driver, Debian ships the browser.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1366, "height": 768}
WALL = {"width": 1920, "height": 1080}
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def spki_pin(cert_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: what Chromium pins."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@contextmanager
def chromium(server_cert: Path) -> Iterator[Browser]:
    """Headless Debian Chromium that trusts exactly the collector's server key."""
    with sync_playwright() as pw:
        browser = launch(pw, server_cert)
        try:
            yield browser
        finally:
            browser.close()


def launch(pw: Playwright, server_cert: Path) -> Browser:
    args = [*BASE_ARGS, f"--ignore-certificate-errors-spki-list={spki_pin(server_cert)}"]
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


def new_context(browser: Browser, viewport: dict[str, int] | None = None,
                downloads: bool = False) -> BrowserContext:
    """A fresh profile (no cookies) at 1366x768 unless told otherwise."""
    return browser.new_context(viewport=viewport or DESKTOP, accept_downloads=downloads)
