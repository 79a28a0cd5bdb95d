"""deploy/certificates/generate.py: keys in the formats Flower reads, a certificate chain that verifies,
private keys readable by their owner only, and nothing overwritten unless asked."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "certificates" / "generate.py"
spec = importlib.util.spec_from_file_location("generate", SCRIPT)
generate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generate)


def test_coordinator_files_chain_to_the_ca_with_the_requested_names(tmp_path: Path) -> None:
    paths = generate.create_coordinator(tmp_path, "Test consortium", ["superlink.example.org", "10.0.0.5"])
    ca = x509.load_pem_x509_certificate(paths["ca_cert"].read_bytes())
    server = x509.load_pem_x509_certificate(paths["server_cert"].read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["superlink.example.org"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert paths["server_ca"].read_bytes() == paths["ca_cert"].read_bytes()
    for key in ("ca_key", "server_key"):
        assert stat.S_IMODE(paths[key].stat().st_mode) == 0o600


def test_site_keys_are_what_flower_reads(tmp_path: Path) -> None:
    paths = generate.create_site(tmp_path, "st-olav")
    assert paths["private_key"].parent == tmp_path / "sites" / "st-olav"
    private = load_ssh_private_key(paths["private_key"].read_bytes(), None)  # what flower-supernode does
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert try_load_public_key(paths["public_key"])  # what `flwr supernode register` does
    assert stat.S_IMODE(paths["private_key"].stat().st_mode) == 0o600


def test_existing_keys_are_kept_unless_forced(tmp_path: Path, capsys) -> None:
    first = generate.create_site(tmp_path, "north")["private_key"].read_bytes()
    assert generate.main(["site", "--out", str(tmp_path), "--site-id", "north"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert (tmp_path / "sites" / "north" / "node_key").read_bytes() == first
    assert generate.main(["site", "--out", str(tmp_path), "--site-id", "north", "--force"]) == 0
    assert (tmp_path / "sites" / "north" / "node_key").read_bytes() != first


def test_bad_site_ids_are_refused_with_the_rule() -> None:
    with pytest.raises(ValueError, match="lowercase letters"):
        generate.create_site(Path("/nonexistent"), "St Olav")
