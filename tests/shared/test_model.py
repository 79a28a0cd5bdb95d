import itertools

import torch

from tests.factories import encoded_cohort, tiny_model


def test_any_subset_of_modalities_can_be_missing():
    cohort = encoded_cohort(12, seed=1)
    model = tiny_model().eval()
    inputs = list(cohort.inputs())
    for absent in itertools.chain.from_iterable(itertools.combinations(range(1, 4), k) for k in range(4)):
        mask = inputs[4].clone()
        mask[:, list(absent)] = 0.0
        response, pfs, os_ = model(*inputs[:4], mask, inputs[5])
        assert response.shape == (12,) and pfs.shape == os_.shape == (12, model.pfs_head.out_features)
        assert all(torch.isfinite(t).all() for t in (response, pfs, os_)), absent


def test_an_absent_modality_has_no_influence_on_the_prediction():
    cohort = encoded_cohort(8, seed=2)
    model = tiny_model().eval()
    clinical, pathology, imaging, genomic, mask, treatment = cohort.inputs()
    mask = mask.clone()
    mask[:, 3] = 0.0  # genomic not measured
    before = model(clinical, pathology, imaging, genomic, mask, treatment)
    after = model(clinical, pathology, imaging, torch.randn_like(genomic) * 5, mask, treatment)
    for a, b in zip(before, after, strict=True):
        assert torch.allclose(a, b)


def test_the_regimen_changes_the_prediction():
    cohort = encoded_cohort(8, seed=4)
    model = tiny_model().eval()
    inputs = list(cohort.inputs())
    other = inputs[5].roll(1, dims=0)
    assert not torch.allclose(model(*inputs)[0], model(*inputs[:5], other)[0])
