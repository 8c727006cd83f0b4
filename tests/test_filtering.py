import numpy as np
import pytest
import torch

from sepvae.filtering import apply_masks, ideal_binary_mask, ideal_ratio_mask, ratio_mask, smooth_over_frames
from sepvae.metrics import bss_eval
from sepvae.stft import istft, stft

RATE = 16_000
N_FFT, HOP = 256, 128  # the paper's best setting E: 16 ms window, 8 ms overlap


def two_tones(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(2, time) float64: a 440 Hz and a 1500 Hz sine, each with a little white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    sources = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 1500 * t + 1.0)])
    sources += 1e-3 * rng.standard_normal(sources.shape)
    return torch.from_numpy(sources)


def test_ratio_masks_sum_to_one_and_lie_in_unit_interval():
    magnitudes = torch.rand(3, 2, 129, 40, generator=torch.Generator().manual_seed(0)) * 5
    for power in (0.5, 1.0, 2.0):
        masks = ratio_mask(magnitudes, power=power)
        assert masks.shape == magnitudes.shape
        torch.testing.assert_close(masks.sum(0), torch.ones(2, 129, 40))
        assert masks.min() >= 0 and masks.max() <= 1


def test_ratio_mask_is_the_papers_ratio():
    magnitudes = torch.tensor([3.0, 1.0]).view(2, 1, 1)
    torch.testing.assert_close(ratio_mask(magnitudes).flatten(), torch.tensor([0.75, 0.25]))


@pytest.mark.parametrize("n_sources", [2, 3])
def test_silence_is_split_equally_not_nan(n_sources):
    masks = ratio_mask(torch.zeros(n_sources, 5, 7), power=2.0)
    assert torch.isfinite(masks).all()
    torch.testing.assert_close(masks, torch.full_like(masks, 1 / n_sources))


def test_power_sharpens_towards_the_louder_source():
    magnitudes = torch.tensor([3.0, 1.0]).view(2, 1, 1)
    louder = [ratio_mask(magnitudes, power=p)[0].item() for p in (0.5, 1.0, 2.0, 4.0)]
    assert louder == sorted(louder) and louder[0] < louder[-1]
    assert louder[2] == pytest.approx(0.9)  # 9 / (9 + 1)


def test_negative_estimates_count_as_zero():
    masks = ratio_mask(torch.tensor([-2.0, 1.0]).view(2, 1, 1), power=0.5)
    assert torch.isfinite(masks).all()
    assert masks[1].item() == pytest.approx(1.0, abs=1e-6)


def test_smoothing_over_frames_is_a_triangular_mean_with_the_edges_repeated():
    """Known answer: 2 frames on each side weigh 1, 2, 3, 2, 1 / 9; beyond the ends the edge
    frames count again; each bin and source on its own; 0 frames is no smoothing."""
    magnitudes = torch.rand(2, 3, 7, dtype=torch.float64)
    smoothed = smooth_over_frames(magnitudes, 2)
    assert smoothed.shape == magnitudes.shape
    padded = torch.cat([magnitudes[..., :1]] * 2 + [magnitudes] + [magnitudes[..., -1:]] * 2, dim=-1)
    weights = torch.tensor([1.0, 2, 3, 2, 1], dtype=torch.float64) / 9
    expected = torch.stack([(padded[..., t : t + 5] * weights).sum(-1) for t in range(7)], dim=-1)
    torch.testing.assert_close(smoothed, expected)
    assert smooth_over_frames(magnitudes, 0) is magnitudes
    constant = torch.full((2, 4, 9), 0.7)
    torch.testing.assert_close(smooth_over_frames(constant, 3), constant)
    with pytest.raises(ValueError, match="frames must be >= 0, got -1"):
        smooth_over_frames(magnitudes, -1)


def test_ratio_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="sources"):
        ratio_mask(torch.rand(129, 10))
    with pytest.raises(ValueError, match="real"):
        ratio_mask(torch.rand(2, 129, 10, dtype=torch.complex64))
    with pytest.raises(ValueError, match="power"):
        ratio_mask(torch.rand(2, 129, 10), power=0)


def test_apply_masks_keeps_the_mixture_phase():
    generator = torch.Generator().manual_seed(1)
    mixture = torch.randn(4, 129, 20, dtype=torch.complex64, generator=generator)
    masks = ratio_mask(torch.rand(2, 4, 129, 20, generator=generator))
    specs = apply_masks(mixture, masks)
    assert specs.shape == (2, 4, 129, 20) and specs.dtype == torch.complex64
    expected = masks * mixture.abs() * torch.exp(1j * mixture.angle())  # eq. 90
    torch.testing.assert_close(specs, expected.to(torch.complex64), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(specs.sum(0), mixture, rtol=1e-5, atol=1e-6)  # masks sum to one


def test_apply_masks_rejects_mismatched_shapes():
    mixture = torch.randn(129, 20, dtype=torch.complex64)
    with pytest.raises(ValueError, match="masks"):
        apply_masks(mixture, torch.rand(2, 129, 21))
    with pytest.raises(ValueError, match="complex"):
        apply_masks(mixture.abs(), torch.rand(2, 129, 20))


def test_oracle_ratio_mask_separates_two_tones():
    sources = two_tones()
    mixture = sources.sum(0)
    specs = stft(sources, N_FFT, HOP)
    estimates = istft(apply_masks(stft(mixture, N_FFT, HOP), ideal_ratio_mask(specs)), N_FFT, HOP, mixture.shape[-1])
    references, estimates = sources.numpy(), estimates.numpy()
    sdr, sir, _ = bss_eval(references, estimates)
    assert (sdr > 20).all(), sdr
    # The same estimates attributed to the wrong sources are mostly interference.
    _, swapped_sir, _ = bss_eval(references, estimates[::-1])
    assert (swapped_sir < 0).all(), swapped_sir
    assert (sir > 20).all(), sir


def test_ideal_binary_mask_is_zero_one_and_picks_the_louder_source():
    specs = stft(two_tones(0.25), N_FFT, HOP)
    masks = ideal_binary_mask(specs)
    assert masks.shape == specs.shape and not masks.is_complex()
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(masks.sum(0), torch.ones_like(masks[0]))
    louder = (specs[0].abs() > specs[1].abs()).to(masks.dtype)
    torch.testing.assert_close(masks[0], louder)
    bin_440, bin_1500 = round(440 * N_FFT / RATE), round(1500 * N_FFT / RATE)
    assert masks[0, bin_440].mean() == 1 and masks[1, bin_1500].mean() == 1


def test_ideal_ratio_mask_of_magnitudes_equals_that_of_complex_specs():
    specs = stft(two_tones(0.25), N_FFT, HOP)
    torch.testing.assert_close(ideal_ratio_mask(specs, power=2), ideal_ratio_mask(specs.abs(), power=2))
