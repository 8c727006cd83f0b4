"""Picking the compute device: --device auto means cuda, then mps, then cpu."""

from __future__ import annotations

import contextlib

from sepvae.errors import SepvaeError


@contextlib.contextmanager
def single_cpu_thread(device):
    """Run one small model on one CPU thread: the paper's layers are small, and on 2 cores
    one thread ran an epoch of one model's batch-70 steps 4x faster than two (thread
    hand-offs cost more than the matmuls). The stacked ensemble (:func:`sepvae.train.train_plans`)
    does not use this: its batched matmuls are big enough for the job's threads. No effect
    on other devices."""
    import torch

    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pick_device(name: str = "auto"):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SepvaeError(f"unknown device {name!r}; use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SepvaeError("--device cuda asked for, but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SepvaeError("--device mps asked for, but MPS is not available")
    return device
