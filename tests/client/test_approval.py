"""Site approval of code: the hash is Flower's FAB hash, reproduced where the SuperNode installs the app; an app
not on the site's list is refused before anything runs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from client.flower import outbox
from client.governance.approval import ApprovalPolicy, app_hash, approval_mod, main, refusal_reason
from shared.site_config import SiteConfig, SiteConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def _small_app(folder: Path) -> Path:
    """A Flower app folder: this project's pyproject and a few modules, and an ignored virtualenv-like folder."""
    (folder / "client").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", folder / "pyproject.toml")
    (folder / ".gitignore").write_text(".venv/\n__pycache__/\n")
    (folder / "client" / "__init__.py").write_text("")
    (folder / "client" / "app.py").write_text("app = None\n")
    (folder / ".venv" / "lib").mkdir(parents=True)
    (folder / ".venv" / "lib" / "big.py").write_text("x = 1\n")
    (folder / "client" / "__pycache__").mkdir()
    (folder / "client" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    return folder


def test_the_hash_is_the_one_flwr_run_submits_and_the_installed_app_reproduces_it(tmp_path, monkeypatch):
    from flwr.cli.build import build_fab_from_disk
    from flwr.cli.install import install_from_fab

    app = _small_app(tmp_path / "oncofed")
    fab = build_fab_from_disk(app)
    submitted = hashlib.sha256(fab).hexdigest()
    assert app_hash(app) == submitted
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    installed = Path(install_from_fab(fab, skip_prompt=True))  # what a SuperNode does with the submitted FAB
    (installed / "client" / "__pycache__").mkdir()  # importing the app writes byte code there
    (installed / "client" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    assert installed.name.endswith(submitted[:8])
    assert app_hash(installed) == submitted
    (installed / "client" / "app.py").write_text("app = 'changed after installation'\n")
    assert app_hash(installed) != submitted  # what is hashed is the code that runs


def test_the_command_prints_the_hash(tmp_path, capsys):
    app = _small_app(tmp_path / "oncofed")
    assert main([str(app)]) == 0
    assert capsys.readouterr().out.strip() == app_hash(app)
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / "nowhere")])
    assert exited.value.code == 2
    assert "oncofed-app-hash: error:" in (err := capsys.readouterr().err) and "not a Flower app folder" in err


def test_only_listed_apps_run():
    approved = "a" * 64
    policy = ApprovalPolicy(site_id="alpha", approved_apps=(approved,), config_file=Path("/site/site.toml"))
    assert refusal_reason(policy, approved) is None
    reason = refusal_reason(policy, "b" * 64)
    assert f"site alpha has not approved app {'b' * 64}" in reason
    assert "oncofed-app-hash" in reason and "approved_apps in its site.toml" in reason and "/site/" not in reason
    assert "could not be computed" in refusal_reason(policy, None)
    assert refusal_reason(ApprovalPolicy(site_id="alpha", approved_apps=None, config_file=None), None) is None


def test_the_mod_refuses_before_any_handler_runs():
    def handler(message, context):
        raise AssertionError("the handler ran, so the site's data could have been opened")

    message = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=1, message_type="train")
    policy = ApprovalPolicy(site_id="alpha", approved_apps=("a" * 64,), config_file=None)
    reply = approval_mod(lambda context: policy, running_hash=lambda: "c" * 64)(message, None, handler)
    assert reply.has_error() and reply.error.code == outbox.ERROR_APP_NOT_APPROVED and "c" * 64 in reply.error.reason
    passed = approval_mod(lambda context: policy, running_hash=lambda: "a" * 64)(
        message, None, lambda m, c: outbox.reply(m, site_id="alpha", metrics={}, min_cell_size=10))
    assert not passed.has_error()

    def broken_site_config(context):
        raise SiteConfigError("/site/site.toml: invalid site config")

    refused = approval_mod(broken_site_config)(message, None, handler)
    assert refused.error.code == outbox.ERROR_SITE_FAILED


def test_the_site_config_lists_app_hashes(tmp_path):
    base = 'site_id = "alpha"\ndisplay_name = "Alpha"\ntarget_epsilon = 3.0\n'
    path = tmp_path / "site.toml"
    path.write_text(base + f'approved_apps = ["{"AB" * 32}"]\n[data]\npath = "patients.csv"\n')
    assert SiteConfig.from_file(path).approved_apps == ["ab" * 32]
    path.write_text(base + '[data]\npath = "patients.csv"\n')
    assert SiteConfig.from_file(path).approved_apps is None
    path.write_text(base + 'approved_apps = ["v1.2"]\n[data]\npath = "patients.csv"\n')
    with pytest.raises(SiteConfigError, match="'v1.2' is not an app hash"):
        SiteConfig.from_file(path)
