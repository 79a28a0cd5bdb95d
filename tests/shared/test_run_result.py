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
