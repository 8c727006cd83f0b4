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

from sepvae.config import DIVERGENCES, PRIORS, ModelConfig
from sepvae.errors import SepvaeError

from sepvae.losses import (
    cauchy_schwarz_divergence,
    check_frames,
    euclidean_divergence,
    gaussian_kl,
    reconstruction_loss,
    sample_prior,
)


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
# Models


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
        check_frames(mixture, "mixture", self.n_bins)
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
        check_frames(target, "target", self.n_bins)
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


def normalized_inputs(mixture: Tensor, scale: Tensor, mean: Tensor | None, std: Tensor | None) -> Tensor:
    """Mixture magnitude frames as a network sees them: divided by ``scale`` and, with
    ``mean``/``std``, compressed by log1p and standardized per bin (sepvae.features)."""
    frames = mixture / scale
    return frames if mean is None else (torch.log1p(frames) - mean) / std


class SourceModel(nn.Module):
    """A frame model with its normalization: mixture magnitudes in, one source's out.

    The per-bin scale the network's frames were divided by in training (and, for log1p
    inputs, their per-bin mean and std) are buffers of the module (open-unmix keeps its
    input and output scaling in the model), so a checkpoint is self-contained and two
    source models need not share them.

    Shape:
        magnitudes: ``(frames, n_bins)`` -> ``(frames, n_bins)``, non-negative
    """

    def __init__(self, network: FrameAutoencoder, scale: Tensor, input_mean: Tensor | None = None,
                 input_std: Tensor | None = None):
        super().__init__()
        for name, tensor in (("scale", scale), ("input_mean", input_mean), ("input_std", input_std)):
            if tensor is not None and tensor.shape != (network.n_bins,):
                raise ValueError(f"{name} must be ({network.n_bins},), got {tuple(tensor.shape)}")
        if (input_mean is None) != (input_std is None):
            raise ValueError("give both input_mean and input_std, or neither")
        self.network = network
        for name, tensor in (("scale", scale), ("input_mean", input_mean), ("input_std", input_std)):
            # A None buffer is left out of the state dict: linear-input checkpoints keep two keys fewer.
            self.register_buffer(name, None if tensor is None else tensor.detach().clone().float())

    @property
    def n_bins(self) -> int:
        return self.network.n_bins

    @torch.no_grad()
    def forward(self, magnitudes: Tensor) -> Tensor:
        inputs = normalized_inputs(magnitudes, self.scale, self.input_mean, self.input_std)
        return self.network.estimate(inputs) * self.scale



class MeanOfModels(nn.Module):
    """Source models of one source trained alike but for their seeds, as one: the mean of
    their magnitude estimates (a model folder's ``members``, :func:`sepvae.checkpoint.join_members`).

    Shape:
        magnitudes: ``(frames, n_bins)`` -> ``(frames, n_bins)``, non-negative
    """

    def __init__(self, members: list[SourceModel]):
        super().__init__()
        if not members or len({member.n_bins for member in members}) != 1:
            raise ValueError(f"members must be one or more models of one bin count, got {[m.n_bins for m in members]}")
        self.members = nn.ModuleList(members)

    @property
    def n_bins(self) -> int:
        return self.members[0].n_bins

    @torch.no_grad()
    def forward(self, magnitudes: Tensor) -> Tensor:
        return torch.stack([member(magnitudes) for member in self.members]).mean(0)
