"""A site's [resources] section: validated with errors naming the file and field, and carried to the Site."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.data.site import site_from_config
from shared.config import RunConfig
from shared.site_config import SiteConfig, SiteConfigError
from tests.factories import patient_table

BASE = 'site_id = "north"\ndisplay_name = "North"\ntarget_epsilon = 4.0\n[data]\npath = "patients.csv"\n'


def test_resources_default_to_torch_defaults(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(BASE)
    assert SiteConfig.from_file(tmp_path / "site.toml").resources.torch_threads is None


@pytest.mark.parametrize("section, allowed", [
    ("[resources]\ntorch_threads = 0\n", "greater than or equal to 1"),
    ("[resources]\ntorch_threads = 'four'\n", "valid integer"),
    ("[resources]\ngpu = true\n", "Extra inputs are not permitted"),
])
def test_bad_resources_name_the_file_and_field(tmp_path: Path, section: str, allowed: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(BASE + section)
    with pytest.raises(SiteConfigError) as caught:
        SiteConfig.from_file(path)
    message = str(caught.value)
    assert str(path) in message and "resources." in message and allowed in message, message


def test_the_thread_cap_reaches_the_site(tmp_path: Path) -> None:
    patient_table(40, seed=1, site="north").to_csv(tmp_path / "patients.csv", index=False)
    (tmp_path / "site.toml").write_text(BASE + "[resources]\ntorch_threads = 2\n")
    site = site_from_config(tmp_path / "site.toml", RunConfig())
    assert site.torch_threads == 2 and site.site_id == "north"
