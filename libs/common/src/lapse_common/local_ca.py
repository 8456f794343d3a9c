"""`python -m lapse_common.local_ca DIR [--host NAME ...]`: the certificates of a local or demo
installation's gRPC ports.

DIR/ca.crt is the local CA (what clients trust: LAPSE_GRPC_TLS_CAFILE), DIR/ca.key its key,
DIR/server.crt and DIR/server.key the certificate every gRPC service presents
(LAPSE_GRPC_TLS_CERTFILE, LAPSE_GRPC_TLS_KEYFILE), valid for 127.0.0.1 and localhost plus
each --host. Made with the `cryptography` package, so no openssl command line is involved.
What exists is kept, so clients keep trusting the CA across restarts; the server certificate
is remade when it no longer fits (another CA, expiring within 30 days, a host missing).
Private keys are written 0600.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lapse_common.private_files import write_private_file

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
CA_LIFETIME = timedelta(days=3650)
# The longest lifetime clients such as browsers and Go's crypto/tls still accept.
SERVER_LIFETIME = timedelta(days=825)
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class LocalCertificates:
    cafile: Path
    certfile: Path
    keyfile: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: supported by every gRPC TLS stack and quick to make (tests make one per stack).
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    write_private_file(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _write_certificate(path: Path, certificate: x509.Certificate) -> None:
    # A certificate is public; written whole and then renamed, like the keys.
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    staged.chmod(0o644)
    staged.replace(path)


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _load_ca(cafile: Path, cakey: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    certificate = x509.load_pem_x509_certificate(cafile.read_bytes())
    key = serialization.load_pem_private_key(cakey.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"{cakey}: not an EC private key (was it made by lapse_common.local_ca?)")
    return certificate, key


def ensure_ca(directory: Path, *, now: datetime | None = None) -> tuple[Path, Path]:
    """The CA certificate and key in `directory`, made if missing or expiring."""
    now = now or datetime.now(UTC)
    cafile, cakey = directory / "ca.crt", directory / "ca.key"
    if cafile.exists() and cakey.exists():
        certificate, _ = _load_ca(cafile, cakey)
        if certificate.not_valid_after_utc - RENEW_BEFORE > now:
            return cafile, cakey
    directory.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lapse local gRPC CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(cakey, key)
    _write_certificate(cafile, certificate)
    return cafile, cakey


def _server_certificate_problem(
    certfile: Path,
    keyfile: Path,
    ca: x509.Certificate,
    hosts: tuple[str, ...],
    now: datetime,
) -> str:
    """Why the server certificate must be remade, or "" if it is fine."""
    if not (certfile.exists() and keyfile.exists()):
        return "missing"
    certificate = x509.load_pem_x509_certificate(certfile.read_bytes())
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by the current CA"
    if certificate.not_valid_after_utc - RENEW_BEFORE <= now:
        return "expiring"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if not all(_san_entry(host) in names for host in hosts):
        return "a host is missing"
    key = serialization.load_pem_private_key(keyfile.read_bytes(), password=None)
    if key.public_key() != certificate.public_key():
        return "the key does not match"
    return ""


def ensure_local_certificates(
    directory: Path, *, hosts: tuple[str, ...] = (), now: datetime | None = None
) -> LocalCertificates:
    """The CA and a server certificate for 127.0.0.1, localhost and `hosts` in `directory`."""
    now = now or datetime.now(UTC)
    every_host = tuple(dict.fromkeys((*DEFAULT_HOSTS, *hosts)))
    cafile, cakey = ensure_ca(directory, now=now)
    ca, ca_key = _load_ca(cafile, cakey)
    certfile, keyfile = directory / "server.crt", directory / "server.key"
    if _server_certificate_problem(certfile, keyfile, ca, every_host, now):
        key = _new_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lapse-grpc-server")]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(min(now + SERVER_LIFETIME, ca.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([_san_entry(host) for host in every_host]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(keyfile, key)
        _write_certificate(certfile, certificate)
    return LocalCertificates(cafile=cafile, certfile=certfile, keyfile=keyfile)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lapse_common.local_ca",
        description="Make (or keep) the local CA and the gRPC services' server certificate.",
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="another DNS name or IP address the services are reached by (repeatable)",
    )
    arguments = parser.parse_args(argv)
    made = ensure_local_certificates(arguments.directory, hosts=tuple(arguments.host))
    print(f"LAPSE_GRPC_TLS_CAFILE={made.cafile}")
    print(f"LAPSE_GRPC_TLS_CERTFILE={made.certfile}")
    print(f"LAPSE_GRPC_TLS_KEYFILE={made.keyfile}")


if __name__ == "__main__":
    main()
