"""Offline checks of the compose and Kubernetes files, fast and without Docker (tests/deploy/test_containers.py
builds the images and runs the compose consortium for real; no cluster here for the Kubernetes manifest, so
kubectl decodes it offline into its typed objects, where a kubectl is installed).

What `docker compose config` and `kubectl --dry-run` would catch first: YAML that parses, services and
objects with the keys they need, every file they mount existing (certificates as generate.py writes them),
every site with its own data, key, configuration and state, and the Flower pin equal to the installed flwr.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import flwr
import pytest
import yaml

from shared.site_config import SiteConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes" / "coordinator.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
SITE_SERVICES = {"site-metro_academic": "metro_academic", "site-coastal_regional": "coastal_regional",
                 "site-valley_community": "valley_community"}
GENERATED = ("./certs/", "./data/")  # written before `docker compose up`: by generate.py and oncofed-cohort


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def demo_certificates(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compose") / "certs"
    command = [sys.executable, str(DEPLOY / "certificates" / "generate.py"), "demo", "--out", str(out),
               "--san", "superlink"]
    for site_id in SITE_SERVICES.values():
        command += ["--site-id", site_id]
    subprocess.run(command, check=True, capture_output=True)
    return out


def _defaults(text: str) -> str:
    """Compose's `${VARIABLE:-default}` with its default, as `docker-compose` reads it with nothing set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def _bind_mounts(service: dict) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = _defaults(volume).split(":")[:2]
        mounts.append((source, target))
    return mounts


def test_the_dockerfile_installs_from_the_lock_and_has_both_targets() -> None:
    text = DOCKERFILE.read_text().replace("\\\n", " ")  # continued lines joined
    assert re.search(r"^RUN .*pip install .*-r requirements\.lock", text, re.M), "the images must install the lock"
    assert re.search(r"^RUN --mount=type=bind,source=deploy/docker/wheelhouse,target=/wheelhouse ", text, re.M), \
        "the wheelhouse is mounted for the install only, never copied into a layer"
    assert not re.findall(r"[A-Za-z0-9_.\[\]-]+==[0-9]", text), "versions come from requirements.lock, not the Dockerfile"
    assert re.search(r"^FROM base AS coordinator$", text, re.M) and re.search(r"^FROM base AS site$", text, re.M)
    kept = {line[1:] for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
            if line.startswith("!")}
    for source in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (DEPLOY.parent / path).exists(), f"Dockerfile copies {path}, which does not exist"
            assert any(path == k or path.startswith(f"{k}/") for k in kept), f"{path} is left out of the build context"


def test_no_flower_image_is_pinned_to_another_version() -> None:
    for path in (COMPOSE, KUBERNETES, DOCKERFILE):
        for tag in re.findall(r"flwr/[a-z-]+:([0-9][0-9.]*)", path.read_text()):
            assert tag == flwr.__version__, f"{path.name} uses a Flower image {tag}, the project uses {flwr.__version__}"


def test_compose_starts_a_secure_superlink_and_three_separate_sites(compose, demo_certificates) -> None:
    services = compose["services"]
    assert {"superlink", "register", *SITE_SERVICES} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build:
            dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
            assert dockerfile == DOCKERFILE.resolve(), name
            assert f"AS {build['target']}" in DOCKERFILE.read_text(), name
        for source, target in _bind_mounts(service):
            if not source.startswith("./"):
                assert source in compose["volumes"], f"{name}: named volume {source} is not declared"
            elif source.startswith("./certs/"):
                assert (demo_certificates / source.removeprefix("./certs/")).is_file(), f"{name}: {source}"
            elif not source.startswith(GENERATED):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
    entrypoint = (DOCKERFILE.read_text().split("FROM base AS coordinator")[1]).split("FROM base AS site")[0]
    assert "--enable-supernode-auth" in entrypoint and "--ssl-certfile" in entrypoint and "--insecure" not in entrypoint
    assert "--insecure" not in COMPOSE.read_text()
    registered = {Path(target).stem for source, target in _bind_mounts(services["register"])
                  if target.startswith("/public-keys/")}
    assert registered == set(SITE_SERVICES.values())
    assert all(source.endswith(".pub") for source, target in _bind_mounts(services["register"])
               if target.startswith("/public-keys/")), "only public keys go to the coordinator"


def test_each_site_has_its_own_data_key_config_and_state(compose) -> None:
    seen: dict[str, set[str]] = {"/data": set(), "/keys/node_key": set(), "/site/site.toml": set(), "/state": set()}
    for service_name, site_id in SITE_SERVICES.items():
        service = compose["services"][service_name]
        assert _defaults(service["environment"]["SUPERLINK"]) == "127.0.0.1:8000"
        mounts = dict((target, source) for source, target in _bind_mounts(service))
        assert set(seen) <= set(mounts), f"{service_name} lacks one of {sorted(seen)}"
        for target in seen:
            assert mounts[target] not in seen[target], f"{service_name} shares {mounts[target]} with another site"
            seen[target].add(mounts[target])
        assert site_id in mounts["/keys/node_key"] and mounts["/keys/node_key"].endswith("/node_key")
        config = SiteConfig.from_file(COMPOSE.parent / mounts["/site/site.toml"])
        assert config.site_id == site_id
        assert str(config.state_dir) == "/state" and str(config.data.path).startswith("/data/")


def test_kubernetes_objects_are_complete_and_consistent() -> None:
    documents = [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {("Service", "superlink"), ("StatefulSet", "superlink"), ("Deployment", "serverapp-executor"),
            ("PersistentVolumeClaim", "runs")} <= kinds
    for document in documents:
        assert {"apiVersion", "kind", "metadata"} <= set(document)
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    service, superlink = by_kind[("Service", "superlink")], by_kind[("StatefulSet", "superlink")]
    assert service["spec"]["selector"].items() <= superlink["spec"]["template"]["metadata"]["labels"].items()
    args = superlink["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--enable-supernode-auth" in args and "--isolation=process" in args
    assert not any(a.startswith("--insecure") for a in args)
    executor = by_kind[("Deployment", "serverapp-executor")]["spec"]["template"]["spec"]
    assert any(a.startswith("--runtime-api-address=superlink.") for a in executor["containers"][0]["args"])
    claims = {v["persistentVolumeClaim"]["claimName"] for v in executor["volumes"] if "persistentVolumeClaim" in v}
    assert claims <= {name for kind, name in kinds if kind == "PersistentVolumeClaim"}
    secrets = {v["secret"]["secretName"] for d in (superlink["spec"]["template"]["spec"], executor)
               for v in d["volumes"] if "secret" in v}
    assert secrets == {"superlink-tls"} and "create secret generic superlink-tls" in KUBERNETES.read_text()


def _kubectl_decode(manifest: Path) -> subprocess.CompletedProcess:
    """Every object of `manifest` decoded into kubectl's own typed API objects, offline: `kubectl set env --local`
    (`kubectl apply --dry-run=client` asks an API server for the API groups and schema, and there is none here)."""
    return subprocess.run([shutil.which("kubectl"), "set", "env", "--local", "-f", str(manifest), "ONCOFED_CHECK=1",
                           "-o", "name"], capture_output=True, text=True, errors="replace", timeout=120)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl: apt-get install kubernetes-client")
def test_kubectl_decodes_every_kubernetes_object_into_its_typed_api_object(tmp_path) -> None:
    """Kinds and apiVersions kubectl knows, fields of the right types (not checked: unknown field names, and
    anything an API server or admission would refuse)."""
    checked = _kubectl_decode(KUBERNETES)
    assert "unable to decode" not in checked.stderr, checked.stderr
    assert set(checked.stdout.split()) == {"statefulset.apps/superlink", "deployment.apps/serverapp-executor"}
    # the others decode too: kubectl names their Go types when it finds no pod template to set the variable in
    assert set(re.findall(r"\*v1\.(\w+)", checked.stderr)) == {"Namespace", "Service", "PersistentVolumeClaim"}
    broken = tmp_path / "coordinator.yaml"
    broken.write_text(re.sub(r"replicas: 1\b", 'replicas: "one"', KUBERNETES.read_text(), count=1))
    refused = _kubectl_decode(broken)
    assert refused.returncode != 0 and "unable to decode" in refused.stderr, refused.stderr


def test_every_container_runs_hardened_on_host_networking_with_its_own_ports(compose) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert service["network_mode"] == "host", f"{name}: host networking only, no bridge network"
        assert "ports" not in service and "networks" not in service, name
        assert service["read_only"] is True and service["user"] == "10001", name
        assert service["cap_drop"] == ["ALL"], name
        for tmpfs in service.get("tmpfs", []):
            assert tmpfs.split(":")[0] in {"/tmp", "/var/lib/oncofed/flwr"}, f"{name}: {tmpfs}"
    assert "networks" not in compose
    superlink_port = _defaults(services["superlink"]["environment"]["SUPERLINK_PORT"])
    ports = [_defaults(services[name]["environment"]["CLIENTAPPIO_PORT"]) for name in SITE_SERVICES]
    assert len({superlink_port, *ports}) == 1 + len(SITE_SERVICES), "ports clash on the shared host network"
    assert '"${CLIENTAPPIO_PORT:-9094}"' in (DEPLOY / "site" / "entrypoint.sh").read_text()
