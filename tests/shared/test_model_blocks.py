"""The network's input blocks are the dictionary's modalities: a one-modality dictionary gives a one-block model
that trains; the default dictionary gives the four-block network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.contract import MODALITIES
from shared.encoding import EncodedCohort, input_sizes
from shared.model import OncoFedNet
from tests.factories import GRID, encoded_cohort

REPO = Path(__file__).resolve().parents[2]


def test_the_default_dictionary_gives_the_four_block_network() -> None:
    model = OncoFedNet(GRID.num_intervals, 16)
    assert MODALITIES == ("clinical", "pathology", "imaging", "genomic")
    assert sorted(model.encoders) == sorted(MODALITIES)
    assert model.interaction.patient.in_features == sum(input_sizes()[m] for m in MODALITIES) + len(MODALITIES)


def test_an_encoded_cohort_round_trips_through_its_tensors_and_refuses_other_blocks() -> None:
    cohort = encoded_cohort(10, seed=1)
    rows = torch.tensor([1, 4, 7])
    again = EncodedCohort.from_tensors([t[rows] for t in cohort.tensors()])
    assert len(again) == 3 and all(torch.equal(a, b[rows]) for a, b in zip(again.tensors(), cohort.tensors()))
    with pytest.raises(ValueError, match="needs the blocks clinical, pathology, imaging, genomic"):
        EncodedCohort(*((dict(list(cohort.blocks.items())[:1]),) + cohort.tensors()[len(MODALITIES):]))
    with pytest.raises(ValueError, match="takes 6 inputs"):
        OncoFedNet(GRID.num_intervals, 16)(*cohort.inputs()[1:])


def test_a_one_modality_dictionary_builds_a_one_block_model_that_trains(tmp_path: Path) -> None:
    app = tmp_path / "app"
    for package in ("shared", "client", "tests"):
        shutil.copytree(REPO / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "tests" / "data" / "one_modality_dictionary.yaml", app / "shared" / "dictionaries" / "default.yaml")
    finished = subprocess.run([sys.executable, "-m", "tests.one_block_model"], cwd=app, capture_output=True, text=True,
                              env=os.environ | {"PYTHONPATH": str(app), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert result["modalities"] == result["blocks"] == result["encoders"] == ["clinical"]
    assert result["inputs"] == 3 and result["mask_columns"] == 1  # the block, the presence mask, the treatment
    # age, ecog, cancer type (one code), the ecog missingness indicator; regimens (2) + line of therapy
    assert result["sizes"] == {"clinical": 4, "treatment": 3}
    assert result["loss_after"] < result["loss_before"]
