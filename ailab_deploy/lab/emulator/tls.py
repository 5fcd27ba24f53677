"""The lab's self-signed certificate, made at first start; clients pin its SHA-256 fingerprint."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_FILE = "pve-ssl.pem"
KEY_FILE = "pve-ssl.key"
FINGERPRINT_FILE = "fingerprint"


def fingerprint_of(pem: bytes) -> str:
    """SHA-256 fingerprint as PVE shows it: ``AB:CD:...`` (upper-case hex pairs)."""
    cert = x509.load_pem_x509_certificate(pem)
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def ensure_certificate(tls_dir: Path, node: str = "pve") -> tuple[Path, Path, str]:
    """Return (cert, key, fingerprint), creating them on first use."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = tls_dir / CERT_FILE, tls_dir / KEY_FILE
    if not (cert_path.exists() and key_path.exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ailab-deploy lab"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{node}.lab.local"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName(node),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            # a self-signed CA, so that clients can trust it as a CA file (verify=<path>)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fingerprint = fingerprint_of(cert_path.read_bytes())
    (tls_dir / FINGERPRINT_FILE).write_text(fingerprint + "\n")
    return cert_path, key_path, fingerprint
