"""Time-frequency masks: the paper's Wiener-style reconstruction (eq. 90) and oracle masks.

Pure functions of tensors. Sources always come first: a stack of per-source spectrograms
is ``(sources, ..., bins, frames)``, the mixture it belongs to is ``(..., bins, frames)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def ratio_mask(magnitudes: Tensor, power: float = 1.0, eps: float = 1e-8) -> Tensor:
    """Soft masks ``S_k^p / sum_j S_j^p`` from per-source magnitude estimates ``S_k``.

    With ``power=1`` this is the mask of the paper's eq. 90; ``power=2`` is the classic
    Wiener (power-spectrum) mask; larger powers sharpen towards the binary mask.

    Computed as ``(S_k^p + eps / n) / (sum_j S_j^p + eps)`` for ``n`` sources: the masks
    sum to one over sources everywhere, and a bin where every estimate is ~0 (silence) is
    split equally (``1 / n`` each) instead of giving 0/0. ``eps`` is in units of
    ``magnitude ** power``; for STFT magnitudes of audio in [-1, 1] the default only matters
    100 dB or more below the loudest bin. Negative values, which an unconstrained decoder
    may output, count as zero.

    Shape:
        magnitudes: ``(sources, ..., bins, frames)``, real.
        returns: same shape and dtype as ``magnitudes``.
    """
    _check_stack(magnitudes, "magnitudes")
    if magnitudes.is_complex():
        raise ValueError("ratio_mask: magnitudes must be real; pass spec.abs(), not the complex spec")
    if power <= 0:
        raise ValueError(f"ratio_mask: power must be > 0, got {power}")
    if eps <= 0:
        raise ValueError(f"ratio_mask: eps must be > 0 so that silence gives equal masks, got {eps}")
    weights = magnitudes.clamp(min=0) ** power
    n_sources = magnitudes.shape[0]
    return (weights + eps / n_sources) / (weights.sum(dim=0, keepdim=True) + eps)


def smooth_over_frames(magnitudes: Tensor, frames: int) -> Tensor:
    """Each frame's magnitudes replaced by a weighted mean of the ``frames`` frames on each
    side and itself, with triangular weights ``1, 2, .., frames + 1, .., 2, 1`` (the edge
    frames repeated beyond the ends). ``frames = 0`` returns ``magnitudes`` as it is.

    The paper's models estimate each frame on its own; speech spectra change slowly over
    tens of milliseconds, so averaging neighbouring frames' estimates before the mask
    removes frame-to-frame noise of the estimates ("How good is it" in the README).

    Shape:
        magnitudes: ``(..., bins, frames)``, real -> the same shape
    """
    if frames < 0:
        raise ValueError(f"smooth_over_frames: frames must be >= 0, got {frames}")
    if frames == 0:
        return magnitudes
    weights = torch.cat([torch.arange(1, frames + 2), torch.arange(frames, 0, -1)]).to(magnitudes)
    rows = magnitudes.reshape(-1, 1, magnitudes.shape[-1])
    padded = torch.nn.functional.pad(rows, (frames, frames), mode="replicate")
    smoothed = torch.nn.functional.conv1d(padded, (weights / weights.sum()).view(1, 1, -1))
    return smoothed.reshape(magnitudes.shape)


def apply_masks(mixture_spec: Tensor, masks: Tensor) -> Tensor:
    """Per-source spectrograms ``mask_k * |X| * exp(i * phase(X))``, i.e. ``mask_k * X`` (eq. 90).

    Shape:
        mixture_spec: ``(..., bins, frames)``, complex.
        masks: ``(sources, ..., bins, frames)``, real.
        returns: ``(sources, ..., bins, frames)``, complex, the dtype of ``mixture_spec``.
    """
    if not mixture_spec.is_complex():
        raise ValueError("apply_masks: mixture_spec must be a complex STFT")
    if masks.is_complex():
        raise ValueError("apply_masks: masks must be real")
    _check_stack(masks, "masks")
    if masks.shape[1:] != mixture_spec.shape:
        raise ValueError(
            f"apply_masks: masks {tuple(masks.shape)} must be (sources, *mixture_spec.shape) "
            f"with mixture_spec {tuple(mixture_spec.shape)}"
        )
    return masks.to(mixture_spec.real.dtype) * mixture_spec.unsqueeze(0)


def ideal_ratio_mask(source_specs: Tensor, power: float = 1.0, eps: float = 1e-8) -> Tensor:
    """The oracle ratio mask ``|S_k|^p / sum_j |S_j|^p`` from the true sources' spectrograms.

    Shape:
        source_specs: ``(sources, ..., bins, frames)``, complex STFTs or magnitudes.
        returns: ``(sources, ..., bins, frames)``, real.
    """
    _check_stack(source_specs, "source_specs")
    return ratio_mask(source_specs.abs(), power=power, eps=eps)


def ideal_binary_mask(source_specs: Tensor) -> Tensor:
    """The oracle binary mask: 1 for the source with the largest magnitude in a bin, else 0.

    Exactly one source gets each bin (ties, including silence, go to the lowest index), so
    the masks sum to one over sources.

    Shape:
        source_specs: ``(sources, ..., bins, frames)``, complex STFTs or magnitudes.
        returns: ``(sources, ..., bins, frames)``, real (0.0 or 1.0).
    """
    _check_stack(source_specs, "source_specs")
    magnitudes = source_specs.abs()
    winner = magnitudes.argmax(dim=0, keepdim=True)
    sources = torch.arange(magnitudes.shape[0], device=magnitudes.device)
    sources = sources.view(-1, *([1] * (magnitudes.ndim - 1)))
    return (winner == sources).to(magnitudes.dtype)


def _check_stack(stack: Tensor, name: str) -> None:
    if not isinstance(stack, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(stack).__name__}")
    if stack.ndim < 3:
        raise ValueError(
            f"{name} must be (sources, ..., bins, frames) with at least 3 dims, "
            f"got shape {tuple(stack.shape)}"
        )
    if stack.shape[0] < 1:
        raise ValueError(f"{name} has no sources (shape {tuple(stack.shape)})")
