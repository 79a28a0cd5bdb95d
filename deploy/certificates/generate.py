"""Keys and certificates for a consortium on Flower's deployment engine.

Three roles, three commands, so that every private key is created where it stays:

  coordinator  the consortium CA and the SuperLink's TLS certificate (run at the coordinator)
  site         one hospital's SuperNode key pair (run at the hospital; only the .pub file is sent out)
  demo         both, into one folder, for tests and the compose example on a single machine

Written with the `cryptography` package (a dependency of flwr): no openssl binary needed. Nothing is
ever overwritten unless --force is given: a replaced CA or site key locks every party out.

Layout written (all under --out):
  ca/ca.key, ca/ca.crt                         the CA; ca.key never leaves the coordinator's CA folder
  superlink/server.key, server.crt, ca.crt      the SuperLink's TLS identity and the CA it chains to
  sites/<site-id>/node_key, node_key.pub       a SuperNode's P-384 key pair (OpenSSH format, as Flower reads it)
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SANS = ("localhost", "127.0.0.1")
SITE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # the same rule as SiteConfig.site_id
CA_DAYS = 3650
SERVER_DAYS = 825


class RefusedToOverwrite(RuntimeError):
    """A key or certificate exists already; replacing it needs --force."""


def _write(path: Path, data: bytes, private: bool, force: bool) -> None:
    """Write atomically; private keys get mode 0600 from the start."""
    if path.exists() and not force:
        raise RefusedToOverwrite(f"{path} exists; keep it, or pass --force to replace it "
                                 f"(every party holding the old one must then be given the new one)")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _refuse_existing(paths: list[Path], force: bool) -> None:
    """Check every target before writing any, so a refused command leaves nothing half-written."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise RefusedToOverwrite(f"already exist: {', '.join(existing)}; keep them, or pass --force to replace "
                                 f"them (every party holding the old ones must then be given the new ones)")


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def create_coordinator(out: Path, consortium: str, sans: list[str], force: bool = False) -> dict[str, Path]:
    """The consortium CA and the SuperLink's TLS certificate (signed by it, with the given SANs)."""
    if not sans:
        raise ValueError("give at least one --san: the host names or IP addresses sites use to reach the SuperLink")
    paths = {"ca_key": out / "ca" / "ca.key", "ca_cert": out / "ca" / "ca.crt",
             "server_key": out / "superlink" / "server.key", "server_cert": out / "superlink" / "server.crt",
             "server_ca": out / "superlink" / "ca.crt"}
    _refuse_existing(list(paths.values()), force)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"{consortium} CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(_now()).not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA384()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium),
                                            x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
                   .issuer_name(ca_name).public_key(server_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(_now()).not_valid_after(_now() + datetime.timedelta(days=SERVER_DAYS))
                   .add_extension(x509.SubjectAlternativeName([_san_entry(n) for n in sans]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False)
                   .sign(ca_key, hashes.SHA384()))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    _write(paths["ca_key"], _pem_key(ca_key), private=True, force=force)
    _write(paths["ca_cert"], ca_pem, private=False, force=force)
    _write(paths["server_key"], _pem_key(server_key), private=True, force=force)
    _write(paths["server_cert"], server_cert.public_bytes(serialization.Encoding.PEM), private=False, force=force)
    _write(paths["server_ca"], ca_pem, private=False, force=force)
    return paths


def create_site(out: Path, site_id: str, force: bool = False) -> dict[str, Path]:
    """A SuperNode's ECDSA P-384 key pair in OpenSSH format (what flower-supernode and `flwr supernode register` read)."""
    if not SITE_ID.match(site_id):
        raise ValueError(f"site id '{site_id}' is not allowed: use 1-64 lowercase letters, digits, '-' or '_', "
                         f"the same id as site_id in the site's site.toml")
    folder = out / "sites" / site_id
    paths = {"private_key": folder / "node_key", "public_key": folder / "node_key.pub"}
    _refuse_existing(list(paths.values()), force)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(paths["private_key"], private, private=True, force=force)
    _write(paths["public_key"], public + f" {site_id}\n".encode(), private=False, force=force)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    coordinator = commands.add_parser("coordinator", help="the consortium CA and the SuperLink's TLS certificate")
    site = commands.add_parser("site", help="one hospital's SuperNode key pair")
    demo = commands.add_parser("demo", help="coordinator and several sites in one folder (tests, compose demo)")
    for command in (coordinator, site, demo):
        command.add_argument("--out", type=Path, required=True, help="folder to write into")
        command.add_argument("--force", action="store_true", help="replace existing keys and certificates")
    for command in (coordinator, demo):
        command.add_argument("--consortium", default="OncoFed consortium", help="organisation name in the CA")
        command.add_argument("--san", action="append", default=None,
                             help=f"a host name or IP address of the SuperLink (repeat; default: "
                                  f"{', '.join(DEFAULT_SANS)})")
    site.add_argument("--site-id", required=True, help="the site_id of the site's site.toml")
    demo.add_argument("--site-id", action="append", required=True, help="a site id (repeat)")
    args = parser.parse_args(argv)
    try:
        if args.command in ("coordinator", "demo"):
            written = create_coordinator(args.out, args.consortium, args.san or list(DEFAULT_SANS), args.force)
            print(f"CA and SuperLink certificate in {args.out}: keep {written['ca_key']} offline; "
                  f"give {written['ca_cert']} to every site")
        site_ids = [args.site_id] if args.command == "site" else (args.site_id if args.command == "demo" else [])
        for site_id in site_ids:
            written = create_site(args.out, site_id, args.force)
            print(f"site {site_id}: private key {written['private_key']} stays at the site; "
                  f"send {written['public_key']} to the coordinator")
    except (RefusedToOverwrite, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
