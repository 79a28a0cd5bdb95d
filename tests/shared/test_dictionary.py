"""The consortium data dictionary: the default reproduces the contract, other consortia are expressible, and a
malformed file fails naming the entry to fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import contract, encoding, harmonisation, site_config, vocabulary
from shared.dictionary import (
    DEFAULT_DICTIONARY_PATH,
    DictionaryError,
    default_dictionary,
    load_dictionary,
    parse_dictionary,
)


def default_content() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_DICTIONARY_PATH.read_text())


def test_the_default_dictionary_is_the_contract() -> None:
    dictionary = default_dictionary()
    assert dictionary.columns == contract.CONTRACT_COLUMNS and len(contract.CONTRACT_COLUMNS) == 37
    assert contract.MODALITIES == ("clinical", "pathology", "imaging", "genomic")
    assert contract.GENES == ("tp53", "kras", "egfr", "alk", "braf", "brca1", "brca2", "pik3ca")
    assert vocabulary.REGIMEN_CODES[:3] == ("AC-T", "TC", "TCHP") and len(vocabulary.REGIMENS) == 13
    assert vocabulary.REGIMEN_BY_CODE["FOLFOX"].classes == {vocabulary.DrugClass("fluoropyrimidine"),
                                                             vocabulary.DrugClass("platinum")}
    assert {r.value for r in vocabulary.RESPONDER} == {"CR", "PR"}
    assert encoding.input_sizes() == {"clinical": 29, "pathology": 14, "imaging": 8, "genomic": 18, "treatment": 26}
    assert site_config.UNIT_FACTORS["pfs_days"] == {"days": 1.0, "weeks": 7.0, "months": 30.4375, "years": 365.25}
    assert site_config.UNIT_FACTORS["age_years"]["months"] == 1.0 / 12.0
    numeric = {f.name for f in dictionary.table_schema.fields
               if f.type in ("number", "integer") and f.modality != "outcome"}
    assert set(harmonisation.NUMERIC_FEATURES) == numeric
    assert harmonisation.LOG1P_FEATURES == ("tumour_size_mm", "suv_max", "mtv_ml", "lesion_count", "tmb_mut_per_mb")


def test_the_field_part_is_a_frictionless_table_schema() -> None:
    schema = default_dictionary().frictionless_schema()
    fields = {f["name"]: f for f in schema["fields"]}
    assert schema["primaryKey"] == "patient_id" and "na" in schema["missingValues"]
    assert fields["age_years"]["constraints"] == {"required": True, "minimum": 18, "maximum": 110}
    assert fields["tumour_size_mm"]["unit"] == "mm" and fields["tumour_size_mm"]["unitFactors"] == {"cm": 10.0}
    assert fields["regimen"]["constraints"]["enum"] == list(vocabulary.REGIMEN_CODES)
    assert all(set(f) >= {"name", "type", "modality"} for f in schema["fields"])


def test_the_hash_is_of_the_content_not_the_layout(tmp_path: Path) -> None:
    as_json = tmp_path / "dictionary.json"
    as_json.write_text(json.dumps(default_content(), indent=1))
    assert load_dictionary(as_json).content_sha256() == default_dictionary().content_sha256()
    changed = default_content()
    changed["version"] = "1.0.1"
    assert parse_dictionary(changed, "x").content_sha256() != default_dictionary().content_sha256()


def test_no_systemic_therapy_endocrine_and_radiotherapy_treatments_are_expressible() -> None:
    content = default_content()
    content["drug_classes"] += ["endocrine", "antimetabolite_radiosensitiser"]
    content["drugs"] |= {"tamoxifen": ["endocrine"], "letrozole": ["endocrine"], "cisplatin": ["platinum"]}
    content["treatments"] += [
        {"code": "NONE", "name": "No systemic therapy", "cancer_types": ["breast", "nsclc"]},
        {"code": "TAMOXIFEN", "name": "Tamoxifen", "drugs": ["tamoxifen"], "cancer_types": ["breast"]},
        {"code": "CRT-CISPLATIN", "name": "Radiotherapy + concurrent cisplatin", "drugs": ["cisplatin"],
         "radiotherapy": True, "cancer_types": ["nsclc"]},
        {"code": "RT", "name": "Radiotherapy alone", "radiotherapy": True, "cancer_types": ["nsclc"]}]
    dictionary = parse_dictionary(content, "consortium.yaml")
    by_code = {t.code: t for t in dictionary.treatments}
    assert dictionary.treatment_classes(by_code["NONE"]) == frozenset()
    assert dictionary.treatment_classes(by_code["TAMOXIFEN"]) == {"endocrine"}
    assert by_code["CRT-CISPLATIN"].radiotherapy and dictionary.treatment_classes(by_code["RT"]) == frozenset()


def test_a_survival_only_dictionary_without_response_fields_loads() -> None:
    content = default_content()
    content["endpoints"] = ["os"]
    content["responders"] = []
    content["schema"]["fields"] = [f for f in content["schema"]["fields"]
                                   if f["name"] not in ("best_response", "pfs_days", "pfs_event")]
    assert parse_dictionary(content, "survival.yaml").endpoints == ("os",)


def _broken(edit) -> dict[str, Any]:
    content = copy.deepcopy(default_content())
    edit(content)
    return content


def _field(content: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in content["schema"]["fields"] if f["name"] == name)


MALFORMED = [
    ("unknown endpoint", lambda c: c.update(endpoints=["response", "dfs"]), "endpoints.1: Input should be"),
    ("treatment with an undeclared drug",
     lambda c: c["treatments"][0].update(drugs=["doxorubicin", "epirubicin"]),
     "treatments.AC-T: unknown drug 'epirubicin'; declare it under drugs"),
    ("treatment for an undeclared cancer", lambda c: c["treatments"][1].update(cancer_types=["prostate"]),
     "treatments.TC: unknown cancer type 'prostate'"),
    ("drug with an undeclared class", lambda c: c["drugs"].update(tamoxifen=["endocrine"]),
     "drugs.tamoxifen: unknown drug class 'endocrine'; declare it in drug_classes"),
    ("histology in two cancers", lambda c: c["cancer_types"][1]["histologies"].append("breast_other"),
     "histologies: 'breast_other' is declared twice"),
    ("field declared twice", lambda c: c["schema"]["fields"].append(dict(_field(c, "ecog"))),
     "schema.fields: 'ecog' is declared twice"),
    ("minimum above maximum", lambda c: _field(c, "ecog")["constraints"].update(minimum=5),
     "minimum 5.0 is above maximum 4.0"),
    ("range on a boolean", lambda c: _field(c, "tp53").update(constraints={"maximum": 1}),
     "a boolean field takes no minimum/maximum"),
    ("unknown field type", lambda c: _field(c, "ecog").update(type="float"), "Input should be 'string', 'number'"),
    ("endpoint without its fields", lambda c: c["schema"].update(
        fields=[f for f in c["schema"]["fields"] if f["name"] != "os_event"]),
     "endpoints: os needs the field 'os_event' in schema.fields"),
    ("outcome field of an undeclared endpoint", lambda c: c.update(endpoints=["response", "os"]),
     "schema.fields.pfs_days: the field of endpoint pfs, which is not in endpoints"),
    ("responder code not a best_response code", lambda c: c.update(responders=["CR", "MR"]),
     "responders: give the best_response codes that count as a response, among CR, PR, SD, PD"),
    ("misspelt property", lambda c: _field(c, "age_years").update(units="years"),
     "schema.fields.1(age_years).units: Extra inputs are not permitted"),
    ("optional treatment", lambda c: _field(c, "regimen")["constraints"].update(required=False),
     "schema.fields.regimen: must be required"),
    ("a modality whose fields stay declared left out", lambda c: c.update(modalities=["clinical", "pathology", "genomic"]),
     "schema.fields.tumour_size_mm: modality 'imaging' is not in modalities"),
    ("modalities out of order", lambda c: c.update(modalities=["clinical", "genomic", "pathology", "imaging"]),
     "modalities: the model's input blocks are the modalities declared here: clinical first"),
    ("cancer type outside the clinical block", lambda c: _field(c, "cancer_type").update(modality="pathology"),
     "schema.fields.cancer_type: must be of modality clinical"),
    ("modality not declared", lambda c: _field(c, "suv_max").update(modality="radiomics"),
     "schema.fields.18(suv_max).modality: Input should be"),
]


@pytest.mark.parametrize("case, edit, words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_dictionary_fails_naming_the_entry(case: str, edit, words: str) -> None:
    with pytest.raises(DictionaryError) as raised:
        parse_dictionary(_broken(edit), "consortium.yaml")
    message = str(raised.value)
    assert message.startswith("consortium.yaml: the data dictionary is not usable") and words in message, message
    assert "Fix these entries in the dictionary file" in message


def test_an_unreadable_or_non_mapping_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DictionaryError, match="cannot read the data dictionary"):
        load_dictionary(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(DictionaryError, match="is a mapping of name, version"):
        load_dictionary(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(DictionaryError, match="not valid YAML"):
        load_dictionary(tmp_path / "bad.yaml")
