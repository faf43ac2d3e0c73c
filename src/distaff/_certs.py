"""``distaff certs DIR --host NAME ...``: a CA, a worker and a client certificate.

Writes, in DIR (created if needed; existing files are never overwritten):

    ca.pem, ca-key.pem           the pool's certificate authority
    worker.pem, worker-key.pem   for ``distaff worker --ca --cert --key``; the
                                 --host names (DNS names or IPs) as SANs; good
                                 for client auth too, so workers can make
                                 nested calls under ``--mutual``
    client.pem, client-key.pem   for callers' ``WorkerCredentials.from_files``
    token                        a random bearer token for ``--token-file``

Private keys are written readable by the owner only.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import pathlib
import secrets
import sys
from typing import Any

FILES = (
    "ca.pem",
    "ca-key.pem",
    "worker.pem",
    "worker-key.pem",
    "client.pem",
    "client-key.pem",
    "token",
)


def add_certs_command(commands: Any) -> None:
    """Register ``certs`` on the CLI's subcommands."""
    certs = commands.add_parser(
        "certs",
        help="make a CA, a worker certificate and a client certificate",
        description=(
            "Write a certificate authority, a worker certificate/key naming every --host "
            "(DNS names or IP addresses, as subject alternative names), a client "
            "certificate/key and a bearer token into DIR, ready for "
            "`distaff worker --ca DIR/ca.pem --cert DIR/worker.pem --key DIR/worker-key.pem "
            "--mutual` and WorkerCredentials.from_files(DIR/ca.pem, DIR/client.pem, "
            "DIR/client-key.pem, mutual=True). Existing files are not overwritten."
        ),
    )
    certs.add_argument("dir", metavar="DIR", help="directory to write into")
    certs.add_argument(
        "--host",
        action="append",
        required=True,
        metavar="NAME",
        help="a name or IP callers dial workers by (repeatable; e.g. the Service name)",
    )
    certs.add_argument("--days", type=int, default=365, help="validity in days (default 365)")


def run_certs(args: argparse.Namespace) -> int:
    """Write the files; return the exit status (2 on bad input)."""
    try:
        written = write_certs(pathlib.Path(args.dir), args.host, days=args.days)
    except (ValueError, FileExistsError) as exc:
        print(f"distaff certs: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def write_certs(
    directory: pathlib.Path, hosts: list[str], *, days: int = 365
) -> list[pathlib.Path]:
    """Make the CA, worker and client certificates and the token in ``directory``.

    Raises:
        ValueError: no host, a bad host name, or ``days`` < 1.
        FileExistsError: one of the files already exists (nothing is written).
        ImportError: ``cryptography`` is missing (``pip install 'distaff[certs]'``).
    """
    if not hosts:
        raise ValueError("give at least one --host")
    if days < 1:
        raise ValueError(f"--days must be at least 1, not {days}")
    sans = [_san(host) for host in hosts]
    paths = [directory / name for name in FILES]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite {', '.join(existing)}")
    pem = _make(sans, hosts[0], days)
    directory.mkdir(parents=True, exist_ok=True)
    for path, data in zip(paths, pem, strict=True):
        _write(path, data, private=path.name.endswith("-key.pem") or path.name == "token")
    return paths


def _san(host: str) -> Any:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or not all(
        label and len(label) <= 63 and (label.replace("-", "").isalnum() or label == "*")
        for label in labels
    ):
        raise ValueError(f"--host {host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host)


def _make(sans: list[Any], first: str, days: int) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("distaff pool CA")

    def build(subject: x509.Name, key: Any, ca: bool) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )

    ca_cert = (
        build(ca_name, ca_key, True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    worker_key = ec.generate_private_key(ec.SECP256R1())
    server_and_client = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    worker_cert = (
        build(name(first), worker_key, False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(server_and_client), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = (
        build(name("distaff client"), client_key, False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def key_pem(key: Any) -> bytes:
        return key.private_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    token = secrets.token_urlsafe(32).encode() + b"\n"
    return [
        cert_pem(ca_cert),
        key_pem(ca_key),
        cert_pem(worker_cert),
        key_pem(worker_key),
        cert_pem(client_cert),
        key_pem(client_key),
        token,
    ]


def _write(path: pathlib.Path, data: bytes, *, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
