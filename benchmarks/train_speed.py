"""Training throughput per model type on this machine, next to the work it does.

Writes benchmarks/results/train_speed.json: frames/s per model type (one source pair trained
together at batch 70 and STFT setting E, as `sepvae train` does), the FLOPs one training frame
costs (3x the forward pass: forward + backward through weights and activations), and the
machine's measured dense-matmul FLOP/s, so the fraction of peak the loop reaches is visible.
Run with `make bench`.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from sepvae.config import MODEL_NAMES, StftConfig, TrainConfig, model_config
from sepvae.device import single_cpu_thread
from sepvae.models import build_model
from sepvae.train import Split, fit

OUT = Path(__file__).parent / "results" / "train_speed.json"
N_FRAMES = 20_000


def linear_flops(model: torch.nn.Module) -> int:
    """Multiply-adds x 2 of every Linear layer for one frame."""
    return sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def matmul_flops_per_second(size: int = 512, repeats: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    n_bins = StftConfig.setting("E").n_bins(16_000)
    generator = torch.Generator().manual_seed(0)
    male, female = torch.rand(N_FRAMES, n_bins, generator=generator), torch.rand(N_FRAMES, n_bins, generator=generator)
    train = Split(male + female, {"male": male, "female": female})
    valid = Split(train.inputs[:1000], {k: v[:1000] for k, v in train.targets.items()})
    results = {
        "machine": {"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
        "frames_per_epoch": N_FRAMES,
        "batch_size": 70,
    }
    with single_cpu_thread(torch.device("cpu")):
        results["matmul_flops_per_second_1_thread"] = matmul_flops_per_second()
        per_model = {}
        for name in MODEL_NAMES:
            models = {s: build_model(model_config({"name": name}), n_bins) for s in ("male", "female")}
            fit(models, train, valid, TrainConfig(epochs=1))  # warm-up
            start = time.perf_counter()
            fit(models, train, valid, TrainConfig(epochs=2))
            seconds = (time.perf_counter() - start) / 2
            flops = 3 * linear_flops(models["male"])
            frames_per_second = N_FRAMES / seconds  # frames of the pair (each frame trains both models)
            per_model[name] = {
                "frames_per_second": round(frames_per_second),
                "training_flops_per_frame_per_model": flops,
                "achieved_flops_per_second": round(2 * flops * frames_per_second),
                "fraction_of_matmul_peak": round(2 * flops * frames_per_second / results["matmul_flops_per_second_1_thread"], 3),
            }
            print(name, per_model[name])
    results["models"] = per_model
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
