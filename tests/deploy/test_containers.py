"""The images and the compose consortium for real, in Docker: built offline by deploy/docker/build.sh, run on
host networking with TLS and SuperNode authentication, a federation submitted with `flwr run` from the host.

In file order, on one compose project: the hardening of the images and of the running containers; a 2-round
federation (DP) with one site's container stopped after round 1 (recorded missing, the run completes); the
site's container started again and a second federation (without DP: the first spent the demo sites' ε = 3
budgets) with the coordinator's container killed after round 1 and restarted, then resumed from its
checkpoint, with the restarted site taking part in every round. Needs a running Docker daemon and docker-compose
(deploy/docker/ci.sh starts both); skipped, with the reason, only when Docker is not usable here.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import time

import pytest
import yaml

from tests.deploy.containers import BUILD, REPO, SITE_UID, SITES, ComposeConsortium, docker_cli, docker_unusable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

IMAGES = ("oncofed/coordinator:0.1.0", "oncofed/site:0.1.0")
# two Newton steps of the recalibration (default 6): each is one more exchange, a fresh ClientApp per site
RUN = {"num-rounds": 2, "hidden-size": 16, "local-epochs": 1, "bootstrap-samples": 20, "min-sites": 2,
       "round-timeout-s": 150.0, "output-dir": "/var/lib/oncofed/runs", "recalibration-iterations": 2}
FEDERATION_TIMEOUT_S = 900  # a 2-core machine shared with other jobs took several minutes a round
STOPPED = "valley_community"
THIRD_PARTY = re.compile(r"^(opt/venv/lib/python3\.11/site-packages/|usr/)")


@pytest.fixture(scope="module")
def built() -> dict[str, float]:
    """The images, made by deploy/docker/build.sh (cached layers, base image and wheelhouse make a rebuild quick)."""
    reason = docker_unusable()
    if reason:
        pytest.skip(f"Docker is not usable here: {reason}")
    started = time.monotonic()
    result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, cwd=REPO, timeout=2400)
    assert result.returncode == 0, f"build.sh failed:\n{result.stdout}\n{result.stderr[-6000:]}"
    print(result.stdout)
    return {"build_s": time.monotonic() - started}


@pytest.fixture(scope="module")
def consortium(built, tmp_path_factory):
    consortium = ComposeConsortium(tmp_path_factory.mktemp("compose"))
    try:
        consortium.make_files()
        consortium.down()  # what an interrupted earlier run left (its named volumes hold that run's results)
        consortium.compose_run("up", "-d", "--no-build", timeout=900)
        consortium.wait_for(lambda: consortium.online_nodes() == len(SITES), 600, "three SuperNodes online")
        yield consortium
    finally:
        consortium.down()


@pytest.fixture(scope="module")
def image_files(built):
    """`_image_files`, exported once per filesystem: the images share every layer (their targets differ in
    ENTRYPOINT and ENV only), and layers are content-addressed, so equal layer digests are equal files."""
    exported: dict[tuple[str, ...], dict[str, bytes | None]] = {}

    def files(image: str) -> dict[str, bytes | None]:
        inspected = subprocess.run([docker_cli(), "image", "inspect", "--format", "{{json .RootFS.Layers}}", image],
                                   capture_output=True, text=True, check=True).stdout
        layers = tuple(json.loads(inspected))
        if layers not in exported:
            exported[layers] = _image_files(image)
        return exported[layers]

    return files


def _image_files(image: str) -> dict[str, bytes | None]:
    """Every file of the image's filesystem (streamed from `docker export`): its bytes when outside the
    third-party paths (Debian's /usr, the venv's site-packages), else None."""
    docker = docker_cli()
    created = subprocess.run([docker, "create", image], capture_output=True, text=True, check=True).stdout.strip()
    files: dict[str, bytes | None] = {}
    try:
        with subprocess.Popen([docker, "export", created], stdout=subprocess.PIPE) as export:
            with tarfile.open(fileobj=export.stdout, mode="r|") as archive:
                for member in archive:
                    if member.isfile():
                        own = not THIRD_PARTY.match(member.name) and member.size < 5_000_000
                        files[member.name] = archive.extractfile(member).read() if own else None
        assert export.returncode == 0, f"docker export {image} failed"
    finally:
        subprocess.run([docker, "rm", created], capture_output=True)
    return files


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_holds_no_key_certificate_or_site_data(image_files, image):
    docker = docker_cli()
    history = subprocess.run([docker, "history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", image],
                             capture_output=True, text=True, check=True).stdout
    layers = [line for line in history.splitlines() if not line.startswith("0B\t")]  # ENV, ENTRYPOINT: no files
    assert len(layers) >= 3, history
    for layer in layers:
        for forbidden in ("node_key", ".key", "certs", "patients", "site.toml", "/data", ".csv", "wheelhouse/"):
            assert forbidden not in layer.replace("target=/wheelhouse", ""), f"{image}: a layer made with {forbidden!r}: {layer}"
    files = image_files(image)
    assert "opt/oncofed/deploy/site/entrypoint.sh" in files and "opt/oncofed/requirements.lock" in files
    app_paths = ("opt/oncofed/", "var/lib/oncofed/", "state/", "certs/", "keys/", "site/", "data/")
    for name, content in files.items():
        base = name.rsplit("/", 1)[-1]
        assert not base.startswith(("node_key", "patients")) and base != "site.toml", f"{image}: {name}"
        if content is not None:  # outside Debian's /usr and the venv's site-packages
            assert not name.endswith(".key"), f"{image}: {name}"
            assert b"PRIVATE KEY-----" not in content, f"{image}: {name} holds a private key"
        if name.startswith(app_paths):
            assert not name.endswith((".pem", ".crt", ".csv", ".parquet", ".whl", ".json")), \
                f"{image}: {name} is a certificate, data or a wheel"
    assert not any(name.startswith(("etc/ssl/private/", "certs/", "keys/", "data/", "site/")) for name in files)


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_runs_as_a_user_with_the_locked_versions(built, image):
    docker = docker_cli()
    config = json.loads(subprocess.run([docker, "image", "inspect", image], capture_output=True, text=True,
                                       check=True).stdout)[0]["Config"]
    assert config["User"] == str(SITE_UID)
    listing = subprocess.run([docker, "run", "--rm", "--network", "none", "--read-only", "--entrypoint", "pip",
                              image, "list", "--format", "json", "--disable-pip-version-check"],
                             capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listing.stdout)}
    locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "requirements.lock").read_text(), re.M))
    locked = {name.lower().replace("_", "-").replace(".", "-"): version for name, version in locked.items()}
    installed = {name.replace(".", "-"): version for name, version in installed.items()}
    assert installed.pop("oncofed") == "0.1.0"
    # pip comes with the venv; setuptools is left out of the lock by pip-compile and resolved as in any venv
    extra = {name: version for name, version in installed.items() if name not in locked}
    assert set(extra) <= {"pip", "setuptools"}, f"{image}: packages not in the lock: {extra}"
    differing = {name: (installed.get(name), version) for name, version in locked.items()
                 if installed.get(name) != version}
    assert not differing, f"{image}: (installed, locked) differ: {differing}"


def test_the_kubernetes_manifest_runs_the_built_coordinator_image(built):
    """What can be checked without an API server (`kubectl apply --dry-run=client` needs one for discovery):
    the manifest's image is the one built here, its commands exist in it, and it runs as the image's user."""
    documents = [d for d in yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "coordinator.yaml").read_text()) if d]
    pods = [d["spec"]["template"]["spec"] for d in documents if d["kind"] in {"StatefulSet", "Deployment"}]
    assert len(pods) == 2
    docker = docker_cli()
    for pod in pods:
        assert pod["securityContext"]["runAsUser"] == SITE_UID and pod["securityContext"]["runAsNonRoot"]
        for container in pod["containers"]:
            assert container["image"] in IMAGES, container["image"]
            found = subprocess.run([docker, "run", "--rm", "--network", "none", "--read-only", "--entrypoint",
                                    container["command"][0], container["image"], "--help"],
                                   capture_output=True, text=True, timeout=300)
            assert found.returncode == 0, f"{container['command'][0]} in {container['image']}: {found.stderr}"
            accepted = found.stdout
            for arg in container["args"]:
                assert arg.split("=")[0] in accepted, f"{container['name']}: {arg} is not an option of this flwr"


def test_the_containers_run_hardened_on_host_networking(consortium):
    for service in ("superlink", *(f"site-{site_id}" for site_id in SITES)):
        details = consortium.inspect(service)
        host = details["HostConfig"]
        assert host["NetworkMode"] == "host", service
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"], service
        assert consortium.exec(service, "id", "-u").stdout.strip() == str(SITE_UID)
        denied = consortium.exec(service, "touch", "/var/lib/oncofed/probe", check=False)  # the user's own folder
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, service
    networks = consortium.run(consortium.docker, "network", "ls", "--format", "{{.Driver}}").stdout.split()
    assert "bridge" not in networks, "a bridge network exists; the consortium uses host networking only"
    site = consortium.inspect(f"site-{SITES[0]}")
    mounts = {m["Destination"]: m for m in site["Mounts"]}
    assert mounts["/data"]["RW"] is False and mounts["/keys/node_key"]["RW"] is False
    assert mounts["/state"]["Type"] == "volume" and mounts["/state"]["RW"] is True


def test_a_stopped_site_container_is_recorded_missing_and_the_run_completes(consortium):
    run_dir = "/var/lib/oncofed/runs/site-stop"
    run_id = consortium.submit({**RUN, "run-name": "site-stop"})
    consortium.wait_for(lambda: consortium.exists("superlink", f"{run_dir}/checkpoints/round_001.pt"),
                        FEDERATION_TIMEOUT_S, "round 1's checkpoint", run_id)
    consortium.compose_run("stop", "--timeout", "5", f"site-{STOPPED}")
    consortium.wait_for(lambda: consortium.exists("superlink", f"{run_dir}/consortium_report.html"),
                        FEDERATION_TIMEOUT_S, "the consortium report", run_id)
    metrics = json.loads(consortium.read("superlink", f"{run_dir}/metrics.json"))
    first, second = metrics["rounds"]
    assert (first["round"], second["round"]) == (1, 2)
    assert set(first["train"]) == set(SITES) and not first["missing"]
    assert set(second["missing"]) == {STOPPED}, second["missing"]
    assert set(second["train"]) == set(SITES) - {STOPPED}
    assert set(metrics["test_missing"]) == {STOPPED}
    for site_id in set(SITES) - {STOPPED}:
        state = consortium.exec(f"site-{site_id}", "ls", "/state").stdout.split()
        assert {"privacy_ledger.json", "report.html"} <= set(state), (site_id, state)


def test_the_restarted_site_rejoins_and_a_restarted_coordinator_resumes(consortium):
    consortium.compose_run("start", f"site-{STOPPED}")
    consortium.wait_for(lambda: consortium.online_nodes() == len(SITES), 600, "the stopped site back online")
    run_dir = "/var/lib/oncofed/runs/coordinator-restart"
    config = {**RUN, "run-name": "coordinator-restart", "dp": False}
    run_id = consortium.submit(config)
    checkpoint = f"{run_dir}/checkpoints/round_001.pt"
    consortium.wait_for(lambda: consortium.exists("superlink", checkpoint), FEDERATION_TIMEOUT_S,
                        "round 1's checkpoint", run_id)
    digest = consortium.exec("superlink", "sha256sum", checkpoint).stdout.split()[0]
    consortium.run(consortium.docker, "kill", consortium.container("superlink"))  # SIGKILL: SuperLink + ServerApp
    consortium.compose_run("start", "superlink")
    consortium.wait_for(lambda: consortium.online_nodes() == len(SITES), 600, "the SuperNodes to reconnect")
    assert not consortium.exists("superlink", f"{run_dir}/metrics.json")
    resumed_id = consortium.submit({**config, "resume-from": run_dir})
    consortium.wait_for(lambda: consortium.exists("superlink", f"{run_dir}/consortium_report.html"),
                        FEDERATION_TIMEOUT_S, "the resumed run's consortium report", resumed_id)
    metrics = json.loads(consortium.read("superlink", f"{run_dir}/metrics.json"))
    assert [record["round"] for record in metrics["rounds"]] == [1, 2]  # none repeated, none lost
    for record in metrics["rounds"]:
        assert set(record["train"]) == set(SITES), record  # the restarted site took part in both rounds
    assert consortium.exec("superlink", "sha256sum", checkpoint).stdout.split()[0] == digest  # not rewritten
    assert f"resuming {run_dir} after round 1" in consortium.run_log(resumed_id)
    for site_id in SITES:  # each site's state volume holds its privacy ledger and its report
        state = consortium.exec(f"site-{site_id}", "ls", "/state").stdout.split()
        assert {"privacy_ledger.json", "report.html"} <= set(state), (site_id, state)
