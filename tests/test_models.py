"""sepvae.models: shapes, losses against references, divergences, training behaviour, errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from sepvae.config import STFT_SETTINGS, ModelConfig, StftConfig, model_config
from sepvae.errors import SepvaeError
from sepvae.losses import (
    cauchy_schwarz_divergence,
    euclidean_divergence,
    gaussian_kl,
    log_information_potential,
    reconstruction_loss,
    sample_prior,
)
from sepvae.models import ITLAE, MODELS, VAE, FrameAutoencoder, ModelOutput, build_model

MODEL_NAMES = ("vae", "beta-vae", "itl-ae", "ae")
# Small networks so that training tests take a fraction of a second.
TINY = {"hidden": [64], "latent": 8, "decoder_hidden": [64]}
ITL_VARIANTS = [
    {"divergence": "cs", "prior": "gaussian"},
    {"divergence": "euclidean", "prior": "laplacian"},
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These networks are tiny: one thread is faster, and does not slow to a crawl when
    # other processes share the machine's cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(name: str, n_bins: int = 32, **overrides) -> FrameAutoencoder:
    return build_model(model_config({"name": name, **TINY, **overrides}), n_bins)


def _toy_frames(n_frames: int = 64, n_bins: int = 32, seed: int = 0):
    """A non-negative mixture of two low-rank 'sources', and the first source."""
    generator = torch.Generator().manual_seed(seed)
    def low_rank():
        activations = torch.rand(n_frames, 4, generator=generator)
        return activations @ (2 * torch.rand(4, n_bins, generator=generator))

    source, other = low_rank(), low_rank()
    return source + other, source


# ---------------------------------------------------------------------------------------
# Shapes and outputs


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("letter", sorted(STFT_SETTINGS))
def test_paper_sized_models_have_the_right_shapes(name, letter):
    n_bins = StftConfig.setting(letter).n_bins(16_000)
    # The paper's sizes: encoder [M, 256, 256, 128], decoder [256, 256, M].
    model = build_model(model_config({"name": name}), n_bins)
    mixture = torch.rand(5, n_bins)
    out = model(mixture, torch.rand(5, n_bins))
    assert isinstance(out, ModelOutput)
    assert out.loss.shape == out.recon.shape == out.reg.shape == ()
    assert out.estimate.shape == (5, n_bins)
    assert torch.isfinite(out.loss)
    assert model.estimate(mixture).shape == (5, n_bins)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears[0].in_features == n_bins and linears[-1].out_features == n_bins


def _linear_sizes(model):
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return [(m.in_features, m.out_features) for m in linears]


def test_layer_sizes_follow_the_config():
    ae = build_model(ModelConfig(name="ae", hidden=(100, 50), latent=7, decoder_hidden=(30,)), 129)
    assert _linear_sizes(ae) == [(129, 100), (100, 50), (50, 7), (7, 30), (30, 129)]
    vae = build_model(ModelConfig(name="vae", hidden=(100,), latent=7, decoder_hidden=()), 129)
    # The mu and logvar heads are one linear layer of twice the latent size.
    assert _linear_sizes(vae) == [(129, 100), (100, 14), (7, 129)]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_estimates_are_never_negative(name):
    model = _model(name)
    with torch.no_grad():
        model.decoder[-1].bias.fill_(-60.0)  # push every output towards zero from below
    mixture = torch.randn(16, 32) * 10
    assert (model.estimate(mixture) >= 0).all()
    assert (model(mixture, mixture.abs()).estimate >= 0).all()


def test_ae_has_no_regularizer_and_loss_is_recon():
    mixture, source = _toy_frames()
    out = _model("ae")(mixture, source)
    assert out.reg == 0
    assert torch.equal(out.loss, out.recon)


def test_reconstruction_loss_sums_bins_and_averages_frames():
    estimate = torch.zeros(4, 3)
    target = torch.ones(4, 3) * torch.tensor([1.0, 2.0, 3.0, 4.0]).unsqueeze(1)
    expected = np.mean([3 * v**2 for v in (1, 2, 3, 4)])
    assert reconstruction_loss(estimate, target).item() == pytest.approx(expected)


# ---------------------------------------------------------------------------------------
# KL


def test_gaussian_kl_matches_monte_carlo():
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    logvar = torch.randn(3, 4, generator=generator, dtype=torch.float64) * 0.5
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(200_000, 3, 4, generator=generator, dtype=torch.float64)
    log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    samples = log_q - log_p
    monte_carlo = samples.mean(0)
    stderr = samples.std(0) / math.sqrt(samples.shape[0])
    analytic = gaussian_kl(mu, logvar)
    assert analytic.shape == (3,)
    assert ((analytic - monte_carlo).abs() < 5 * stderr + 1e-3).all()


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max() < 1e-7
    assert (gaussian_kl(torch.full((2, 5), 0.3), torch.zeros(2, 5)) > 0).all()
    assert (gaussian_kl(torch.zeros(2, 5), torch.full((2, 5), -1.0)) > 0).all()


# ---------------------------------------------------------------------------------------
# ITL divergences


def _reference_potentials(x: np.ndarray, y: np.ndarray, sigma: float):
    """Eqs. 82 and 84 term by term with normalized Gaussian kernels of variance 2 sigma^2."""

    def gaussian(a, b, var):
        d = len(a)
        sq = sum((a[k] - b[k]) ** 2 for k in range(d))
        return (2 * math.pi * var) ** (-d / 2) * math.exp(-sq / (2 * var))

    var = 2 * sigma**2

    def potential(a, b):
        return sum(gaussian(ai, bj, var) for ai in a for bj in b) / (len(a) * len(b))

    return potential(x, x), potential(y, y), potential(x, y)


def test_divergences_match_a_double_loop_over_eqs_82_to_85():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    y = rng.normal(loc=0.5, size=(4, 3))
    sigma = 0.7
    v_q, v_p, v_c = _reference_potentials(x, y, sigma)
    cs_reference = math.log(v_q * v_p / v_c**2)  # eq. 83
    ed_reference = v_q + v_p - 2 * v_c  # eq. 85
    # Our potentials leave out the Gaussian constant common to all of them (docstring).
    constant = (4 * math.pi * sigma**2) ** (-x.shape[1] / 2)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert log_information_potential(tx, ty, sigma).item() == pytest.approx(
        math.log(v_c / constant), rel=1e-10
    )
    assert cauchy_schwarz_divergence(tx, ty, sigma).item() == pytest.approx(cs_reference, rel=1e-10)
    assert (euclidean_divergence(tx, ty, sigma) * constant).item() == pytest.approx(
        ed_reference, rel=1e-10
    )


@pytest.mark.parametrize("divergence", [cauchy_schwarz_divergence, euclidean_divergence])
def test_divergence_is_near_zero_for_one_distribution_and_grows_with_a_shift(divergence):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(500, 2, generator=generator, dtype=torch.float64)
    same = divergence(x, y, 0.5)
    shifted = divergence(x + 2.0, y, 0.5)
    assert 0 <= same < 0.03
    assert shifted > 0.1
    assert shifted > 20 * same
    assert divergence(x, y, 0.5).item() == pytest.approx(divergence(y, x, 0.5).item())  # symmetric


def test_divergences_stay_finite_in_128_dimensions():
    # Every kernel value underflows here (squared distances ~ 128 * 100); log space copes.
    generator = torch.Generator().manual_seed(0)
    codes = (torch.randn(70, 128, generator=generator) + 10.0).requires_grad_()
    prior = torch.randn(70, 128, generator=generator)
    for divergence in (cauchy_schwarz_divergence, euclidean_divergence):
        value = divergence(codes, prior, 1.0)
        (grad,) = torch.autograd.grad(value, codes)
        assert torch.isfinite(value) and value >= 0
        assert torch.isfinite(grad).all()
    assert cauchy_schwarz_divergence(codes, prior, 1.0) > 1000  # far apart, clearly so


def test_prior_samples_have_the_right_moments_and_are_reproducible():
    generator = torch.Generator().manual_seed(0)
    gaussian = sample_prior("gaussian", 20_000, 3, generator=generator, dtype=torch.float64)
    laplacian = sample_prior("laplacian", 20_000, 3, generator=generator, dtype=torch.float64)
    assert gaussian.shape == laplacian.shape == (20_000, 3)
    assert gaussian.mean().abs() < 0.03 and (gaussian.var() - 1).abs() < 0.05
    # Laplace(0, 1): E|z| = 1, variance 2.
    assert laplacian.mean().abs() < 0.03 and (laplacian.abs().mean() - 1).abs() < 0.03
    assert (laplacian.var() - 2).abs() < 0.1
    first = sample_prior("laplacian", 4, 2, generator=torch.Generator().manual_seed(5))
    second = sample_prior("laplacian", 4, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    torch.manual_seed(3)
    first = sample_prior("gaussian", 4, 2)
    torch.manual_seed(3)
    assert torch.equal(first, sample_prior("gaussian", 4, 2))


# ---------------------------------------------------------------------------------------
# VAE and beta-VAE


def test_beta_vae_is_the_vae_with_another_beta():
    vae, beta_vae = _model("vae"), _model("beta-vae")
    assert type(vae) is type(beta_vae) is VAE and MODELS["beta-vae"] is MODELS["vae"]
    assert (vae.beta, beta_vae.beta) == (1.0, 4.0)
    assert dataclasses.replace(beta_vae.config, name="vae", beta=1.0) == vae.config
    beta_vae.load_state_dict(vae.state_dict())  # same parameters, same shapes
    mixture, source = _toy_frames()
    torch.manual_seed(0)
    out = vae(mixture, source)
    torch.manual_seed(0)
    out_beta = beta_vae(mixture, source)
    assert torch.equal(out.recon, out_beta.recon) and torch.equal(out.reg, out_beta.reg)
    assert torch.allclose(out_beta.loss - out.loss, 3.0 * out.reg)


def test_vae_loss_is_recon_plus_beta_times_kl_of_the_encoder_output():
    model = _model("vae", beta=2.5)
    mixture, source = _toy_frames()
    out = model(mixture, source)
    mu, logvar = model.encode(mixture).chunk(2, dim=-1)
    assert torch.allclose(out.reg, gaussian_kl(mu, logvar).mean())
    assert torch.allclose(out.loss, out.recon + 2.5 * out.reg)


def test_vae_estimate_is_deterministic_and_decodes_the_mean():
    model = _model("vae", eps_std=1.0)  # large noise, so sampling would show
    mixture, source = _toy_frames()
    torch.manual_seed(0)
    first = model.estimate(mixture)
    second = model.estimate(mixture)
    assert torch.equal(first, second)
    assert model.training  # estimate() does not switch modes
    mu = model.encode(mixture).chunk(2, dim=-1)[0]
    assert torch.allclose(first, model.decode(mu))
    assert not first.requires_grad
    # Training-mode forward samples; eval-mode forward decodes the mean like estimate().
    assert not torch.allclose(model(mixture, source).estimate, first)
    model.eval()
    assert torch.allclose(model(mixture, source).estimate, first)


def test_vae_noise_scale_is_eps_std():
    # With a constant logvar of 0 the decoder input is mu + eps_std * N(0, 1).
    model = _model("vae", eps_std=0.01)
    mixture, source = _toy_frames()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()  # mu = 0, logvar = 0
    seen = []
    hook = model.decoder.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    model(torch.cat([mixture] * 50), torch.cat([source] * 50))
    hook.remove()
    assert seen[0].std().item() == pytest.approx(0.01, rel=0.05)


# ---------------------------------------------------------------------------------------
# ITL-AE


@pytest.mark.parametrize("variant", ITL_VARIANTS)
def test_itl_ae_regularizer_is_the_divergence_to_prior_samples(variant):
    model = _model("itl-ae", itl_lambda=0.5, kernel_sigma=2.0, **variant)
    assert isinstance(model, ITLAE)
    mixture, source = _toy_frames(n_frames=10)
    out = model(mixture, source, generator=torch.Generator().manual_seed(7))
    prior = sample_prior(variant["prior"], 10, 8, generator=torch.Generator().manual_seed(7))
    divergence = {"cs": cauchy_schwarz_divergence, "euclidean": euclidean_divergence}
    divergence = divergence[variant["divergence"]]
    assert torch.allclose(out.reg, divergence(model.encode(mixture), prior, 2.0))
    assert torch.allclose(out.loss, out.recon + 0.5 * out.reg)
    assert torch.equal(model.estimate(mixture), model.estimate(mixture))


# ---------------------------------------------------------------------------------------
# Training behaviour


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_seeded_forward_is_reproducible(name):
    mixture, source = _toy_frames()
    model = _model(name)
    torch.manual_seed(11)
    first = model(mixture, source).loss
    torch.manual_seed(11)
    assert torch.equal(first, model(mixture, source).loss)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_optimizer_step_changes_every_weight(name):
    torch.manual_seed(0)
    model = _model(name)
    mixture, source = _toy_frames()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(mixture, source).loss.backward()
    optimizer.step()
    for key, value in model.state_dict().items():
        assert not torch.equal(before[key], value), key


@pytest.mark.parametrize(
    "name,overrides",
    [("vae", {}), ("beta-vae", {}), ("ae", {})] + [("itl-ae", v) for v in ITL_VARIANTS],
)
def test_each_model_overfits_a_tiny_dataset(name, overrides):
    torch.manual_seed(0)
    model = _model(name, **overrides)
    mixture, source = _toy_frames()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        out = model(mixture, source)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    model.eval()
    assert reconstruction_loss(model.estimate(mixture), source) < losses[0] / 10


# ---------------------------------------------------------------------------------------
# Errors


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(SepvaeError) as info:
        build_model(ModelConfig(name="wae"), 129)
    for name in MODELS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "itl-ae", "divergence": "kl"},
        {"name": "itl-ae", "prior": "uniform"},
        {"name": "itl-ae", "kernel_sigma": 0.0},
        {"name": "vae", "latent": 0},
        {"name": "vae", "beta": -1.0},
    ],
)
def test_impossible_configs_are_user_errors(overrides):
    with pytest.raises(SepvaeError):
        build_model(ModelConfig(**overrides), 129)


def test_models_reject_frames_of_the_wrong_shape():
    model = _model("vae")
    with pytest.raises(ValueError, match="bins"):
        model(torch.rand(4, 31), torch.rand(4, 31))
    with pytest.raises(ValueError):
        model(torch.rand(32), torch.rand(32))  # 1-d
    with pytest.raises(ValueError):
        model(torch.rand(4, 32), torch.rand(5, 32))  # mismatched target
    with pytest.raises(ValueError):
        model.estimate(torch.rand(2, 3, 32))


def test_helpers_reject_bad_shapes():
    with pytest.raises(ValueError):
        gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError):
        gaussian_kl(torch.tensor(0.0), torch.tensor(0.0))
    for divergence in (log_information_potential, cauchy_schwarz_divergence, euclidean_divergence):
        with pytest.raises(ValueError):
            divergence(torch.zeros(4), torch.zeros(4), 1.0)
        with pytest.raises(ValueError):
            divergence(torch.zeros(4, 2), torch.zeros(4, 3), 1.0)
        with pytest.raises(ValueError):
            divergence(torch.zeros(4, 2), torch.zeros(4, 2), 0.0)
    with pytest.raises(ValueError):
        reconstruction_loss(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError):
        sample_prior("cauchy", 3, 2)
    with pytest.raises(ValueError):
        sample_prior("gaussian", 0, 2)
