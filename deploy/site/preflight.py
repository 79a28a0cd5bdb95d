"""A hospital's check before its SuperNode joins: site config, key pair, CA file, and a TLS handshake.

flower-supernode reports a wrong CA as a bare SSL error and an unregistered key as "Failed to activate
SuperNode"; this script says which file is wrong and what to do, before anything connects for real.
Exit status 0 when every check passes, 1 otherwise (one line per problem on stderr).

    python deploy/site/preflight.py --superlink coordinator.example.org:9092 \
        --root-certificates ca.crt --private-key node_key --site-config site.toml
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import socket
import ssl
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

NIST_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what `flwr supernode register` accepts


def check_private_key(path: Path) -> tuple[str | None, str | None]:
    """(problem, fingerprint of the public key) for a SuperNode key in OpenSSH format."""
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        return f"private key {path}: file not found; create it with deploy/certificates/generate.py site", None
    except (ValueError, TypeError) as error:
        return (f"private key {path}: not an unencrypted OpenSSH private key ({error}); create it with "
                f"deploy/certificates/generate.py site"), None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in NIST_CURVES:
        return f"private key {path}: Flower needs an ECDSA key on a NIST curve (P-384 recommended)", None
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    digest = hashlib.sha256(base64.b64decode(public.split()[1])).digest()
    return None, "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def check_ca(path: Path) -> str | None:
    try:
        x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        return f"CA certificate {path}: file not found; ask the coordinator for the consortium's ca.crt"
    except ValueError as error:
        return f"CA certificate {path}: not a PEM certificate ({error}); ask the coordinator for ca.crt"
    return None


def check_tls(superlink: str, ca_path: Path, timeout: float, wait_s: float = 0.0) -> str | None:
    """Connect as flower-supernode will, verifying the SuperLink's certificate against the CA file.

    An unreachable SuperLink is retried for `wait_s` seconds (a coordinator still starting); a certificate
    problem is reported at once.
    """
    deadline = time.monotonic() + wait_s
    while (problem := _handshake(superlink, ca_path, timeout)) and problem.startswith("cannot reach"):
        if time.monotonic() >= deadline:
            break
        time.sleep(2.0)
    return problem


def _handshake(superlink: str, ca_path: Path, timeout: float) -> str | None:
    host, _, port = superlink.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        return f"--superlink '{superlink}': expected host:port"
    context = ssl.create_default_context(cafile=str(ca_path))
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as error:
        if "hostname" in str(error.verify_message).lower() or "IP address mismatch" in str(error.verify_message):
            return (f"the SuperLink's certificate is not valid for '{host}' ({error.verify_message}); connect with "
                    f"the name the coordinator gave you, or ask it to add '{host}' to the certificate (--san)")
        return (f"the SuperLink at {superlink} presented a certificate that {ca_path} does not vouch for "
                f"({error.verify_message}): this is the wrong CA file for this consortium. Get the consortium's "
                f"ca.crt from the coordinator again; never switch to --insecure")
    except ssl.SSLError as error:
        return f"TLS with {superlink} failed ({error.reason}); is the SuperLink running with TLS on that port?"
    except OSError as error:
        return f"cannot reach the SuperLink at {superlink} ({error}); check the address and the firewall"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--superlink", required=True, help="the SuperLink's host:port, as flower-supernode gets it")
    parser.add_argument("--root-certificates", type=Path, required=True, help="the consortium's ca.crt")
    parser.add_argument("--private-key", type=Path, required=True, help="this site's node_key")
    parser.add_argument("--site-config", type=Path, help="this site's site.toml (checked when given)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for one connection attempt")
    parser.add_argument("--wait-s", type=float, default=0.0,
                        help="keep retrying an unreachable SuperLink this long (a coordinator still starting)")
    args = parser.parse_args(argv)
    problems = []
    if args.site_config is not None:
        from shared.site_config import SiteConfig, SiteConfigError  # the project's own validation, when installed
        try:
            SiteConfig.from_file(args.site_config)
        except SiteConfigError as error:
            problems.append(str(error))
    key_problem, fingerprint = check_private_key(args.private_key)
    problems += [key_problem] if key_problem else []
    ca_problem = check_ca(args.root_certificates)
    problems += [ca_problem] if ca_problem else []
    if ca_problem is None:
        tls_problem = check_tls(args.superlink, args.root_certificates, args.timeout, args.wait_s)
        problems += [tls_problem] if tls_problem else []
    for problem in problems:
        print(f"preflight: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"preflight: ok; this site's public key fingerprint is {fingerprint} (the coordinator should see the "
          f"same one for the node_key.pub it registered)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
