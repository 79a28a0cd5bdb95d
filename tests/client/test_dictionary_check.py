"""The run carries its dictionary's hash; a site with another copy refuses; the site check validates against the
consortium's dictionary; malformed exports fail naming row, column and rule."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from flwr.app import ConfigRecord, Message, RecordDict

from client.flower import outbox
from client.data.check import EXIT_BAD_CONFIG, EXIT_USABLE, EXIT_VIOLATIONS, main
from client.governance.dictionary_check import LocalDictionary, dictionary_mod, mismatch_reason
from shared.config import RunConfig
from shared.contract import DataContractError, check_frame
from shared.dictionary import DEFAULT_DICTIONARY_PATH, default_dictionary, load_dictionary
from shared.harmonisation import pool_summaries, summarise_site
from shared.messages import DICTIONARY_KEY, instruction_records, read_instructions
from shared.provenance import dictionary_sha256
from tests.client.test_site_data_examples import example_contract_frame

DEFAULT_SHA = default_dictionary().content_sha256()


def _other_dictionary(folder: Path) -> Path:
    content = yaml.safe_load(DEFAULT_DICTIONARY_PATH.read_text())
    content["version"] = "2.0.0"
    content["treatments"].append({"code": "NONE", "name": "No systemic therapy", "cancer_types": ["breast"]})
    path = folder / "consortium-v2.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def _message(sha256: str | None) -> Message:
    plan = {"server-round": 1} | ({DICTIONARY_KEY: sha256} if sha256 is not None else {})
    return Message(RecordDict({"config": ConfigRecord(plan)}), dst_node_id=1, message_type="train")


def _never(message, context):
    raise AssertionError("the handler ran, so the site's data could have been opened")


def test_every_instruction_carries_the_dictionary_hash_and_the_plan_reads_back_without_it() -> None:
    assert dictionary_sha256() == DEFAULT_SHA
    stats = pool_summaries([summarise_site(example_contract_frame(30, seed=1))])
    records = instruction_records(RunConfig(), stats, **{"server-round": 2})
    assert records["config"][DICTIONARY_KEY] == DEFAULT_SHA
    config, _, server_round = read_instructions(RecordDict(records))
    assert config == RunConfig() and server_round == 2


def test_a_site_with_another_copy_refuses_naming_both_hashes_before_any_handler(tmp_path: Path) -> None:
    other = _other_dictionary(tmp_path)
    other_sha = load_dictionary(other).content_sha256()
    mod = dictionary_mod(lambda context: LocalDictionary(site_id="alpha", path=other))
    reply = mod(_message(DEFAULT_SHA), None, _never)
    assert reply.has_error() and reply.error.code == outbox.ERROR_CONFIG
    assert DEFAULT_SHA in reply.error.reason and other_sha in reply.error.reason
    assert "consortium-v2.yaml" in reply.error.reason and "oncofed-check-site" in reply.error.reason
    passed = mod(_message(other_sha), None, lambda m, c: outbox.reply(m, site_id="alpha", metrics={}, min_cell_size=10))
    assert not passed.has_error()
    default_site = dictionary_mod(lambda context: LocalDictionary(site_id="beta", path=None))
    assert default_site(_message(other_sha), None, _never).has_error()
    assert "the app's default dictionary" in mismatch_reason("beta", DEFAULT_SHA, other_sha, None)


def test_a_site_whose_copy_is_broken_refuses_without_quoting_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\n")
    reply = dictionary_mod(lambda context: LocalDictionary(site_id="alpha", path=broken))(
        _message(DEFAULT_SHA), None, _never)
    assert reply.error.code == outbox.ERROR_CONFIG and "not usable" in reply.error.reason


def _site(folder: Path, frame: pd.DataFrame, extra: str = "") -> Path:
    frame.to_csv(folder / "patients.csv", index=False)
    config = folder / "site.toml"
    config.write_text(f'site_id = "check-site"\ndisplay_name = "Check Site"\ntarget_epsilon = 3.0\n{extra}\n'
                      '[data]\npath = "patients.csv"\n', encoding="utf-8")
    return config


def test_check_site_validates_against_the_consortium_dictionary(tmp_path: Path, capsys) -> None:
    config = _site(tmp_path, example_contract_frame(40, seed=3))
    same = tmp_path / "consortium.json"
    same.write_text(json.dumps(yaml.safe_load(DEFAULT_DICTIONARY_PATH.read_text())))
    assert main(["--site-config", str(config), "--dictionary", str(same)]) == EXIT_USABLE
    assert f"Data dictionary: oncofed-default 1.0.0 (sha256 {DEFAULT_SHA})" in capsys.readouterr().out

    other = _other_dictionary(tmp_path)
    assert main(["--site-config", str(config), "--dictionary", str(other)]) == EXIT_BAD_CONFIG
    error = capsys.readouterr().err
    assert DEFAULT_SHA in error and "differs from this site's copy" in error and "Point `dictionary`" in error

    config = _site(tmp_path, example_contract_frame(40, seed=3), extra='dictionary = "consortium-v2.yaml"')
    assert main(["--site-config", str(config), "--dictionary", str(other)]) == EXIT_USABLE
    capsys.readouterr()
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    assert main(["--site-config", str(config), "--dictionary", str(tmp_path / "bad.yaml")]) == EXIT_BAD_CONFIG
    assert "not valid YAML" in capsys.readouterr().err


def test_check_site_rejects_an_export_the_consortium_dictionary_forbids(tmp_path: Path, capsys) -> None:
    content = yaml.safe_load(DEFAULT_DICTIONARY_PATH.read_text())
    next(f for f in content["schema"]["fields"] if f["name"] == "age_years")["constraints"]["minimum"] = 40
    strict = tmp_path / "adults-over-40.yaml"
    strict.write_text(yaml.safe_dump(content))
    frame = example_contract_frame(40, seed=3)
    frame.loc[4, "age_years"] = 35
    config = _site(tmp_path, frame, extra='dictionary = "adults-over-40.yaml"')
    assert main(["--site-config", str(config), "--dictionary", str(strict)]) == EXIT_VIOLATIONS
    assert "row 5, column 'age_years': Input should be greater than or equal to 40 (value '35')" in \
        capsys.readouterr().err


def _valid() -> pd.DataFrame:
    return example_contract_frame(12, seed=5).reset_index(drop=True)


def _set(row: int, column: str, value) -> callable:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: object})
        frame.loc[row - 1, column] = value
        return frame
    return change


MALFORMED_EXPORTS = [
    ("fractional ECOG", _set(2, "ecog", 1.5), 2, "ecog", "Input should be a valid integer"),
    ("flag that is not true/false", _set(3, "tp53", "maybe"), 3, "tp53", "Input should be true or false"),
    ("zero tumour size", _set(4, "tumour_size_mm", 0), 4, "tumour_size_mm", "Input should be greater than 0"),
    ("text age", _set(5, "age_years", "sixty"), 5, "age_years", "not a number"),
    ("age under range", _set(6, "age_years", 12), 6, "age_years", "greater than or equal to 18"),
    ("missing cancer type", _set(7, "cancer_type", "  "), 7, "cancer_type", "required value is missing"),
    ("unknown stage code", _set(8, "stage_group", "V"), 8, "stage_group", "unknown code 'V'; allowed: 'I', 'II'"),
    ("unknown histology code", _set(9, "histology", "sarcoma"), 9, "histology", "unknown code 'sarcoma'"),
    ("missing patient id", _set(10, "patient_id", None), 10, "patient_id", "required value is missing"),
    ("negative os time", _set(11, "os_days", -1), 11, "os_days", "greater than or equal to 0"),
    ("unknown regimen", _set(12, "regimen", "XELOX"), 12, "regimen", "unknown code 'XELOX'; map it to one of AC-T"),
]


@pytest.mark.parametrize("case, change, row, column, words", MALFORMED_EXPORTS, ids=[m[0] for m in MALFORMED_EXPORTS])
def test_a_malformed_export_fails_naming_file_row_column_and_rule(case, change, row, column, words) -> None:
    with pytest.raises(DataContractError) as raised:
        check_frame(change(_valid()), "site_b/export.csv")
    found = [(v.row, v.column, v.rule) for v in raised.value.violations]
    assert any((r, c) == (row, column) and words in rule for r, c, rule in found), found
    assert f"site_b/export.csv row {row}, column '{column}'" in str(raised.value)


def test_optional_clinical_fields_may_be_absent_or_empty() -> None:
    frame = _valid().drop(columns=["ecog", "race_ethnicity", "charlson_index", "line_of_therapy"])
    frame.loc[0, "sex"] = None
    frame = frame.astype({"stage_group": object})
    frame.loc[1, "stage_group"] = " N/A "  # one of the dictionary's missingValues
    checked = check_frame(frame, "registry.csv")
    assert checked["ecog"].isna().all() and list(checked.columns) == list(default_dictionary().columns)
    assert checked.loc[1, "stage_group"] is None
