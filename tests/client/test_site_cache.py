"""A deployed site's validated table is cached on its disk: used while valid, rebuilt when anything changes."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, RecordDict

import client.data.cache as site_cache
from client.data.loader import load_site_frame
from client.data.site import open_site
from shared.config import RunConfig
from shared.site_config import SiteConfig
from tests.factories import patient_table


def context(config_path: Path) -> Context:
    return Context(run_id=7, node_id=1, node_config={"site-config": str(config_path)}, state=RecordDict(),
                   run_config={})


def deployed_site(tmp_path: Path, epsilon: float = 2.5) -> Path:
    if not (tmp_path / "export.csv").exists():
        patient_table(120, seed=2, site="h").to_csv(tmp_path / "export.csv", index=False)
    (tmp_path / "site.toml").write_text(
        f'site_id = "hospital-a"\ndisplay_name = "Hospital A"\ntarget_epsilon = {epsilon}\n[data]\npath = "export.csv"\n')
    return tmp_path / "site.toml"


def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the reads of the export (client/data/loader.load_site_frame) that the site makes."""
    calls: list[int] = []

    def counting(config: SiteConfig) -> pd.DataFrame:
        calls.append(1)
        return load_site_frame(config)

    monkeypatch.setattr("client.data.loader.load_site_frame", counting)
    return calls


def cache_files(config_path: Path) -> list[Path]:
    return sorted((config_path.parent / "state" / "cache").glob("site-table-*.parquet"))


def test_the_cache_is_used_while_the_export_and_configuration_are_unchanged(tmp_path, monkeypatch):
    loads = count_loads(monkeypatch)
    config_path = deployed_site(tmp_path)
    first = open_site(context(config_path), RunConfig())
    second = open_site(context(config_path), RunConfig())
    assert len(loads) == 1 and len(cache_files(config_path)) == 1
    fresh = load_site_frame(SiteConfig.from_file(config_path))
    pd.testing.assert_frame_equal(second.patients, fresh)  # the cached table is what a fresh read gives
    pd.testing.assert_frame_equal(first.patients, fresh)
    assert np.array_equal(first.split, second.split) and second.split.dtype.kind == "U"
    for name in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(first.part(name), second.part(name))


def test_the_cache_is_rebuilt_when_the_export_the_site_or_the_splits_change(tmp_path, monkeypatch):
    loads = count_loads(monkeypatch)
    config_path = deployed_site(tmp_path)
    open_site(context(config_path), RunConfig())
    patient_table(90, seed=9, site="h").to_csv(tmp_path / "export.csv", index=False)  # a new export
    assert len(open_site(context(config_path), RunConfig()).patients) == 90 and len(loads) == 2
    deployed_site(tmp_path, epsilon=4.0)  # the site's configuration changed
    open_site(context(config_path), RunConfig())
    assert len(loads) == 3
    resplit = open_site(context(config_path), RunConfig.from_mapping({"seed": 7}))  # other splits
    assert len(loads) == 4
    expected = open_site(context(config_path), RunConfig.from_mapping({"seed": 7}))
    assert len(loads) == 4 and np.array_equal(resplit.split, expected.split)
    assert len(cache_files(config_path)) == 1  # only the current key is kept


def test_a_failed_write_leaves_no_cache_and_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    loads = count_loads(monkeypatch)
    config_path = deployed_site(tmp_path)

    def crash(self: pd.DataFrame, stream: object, **_: object) -> None:
        stream.write(b"PAR1 half")  # type: ignore[attr-defined]
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(pd.DataFrame, "to_parquet", crash)
        with pytest.raises(OSError, match="disk full"):
            open_site(context(config_path), RunConfig())
    assert list((config_path.parent / "state" / "cache").iterdir()) == []  # nothing half-written, no temp file
    open_site(context(config_path), RunConfig())
    [cached] = cache_files(config_path)
    cached.write_bytes(b"not parquet")  # damaged on disk
    site = open_site(context(config_path), RunConfig())
    assert len(loads) == 3 and len(site.patients) == 120
    pd.read_parquet(cached)  # rewritten complete


def test_a_database_server_is_not_cached(tmp_path):
    config = SiteConfig.model_validate({"site_id": "h", "display_name": "H", "target_epsilon": 1.0,
                                        "data": {"url": "postgresql+psycopg://reader@db/omop"},
                                        "state_dir": str(tmp_path)})
    assert site_cache.table_key(config, 42, 0.2, 0.2) is None
