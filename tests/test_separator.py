"""The Separator: {source: model} from a model folder, masks that sum to one, eq. 90."""

import numpy as np
import pytest
import torch

from sepvae.checkpoint import card_of, load_checkpoint
from sepvae.config import StftConfig
from sepvae.errors import SepvaeError
from sepvae.separator import Separator
from tests.conftest import make_model_folder, speechlike

RATE = 16_000


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("models") / "run", sources=("male", "female", "child"))


def test_sources_follow_the_card_or_the_request(folder):
    assert Separator.from_run(folder, device="cpu").sources == list(card_of(folder).sources)
    assert Separator.from_run(folder, ["male", "female"], device="cpu").sources == ["male", "female"]
    with pytest.raises(SepvaeError, match="no model for source.*robot"):
        Separator.from_run(folder, ["male", "robot"], device="cpu")


def test_models_map_sources_to_other_checkpoints(folder):
    """Speaker mode: each source of a mixture is estimated by that mixture's speaker model."""
    swapped = Separator.from_run(folder, models={"female": "male", "male": "female"}, device="cpu")
    plain = Separator.from_run(folder, ["female", "male"], device="cpu")
    magnitude = torch.rand(129, 20)
    assert torch.equal(swapped.estimate_magnitudes(magnitude), plain.estimate_magnitudes(magnitude).flip(0))


def test_estimates_are_each_models_output_with_its_own_normalization(folder):
    separator = Separator.from_run(folder, ["male", "female"], device="cpu")
    magnitude = torch.rand(129, 11)
    male, _ = load_checkpoint(folder / "male.pt")
    frames = magnitude.T
    expected = male.network.estimate(frames / male.scale) * male.scale
    assert torch.equal(separator.estimate_magnitudes(magnitude)[0], expected.T)
    with pytest.raises(ValueError, match=r"magnitude must be \(129, frames\)"):
        separator.estimate_magnitudes(torch.rand(65, 11))


def test_masks_sum_to_one_and_estimates_sum_to_the_mixture(folder):
    separator = Separator.from_run(folder, device="cpu")
    mixture = torch.from_numpy(speechlike(0.5, seed=4))
    waveforms, masks = separator.separate_tensor(mixture)
    assert waveforms.shape == (3, mixture.numel()) and masks.shape[0] == 3
    assert torch.allclose(masks.sum(0), torch.ones(()), atol=1e-5)
    assert torch.allclose(waveforms.sum(0), mixture, atol=1e-4)  # the masks partition the mixture


def test_models_must_share_the_analysis(tmp_path):
    wide = make_model_folder(tmp_path / "wide", stft=StftConfig(32, 16))
    narrow = Separator.from_run(make_model_folder(tmp_path / "narrow"), device="cpu")
    wide_models = Separator.from_run(wide, device="cpu").models
    with pytest.raises(SepvaeError, match=r"\[257\] frequency bins, but the STFT \(16 ms at 16000 Hz\) gives 129"):
        Separator(wide_models, narrow.stft_config, RATE)
    with pytest.raises(SepvaeError, match="at least two source models"):
        Separator({"male": narrow.models["male"]}, narrow.stft_config, RATE)


def test_separate_matches_separate_tensor(folder):
    separator = Separator.from_run(folder, device="cpu")
    audio = speechlike(1.0, seed=2)
    whole, _ = separator.separate_tensor(torch.from_numpy(audio))
    streamed = separator.separate(audio, RATE)
    for k, name in enumerate(separator.sources):
        np.testing.assert_allclose(streamed[name], whole[k].numpy(), atol=1e-5)


def test_the_mask_exponent_defaults_to_the_cards(tmp_path):
    from sepvae.checkpoint import write_card

    folder = make_model_folder(tmp_path / "run")
    assert Separator.from_run(folder, device="cpu").mask_power == 1.0  # eq. 90
    write_card(folder, card_of(folder).replace(info={"mask_power": 2.0}))
    assert Separator.from_run(folder, device="cpu").mask_power == 2.0
    assert Separator.from_run(folder, device="cpu", mask_power=1.5).mask_power == 1.5


def _matching(folder, input_rms=0.05):
    from sepvae.checkpoint import write_card

    write_card(folder, card_of(folder).replace(input_rms=input_rms, info={"match_level": True}))
    return Separator.from_run(folder, device="cpu")


def test_level_matching_makes_the_estimates_scale_with_the_input(tmp_path):
    folder = make_model_folder(tmp_path / "run")
    plain = Separator.from_run(folder, device="cpu")
    matching = _matching(folder)
    assert matching.input_rms == 0.05 and plain.input_rms is None
    audio = speechlike(1.0, seed=3)
    loud, _ = matching.separate_tensor(torch.from_numpy(audio))
    for gain in (0.01, 0.3, 4.0):
        quiet, _ = matching.separate_tensor(torch.from_numpy(audio * gain))
        np.testing.assert_allclose(quiet.numpy(), gain * loud.numpy(), atol=2e-6 * gain, rtol=2e-4)
        # Without matching the models see another input, and the estimates change shape.
        unmatched, _ = plain.separate_tensor(torch.from_numpy(audio * gain))
        assert not np.allclose(unmatched.numpy() / gain, plain.separate_tensor(torch.from_numpy(audio))[0].numpy(),
                               atol=1e-4)
    # The streaming path measures the whole recording first: the same samples as one pass.
    streamed = matching.separate(audio * 0.3, RATE)
    whole, _ = matching.separate_tensor(torch.from_numpy(audio * 0.3))
    for k, name in enumerate(matching.sources):
        np.testing.assert_allclose(streamed[name], whole[k].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="pass the recording's rms"):
        next(matching.separate_blocks(iter([audio]), RATE))


def test_level_matching_needs_the_training_level_in_the_card(tmp_path):
    folder = make_model_folder(tmp_path / "run")
    with pytest.raises(SepvaeError, match="lacks: train it again"):
        Separator.from_run(folder, device="cpu", match_level=True)
    _matching(folder)  # the card now has the level and recommends matching
    assert Separator.from_run(folder, device="cpu").input_rms == 0.05
    assert Separator.from_run(folder, device="cpu", match_level=False).input_rms is None
