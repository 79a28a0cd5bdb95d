import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import RunConfig
from shared.run_result import RESULTS_FILE, RunResult


def test_metrics_json_is_written_once_whole_and_read_back_the_same(tmp_path: Path) -> None:
    result = RunResult(config=RunConfig().to_flower(), rounds=[{"round": 1, "train": {}}],
                       test={"north": {"num-examples": 40.0, "response-auc": 0.7}},
                       test_mean={"response-auc": 0.7}, epsilon={"north": 2.9}, seconds={"rounds": 1.5})
    result.write(tmp_path)
    written = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert "validation" not in written and "references" not in written  # not produced: left out, not null
    assert RunResult.read(tmp_path) == result


def test_an_unknown_or_missing_field_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="extra"):
        RunResult(config={}, rounds=[], test={}, surprise=1)
    with pytest.raises(ValidationError, match="test"):
        RunResult(config={}, rounds=[])
    with pytest.raises(FileNotFoundError, match="has not finished"):
        RunResult.read(tmp_path)


def test_typed_rounds_and_validation_write_back_what_was_read(tmp_path: Path) -> None:
    """metrics.json of a run with every validation phase: read into the typed models and written again, the same
    JSON (a LOSO federation that completed no round has no held-out figures, and none are written)."""
    figures = {"num-examples": 50.0, "response-auc": 0.7}
    written = {
        "config": RunConfig().to_flower(),
        "rounds": [{"round": 1, "train": {"north": {"epsilon": 1.2, "num-examples": 120.0}},
                    "validation": {"north": figures}, "update_distance": {"north": 0.8},
                    "validation_mean": {"response-auc": 0.7}, "missing": {"south": "no reply within 600 s"},
                    "seconds": {"train": 1.0, "aggregate": 0.1, "evaluate": 0.5}}],
        "test": {"north": figures}, "test_mean": {"response-auc": 0.7}, "test_missing": {}, "epsilon": {"north": 2.9},
        "validation": {
            "planned_training_rounds": 3, "budget_split": {"dp": True, "validation_rounds": 2},
            "local": {"figures": {"north": figures}, "missing": {}, "shared_models": ["north"]},
            "cross_site": {"Federated (global)": {"north": figures}, "Local: north": {"north": figures}},
            "leave_one_site_out": [
                {"held_out_site": "north", "trained_on": ["south"], "rounds": 2, "missing": {}, "epsilon": {},
                 "held_out": figures, "in_distribution": {"south": figures}},
                {"held_out_site": "south", "trained_on": [], "rounds": 0, "missing": {"north": "refused"},
                 "epsilon": {}}],
            "epsilon": {"north": 2.9}},
        "seconds": {"rounds": 1.5}}
    result = RunResult.model_validate(written)
    assert result.rounds[0].missing == {"south": "no reply within 600 s"}
    assert result.validation.leave_one_site_out[1].held_out is None
    result.write(tmp_path)
    assert json.loads((tmp_path / RESULTS_FILE).read_text()) == written
    with pytest.raises(ValidationError, match="surprise"):
        RunResult.model_validate(written | {"rounds": [{"round": 1, "train": {}, "surprise": 1}]})
