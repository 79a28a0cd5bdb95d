"""The compose consortium in Docker for the container tests: the images of deploy/docker/build.sh, the compose
file of deploy/compose run on host networking with free ports, `flwr` from the host against 127.0.0.1.

Files the containers write (runs, site state) live in named volumes; they are read through `docker exec`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.harness import BIN, GENERATE, REPO, free_port
from tests.factories import patient_table

COMPOSE_DIR = REPO / "deploy" / "compose"
BUILD = REPO / "deploy" / "docker" / "build.sh"
SITES = ("metro_academic", "coastal_regional", "valley_community")
CONNECTION = "compose-test"
SITE_UID = 10001  # the images' user


def docker_cli() -> str | None:
    """The docker CLI to use: $DOCKER, else `docker` on PATH."""
    return os.environ.get("DOCKER") or shutil.which("docker")


def compose_cli() -> list[str] | None:
    """Compose v1 (Debian's docker-compose) or the v2 plugin (`docker compose`)."""
    if os.environ.get("COMPOSE"):
        return os.environ["COMPOSE"].split()
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = docker_cli()
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def docker_unusable() -> str:
    """Why Docker cannot be used here ("" when it can)."""
    docker, compose = docker_cli(), compose_cli()
    if docker is None:
        return "no docker CLI (install Debian's docker.io; see deploy/README.md section 5)"
    if compose is None:
        return "no docker-compose (install Debian's docker-compose)"
    info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        return f"the Docker daemon is not reachable ({info.stderr.strip()[:200]}); start it: deploy/docker/ci.sh"
    return ""


@dataclass
class ComposeConsortium:
    """The compose project `project` with its certificates and data under `root`; `down` removes it all."""

    root: Path
    project: str = "oncofed-test"
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.docker, self.compose = docker_cli(), compose_cli()
        self.home = self.root / "flwr-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.containers: dict[str, str] = {}
        self.env = {**os.environ, "DEMO_FILES": str(self.root), "SUPERLINK_PORT": str(self.port),
                    "FLWR_HOME": str(self.home), "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0"}
        for site_id in SITES:
            self.env[f"{site_id.upper()}_CLIENTAPPIO_PORT"] = str(free_port())

    # --- files -------------------------------------------------------------------------------------------
    def make_files(self, patients: int = 120) -> None:
        """Certificates (valid for 127.0.0.1), each site's synthetic data, the host's `flwr` connection."""
        command = [str(BIN / "python"), str(GENERATE), "demo", "--out", str(self.root / "certs"),
                   "--san", "127.0.0.1", "--san", "localhost"]
        for site_id in SITES:
            command += ["--site-id", site_id]
        subprocess.run(command, check=True, capture_output=True)
        private = [self.root / "certs" / "superlink" / "server.key",
                   *(self.root / "certs" / "sites" / s / "node_key" for s in SITES)]
        for key in private:  # the containers' user reads its key; the key stays 0600
            os.chown(key, SITE_UID, -1)
        for seed, site_id in enumerate(SITES):
            folder = self.root / "data" / site_id
            folder.mkdir(parents=True)
            patient_table(patients, seed=seed, site=site_id).to_csv(folder / "patients.csv", index=False)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.root / "certs" / "ca" / "ca.crt"}"\n')

    # --- docker ------------------------------------------------------------------------------------------
    def run(self, *command: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(list(command), capture_output=True, text=True, env=self.env, cwd=COMPOSE_DIR,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}\n{self.logs()}")
        return result

    def compose_run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(*self.compose, "-p", self.project, "-f", str(COMPOSE_DIR / "compose.yaml"), *args,
                        timeout=timeout, check=check)

    def container(self, service: str) -> str:
        """The service's container id (kept across stop/start and kill/start)."""
        if service not in self.containers:
            self.containers[service] = self.compose_run("ps", "-q", service, timeout=60).stdout.strip()
        return self.containers[service]

    def exec(self, service: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(self.docker, "exec", self.container(service), *command, timeout=120, check=check)

    def exists(self, service: str, path: str) -> bool:
        return self.exec(service, "test", "-f", path, check=False).returncode == 0

    def read(self, service: str, path: str) -> str:
        return self.exec(service, "cat", path).stdout

    def inspect(self, service: str) -> dict:
        return json.loads(self.run(self.docker, "inspect", self.container(service), timeout=60).stdout)[0]

    def logs(self, tail: int = 30) -> str:
        if not self.compose:
            return ""
        result = subprocess.run([*self.compose, "-p", self.project, "-f", str(COMPOSE_DIR / "compose.yaml"),
                                 "logs", "--no-color", "--tail", str(tail)],
                                capture_output=True, text=True, env=self.env, cwd=COMPOSE_DIR, timeout=120)
        return result.stdout[-12000:]

    def down(self) -> None:
        self.compose_run("down", "--volumes", "--timeout", "10", check=False)

    # --- flwr from the host ------------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "flwr"), *args, timeout=timeout, check=False)

    def online_nodes(self) -> int:
        listing = self.flwr("supernode", "ls", CONNECTION, "--format", "json")
        if listing.returncode != 0:
            return 0
        return sum(1 for node in json.loads(listing.stdout).get("nodes", []) if node.get("status") == "online")

    def submit(self, run_config: dict[str, object]) -> int:
        values = " ".join(f"{k}='{v}'" if isinstance(v, str) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                          for k, v in run_config.items())
        result = self.run(str(BIN / "flwr"), "run", str(REPO), CONNECTION, "--run-config", values,
                          "--format", "json", timeout=300)
        return int(json.loads(result.stdout)["run-id"])

    def run_log(self, run_id: int) -> str:
        result = self.flwr("log", str(run_id), CONNECTION, "--show", timeout=60)
        return result.stdout + result.stderr

    def wait_for(self, condition, timeout: float, what: str, run_id: int | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                extra = self.run_log(run_id)[-6000:] if run_id is not None else ""
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{extra}\n{self.logs()}")
            time.sleep(5.0)
