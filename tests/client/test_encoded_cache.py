"""A simulated site keeps its encoded splits for the ClientApp process: reused while nothing that decides them
changes, encoded again when the export, the split settings, the feature scaling or the survival grid do."""

from pathlib import Path

import torch
from flwr.app import Context, RecordDict

from client.data.encoded import _encoded, encoded_part
from client.data.site import Site, open_site
from shared.config import RunConfig
from shared.encoding import EncodedCohort, SurvivalGrid, encode_cohort
from shared.harmonisation import NormalisationStats, pool_summaries, summarise_site
from tests.factories import patient_table


def simulated_site(folder: Path, patients: int = 90, seed: int = 42, table_seed: int = 4) -> Site:
    csv = folder / "site_a" / "patients.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    patient_table(patients, seed=table_seed, site="a").to_csv(csv, index=False)
    config = RunConfig.from_mapping({"data-dir": str(folder), "run-name": "r", "seed": seed})
    return open_site(Context(run_id=7, node_id=1, node_config={"partition-id": 0}, state=RecordDict(),
                             run_config={}), config)


def scaling(site: Site) -> NormalisationStats:
    return pool_summaries([summarise_site(site.part("train"), min_cell_size=1)])


def assert_same(first: EncodedCohort, second: EncodedCohort) -> None:
    assert len(first.tensors()) == len(second.tensors())
    for a, b in zip(first.tensors(), second.tensors(), strict=True):
        assert torch.equal(a, b)


def test_the_encoded_split_is_what_encode_cohort_gives_and_is_encoded_once(tmp_path):
    site = simulated_site(tmp_path)
    stats, grid = scaling(site), SurvivalGrid(90, 1800)
    for split in ("train", "validation"):
        misses = _encoded.cache_info().misses
        first = encoded_part(site, split, stats, grid)
        assert _encoded.cache_info().misses == misses + 1
        assert_same(first, encode_cohort(site.part(split), stats, grid))
        hits = _encoded.cache_info().hits
        again = encoded_part(site, split, stats, grid)
        assert _encoded.cache_info().hits == hits + 1
        assert_same(again, first)


def test_each_caller_gets_its_own_tensors(tmp_path):
    site = simulated_site(tmp_path)
    stats, grid = scaling(site), SurvivalGrid(90, 1800)
    first = encoded_part(site, "train", stats, grid)
    first.treatment.fill_(7.0)  # one message's change never reaches another's cohort
    second = encoded_part(site, "train", stats, grid)
    assert not torch.equal(second.treatment, first.treatment)
    assert_same(second, encode_cohort(site.part("train"), stats, grid))


def test_new_scaling_grid_split_settings_or_export_encode_again(tmp_path):
    site = simulated_site(tmp_path)
    stats, grid = scaling(site), SurvivalGrid(90, 1800)
    encoded_part(site, "train", stats, grid)
    shifted = stats.model_copy(update={"mean": {k: v + 1.0 for k, v in stats.mean.items()}})
    coarser = SurvivalGrid(180, 1800)
    reseeded = simulated_site(tmp_path / "other-seed", seed=43)
    for changed_site, changed_stats, changed_grid in ((site, shifted, grid), (site, stats, coarser),
                                                       (reseeded, stats, grid)):
        misses = _encoded.cache_info().misses
        encoded = encoded_part(changed_site, "train", changed_stats, changed_grid)
        assert _encoded.cache_info().misses == misses + 1
        assert_same(encoded, encode_cohort(changed_site.part("train"), changed_stats, changed_grid))
    edited = simulated_site(tmp_path, patients=120, table_seed=5)  # the export is rewritten: a new table key
    assert edited.table_key != site.table_key
    misses = _encoded.cache_info().misses
    encoded = encoded_part(edited, "train", stats, grid)
    assert _encoded.cache_info().misses == misses + 1
    assert_same(encoded, encode_cohort(edited.part("train"), stats, grid))


def test_a_site_without_a_table_key_is_encoded_every_time(tmp_path):
    site = simulated_site(tmp_path)
    keyless = Site(**{**site.__dict__, "table_key": None})
    stats, grid = scaling(site), SurvivalGrid(90, 1800)
    before = _encoded.cache_info()
    assert_same(encoded_part(keyless, "train", stats, grid), encode_cohort(site.part("train"), stats, grid))
    after = _encoded.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)
