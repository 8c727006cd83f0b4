"""Training throughput: the 8 models of reproduce.toml one at a time vs as one ensemble.

The 8 models are vae, beta-vae, itl-ae and ae x male/female at STFT setting E (129 bins),
batch 70, on synthetic frames (no TIMIT needed). Writes benchmarks/results/train_speed.json:

- ``one_at_a_time``: each model in its own plain loop (build_model + torch.optim.Adam, the
  pre-ensemble path, on one CPU thread as ``sepvae train`` ran it);
- ``ensemble``: all 8 in one :func:`sepvae.ensemble.fit_ensemble` stack, per thread count,
  in float32 and with bf16 autocast (not on a CPU whose oneDNN has no bf16 kernels), and on
  a CPU as two parts of 4 in two single-thread processes, as the training stage runs a job
  of ``--num-cpus 2`` (:func:`sepvae.train.fit_stacks`);
- ``speedup``: the best float32 ensemble over one at a time, in frames x models per second
  (``speedup_bf16``: the best bf16 one, whose numbers differ from float32's);
- each figure's share of the machine's measured dense-matmul FLOP/s at the same thread
  count and precision (a bf16 variant against the bf16 matmul peak), with FLOPs counted
  honestly: per frame per model 3x the forward pass (forward +
  backward through weights and activations) of its own layers (the zero-padded head
  columns of the AE and ITL-AE inside the stack are not counted).

The machine is shared, so the variants and the matmul peak are measured in interleaved
rounds and each keeps its best round. Run with `make bench` (`make bench DEVICE=cuda` on a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from sepvae.config import StftConfig, TrainConfig, model_config
from sepvae.device import pick_device
from sepvae.ensemble import Member, _cpu_has_bf16, fit_ensemble
from sepvae.methods import METHODS
from sepvae.models import build_model
from sepvae.train import fit_stacks

# The networks reproduce.toml trains on mixtures (the stacked ones; vae-fit trains on clean speech).
KINDS = tuple(kind for kind, entry in METHODS.items() if entry.plan is not None and not entry.fits)

OUT = Path(__file__).parent / "results" / "train_speed.json"
N_FRAMES = 10_000  # training frames per model per epoch
N_VALID = 1_000
ROUNDS = 3
SOURCES = ("male", "female")


def linear_flops(model: torch.nn.Module) -> int:
    """Multiply-adds x 2 of every Linear layer for one frame."""
    return sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_flops_per_second(device: torch.device, size: int = 512, repeats: int = 20,
                            dtype: torch.dtype = torch.float32) -> float:
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def marked(precision: str, separator: str) -> str:
    """How a name or JSON key shows its precision: float32 unmarked (the keys it always had)."""
    return "" if precision == "fp32" else separator + precision


def cpu_model() -> str:
    """The CPU's name as Linux reports it ("" elsewhere): results from two machines differ."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int):
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def members(train_index: torch.Tensor, val_index: torch.Tensor, precision: str = "fp32") -> list[Member]:
    return [
        Member(f"{kind}-{source}", model_config({"name": kind}), TrainConfig(epochs=1, precision=precision),
               train_index, val_index, source, seed=i)
        for i, (kind, source) in enumerate((k, s) for k in KINDS for s in SOURCES)
    ]


def one_at_a_time(group: list[Member], inputs, targets, device) -> None:
    """One epoch of each model in its own loop: the pre-ensemble training path."""
    for member in group:
        torch.manual_seed(member.seed)
        model = build_model(member.model, inputs.shape[1]).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=member.train.lr)
        shuffle, noise = torch.Generator().manual_seed(member.seed), torch.Generator(device=device).manual_seed(1)
        target = targets[member.targets_key]
        order = member.train_index[torch.randperm(len(member.train_index), generator=shuffle)].to(device)
        model.train()
        for start in range(0, len(order), member.train.batch_size):
            index = order[start : start + member.train.batch_size]
            out = model(inputs[index], target[index], noise)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
        model.eval()
        float((model.estimate(inputs[member.val_index]) - target[member.val_index]).pow(2).sum())


def one_process(group: list[Member], inputs, targets, device) -> None:
    """One epoch of ``group`` as one stack in this process (timed by the caller)."""
    fit_ensemble(group, inputs, targets, device)


def two_processes(group: list[Member], inputs, targets, device) -> float:
    """One epoch of ``group`` as the training stage runs a job of two CPUs; its seconds: the
    slower part's epoch as its history logs it, without starting the two worker processes
    (a training job pays that, ~2 s, once for all its epochs, not per epoch)."""
    results = fit_stacks([group], inputs, targets, device, workers=2)
    return max(history[-1]["seconds"] for _, history in results.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    device = pick_device(parser.parse_args().device)
    n_bins = StftConfig.setting("E").n_bins(16_000)
    generator = torch.Generator().manual_seed(0)
    n = N_FRAMES + N_VALID
    male, female = torch.rand(n, n_bins, generator=generator), torch.rand(n, n_bins, generator=generator)
    inputs, targets = (male + female).to(device), {"male": male.to(device), "female": female.to(device)}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}  # [train] precision -> matmul dtype
    if device.type == "cpu" and not _cpu_has_bf16():  # emulated: 13-19x slower, minutes of nothing
        print("skipping bf16: oneDNN has no bf16 kernels on this CPU")
        del dtypes["bf16"]
    groups = {p: members(torch.arange(N_FRAMES), torch.arange(N_FRAMES, n), precision=p) for p in dtypes}
    group = groups["fp32"]
    flops = {m.name: 3 * linear_flops(build_model(m.model, n_bins)) for m in group}
    thread_counts = [1, 2] if device.type == "cpu" else [1]
    peak = {(threads, precision): 0.0 for threads in thread_counts for precision in dtypes}
    # name -> (threads, precision, run)
    variants = {"one_at_a_time (1 thread)": (1, "fp32", lambda: one_at_a_time(group, inputs, targets, device))}
    for precision, ensemble in groups.items():
        for threads in thread_counts:
            variants[f"ensemble{marked(precision, ' ')} ({threads} thread{'s' * (threads > 1)})"] = (
                threads, precision, lambda ensemble=ensemble: one_process(ensemble, inputs, targets, device))
    if device.type == "cpu":
        # What the training stage does with a job of --num-cpus 2: the stack split in two
        # parts, each in a single-thread worker process (sepvae.train.fit_stacks).
        variants["ensemble (2 processes x 1 thread)"] = (2, "fp32", lambda: two_processes(group, inputs, targets, device))
    seconds = {name: float("inf") for name in variants}
    for round_ in range(ROUNDS + 1):  # round 0 warms up (allocator, oneDNN kernels)
        # The peak is measured in every round too, and its best kept, so that a busy moment
        # of the shared machine lowers neither the peak nor a variant's speed alone.
        for threads, precision in peak:
            with cpu_threads(device, threads):
                peak[threads, precision] = max(peak[threads, precision],
                                               matmul_flops_per_second(device, dtype=dtypes[precision]))
        for name, (threads, _, run) in variants.items():
            with cpu_threads(device, threads):
                synchronize(device)
                start = time.perf_counter()
                took = run()
                synchronize(device)
                if round_:
                    seconds[name] = min(seconds[name], time.perf_counter() - start if took is None else took)
    total_flops = sum(flops.values()) * N_FRAMES  # one epoch of every model
    results = {
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_model": cpu_model(),
                    "cpu_threads": torch.get_num_threads(),
                    "device": str(device), "torch": torch.__version__,
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "models": [m.name for m in group],
        "frames_per_epoch": N_FRAMES,
        "validation_frames": N_VALID,
        "batch_size": 70,
        "n_bins": n_bins,
        "training_flops_per_frame_per_model": {kind: flops[f"{kind}-male"] for kind in KINDS},
        "matmul_flops_per_second": {f"{t}_thread{'s' * (t > 1)}{marked(d, '_')}": round(p)
                                    for (t, d), p in peak.items()},
        "timing": f"best of {ROUNDS} interleaved rounds of one epoch (with validation) of all 8 models",
        "variants": {},
    }
    if "bf16" not in dtypes:
        results["bf16"] = "not measured: oneDNN has no bf16 kernels on this CPU (emulated, 13-19x slower than fp32)"
    for name, (threads, precision, _) in variants.items():
        achieved = total_flops / seconds[name]
        results["variants"][name] = {
            "seconds_per_epoch": round(seconds[name], 3),
            "frames_x_models_per_second": round(len(group) * N_FRAMES / seconds[name]),
            "fraction_of_matmul_peak": round(achieved / peak[threads, precision], 3),
        }
        print(name, results["variants"][name])
    baseline = results["variants"]["one_at_a_time (1 thread)"]
    for precision in dtypes:
        suffix = marked(precision, "_")
        runs = {k: v for k, v in results["variants"].items()
                if k.startswith("ensemble") and variants[k][1] == precision}
        best = max(runs, key=lambda k: runs[k]["frames_x_models_per_second"])
        results["ensemble" + suffix] = best
        results["speedup" + suffix] = round(
            runs[best]["frames_x_models_per_second"] / baseline["frames_x_models_per_second"], 2)
        results["ensemble" + suffix + "_fraction_of_matmul_peak"] = runs[best]["fraction_of_matmul_peak"]
        print("speedup" + suffix, results["speedup" + suffix], "with", best)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
