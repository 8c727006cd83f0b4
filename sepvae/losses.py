"""The losses of the paper's models: reconstruction, the VAE's KL, and the ITL-AE's
information-theoretic divergences between a batch's codes and samples of a prior.

Scales (see :mod:`sepvae.models`): ``reconstruction_loss`` is summed over bins and averaged
over frames (a per-frame negative log-likelihood), the KL likewise over latent dimensions;
an ITL divergence is one number per batch (a divergence between two sets of samples).
Every function documents its shapes and raises ``ValueError`` on wrong ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sepvae.config import DIVERGENCES, PRIORS  # noqa: F401  (the choices a config may name)


def check_frames(frames: Tensor, name: str, n_bins: int | None = None) -> None:
    if frames.dim() != 2:
        raise ValueError(f"{name} must be (batch, bins), got shape {tuple(frames.shape)}")
    if n_bins is not None and frames.shape[1] != n_bins:
        raise ValueError(f"{name} has {frames.shape[1]} bins, the model expects {n_bins}")


def reconstruction_loss(estimate: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over bins, averaged over frames (see the module docstring).

    Shape:
        - estimate, target: ``(batch, M)``
        - output: ``()``
    """
    check_frames(estimate, "estimate")
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


def _check_sample_sets(x: Tensor, y: Tensor, sigma: float | Tensor) -> None:
    if x.dim() < 2 or y.dim() < 2 or x.shape[:-2] != y.shape[:-2]:
        raise ValueError(
            f"samples must be (..., n, dim) with the same leading dims, got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"samples differ in dimension: {x.shape[-1]} vs {y.shape[-1]}")
    if x.shape[-2] < 1 or y.shape[-2] < 1 or x.shape[-1] < 1:
        raise ValueError(
            f"need at least one sample of dimension >= 1, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    # A tensor sigma (one per set of the batch, from the ensemble) was checked when its
    # models were built; checking it here would cost a device sync per training step.
    if not isinstance(sigma, Tensor) and not sigma > 0:
        raise ValueError(f"kernel sigma must be > 0, got {sigma}")


def log_information_potential(
    x: Tensor, y: Tensor, sigma: float | Tensor, x_mask: Tensor | None = None,
    y_mask: Tensor | None = None,
) -> Tensor:
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

    Batches: leading dimensions are independent sets (the ensemble's members), with one
    ``sigma`` each (a tensor of the leading shape) or one for all. ``x_mask`` / ``y_mask``
    (True = a sample) leave out padding rows: the sums and ``n m`` run over the kept samples
    only, so a padded set gives the potential of its kept samples alone.

    Shape:
        - x: ``(..., n, dim)``, y: ``(..., m, dim)``
        - sigma: float or ``(...)``
        - x_mask: ``(..., n)``, y_mask: ``(..., m)``, bool
        - output: ``(...)``
    """
    _check_sample_sets(x, y, sigma)
    for mask, samples, name in ((x_mask, x, "x_mask"), (y_mask, y, "y_mask")):
        if mask is not None and mask.shape != samples.shape[:-1]:
            raise ValueError(f"{name} must be {tuple(samples.shape[:-1])}, got {tuple(mask.shape)}")
    # ||x||^2 + ||y||^2 - 2 x.y: one matmul, O(n m) memory (fast on GPU); the clamp
    # removes the small negative values that cancellation leaves on the diagonal.
    sq_dist = (
        x.pow(2).sum(dim=-1, keepdim=True)
        + y.pow(2).sum(dim=-1).unsqueeze(-2)
        - 2.0 * (x @ y.transpose(-1, -2))
    ).clamp_min(0.0)
    if isinstance(sigma, Tensor):
        sigma = sigma[..., None, None]
    log_kernel = -sq_dist / (4.0 * sigma**2)
    n_x = x.new_full(x.shape[:-2], x.shape[-2]) if x_mask is None else x_mask.sum(-1)
    n_y = y.new_full(y.shape[:-2], y.shape[-2]) if y_mask is None else y_mask.sum(-1)
    if x_mask is not None or y_mask is not None:
        keep_x = x_mask if x_mask is not None else x.new_ones(x.shape[:-1], dtype=torch.bool)
        keep_y = y_mask if y_mask is not None else y.new_ones(y.shape[:-1], dtype=torch.bool)
        log_kernel = log_kernel.masked_fill(~(keep_x[..., :, None] & keep_y[..., None, :]), -math.inf)
    return torch.logsumexp(log_kernel.flatten(-2), dim=-1) - torch.log(n_x * n_y.to(n_x.dtype))


def cauchy_schwarz_divergence(
    x: Tensor, y: Tensor, sigma: float | Tensor, mask: Tensor | None = None
) -> Tensor:
    """Kernel estimate of the Cauchy-Schwarz divergence between the samples' densities.

    ``D_CS = log(V_x V_y / V_c^2)`` (eq. 83, which is twice eq. 33), computed as
    ``log V_x + log V_y - 2 log V_c`` so that it stays finite in high dimension. See
    :func:`log_information_potential` for the bandwidth convention. Symmetric and >= 0.

    Batched and masked as :func:`log_information_potential`, with one ``mask`` for both
    sets (the codes of a batch and as many prior samples).

    Shape:
        - x: ``(..., n, dim)``, y: ``(..., n, dim)`` (``(n, dim)``, ``(m, dim)`` without mask)
        - mask: ``(..., n)``, bool
        - output: ``(...)``
    """
    log_vx, log_vy, log_vc = _log_potentials(x, y, sigma, mask)
    return log_vx + log_vy - 2.0 * log_vc


def euclidean_divergence(
    x: Tensor, y: Tensor, sigma: float | Tensor, mask: Tensor | None = None
) -> Tensor:
    """Kernel estimate of the Euclidean divergence ``V_x + V_y - 2 V_c`` (eq. 85).

    The potentials are unnormalized (see :func:`log_information_potential`), so this is
    ``(4 pi sigma^2)^(dim/2)`` times eq. 85 with normalized Gaussian kernels: the same
    minimizer, on a scale between 0 and 2 whatever the dimension. Symmetric and >= 0.

    Batched and masked as :func:`cauchy_schwarz_divergence`.

    Shape:
        - x: ``(..., n, dim)``, y: ``(..., n, dim)`` (``(n, dim)``, ``(m, dim)`` without mask)
        - mask: ``(..., n)``, bool
        - output: ``(...)``
    """
    log_vx, log_vy, log_vc = _log_potentials(x, y, sigma, mask)
    return log_vx.exp() + log_vy.exp() - 2.0 * log_vc.exp()


def _log_potentials(x: Tensor, y: Tensor, sigma: float | Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """log V_x, log V_y and the cross potential log V_c of two sample sets."""
    _check_sample_sets(x, y, sigma)
    return tuple(log_information_potential(a, b, sigma, mask, mask) for a, b in ((x, x), (y, y), (x, y)))


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
