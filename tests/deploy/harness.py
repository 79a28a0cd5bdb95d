"""Real Flower deployment processes on 127.0.0.1 for integration tests: a SuperLink, SuperNodes, `flwr run`.

Every process is started here with its own log file and its own session, and killed here (with every
process it spawned: Flower's SuperExec, ServerApp and ClientApp processes detach into their own sessions).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.factories import patient_table

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode and flwr live beside this Python
GENERATE = REPO / "deploy" / "certificates" / "generate.py"
PREFLIGHT = REPO / "deploy" / "site" / "preflight.py"
CONNECTION = "oncofed-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, found through /proc (Flower detaches its children into new sessions)."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal this process and everything it started; reap it."""
        for pid in reversed(process_tree(self.popen.pid)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


@dataclass
class Consortium:
    """One coordinator and its sites in a temporary folder; `stop_all` ends every process it started."""

    root: Path
    port: int = field(default_factory=free_port)
    processes: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.certs = self.root / "certs"
        self.home = self.root / "flwr-home"
        self.logs = self.root / "logs"
        self.runs = self.root / "runs"
        for folder in (self.home, self.logs, self.runs):
            folder.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                    "FLWR_HOME": str(self.home), "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}

    # --- files -------------------------------------------------------------------------------------------
    def make_certificates(self, site_ids: list[str]) -> None:
        command = [sys.executable, str(GENERATE), "demo", "--out", str(self.certs)]
        for site_id in site_ids:
            command += ["--site-id", site_id]
        self.command(command)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.certs / "superlink" / "ca.crt"}"\n')

    def make_site(self, site_id: str, seed: int, patients: int = 80, approved_apps: list[str] | None = None,
                  data_file: str = "patients.csv") -> Path:
        """A tiny site; its ε budget covers several runs, since its privacy ledger composes across them.

        `approved_apps`: the app hashes the site runs (None: any); `data_file`: where its site.toml says its data
        is (the table is written to patients.csv, so another name points at a file that does not exist)."""
        folder = self.root / "sites" / site_id
        folder.mkdir(parents=True, exist_ok=True)
        patient_table(patients, seed=seed, site=site_id).to_csv(folder / "patients.csv", index=False)
        approval = "" if approved_apps is None else f"approved_apps = {json.dumps(approved_apps)}\n"
        (folder / "site.toml").write_text(
            f'site_id = "{site_id}"\ndisplay_name = "{site_id.title()} Hospital"\ntarget_epsilon = 50.0\n'
            f'min_cell_size = 5\nstate_dir = "state"\n{approval}\n[data]\npath = "{data_file}"\n')
        return folder / "site.toml"

    # --- processes ---------------------------------------------------------------------------------------
    def start(self, name: str, command: list[str]) -> Process:
        log = self.logs / f"{name}.log"
        with log.open("ab") as handle:
            popen = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=self.root, start_new_session=True)
        self.processes[name] = Process(name, popen, log)
        return self.processes[name]

    def command(self, command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, env=self.env, cwd=REPO, timeout=timeout)

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.command([str(BIN / "flwr"), *args], timeout=timeout)

    def start_superlink(self) -> Process:
        tls = self.certs / "superlink"
        superlink = self.start("superlink", [
            str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(tls / "ca.crt"),
            "--ssl-certfile", str(tls / "server.crt"), "--ssl-keyfile", str(tls / "server.key"),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            "--database", str(self.root / "superlink.db"), "--host", "127.0.0.1", "--port", str(self.port)])
        self.wait_for(lambda: "Uvicorn running on https" in superlink.log.read_text(errors="replace"),
                      60, "the SuperLink to serve HTTPS")
        return superlink

    def register(self, public_key: Path) -> subprocess.CompletedProcess:
        return self.flwr("supernode", "register", str(public_key), CONNECTION)

    def start_with_registered_sites(self, site_ids: list[str]) -> None:
        """Keys and certificates for every site, the SuperLink, and each site's public key registered with it."""
        self.make_certificates(site_ids)
        self.start_superlink()
        for site_id in site_ids:
            registered = self.register(self.certs / "sites" / site_id / "node_key.pub")
            assert registered.returncode == 0, registered.stdout + registered.stderr

    def start_site(self, site_id: str, site_config: Path, supervised: bool = True) -> Process:
        """A registered site's SuperNode: its own private key, the consortium's CA, its site.toml."""
        return self.start_supernode(site_id, self.certs / "sites" / site_id / "node_key",
                                    self.certs / "superlink" / "ca.crt", site_config, supervised=supervised)

    def start_supernode(self, name: str, private_key: Path, ca: Path, site_config: Path | None = None,
                        extra: tuple[str, ...] = (), supervised: bool = False) -> Process:
        """A SuperNode; `supervised` restarts it when it fails, as `restart: on-failure` does in compose.

        flwr 1.41's SuperNode exits on an HTTP 500 from the SuperLink (which a loaded SuperLink answers when
        its SQLite database stays locked), so a site runs it under a supervisor.
        """
        command = [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{self.port}",
                   "--root-certificates", str(ca), "--auth-supernode-private-key", str(private_key),
                   "--port", str(free_port()), *extra]
        if site_config is not None:
            command += ["--node-config", f"site-config='{site_config}'"]
        if supervised:
            command = ["/bin/sh", "-c", 'while true; do "$@"; code=$?; [ "$code" -eq 0 ] && exit 0; '
                       'echo "supervisor: flower-supernode exited with $code; restarting"; sleep 2; done',
                       "supervise", *command]
        return self.start(name, command)

    def restarts(self, name: str) -> int:
        return self.processes[name].log.read_text(errors="replace").count("supervisor: flower-supernode exited")

    def online_nodes(self) -> int:
        listing = self.flwr("supernode", "ls", CONNECTION, "--format", "json")
        if listing.returncode != 0:
            return 0
        nodes = json.loads(listing.stdout).get("nodes", [])
        return sum(1 for node in nodes if node.get("status") == "online")

    def submit(self, run_config: dict[str, object]) -> int:
        """`flwr run` the repository's app on this consortium; the run id."""
        values = " ".join(f"{k}='{v}'" if isinstance(v, str) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                          for k, v in run_config.items())
        result = self.flwr("run", str(REPO), CONNECTION, "--run-config", values, "--format", "json", timeout=300)
        assert result.returncode == 0, f"flwr run failed:\n{result.stdout}\n{result.stderr}\n{self.report()}"
        return int(json.loads(result.stdout)["run-id"])

    def run_log(self, run_id: int) -> str:
        result = self.flwr("log", str(run_id), CONNECTION, "--show", timeout=60)
        return result.stdout + result.stderr

    def run_status(self, run_id: int) -> str:
        listing = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json", timeout=60)
        if listing.returncode != 0:
            return ""
        return next((r["status"] for r in json.loads(listing.stdout).get("runs", []) if r["run-id"] == str(run_id)), "")

    def wait_for(self, condition, timeout: float, what: str, run_id: int | None = None) -> None:
        """Poll `condition`; fail with the run's log and every process's log tail on timeout, or at once
        when the run has finished without meeting it."""
        deadline, next_status = time.monotonic() + timeout, time.monotonic() + 20
        while not condition():
            ended = ""
            if run_id is not None and time.monotonic() > next_status:
                next_status = time.monotonic() + 20
                ended = status if (status := self.run_status(run_id)).startswith("finished") else ""
            if ended and condition():
                return
            if ended or time.monotonic() > deadline:
                reason = f"the run is {ended}" if ended else f"timed out after {timeout:.0f} s"
                extra = self.run_log(run_id) if run_id is not None else ""
                raise AssertionError(f"{reason} waiting for {what}\n{extra}\n{self.report()}")
            time.sleep(1.0)

    def report(self) -> str:
        return "\n".join(process.tail() for process in self.processes.values())

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.kill()
