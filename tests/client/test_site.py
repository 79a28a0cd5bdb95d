"""A node finds its own site: from its site-config file (deployment) or its partition (simulation)."""

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, RecordDict

from client.data.loader import load_contract_csv
from client.data.site import _read_simulated_site, assign_splits, open_site
from shared.config import RunConfig
from tests.factories import patient_table


def context(node_config: dict) -> Context:
    return Context(run_id=7, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


def test_splits_depend_only_on_the_patient_and_the_seed():
    table = patient_table(300, seed=1)
    splits = assign_splits(table["patient_id"], seed=42, validation_fraction=0.2, test_fraction=0.2)
    shuffled = table.sample(frac=1.0, random_state=0)
    again = assign_splits(shuffled["patient_id"], seed=42, validation_fraction=0.2, test_fraction=0.2)
    assert dict(zip(table["patient_id"], splits)) == dict(zip(shuffled["patient_id"], again))
    shares = {name: np.mean(splits == name) for name in ("train", "validation", "test")}
    assert shares["train"] == pytest.approx(0.6, abs=0.08) and shares["test"] == pytest.approx(0.2, abs=0.06)
    other = assign_splits(table["patient_id"], seed=43, validation_fraction=0.2, test_fraction=0.2)
    assert (other != splits).any()


def test_a_deployed_node_reads_its_site_configuration_file(tmp_path):
    patient_table(120, seed=2, site="h").to_csv(tmp_path / "export.csv", index=False)
    (tmp_path / "site.toml").write_text(
        'site_id = "hospital-a"\ndisplay_name = "Hospital A"\ntarget_epsilon = 2.5\nmin_cell_size = 12\n'
        '[data]\npath = "export.csv"\n')
    site = open_site(context({"site-config": str(tmp_path / "site.toml")}), RunConfig())
    assert (site.site_id, site.target_epsilon, site.min_cell_size) == ("hospital-a", 2.5, 12)
    assert len(site.patients) == 120 and len(site.part("train")) + len(site.part("validation")) \
        + len(site.part("test")) == 120
    assert site.state_dir.is_relative_to(tmp_path)
    assert site.secret_dp_noise  # a real site's DP noise is drawn from fresh entropy unless it says otherwise
    (tmp_path / "site.toml").write_text((tmp_path / "site.toml").read_text().replace(
        "min_cell_size = 12\n", "min_cell_size = 12\nreproducible_dp_noise = true\n"))
    assert not open_site(context({"site-config": str(tmp_path / "site.toml")}), RunConfig()).secret_dp_noise


def test_a_simulated_node_gets_the_folder_of_its_partition(tmp_path):
    for name in ("site_b", "site_a"):
        (tmp_path / name).mkdir()
        patient_table(50, seed=3, site=name).to_csv(tmp_path / name / "patients.csv", index=False)
    config = RunConfig.from_mapping({"data-dir": str(tmp_path), "run-name": "r"})
    simulated = open_site(context({"partition-id": 1}), config)
    assert simulated.site_id == "site_b" and not simulated.secret_dp_noise  # synthetic: seeded, reproducible
    with pytest.raises(ValueError, match="num-supernodes = 2"):
        open_site(context({"partition-id": 2}), config)


def test_a_missing_cohort_says_how_to_make_one(tmp_path):
    config = RunConfig.from_mapping({"data-dir": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="oncofed-cohort --out"):
        open_site(context({"partition-id": 0}), config)


def test_a_simulated_site_is_read_once_per_process_and_each_caller_gets_its_own_copy(tmp_path):
    csv = tmp_path / "site_a" / "patients.csv"
    csv.parent.mkdir()
    patient_table(60, seed=4, site="a").to_csv(csv, index=False)
    config = RunConfig.from_mapping({"data-dir": str(tmp_path), "run-name": "r"})
    first = open_site(context({"partition-id": 0}), config)
    calls_before = _read_simulated_site.cache_info().hits
    second = open_site(context({"partition-id": 0}), config)
    assert _read_simulated_site.cache_info().hits == calls_before + 1
    pd.testing.assert_frame_equal(second.patients, load_contract_csv(csv))  # the memo holds what a fresh read gives
    first.patients.loc[0, "age_years"] = -1.0  # one message's change never reaches another's table
    first.split[0] = "nowhere"
    assert second.patients.loc[0, "age_years"] != -1.0 and second.split[0] != "nowhere"
    patient_table(80, seed=5, site="a").to_csv(csv, index=False)  # a new export is read again
    assert len(open_site(context({"partition-id": 0}), config).patients) == 80


def test_a_simulation_with_fewer_supernodes_than_sites_is_refused_and_says_which_sites_sit_out(tmp_path):
    from flwr.app import ConfigRecord, Message
    from flwr.supercore.task_identity import TaskIdentity

    from client.flower.app import build_client_app

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 7, 1  # as inside a Flower run
    from client.data.site import partition_count_problem

    for name in ("site_a", "site_b", "site_c"):
        (tmp_path / name).mkdir()
        patient_table(50, seed=3, site=name).to_csv(tmp_path / name / "patients.csv", index=False)
    config = RunConfig.from_mapping({"data-dir": str(tmp_path), "run-name": "r"})
    assert partition_count_problem(context({"partition-id": 0, "num-partitions": 3}), config) is None
    problem = partition_count_problem(context({"partition-id": 0, "num-partitions": 2}), config)
    assert "2 SuperNode(s)" in problem and "3 sites" in problem and "site_c would not take part" in problem
    assert 'num-supernodes=3' in problem
    query = Message(RecordDict({"config": ConfigRecord({"server-round": 0})}), dst_node_id=1,
                    message_type="query.feature_summary")
    two_nodes = Context(run_id=7, node_id=1, node_config={"partition-id": 0, "num-partitions": 2},
                        state=RecordDict(), run_config=config.to_flower())
    reply = build_client_app()(query, two_nodes)
    assert reply.has_error() and reply.error.reason == problem
