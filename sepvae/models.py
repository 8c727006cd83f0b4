"""Fully connected, frame-by-frame models of the paper (Section 8): VAE, beta-VAE, ITL-AE, AE.

Every model maps a normalized mixture magnitude frame ``(batch, M)`` to an estimate of one
source's normalized frame ``(batch, M)``, and trains against that source's true frame.
They share one network, :class:`FrameAutoencoder`:

    encoder  [M, *hidden] (ReLU after each layer), then a linear latent head
    decoder  [latent, *decoder_hidden, M] (ReLU between layers), then softplus

and differ only in how the code reaches the decoder and in the regularizer added to the
reconstruction loss (pythae style: :meth:`forward` returns a :class:`ModelOutput` whose
``loss`` the training loop minimizes without knowing which model it trains):

    ae       z = code                                     loss = recon
    vae      z = mu + sigma * eps, eps ~ N(0, eps_std^2)  loss = recon + beta * KL
    itl-ae   z = code                                     loss = recon + itl_lambda * D
                                                          (D: divergence of codes to prior)

beta-VAE is the VAE with ``beta`` from the config (its registry entry, ``sepvae.methods``, gives 4).

Loss scale. ``recon`` is the squared error summed over the M bins and averaged over the
frames of the batch: a per-frame negative log-likelihood (a Gaussian decoder with fixed
variance 1/2, up to a constant) that does not change with the batch size. The KL is likewise
summed over latent dimensions and averaged over frames, so ``recon + beta * KL`` is the
per-frame negative ELBO (eq. 57 divided by N) and beta keeps the meaning it has in eq. 72.
The ITL divergence is a property of the batch as a whole (a divergence between two sets of
samples), so it is one number per batch, added once, like pythae's WAE-MMD term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sepvae.config import ModelConfig
from sepvae.errors import SepvaeError

PRIORS = ("gaussian", "laplacian")
DIVERGENCES = ("cs", "euclidean")


@dataclass
class ModelOutput:
    """What :meth:`FrameAutoencoder.forward` returns.

    ``loss = recon + weight * reg`` is what the optimizer minimizes, where ``weight`` is
    ``beta`` (VAE), ``itl_lambda`` (ITL-AE) or 0 (AE); ``reg`` is the unweighted KL or
    divergence, so runs with different weights log comparable values.

    Shape:
        - loss, recon, reg: ``()``
        - estimate: ``(batch, M)``, non-negative
    """

    loss: Tensor
    recon: Tensor
    reg: Tensor
    estimate: Tensor


# ---------------------------------------------------------------------------------------
# Losses and divergences


def reconstruction_loss(estimate: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over bins, averaged over frames (see the module docstring).

    Shape:
        - estimate, target: ``(batch, M)``
        - output: ``()``
    """
    _check_frames(estimate, "estimate")
    if target.shape != estimate.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} != estimate shape {tuple(estimate.shape)}"
        )
    return (estimate - target).pow(2).sum(dim=-1).mean()


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """Analytic KL( N(mu, diag(exp(logvar))) || N(0, I) ), summed over the last axis.

    ``0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2)`` (Section 4, the negative of the last
    line of the KL derivation).

    Shape:
        - mu, logvar: ``(..., latent)``
        - output: ``(...)``
    """
    if mu.dim() < 1 or mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar must have the same shape (..., latent), got "
            f"{tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def _check_sample_sets(x: Tensor, y: Tensor, sigma: float) -> None:
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(
            f"samples must be 2-d (n, dim), got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    if x.shape[0] < 1 or y.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"need at least one sample of dimension >= 1, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if not sigma > 0:
        raise ValueError(f"kernel sigma must be > 0, got {sigma}")


def log_information_potential(x: Tensor, y: Tensor, sigma: float) -> Tensor:
    """Log of the (cross) quadratic information potential of two sample sets, unnormalized.

    ``log( 1/(n m) * sum_i sum_j exp(-||x_i - y_j||^2 / (4 sigma^2)) )``

    Bandwidth convention: ``sigma`` is the Parzen window size of the density estimates
    built from ``x`` and ``y``. The product of two Parzen estimates with Gaussian kernels of
    variance ``sigma^2`` integrates to a sum of Gaussians of variance ``2 sigma^2``
    (Principe, Information Theoretic Learning, ch. 2), so ALL potentials - V_q, V_p
    (eq. 82) and V_c (eq. 84) - use the kernel G(. | ., 2 sigma^2). Eq. 82's ``sigma^2``
    is read as the Parzen window; using different variances for the self and cross terms
    would make D(p || p) far from 0 (by d * log 2 for the CS divergence in d dimensions).
    The ``i == j`` terms are kept, as eq. 82 writes; with them the estimated D_CS and D_ED
    are exactly the divergences between the two Parzen estimates, hence never negative.

    Normalization: the Gaussian constant ``(4 pi sigma^2)^(-dim/2)`` is left out. It is
    common to every potential, so it cancels in the CS divergence and only rescales the
    Euclidean one, and in 128 dimensions it would underflow (or overflow for small sigma).
    Working in log space with log-sum-exp keeps the potentials finite when every kernel
    value underflows, as it does for codes far from the prior samples in high dimension.

    Shape:
        - x: ``(n, dim)``, y: ``(m, dim)``
        - output: ``()``
    """
    _check_sample_sets(x, y, sigma)
    # ||x||^2 + ||y||^2 - 2 x.y: one matmul, O(n m) memory (fast on GPU); the clamp
    # removes the small negative values that cancellation leaves on the diagonal.
    sq_dist = (
        x.pow(2).sum(dim=1, keepdim=True)
        + y.pow(2).sum(dim=1).unsqueeze(0)
        - 2.0 * (x @ y.T)
    ).clamp_min(0.0)
    log_kernel = -sq_dist / (4.0 * sigma**2)
    return torch.logsumexp(log_kernel.flatten(), dim=0) - math.log(x.shape[0] * y.shape[0])


def cauchy_schwarz_divergence(x: Tensor, y: Tensor, sigma: float) -> Tensor:
    """Kernel estimate of the Cauchy-Schwarz divergence between the samples' densities.

    ``D_CS = log(V_x V_y / V_c^2)`` (eq. 83, which is twice eq. 33), computed as
    ``log V_x + log V_y - 2 log V_c`` so that it stays finite in high dimension. See
    :func:`log_information_potential` for the bandwidth convention. Symmetric and >= 0.

    Shape:
        - x: ``(n, dim)``, y: ``(m, dim)``
        - output: ``()``
    """
    _check_sample_sets(x, y, sigma)
    return (
        log_information_potential(x, x, sigma)
        + log_information_potential(y, y, sigma)
        - 2.0 * log_information_potential(x, y, sigma)
    )


def euclidean_divergence(x: Tensor, y: Tensor, sigma: float) -> Tensor:
    """Kernel estimate of the Euclidean divergence ``V_x + V_y - 2 V_c`` (eq. 85).

    The potentials are unnormalized (see :func:`log_information_potential`), so this is
    ``(4 pi sigma^2)^(dim/2)`` times eq. 85 with normalized Gaussian kernels: the same
    minimizer, on a scale between 0 and 2 whatever the dimension. Symmetric and >= 0.

    Shape:
        - x: ``(n, dim)``, y: ``(m, dim)``
        - output: ``()``
    """
    _check_sample_sets(x, y, sigma)
    return (
        log_information_potential(x, x, sigma).exp()
        + log_information_potential(y, y, sigma).exp()
        - 2.0 * log_information_potential(x, y, sigma).exp()
    )


def sample_prior(
    prior: str,
    n: int,
    dim: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Draw ``n`` independent samples from a unit-scale, zero-mean isotropic prior.

    ``"gaussian"``: N(0, I). ``"laplacian"``: independent Laplace(0, 1) coordinates
    (density ``exp(-|z|) / 2``, variance 2), drawn as the difference of two Exp(1) draws.
    Randomness comes from ``generator`` if given (it must live on ``device``), else from
    torch's global RNG, so a seeded run is reproducible.

    Shape:
        - output: ``(n, dim)``
    """
    if prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; known: {', '.join(PRIORS)}")
    if n < 1 or dim < 1:
        raise ValueError(f"need n >= 1 and dim >= 1, got n={n}, dim={dim}")
    if prior == "gaussian":
        return torch.randn(n, dim, generator=generator, device=device, dtype=dtype)
    both = torch.empty(2, n, dim, device=device, dtype=dtype).exponential_(generator=generator)
    return both[0] - both[1]


# ---------------------------------------------------------------------------------------
# Models


def _check_frames(frames: Tensor, name: str, n_bins: int | None = None) -> None:
    if frames.dim() != 2:
        raise ValueError(f"{name} must be (batch, bins), got shape {tuple(frames.shape)}")
    if n_bins is not None and frames.shape[1] != n_bins:
        raise ValueError(f"{name} has {frames.shape[1]} bins, the model expects {n_bins}")


def _mlp(sizes: list[int], relu_after_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if relu_after_last or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FrameAutoencoder(nn.Module):
    """The shared network; by itself it is the plain autoencoder ``ae`` (reg = 0).

    Subclasses change :meth:`_latent` (how the encoder output becomes the decoder input,
    and the regularizer) and ``n_heads`` (how many latent-sized outputs the encoder has).

    The decoder ends in softplus so an estimate can never be negative, as the normalized
    magnitudes it approximates are not; unlike ReLU, softplus keeps a gradient for outputs
    that are pushed towards 0 (silent bins), and unlike exp it grows only linearly.

    Shape:
        - mixture, target frames: ``(batch, n_bins)``
    """

    n_heads = 1

    def __init__(self, config: ModelConfig, n_bins: int):
        super().__init__()
        self.config = config
        self.n_bins = n_bins
        self.latent = config.latent
        self.encoder = _mlp([n_bins, *config.hidden], relu_after_last=True)
        width = config.hidden[-1] if config.hidden else n_bins
        self.head = nn.Linear(width, self.n_heads * config.latent)
        self.decoder = _mlp([config.latent, *config.decoder_hidden, n_bins], relu_after_last=False)

    def encode(self, mixture: Tensor) -> Tensor:
        """The latent head's output: the code (AE, ITL-AE) or ``[mu, logvar]`` (VAE).

        Shape:
            - mixture: ``(batch, n_bins)``
            - output: ``(batch, n_heads * latent)``
        """
        _check_frames(mixture, "mixture", self.n_bins)
        return self.head(self.encoder(mixture))

    def decode(self, z: Tensor) -> Tensor:
        """Shape: z ``(batch, latent)`` -> ``(batch, n_bins)``, non-negative."""
        return F.softplus(self.decoder(z))

    def _latent(
        self, encoded: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, float]:
        """(decoder input, unweighted regularizer, its weight)."""
        return encoded, encoded.new_zeros(()), 0.0

    def _mean_latent(self, encoded: Tensor) -> Tensor:
        """The deterministic decoder input used by :meth:`estimate`."""
        return encoded

    def forward(
        self, mixture: Tensor, target: Tensor, generator: torch.Generator | None = None
    ) -> ModelOutput:
        """Estimate ``target`` from ``mixture`` and compute the training loss.

        ``generator`` (optional) supplies the randomness (VAE noise, ITL-AE prior samples);
        otherwise torch's global RNG does.

        Shape:
            - mixture, target: ``(batch, n_bins)``
        """
        _check_frames(target, "target", self.n_bins)
        if target.shape != mixture.shape:
            raise ValueError(
                f"target shape {tuple(target.shape)} != mixture shape {tuple(mixture.shape)}"
            )
        z, reg, weight = self._latent(self.encode(mixture), generator)
        estimate = self.decode(z)
        recon = reconstruction_loss(estimate, target)
        return ModelOutput(loss=recon + weight * reg, recon=recon, reg=reg, estimate=estimate)

    @torch.no_grad()
    def estimate(self, mixture: Tensor) -> Tensor:
        """Deterministic estimate of the source's frames (the VAE decodes the posterior mean).

        Shape:
            - mixture: ``(batch, n_bins)``
            - output: ``(batch, n_bins)``, non-negative
        """
        return self.decode(self._mean_latent(self.encode(mixture)))


class VAE(FrameAutoencoder):
    """VAE (beta = 1) and beta-VAE (eq. 72): the KL term weighted by ``config.beta``.

    The reparameterization noise has standard deviation ``config.eps_std`` (0.01, which the
    paper found necessary), i.e. z = mu + exp(logvar / 2) * eps with eps ~ N(0, eps_std^2).
    The KL regularizer is the analytic KL(N(mu, sigma^2) || N(0, I)) of Section 4 as in
    the paper's setup, not the KL of the narrower distribution z is actually drawn from.
    In training mode z is sampled; in eval mode (and in :meth:`estimate`) z = mu, so the
    validation loss and separation are deterministic.
    """

    n_heads = 2

    def __init__(self, config: ModelConfig, n_bins: int):
        super().__init__(config, n_bins)
        self.beta = config.beta
        self.eps_std = config.eps_std

    def _latent(self, encoded, generator):
        mu, logvar = encoded.chunk(2, dim=-1)
        reg = gaussian_kl(mu, logvar).mean()
        if not self.training:
            return mu, reg, self.beta
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * (self.eps_std * eps)
        return z, reg, self.beta

    def _mean_latent(self, encoded):
        return encoded.chunk(2, dim=-1)[0]


class ITLAE(FrameAutoencoder):
    """Information-theoretic learning autoencoder (Section 6.14, eq. 81).

    Deterministic encoder; the regularizer is the CS (eq. 83) or Euclidean (eq. 85)
    divergence between the batch's codes and as many fresh samples from the prior, with
    Gaussian kernels of Parzen size ``config.kernel_sigma`` (default sqrt(latent); see
    :func:`log_information_potential`), weighted by ``config.itl_lambda``.
    """

    def __init__(self, config: ModelConfig, n_bins: int):
        super().__init__(config, n_bins)
        self.divergence = {"cs": cauchy_schwarz_divergence, "euclidean": euclidean_divergence}[
            config.divergence
        ]
        self.kernel_sigma = config.kernel_sigma or math.sqrt(config.latent)

    def _latent(self, encoded, generator):
        prior = sample_prior(
            self.config.prior,
            encoded.shape[0],
            encoded.shape[1],
            generator=generator,
            device=encoded.device,
            dtype=encoded.dtype,
        )
        reg = self.divergence(encoded, prior, self.kernel_sigma)
        return encoded, reg, self.config.itl_lambda


MODELS: dict[str, type[FrameAutoencoder]] = {
    "vae": VAE, "beta-vae": VAE, "itl-ae": ITLAE, "ae": FrameAutoencoder,
    "vae-fit": VAE, "beta-vae-fit": VAE,  # the VAE trained source -> source (sepvae.fitting)
}


def build_model(config: ModelConfig, n_bins: int) -> FrameAutoencoder:
    """The model ``config.name`` for frames of ``n_bins`` frequency bins.

    Raises:
        SepvaeError: unknown model name or an impossible setting in ``config``.
    """
    try:
        cls = MODELS[config.name]
    except KeyError:
        raise SepvaeError(
            f"unknown model {config.name!r}; known models: {', '.join(MODELS)}"
        ) from None
    if n_bins < 1:
        raise SepvaeError(f"a model needs at least one frequency bin, got {n_bins}")
    sizes = [config.latent, *config.hidden, *config.decoder_hidden]
    if any(not isinstance(s, int) or s < 1 for s in sizes):
        raise SepvaeError(f"layer sizes must be positive integers, got {sizes}")
    if cls is VAE:
        if config.beta < 0:
            raise SepvaeError(f"beta must be >= 0, got {config.beta}")
        if config.eps_std < 0:
            raise SepvaeError(f"eps_std must be >= 0, got {config.eps_std}")
    if cls is ITLAE:
        if config.divergence not in DIVERGENCES:
            raise SepvaeError(
                f"unknown divergence {config.divergence!r}; known: {', '.join(DIVERGENCES)}"
            )
        if config.prior not in PRIORS:
            raise SepvaeError(f"unknown prior {config.prior!r}; known: {', '.join(PRIORS)}")
        if config.kernel_sigma is not None and not config.kernel_sigma > 0:
            raise SepvaeError(f"kernel_sigma must be > 0, got {config.kernel_sigma}")
        if config.itl_lambda < 0:
            raise SepvaeError(f"itl_lambda must be >= 0, got {config.itl_lambda}")
    return cls(config, n_bins)


class SourceModel(nn.Module):
    """A frame model with its normalization: mixture magnitudes in, one source's out.

    The per-bin scale the network's frames were divided by in training is a buffer of the
    module (open-unmix keeps its input and output scaling in the model), so a checkpoint
    is self-contained and two source models need not share it.

    Shape:
        magnitudes: ``(frames, n_bins)`` -> ``(frames, n_bins)``, non-negative
    """

    def __init__(self, network: FrameAutoencoder, scale: Tensor):
        super().__init__()
        if scale.shape != (network.n_bins,):
            raise ValueError(f"scale must be ({network.n_bins},), got {tuple(scale.shape)}")
        self.network = network
        self.register_buffer("scale", scale.detach().clone().float())

    @property
    def n_bins(self) -> int:
        return self.network.n_bins

    @torch.no_grad()
    def forward(self, magnitudes: Tensor) -> Tensor:
        return self.network.estimate(magnitudes / self.scale) * self.scale

