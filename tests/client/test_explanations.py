"""SHAP at the site: additive per field, silent about modalities a patient does not have."""

from __future__ import annotations

import numpy as np
import torch

from client.evaluation.explanations import OUTPUTS, _ExplainedOutputs, _flat, explain
from tests.factories import GRID, encoded_cohort, tiny_model


def _outputs(model, inputs) -> np.ndarray:
    wrapped = _ExplainedOutputs(model, GRID).eval()
    features, mask = _flat(inputs)
    wrapped.mask = mask
    with torch.no_grad():
        return wrapped(features).numpy()


def test_field_attributions_add_up_to_the_prediction_minus_the_background_mean():
    torch.set_num_threads(1)
    model, background, patients = tiny_model(), encoded_cohort(80, seed=1), encoded_cohort(12, seed=2)
    explanation = explain(model, GRID, background.inputs(), patients.inputs(), samples=400)
    assert explanation.values.shape == (12, len(explanation.fields), len(OUTPUTS))
    assert {"age_years", "stage_group", "regimen", "tp53"} <= set(explanation.fields)
    predicted = _outputs(model, patients.inputs())
    reconstructed = explanation.values.sum(axis=1) + explanation.baseline
    # expected gradients is a Monte Carlo estimate: additivity holds up to its sampling error
    error = np.abs(reconstructed - predicted).mean(axis=0)
    spread = np.abs(predicted - explanation.baseline).mean(axis=0)
    assert np.all(error < 0.1 * spread), (error, spread)


def test_a_patient_without_imaging_gets_no_imaging_attribution():
    model, background, patients = tiny_model(), encoded_cohort(40, seed=3), encoded_cohort(30, seed=4)
    absent = patients.modality_mask[:, 2] < 0.5
    assert absent.any() and (~absent).any()
    explanation = explain(model, GRID, background.inputs(), patients.inputs(), samples=50)
    imaging = [explanation.fields.index(f) for f in ("tumour_size_mm", "suv_max", "mtv_ml", "lesion_count")]
    assert np.all(explanation.values[absent.numpy()][:, imaging] == 0)
    assert np.any(explanation.values[(~absent).numpy()][:, imaging] != 0)


def test_top_drivers_are_the_largest_attributions_with_their_sign():
    model, background, patients = tiny_model(), encoded_cohort(40, seed=5), encoded_cohort(5, seed=6)
    explanation = explain(model, GRID, background.inputs(), patients.inputs(), samples=50)
    drivers = explanation.top_drivers(0, "os", k=3)
    row = explanation.values[0, :, OUTPUTS.index("os")]
    assert [abs(v) for _, v in drivers] == sorted(np.abs(row))[::-1][:3]
    importance = explanation.mean_absolute("response")
    assert set(importance) == set(explanation.fields) and all(v >= 0 for v in importance.values())
