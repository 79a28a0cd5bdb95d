"""Flower's deployment engine for real: a SuperLink with TLS and SuperNode authentication, three SuperNodes as
separate processes on 127.0.0.1, `flwr run`, and the faults a consortium meets (an unregistered node, a wrong
CA, a site dropping mid-run, the coordinator killed and restarted).

The tests share one consortium and run in file order: one federation with a site killed after round 1, then
one with the coordinator killed after round 1 and resumed. A fourth site (delta) approved only another version of
the app, so it refuses every message before its data is opened; alpha approved exactly the submitted app. Each
site's audit log is checked after the first federation. Every ClientApp message starts a fresh Python that
imports torch (Flower's subprocess isolation), so each federation is kept to two rounds on tiny sites.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys

import pytest

from client.flower.outbox import ERROR_APP_NOT_APPROVED
from client.governance.approval import app_hash
from client.governance.audit import AUDIT_FILE, verify
from shared.config import RunConfig
from tests.deploy.harness import GENERATE, PREFLIGHT, REPO, Consortium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SITES = ("alpha", "beta", "gamma")
UNAPPROVED = "delta"  # approved an earlier version of the app only; its site.toml names a data file that is absent
EARLIER_VERSION = "0123456789abcdef" * 4
# a dead SuperNode is declared unavailable by the SuperLink after ~60 s; one Newton step of the recalibration
# (default 6): each step is one more exchange, a fresh ClientApp process per site, and one shows it goes through
RUN = {"num-rounds": 2, "hidden-size": 16, "local-epochs": 1, "bootstrap-samples": 20, "min-sites": 2,
       "round-timeout-s": 150.0, "recalibration-iterations": 1}
FEDERATION_TIMEOUT_S = 540  # generous: a loaded 2-core machine took ~200 s a round


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    consortium = Consortium(tmp_path_factory.mktemp("consortium"))
    submitted = app_hash(REPO)  # what `flwr run` will submit; alpha approves exactly this version
    site_configs = {site_id: consortium.make_site(site_id, seed,
                                                  approved_apps=[submitted] if site_id == "alpha" else None)
                    for seed, site_id in enumerate(SITES)}
    site_configs[UNAPPROVED] = consortium.make_site(UNAPPROVED, 9, approved_apps=[EARLIER_VERSION],
                                                    data_file="absent.csv")
    try:
        consortium.start_with_registered_sites(list(site_configs))
        for site_id, site_config in site_configs.items():
            consortium.start_site(site_id, site_config)
        consortium.wait_for(lambda: consortium.online_nodes() == len(site_configs), 120, "four SuperNodes online")
        yield consortium
    finally:
        consortium.stop_all()


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_unregistered_node_is_refused(consortium):
    outsider = consortium.root / "outsider"
    subprocess.run([sys.executable, str(GENERATE), "site", "--out", str(outsider), "--site-id", "outsider"],
                   check=True, capture_output=True)
    node = consortium.start_supernode("outsider", outsider / "sites" / "outsider" / "node_key",
                                      consortium.certs / "superlink" / "ca.crt", extra=("--max-retries", "1"))
    try:
        node.popen.wait(timeout=120)
    finally:
        node.kill()
    log = node.log.read_text(errors="replace")
    assert node.popen.returncode != 0, node.tail()
    assert "Failed to activate SuperNode" in log, node.tail()
    superlink_log = consortium.processes["superlink"].log.read_text(errors="replace")
    assert "No SuperNode found with the given public key" in superlink_log
    assert consortium.online_nodes() == len(SITES) + 1


def test_a_node_with_the_wrong_ca_fails_with_a_clear_error(consortium):
    other = consortium.root / "other-consortium"
    subprocess.run([sys.executable, str(GENERATE), "coordinator", "--out", str(other)], check=True,
                   capture_output=True)
    alpha = consortium.certs / "sites" / "alpha"
    check = subprocess.run([sys.executable, str(PREFLIGHT), "--superlink", f"127.0.0.1:{consortium.port}",
                            "--root-certificates", str(other / "ca" / "ca.crt"), "--private-key",
                            str(alpha / "node_key")], capture_output=True, text=True, env=consortium.env)
    assert check.returncode == 1
    assert "this is the wrong CA file for this consortium" in check.stderr, check.stderr
    assert "Get the consortium's ca.crt from the coordinator" in check.stderr
    right = subprocess.run([sys.executable, str(PREFLIGHT), "--superlink", f"127.0.0.1:{consortium.port}",
                            "--root-certificates", str(consortium.certs / "ca" / "ca.crt"), "--private-key",
                            str(alpha / "node_key"), "--site-config",
                            str(consortium.root / "sites" / "alpha" / "site.toml")],
                           capture_output=True, text=True, env=consortium.env)
    assert right.returncode == 0, right.stderr
    assert "fingerprint is SHA256:" in right.stdout
    node = consortium.start_supernode("wrong-ca", alpha / "node_key", other / "ca" / "ca.crt",
                                      extra=("--max-retries", "1"))
    try:
        node.popen.wait(timeout=120)
    finally:
        node.kill()
    assert node.popen.returncode != 0, node.tail()
    assert "CERTIFICATE_VERIFY_FAILED" in node.log.read_text(errors="replace"), node.tail()


def test_a_site_killed_mid_run_is_recorded_missing_and_the_run_completes(consortium):
    run_dir = consortium.runs / "site-drop"
    run_id = consortium.submit({**RUN, "output-dir": str(consortium.runs), "run-name": "site-drop"})
    consortium.wait_for(lambda: (run_dir / "checkpoints" / "round_001.pt").is_file(), FEDERATION_TIMEOUT_S,
                        "round 1's checkpoint", run_id)
    consortium.processes["gamma"].kill()
    consortium.wait_for(lambda: (run_dir / "consortium_report.html").is_file(), FEDERATION_TIMEOUT_S,
                        "the consortium report", run_id)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    first, second = metrics["rounds"]
    assert (first["round"], second["round"]) == (1, 2)
    assert set(first["train"]) == set(SITES)
    (unapproved_node, refusal), = first["missing"].items()  # delta: a node the coordinator knows by number only
    assert unapproved_node.startswith("node-") and f"has not approved app {app_hash(REPO)}" in refusal, refusal
    assert set(second["train"]) == {"alpha", "beta"}
    assert set(second["missing"]) == {"gamma", unapproved_node}, second["missing"]  # by name, whoever reported
    assert set(metrics["test_missing"]) == {"gamma", unapproved_node} and set(metrics["test"]) == {"alpha", "beta"}
    for site_id in ("alpha", "beta"):
        assert (consortium.root / "sites" / site_id / "state" / "report.html").is_file()
        assert (consortium.root / "sites" / site_id / "state" / "privacy_ledger.json").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("round_*.pt")) == ["round_001.pt", "round_002.pt"]
    _check_audit_logs(consortium, run_id, metrics)
    # provenance: the ServerApp, loaded from the SuperLink's copy of the app, hashes it as submitted; each site that
    # sent statistics sent its fingerprint, and its audit log holds the same one
    provenance = metrics["provenance"]
    assert provenance["app_sha256"] == app_hash(REPO) and set(provenance["data_fingerprints"]) == set(SITES)
    for site_id in ("alpha", "beta"):
        log = verify(consortium.root / "sites" / site_id / "state" / AUDIT_FILE)
        announced = [e["data_fingerprint"] for e in log.entries if e["run"] == run_id and "data_fingerprint" in e]
        assert announced == [provenance["data_fingerprints"][site_id]]
    card = subprocess.run([sys.executable, "-m", "server.model_card", str(run_dir)], capture_output=True, text=True,
                          cwd=REPO)
    assert card.returncode == 0, card.stderr
    assert provenance["data_fingerprints"]["alpha"] in (run_dir / "model_card.md").read_text()


def _check_audit_logs(consortium: Consortium, run_id: int, metrics: dict) -> None:
    """Every site's log verifies and holds what the coordinator asked and what the site answered."""
    submitted = app_hash(REPO)
    for site_id in ("alpha", "beta"):
        log = consortium.root / "sites" / site_id / "state" / AUDIT_FILE
        checked = subprocess.run([sys.executable, "-m", "client.governance.audit", "verify", str(log)], capture_output=True,
                                 text=True, cwd=REPO)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        entries = [e for e in verify(log).entries if e["run"] == run_id]
        instructions = [e for e in entries if e["kind"] == "instruction"]
        recalibration = ["evaluate.recalibration"] * RunConfig.from_mapping(metrics["config"]).recalibration_iterations
        assert sorted(e["message_type"] for e in instructions) == sorted(
            ["query.feature_summary", "train", "train", "evaluate", "evaluate", "evaluate", *recalibration])
        assert {e["app_sha256"] for e in instructions} == {submitted}  # the installed app hashes as submitted
        assert [e["kind"] for e in entries].count("reply") == len(instructions)  # each answered, none refused
        training = [e for e in entries if e["kind"] == "reply" and e["message_type"] == "train"]
        assert [e["epsilon"] for e in training] == [r["train"][site_id]["epsilon"] for r in metrics["rounds"]]
        assert all(e["records"]["arrays"]["values"] > 0 and "metrics" in e["records"] for e in training)
        assert '<section id="audit">' in (log.parent / "report.html").read_text()
    # a copy of a real log with one entry changed: `oncofed-audit verify` names it and exits 1
    lines = (consortium.root / "sites" / "alpha" / "state" / AUDIT_FILE).read_text().splitlines(keepends=True)
    changed = next(i for i, line in enumerate(lines) if f'"run":{run_id}' in line)
    lines[changed] = lines[changed].replace(f'"run":{run_id}', f'"run":{run_id + 1}', 1)
    tampered = consortium.root / "tampered_audit.jsonl"
    tampered.write_text("".join(lines))
    checked = subprocess.run([sys.executable, "-m", "client.governance.audit", "verify", str(tampered)],
                             capture_output=True, text=True, cwd=REPO)
    assert checked.returncode == 1 and f"line {changed + 1}:" in checked.stdout + checked.stderr, checked
    gamma = verify(consortium.root / "sites" / "gamma" / "state" / AUDIT_FILE)  # killed mid-run: a crash
    assert gamma.ok or gamma.torn_tail, gamma.problem
    assert any(e["kind"] == "reply" and e["message_type"] == "train" for e in gamma.entries)
    delta_state = consortium.root / "sites" / UNAPPROVED / "state"
    delta = verify(delta_state / AUDIT_FILE)
    assert delta.ok, delta.problem
    refused = [e for e in delta.entries if e["run"] == run_id and e["kind"] != "instruction"]
    assert refused and all(e["kind"] == "refusal" and e["code"] == ERROR_APP_NOT_APPROVED for e in refused)
    assert all(submitted in e["reason"] for e in refused)
    # nothing was read or written but the log: its data file does not even exist, and it kept no ledger or report
    assert sorted(p.name for p in delta_state.iterdir()) == [AUDIT_FILE]
    assert not (delta_state.parent / "absent.csv").exists()


def test_a_killed_coordinator_resumes_from_its_last_checkpoint(consortium):
    run_dir = consortium.runs / "coordinator-restart"
    # without DP: the first federation spent these sites' budgets as planned (so a DP run would be refused,
    # which tests/test_privacy_budget.py covers); this test is about the coordinator's restart
    config = {**RUN, "output-dir": str(consortium.runs), "run-name": "coordinator-restart", "dp": False,
              "site-reports": False, "recalibrate-response": False}  # the test above checks reports, recalibration
    run_id = consortium.submit(config)
    checkpoint = run_dir / "checkpoints" / "round_001.pt"
    consortium.wait_for(checkpoint.is_file, FEDERATION_TIMEOUT_S, "round 1's checkpoint", run_id)
    consortium.processes["superlink"].kill(signal.SIGKILL)  # the SuperLink, its SuperExec and the ServerApp
    completed = sorted(p.name for p in (run_dir / "checkpoints").glob("round_*.pt"))
    digests = {name: _digest(run_dir / "checkpoints" / name) for name in completed}
    assert not (run_dir / "metrics.json").exists()

    consortium.start_superlink()  # same database: the registered sites are still known
    consortium.wait_for(lambda: consortium.online_nodes() >= 2, 180, "the SuperNodes to reconnect")
    resumed_id = consortium.submit({**config, "resume-from": str(run_dir)})
    consortium.wait_for(lambda: (run_dir / "consortium_report.html").is_file(), FEDERATION_TIMEOUT_S,
                        "the resumed run's consortium report", resumed_id)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [record["round"] for record in metrics["rounds"]] == [1, 2]  # none repeated, none lost
    assert {name: _digest(run_dir / "checkpoints" / name) for name in completed} == digests
    assert (run_dir / "checkpoints" / "round_002.pt").is_file()
    assert f"resuming {run_dir} after round {len(completed)}" in consortium.run_log(resumed_id)
