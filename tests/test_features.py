"""Features: magnitude frames, the recipe's normalizations, and re-paired training mixtures."""

import numpy as np
import pytest
import torch

from sepvae.config import ModelConfig, StftConfig
from sepvae.features import fit_normalization, fit_scale, load_frames, remix_frames
from sepvae.mixing import make_mixtures, read_manifest
from sepvae.models import SourceModel, build_model
from tests.conftest import write_sample_tree


def frames(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(500, 9, generator=generator) * torch.logspace(0, -2, 9)  # loud low bins


def test_per_bin_and_global_scales():
    mixture = frames()
    assert torch.allclose(fit_scale(mixture), mixture.pow(2).mean(0).sqrt())
    overall = fit_scale(mixture, per_bin=False)
    assert overall.shape == (9,) and torch.allclose(overall, mixture.pow(2).mean().sqrt().expand(9))


def test_linear_inputs_are_the_papers_normalization():
    mixture = frames()
    normalization = fit_normalization(mixture)
    assert torch.equal(normalization.inputs(mixture), mixture / fit_scale(mixture))
    assert normalization.input_mean is None


def test_log_inputs_are_standardized_per_bin_and_travel_with_the_model():
    mixture = frames()
    normalization = fit_normalization(mixture, per_bin=False, log_inputs=True)
    inputs = normalization.inputs(mixture)
    assert torch.allclose(inputs.mean(0), torch.zeros(9), atol=1e-5)
    assert torch.allclose(inputs.std(0), torch.ones(9), atol=1e-4)
    network = build_model(ModelConfig(hidden=(8,), latent=2, decoder_hidden=(8,)), 9).eval()
    model = normalization.model(network)
    assert isinstance(model, SourceModel) and {"scale", "input_mean", "input_std"} <= set(model.state_dict())
    expected = network.estimate(inputs) * normalization.scale
    assert torch.equal(model(mixture), expected)
    with pytest.raises(ValueError, match="both input_mean and input_std"):
        SourceModel(network, normalization.scale, normalization.input_mean)


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    from sepvae.config import MixConfig
    from sepvae.corpus import index_timit

    root = tmp_path_factory.mktemp("corpus")
    utterances = index_timit(write_sample_tree(root / "timit"))
    return make_mixtures(utterances, MixConfig(n_mixtures=8, n_test=2), root / "mixtures")


def test_remixed_mixtures_pair_other_sources_from_the_given_mixtures_only(tiny_manifest):
    train = read_manifest(tiny_manifest, "train")
    stft = StftConfig()
    remixed = remix_frames(train, stft, 16000, rounds=2, gain_db=6.0, seed=0, first_index=100)
    assert set(np.unique(remixed.mixture_index)) == set(range(100, 100 + 2 * len(train)))
    assert set(remixed.speakers["male"]) <= {m.speakers["male"] for m in train}
    assert set(remixed.speakers["female"]) <= {m.speakers["female"] for m in train}
    pairs = {(m, f) for m, f in zip(remixed.speakers["male"], remixed.speakers["female"])}
    assert len(pairs) > 1
    # A mixture frame's magnitude is at most the sum of its sources' (triangle inequality).
    assert (remixed.mixture <= remixed.sources["male"] + remixed.sources["female"] + 1e-5).all()
    assert remixed.mixture.shape[1] == stft.n_bins(16000) == load_frames(train, stft, 16000).mixture.shape[1]
    again = remix_frames(train, stft, 16000, rounds=2, gain_db=6.0, seed=0, first_index=100)
    assert torch.equal(again.mixture, remixed.mixture)  # seeded
