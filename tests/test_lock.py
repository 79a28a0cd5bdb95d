"""requirements.lock, pyproject.toml and the installed packages agree.

The README, CI and the Dockerfile install from the lock; pyproject keeps ranges for people who embed the
package. A range changed without re-locking (or a lock edited by hand past a range) fails here.
Regenerate with the command in the lock's header.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _locked() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line):
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for r in project["optional-dependencies"]["test"]]
    return [r for r in declared if r.marker is None or r.marker.evaluate()]


def test_every_declared_dependency_is_locked_inside_its_range() -> None:
    locked = _locked()
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is in pyproject.toml but not in requirements.lock: re-lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]}, outside pyproject's {requirement.specifier}: re-lock")


def test_the_lock_pins_the_cpu_build_of_torch() -> None:
    assert _locked()["torch"].local == "cpu", "requirements.lock must pin torch's CPU build"
    assert not [name for name in _locked() if name.startswith("nvidia-")], "CUDA wheels crept into the lock"


def test_the_installed_packages_are_the_locked_versions() -> None:
    wrong = []
    for name, version in _locked().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # platform-specific entries of the lock
        if installed != version:
            wrong.append(f"{name} {installed} (lock: {version})")
    assert not wrong, "installed versions differ from requirements.lock: " + ", ".join(wrong)
