"""Separation as inference: latent codes of clean-speech decoders fitted to the mixture.

After Subakan & Smaragdis (generative adversarial source separation, the paper's ref. [114]):
one generative model per source, trained on that source's clean frames only (the methods
``vae-fit`` and ``beta-vae-fit`` of :mod:`sepvae.methods`), and separation as the search
for codes ``z_k`` whose decoded magnitudes add up to the mixture's,

    minimize over z_1..z_K   D( X || sum_k g_k(z_k) ) + prior_weight * sum_k ||z_k||^2 / 2

per frame, where ``||z||^2 / 2`` is the negative log of the VAE's N(0, I) prior. Every frame
and source is fitted at once, one batch on the device. The per-source estimates ``g_k(z_k)``
then make the same ratio mask with the mixture phase as the other methods (eq. 90).

Restarts. Several starting points are fitted side by side and, for each frame, the one with
the lowest final objective wins. The choice looks at the objective only: unlike the released
code of ref. [114], which keeps the restart with the best SDR against the true sources, no
function here can see a reference.

Every frame's objective depends on that frame's codes only and Adam is elementwise, so the
fit of a frame does not depend on the other frames of the batch: the Separator's chunks
give the frames the result of one whole-signal pass (with ``restarts > 1`` the random
starting points are drawn per call, so only the first restart has that property).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from sepvae.config import FitConfig
from sepvae.device import single_cpu_thread

Decoder = Callable[[Tensor], Tensor]  # codes (n, latent) -> magnitudes (n, bins), non-negative

# Keeps log and division finite on silent bins; the magnitudes the Separator passes are
# normalized per bin (O(1) for speech), so this is ~120 dB below a typical bin.
EPS = 1e-6


def divergence(target: Tensor, estimate: Tensor, kind: str, eps: float = EPS) -> Tensor:
    """Elementwise divergence of ``target`` from ``estimate`` (both non-negative).

    ``euclidean``: (x - y)^2. ``kl``: the generalized Kullback-Leibler divergence
    x log(x / y) - x + y (KL-NMF's cost). ``is``: Itakura-Saito, x / y - log(x / y) - 1,
    which is scale invariant and weighs quiet bins as much as loud ones.

    Shape: target, estimate ``(...)`` (broadcastable) -> ``(...)``
    """
    if kind == "euclidean":
        return (target - estimate).pow(2)
    ratio = (target + eps) / (estimate + eps)
    if kind == "kl":
        return (target + eps) * ratio.log() - target + estimate
    if kind == "is":
        return ratio - ratio.log() - 1.0
    raise ValueError(f"unknown divergence {kind!r}; known: euclidean, kl, is")


@dataclass
class FitHistory:
    """What a fit did.

    - ``loss``: the mean objective per (restart, frame) before each step and after the last
      (``steps + 1`` values);
    - ``final``: ``(restarts, frames)``, each one's objective at the end;
    - ``chosen``: ``(frames,)``, the restart kept for each frame (argmin of ``final``).
    """

    loss: list[float]
    final: Tensor
    chosen: Tensor


def _objective(decoders: Sequence[Decoder], codes: list[Tensor], target: Tensor, kind: str,
               prior_weight: float) -> tuple[Tensor, Tensor]:
    """(per-source estimates (sources, restarts, frames, bins), objective (restarts, frames))."""
    estimates = torch.stack([
        decode(z.flatten(0, 1)).unflatten(0, z.shape[:2]) for decode, z in zip(decoders, codes)
    ])
    data = divergence(target, estimates.sum(dim=0), kind).sum(dim=-1)
    prior = sum(z.pow(2).sum(dim=-1) for z in codes) / 2
    return estimates, data + prior_weight * prior


def fit_latents(
    decoders: Sequence[Decoder],
    mixture_magnitude: Tensor,
    init: Sequence[Tensor],
    divergence: str = "kl",
    prior_weight: float = 1.0,
    steps: int = 100,
    lr: float = 0.05,
) -> tuple[Tensor, FitHistory]:
    """Fit one code per source, frame and restart so the decoded sources add up to the
    mixture (see the module docstring); keep each frame's lowest-objective restart.

    ``decoders[k]`` maps codes to source k's magnitudes in the units of
    ``mixture_magnitude``; ``init[k]`` holds its starting codes. The decoders' weights are
    not changed and get no gradients. Works under ``torch.no_grad`` / ``inference_mode``.

    Shape:
        - mixture_magnitude: ``(bins, frames)``, non-negative
        - init: one ``(restarts, frames, latent_k)`` per decoder (same restarts and frames)
        - returns: estimates ``(sources, bins, frames)``, and a :class:`FitHistory`
    """
    if mixture_magnitude.ndim != 2:
        raise ValueError(f"mixture_magnitude must be (bins, frames), got {tuple(mixture_magnitude.shape)}")
    if len(init) != len(decoders) or not decoders:
        raise ValueError(f"need one init per decoder, got {len(init)} inits for {len(decoders)} decoders")
    frames = mixture_magnitude.shape[1]
    restarts = init[0].shape[0] if init[0].ndim == 3 else -1
    for k, z in enumerate(init):
        if z.ndim != 3 or z.shape[:2] != (restarts, frames) or restarts < 1:
            raise ValueError(
                f"init[{k}] must be (restarts, frames={frames}, latent) with the restarts of init[0], "
                f"got {tuple(z.shape)}"
            )
    # Gradients are needed even when the caller separates under inference_mode; clones
    # turn inference tensors into ones autograd may save.
    with torch.inference_mode(False), torch.enable_grad():
        target = mixture_magnitude.detach().clone().T  # (frames, bins): broadcasts over restarts
        codes = [z.detach().clone().requires_grad_(True) for z in init]
        optimizer = torch.optim.Adam(codes, lr=lr)
        history = []
        for _ in range(steps):
            _, objective = _objective(decoders, codes, target, divergence, prior_weight)
            # The sum, not the mean: each frame's gradient is its own objective's.
            gradients = torch.autograd.grad(objective.sum(), codes)
            for z, gradient in zip(codes, gradients):
                z.grad = gradient
            optimizer.step()
            history.append(objective.detach().mean())
        with torch.no_grad():
            estimates, final = _objective(decoders, codes, target, divergence, prior_weight)
    history.append(final.mean())
    chosen = final.argmin(dim=0)  # (frames,): by the objective only
    best = estimates[:, chosen, torch.arange(frames, device=chosen.device)]  # (sources, frames, bins)
    return best.transpose(1, 2).contiguous(), FitHistory([float(v) for v in history], final, chosen)


class LatentFit:
    """The Separator's estimator for fitting methods: source models -> fitted magnitudes.

    The objective is computed on magnitudes divided by a common per-bin unit, the RMS of
    the source models' scales, so that every bin counts as in training (speech energy
    falls ~40 dB across bins) and ``prior_weight`` means the same whatever the level.
    """

    def __init__(self, config: FitConfig):
        self.config = config

    def __call__(self, models: dict, magnitude: Tensor) -> Tensor:
        """Shape: magnitude (bins, frames) -> (sources, bins, frames), in ``models``' order."""
        config = self.config
        models = list(models.values())
        unit = torch.stack([m.scale for m in models]).pow(2).mean(dim=0).sqrt()  # (bins,)
        init = []
        for k, model in enumerate(models):
            network = model.network
            if config.init == "encoder":
                # The encoder's code of the frame, or a VAE's posterior mean (encode's first head).
                with torch.no_grad():
                    start = network.encode(magnitude.T / model.scale).chunk(network.n_heads, dim=-1)[0]
            else:
                start = magnitude.new_zeros(magnitude.shape[1], network.latent)
            draws = torch.randn(config.restarts - 1, *start.shape,
                                generator=torch.Generator().manual_seed(config.seed + k)).to(start)
            init.append(torch.cat([start.unsqueeze(0), draws]))
        decoders = [lambda z, m=model: m.network.decode(z) * (m.scale / unit) for model in models]
        # Hundreds of small steps: on a CPU, one thread (as training uses) is several times
        # faster than two, whose hand-offs cost more than the matmuls.
        with single_cpu_thread(magnitude.device):
            estimates, _ = fit_latents(decoders, magnitude / unit[:, None], init, config.divergence,
                                       config.prior_weight, config.steps, config.lr)
        return estimates * unit[:, None]
