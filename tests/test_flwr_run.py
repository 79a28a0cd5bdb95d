"""`flwr run .` as the README gives it: a local simulation SuperLink federates as many sites as
`--federation-config "num-supernodes=N"` says, and too few SuperNodes for the cohort's sites stop the run
with a reason naming the sites left out.

The SuperLink is started the way flwr 1.42's `local` connection starts one (flwr/cli/local_superlink.py:
`flower-superlink --insecure --simulation --isolation subprocess`), but on free ports and with its own
FLWR_HOME, so the test neither uses nor disturbs a SuperLink or a ~/.flwr/config.toml of the user.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.harness import BIN, CONNECTION, REPO, Consortium, free_port
from tests.factories import patient_table

pytestmark = pytest.mark.slow

SITES = ("site_a", "site_b", "site_c")
RUN_CONFIG = {"num-rounds": 1, "local-epochs": 1, "hidden-size": 16, "survival-interval-days": 180,
              "bootstrap-samples": 20, "site-reports": False, "round-timeout-s": 300, "target-epsilon": 8.0}


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def local_superlink(tmp_path_factory):
    """A simulation SuperLink on 127.0.0.1, a connection to it in a private FLWR_HOME, a 3-site cohort."""
    consortium = Consortium(tmp_path_factory.mktemp("flwr-run"))
    (consortium.home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{consortium.port}"\ninsecure = true\n')
    cohort = consortium.root / "cohort"
    for index, site in enumerate(SITES):
        (cohort / site).mkdir(parents=True)
        patient_table(90, seed=index, site=site).to_csv(cohort / site / "patients.csv", index=False)
    superlink = consortium.start("superlink", [
        str(BIN / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
        "--disable-runtime-dependency-installation", "--database", str(consortium.root / "state.db"),
        "--control-api-address", f"127.0.0.1:{free_port()}", "--fleet-api-address", f"127.0.0.1:{free_port()}",
        "--host", "127.0.0.1", "--port", str(consortium.port)])
    try:
        consortium.wait_for(lambda: _healthy(consortium.port) or superlink.popen.poll() is not None, 90,
                            "the local SuperLink to answer /health")
        assert superlink.popen.poll() is None, superlink.tail()
        yield consortium, cohort
    finally:
        consortium.stop_all()


def flwr_run(consortium: Consortium, cohort: Path, supernodes: int) -> int:
    """The README's command, with the test's cohort and output folder; the run id."""
    values = {**RUN_CONFIG, "data-dir": str(cohort), "output-dir": str(consortium.runs)}
    config = " ".join(f"{k}='{v}'" if isinstance(v, str) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                      for k, v in values.items())
    result = consortium.flwr("run", str(REPO), CONNECTION, "--federation-config", f"num-supernodes={supernodes}",
                             "--run-config", config, "--format", "json", timeout=300)
    assert result.returncode == 0, f"flwr run failed:\n{result.stdout}\n{result.stderr}\n{consortium.report()}"
    return int(json.loads(result.stdout)["run-id"])


def wait_until_finished(consortium: Consortium, run_id: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not (status := consortium.run_status(run_id)).startswith("finished"):
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} is '{status}' after {timeout:.0f} s\n{consortium.run_log(run_id)}\n"
                                 f"{consortium.report()}")
        time.sleep(2.0)
    return status


def test_flwr_run_federates_the_number_of_sites_given_by_num_supernodes(local_superlink):
    consortium, cohort = local_superlink
    run_id = flwr_run(consortium, cohort, supernodes=len(SITES))
    status = wait_until_finished(consortium, run_id, timeout=900)
    metrics_path = consortium.runs / f"run-{run_id}" / "metrics.json"
    assert status == "finished:completed" and metrics_path.is_file(), consortium.run_log(run_id)
    metrics = json.loads(metrics_path.read_text())
    assert sorted(metrics["rounds"][0]["train"]) == list(SITES)  # every site trained in the round
    assert sorted(metrics["test"]) == list(SITES) and metrics["test_missing"] == {}


def test_too_few_supernodes_for_the_sites_stop_the_run_and_say_which_sites_sit_out(local_superlink):
    consortium, cohort = local_superlink
    run_id = flwr_run(consortium, cohort, supernodes=2)
    status = wait_until_finished(consortium, run_id, timeout=600)
    log = consortium.run_log(run_id)
    assert status != "finished:completed", log
    assert "2 SuperNode(s)" in log and "site_c would not take part" in log and "num-supernodes=3" in log, log
    assert not (consortium.runs / f"run-{run_id}" / "metrics.json").exists()
