"""Supervised NMF, the classic baseline the paper's VAEs are compared with.

Training: one dictionary ``W_k`` (bins, components) per source, learned from that source's
magnitude spectrogram frames alone. Separation: the concatenated dictionaries stay fixed,
only the activations ``H`` are fitted to the mixture magnitude, and ``W_k H_k`` is source
``k``'s magnitude estimate, which then goes through :func:`sepvae.filtering.ratio_mask`
like every other method's estimates.

The cost is the beta-divergence minimized by the multiplicative updates of Fevotte & Idier
(2011). The default ``beta=1`` is the generalized Kullback-Leibler divergence, the usual
choice for magnitude spectrograms of speech (Smaragdis 2007; Virtanen 2007): it weights
quiet and loud bins more evenly than the Euclidean distance (``beta=2``), which fits the few
loudest low-frequency bins and neglects the rest. ``beta=0`` (Itakura-Saito) also works.

Dictionary columns are kept at unit L1 norm (the activations absorb the scale), so atoms of
different sources are comparable and ``W`` carries no arbitrary gain. Everything is
batched matrix products of torch tensors on the input's device and dtype; a seed makes
the random initialization, hence the result, reproducible.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Lower bound on every entry of W and H. It keeps W @ H > 0 (no division by zero), lets an
# atom or activation that reached the bound grow again, and keeps products of entries above
# float32's smallest normal number: denormals would make the matrix products crawl.
_FLOOR = 1e-15
# Keeps beta_divergence finite where the target or the approximation is 0.
_TINY = 1e-12


def beta_divergence(target: Tensor, approximation: Tensor, beta: float = 1.0) -> Tensor:
    """Sum over all entries of the beta-divergence d_beta(target | approximation).

    Shape:
        target, approximation: any matching shapes, non-negative.
        returns: a scalar.
    """
    if target.shape != approximation.shape:
        raise ValueError(
            f"beta_divergence: shapes differ: {tuple(target.shape)} vs {tuple(approximation.shape)}"
        )
    v = target.clamp(min=0) + _TINY
    v_hat = approximation.clamp(min=0) + _TINY
    if beta == 2:
        return 0.5 * ((v - v_hat) ** 2).sum()
    if beta == 1:
        return (v * torch.log(v / v_hat) - v + v_hat).sum()
    if beta == 0:
        ratio = v / v_hat
        return (ratio - torch.log(ratio) - 1).sum()
    return (
        (v**beta + (beta - 1) * v_hat**beta - beta * v * v_hat ** (beta - 1))
        / (beta * (beta - 1))
    ).sum()


@torch.no_grad()
def factorize(
    magnitudes: Tensor,
    n_components: int = 32,
    n_iter: int = 100,
    beta: float = 1.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Factorize ``magnitudes ~= W @ H`` with W, H >= 0 by multiplicative updates.

    Each update does not increase the beta-divergence (proven for 1 <= beta <= 2, seen in
    practice for beta = 0) except by the negligible lower bound of 1e-15 on every entry.
    Columns of ``W`` have unit L1 norm.

    Shape:
        magnitudes: ``(bins, frames)``, non-negative.
        returns: ``W (bins, n_components)``, ``H (n_components, frames)``.
    """
    _check_spectrogram(magnitudes, "magnitudes", batched=False)
    if n_components < 1 or n_iter < 0:
        raise ValueError(f"factorize: need n_components >= 1 and n_iter >= 0, got {n_components}, {n_iter}")
    v = magnitudes.clamp(min=0)
    n_bins, n_frames = v.shape
    generator = torch.Generator(device="cpu").manual_seed(seed)
    # Scaling the random start to the data's mean makes W @ H start at the data's level.
    scale = (v.mean() / n_components).sqrt().clamp(min=_TINY)
    w = _uniform((n_bins, n_components), generator, v) * scale
    h = _uniform((n_components, n_frames), generator, v) * scale
    w, h = _normalize(w, h)
    for _ in range(n_iter):
        h = _update_activations(v, w, h, beta)
        w = _update_dictionary(v, w, h, beta)
        w, h = _normalize(w, h)
    return w, h


def learn_dictionary(
    magnitudes: Tensor,
    n_components: int = 32,
    n_iter: int = 100,
    beta: float = 1.0,
    seed: int = 0,
) -> Tensor:
    """One source's dictionary, learned from its training magnitude frames.

    Shape:
        magnitudes: ``(bins, frames)``: all of the source's training frames side by side.
        returns: ``W (bins, n_components)``, non-negative, columns summing to one.
    """
    return factorize(magnitudes, n_components, n_iter, beta, seed)[0]


@torch.no_grad()
def fit_activations(
    magnitudes: Tensor,
    dictionary: Tensor,
    n_iter: int = 100,
    beta: float = 1.0,
    seed: int = 0,
) -> Tensor:
    """Activations ``H >= 0`` with ``magnitudes ~= dictionary @ H``, the dictionary fixed.

    Shape:
        magnitudes: ``(..., bins, frames)``, non-negative; leading dims are a batch.
        dictionary: ``(bins, components)``, non-negative.
        returns: ``H (..., components, frames)``.
    """
    _check_spectrogram(magnitudes, "magnitudes", batched=True)
    _check_dictionary(dictionary, magnitudes.shape[-2])
    if n_iter < 0:
        raise ValueError(f"fit_activations: n_iter must be >= 0, got {n_iter}")
    v = magnitudes.clamp(min=0)
    w = dictionary.to(device=v.device, dtype=v.dtype).clamp(min=_FLOOR)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    n_components = w.shape[1]
    level = v.mean(dim=(-2, -1), keepdim=True) / w.mean().clamp(min=_TINY) / n_components
    h = _uniform((*v.shape[:-2], n_components, v.shape[-1]), generator, v) * level.clamp(min=_TINY)
    for _ in range(n_iter):
        h = _update_activations(v, w, h, beta)
    return h


def nmf_estimates(
    mixture_magnitude: Tensor,
    dictionaries: dict[str, Tensor],
    n_iter: int = 100,
    beta: float = 1.0,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Per-source magnitude estimates ``W_k H_k`` of a mixture, from fixed source dictionaries.

    Shape:
        mixture_magnitude: ``(..., bins, frames)``, non-negative; leading dims are a batch.
        dictionaries: ``{source: W_k (bins, components_k)}``.
        returns: ``{source: (..., bins, frames)}`` in the order of ``dictionaries``.
    """
    if not dictionaries:
        raise ValueError("nmf_estimates: no dictionaries given")
    for name, w in dictionaries.items():
        try:
            _check_dictionary(w, mixture_magnitude.shape[-2])
        except ValueError as exc:
            raise ValueError(f"nmf_estimates: dictionary {name!r}: {exc}") from None
    names = list(dictionaries)
    sizes = [dictionaries[name].shape[1] for name in names]
    joint = torch.cat([dictionaries[name] for name in names], dim=1)
    h = fit_activations(mixture_magnitude, joint, n_iter=n_iter, beta=beta, seed=seed)
    w = joint.to(device=h.device, dtype=h.dtype)
    return {
        name: w_k @ h_k
        for name, w_k, h_k in zip(names, w.split(sizes, dim=1), h.split(sizes, dim=-2))
    }


def _update_activations(v: Tensor, w: Tensor, h: Tensor, beta: float) -> Tensor:
    if beta == 1:
        # w, h >= _FLOOR keep w @ h > 0; the ratio overwrites w @ h to spare a pass of memory.
        v_hat = w @ h
        ratio = torch.div(v, v_hat, out=v_hat)
        numerator = w.transpose(-1, -2) @ ratio
        denominator = w.sum(dim=0).unsqueeze(-1)
    else:
        v_hat = (w @ h).clamp_(min=_TINY)  # its negative powers must stay finite
        numerator = w.transpose(-1, -2) @ (v * v_hat ** (beta - 2))
        denominator = w.transpose(-1, -2) @ v_hat ** (beta - 1)
    return (h * numerator / denominator).clamp_(min=_FLOOR)


def _update_dictionary(v: Tensor, w: Tensor, h: Tensor, beta: float) -> Tensor:
    if beta == 1:
        v_hat = w @ h
        ratio = torch.div(v, v_hat, out=v_hat)
        numerator = ratio @ h.transpose(-1, -2)
        denominator = h.sum(dim=-1).unsqueeze(0)
    else:
        v_hat = (w @ h).clamp_(min=_TINY)  # its negative powers must stay finite
        numerator = (v * v_hat ** (beta - 2)) @ h.transpose(-1, -2)
        denominator = v_hat ** (beta - 1) @ h.transpose(-1, -2)
    return (w * numerator / denominator).clamp_(min=_FLOOR)


def _normalize(w: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Unit-L1 columns of W; W @ H is unchanged."""
    norms = w.sum(dim=0).clamp(min=_TINY)
    return w / norms, h * norms.unsqueeze(-1)


def _uniform(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    # Drawn on the CPU so that a seed gives the same start on any device.
    start = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.1
    return start.to(device=like.device, dtype=like.dtype)


def _check_spectrogram(magnitudes: Tensor, name: str, batched: bool) -> None:
    if not isinstance(magnitudes, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(magnitudes).__name__}")
    if magnitudes.is_complex() or not magnitudes.is_floating_point():
        raise ValueError(f"{name} must be real floating-point magnitudes (use spec.abs())")
    if (batched and magnitudes.ndim < 2) or (not batched and magnitudes.ndim != 2):
        want = "(..., bins, frames)" if batched else "(bins, frames)"
        raise ValueError(f"{name} must be {want}, got shape {tuple(magnitudes.shape)}")
    if magnitudes.shape[-1] == 0 or magnitudes.shape[-2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(magnitudes.shape)}")


def _check_dictionary(dictionary: Tensor, n_bins: int) -> None:
    if not isinstance(dictionary, Tensor) or dictionary.ndim != 2:
        raise ValueError("a dictionary must be a (bins, components) tensor")
    if dictionary.shape[0] != n_bins:
        raise ValueError(
            f"dictionary has {dictionary.shape[0]} bins but the spectrogram has {n_bins}"
        )
    if (dictionary < 0).any():
        raise ValueError("dictionary has negative entries")
