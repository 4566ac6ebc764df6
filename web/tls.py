"""HTTPS for the web server: the operator's certificate, or a self-signed one for localhost."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from config import Settings

log = logging.getLogger(__name__)

SELF_SIGNED_VALIDITY = dt.timedelta(days=365)


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """None for plain HTTP: an http redirect URI, or an https one whose TLS a trusted proxy terminates."""
    if not settings.serves_https or settings.behind_tls_proxy:
        return None
    if settings.tls_cert_file and settings.tls_key_file:
        cert, key = settings.tls_cert_file, settings.tls_key_file
    else:
        cert, key = ensure_self_signed(settings.data_dir / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def ensure_self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost under `folder`, made once and reused until it nears expiry."""
    cert_path, key_path = folder / "localhost.crt", folder / "localhost.key"
    if cert_path.is_file() and key_path.is_file():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc - dt.timedelta(days=7) > dt.datetime.now(dt.UTC):
            log.warning("tls.self_signed_reused path=%s: browsers will warn about it", cert_path)
            return cert_path, key_path
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + SELF_SIGNED_VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.warning("tls.self_signed_created path=%s: browsers will warn about it", cert_path)
    return cert_path, key_path
