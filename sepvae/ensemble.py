"""Many frame models trained as one stacked pass (issue 11): the batched training engine.

Each model of the paper is tiny (0.3 M parameters); one batch-70 step of one model is a
chain of (70 x 129 x 256) matmuls that no device runs near its peak. Here N models of the
same layer sizes ("members") keep their weights as ``(members, in, out)`` tensors and take
their steps together through :func:`torch.baddbmm`, while each member keeps its own:

- kind and loss: vae / beta-vae (with its ``beta`` and ``eps_std``), itl-ae (divergence,
  prior, kernel sigma, lambda) and ae share one stack: the latent head is as wide as the
  widest member's (``2 * latent`` when a VAE is in the stack) and a narrower member's extra
  head columns are zero, get zero gradient and are cut off again in its returned weights;
- seed: initial weights equal ``build_model(config, n_bins)`` under
  ``torch.manual_seed(seed)`` (or ``Member.init``); the data order comes from a CPU
  generator seeded with ``seed``, the model's noise (VAE reparameterization, ITL-AE prior
  samples) from a generator on the device seeded with ``seed + 1``;
- data: its own train and validation frame indices into one shared frame tensor (folds,
  speakers, sources), so members may have different numbers of batches per epoch: a member
  takes a step only while it has a batch left in the epoch (its last batch may be partial;
  rows beyond it are padding with zero weight in every loss term); the stack holds members
  with most batches first, so a step computes only the members up to the last one with a
  batch (8 networks of 1.0-1.5x frame counts: ~7 % more frames x models/s on one thread,
  machine loaded);
- optimizer: torch's own Adam (``torch.optim.adam.adam``, fused where the device has the
  kernel) with each member's own step count and learning rate: the stack holds members with
  equal batches per epoch and learning rate side by side, and each such run (all 8 networks
  of ``reproduce``) takes one Adam call on its dim-0 slices of the stacked tensors; a member
  without a batch at a step is left out of that step, so its Adam state does not move;
- early stopping: a member whose validation loss has not improved for ``patience`` epochs
  (or that has run its ``epochs``) is done: its best-epoch weights are returned and it leaves
  the stack, which the others go on with.

So a member trained in an ensemble equals the same member trained alone, to float
tolerance (the batched matmuls may sum in another order): ``tests/test_ensemble.py``.

Why ``baddbmm`` rather than ``torch.func.stack_module_state`` + ``vmap``: on this 2-core
CPU one fwd+bwd step of 8 members at batch 70 took 7.8 ms with bmm, 10.3 ms with vmap and
11.2 ms as 8 separate models (1 thread); vmap also needs one model class for the whole
stack, where members of different kinds share one pass here. ``make bench``
(benchmarks/results/train_speed.json, idle 2-core Ice Lake): the 8 models of reproduce.toml
train 1.83x faster as one stack than one at a time on one CPU thread (28.6k against 15.6k
frames x models/s, 29 % of the one-thread matmul peak) and 2.83x on two threads with
libgomp's default waiting; with ``OMP_WAIT_POLICY=PASSIVE`` two threads reach only 1.63x,
as each ~1 ms step wakes the sleeping thread again. With another process on the second core
two threads of any policy lose to one (``--num-cpus 1``). Where a one-thread step of the
8 goes (~15.5 ms with both cores busy with other training): the matmuls ~8.5 ms (alone,
these shapes reach 81-87 % of the 512 x 512 matmul peak), Adam ~2.4 ms (one pass over
weights, gradients and both averages: memory-bound), the other ~400 small ops and Python
~4.6 ms. Adam's averages that would turn subnormal are flushed (``sepvae.stack``: late
epochs ~40 % shorter on x86, the metrics unchanged). Members whose ``[train] precision`` is
``"bf16"`` (a stack has one precision) autocast the training forward pass only; weights,
Adam and the validation pass stay fp32. On a CPU for which oneDNN has no bf16 kernels (no
AVX-512, e.g. an AMD EPYC of family 25 with AVX2 only) bf16 matmuls are emulated: an epoch of
``make bench``'s 8 models took 42.8 s against 3.3 s in fp32 there (one thread), so training warns.

Random streams differ from the pre-ensemble training loop: there the sources of a job
shared one shuffle and one noise generator (the male model's draws advanced the female
model's stream); here each member draws from its own, so two members with the same seed
and data see the same batches and the same noise.

API::

    Member(name, model: ModelConfig, train: TrainConfig, train_index, val_index,
           targets_key, seed=None, init=None)
    group_members(members) -> list[list[Member]]      # which can share one pass
    fit_ensemble(members, inputs, targets, device=None, state_path=None, on_epoch=None,
                 job="") -> {name: (state_dict, history)}
    merge_histories({name: history}) -> history of a job (the ``history.json`` format)

How the training stage calls it (:func:`sepvae.train.train_plans`): every run still to train
(each method, sweep point and fold) is planned as its frames, normalized as its networks see
them, and one ``Member`` per network; the runs' frames are concatenated into one tensor, each
member's indices pointing into its own run's part; members are stacked by layer and batch
size (and similar frame counts, so few idle), one ``fit_ensemble`` per stack (a job of N
CPUs: each stack in N parts, side by side in single-thread processes,
:func:`sepvae.train.fit_stacks`), and each run gets its checkpoints and ``history.json`` back.

``state_dict`` loads into ``build_model(member.model, n_bins)`` with ``strict=True``;
``history`` is the member's list of ``{"epoch", name: {loss, recon, reg, val_recon},
"seconds"}`` for the epochs it trained (``seconds``: the wall time of the stack's epoch).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from sepvae.errors import SepvaeError, SepvaeWarning
from sepvae.io import atomic_output
from sepvae.losses import sample_prior
from sepvae.stack import Member, Stack, group_members, stack_key  # noqa: F401  (Member, group_members: this module's API)

EpochCallback = Callable[[str, int, int, dict], None]  # (job, epoch, epochs, logs)
_FUSED_ADAM_DEVICES = ("cpu", "cuda", "mps")
_VALIDATION_CHUNK = 4096  # validation frames per member per stacked pass


def merge_histories(histories: dict[str, list[dict]]) -> list[dict]:
    """Per-member histories as one job history: per epoch, every member that trained."""
    epochs: dict[int, dict] = {}
    for history in histories.values():
        for logs in history:
            merged = epochs.setdefault(logs["epoch"], {"epoch": logs["epoch"]})
            merged.update({k: v for k, v in logs.items() if k not in ("epoch", "seconds")})
            merged["seconds"] = logs["seconds"]
    return [epochs[e] for e in sorted(epochs)]


def _check_inputs(members, inputs, targets) -> int:
    if not members:
        raise ValueError("fit_ensemble needs at least one member")
    if inputs.dim() != 2:
        raise ValueError(f"inputs must be (frames, bins), got shape {tuple(inputs.shape)}")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be unique, got {names}")
    if len({stack_key(m) for m in members}) != 1:
        raise ValueError(
            "members of one stack need the same layer sizes, batch size and precision; split them with "
            "group_members"
        )
    for member in members:
        if member.targets_key not in targets:
            raise ValueError(f"member {member.name!r}: no targets {member.targets_key!r}")
        for index in (member.train_index, member.val_index):
            if int(index.min()) < 0 or int(index.max()) >= len(inputs):
                raise ValueError(f"member {member.name!r}: frame index out of range 0..{len(inputs) - 1}")
    for key, target in targets.items():
        if target.shape != inputs.shape:
            raise ValueError(f"targets {key!r} shape {tuple(target.shape)} != inputs shape {tuple(inputs.shape)}")
    return inputs.shape[1]


def _epoch_batches(stack: Stack, shuffles: list[torch.Generator], batch: int):
    """This epoch's batches of every member: frame indices, row masks, real rows per step.

    A member past its last batch gets all-True mask rows (finite, ignored losses) and zero
    real rows; it takes no step there.

    Shape:
        - index, mask: ``(steps, M, batch)``; rows: ``(steps, M)``; steps_of: M ints
    """
    orders = [m.train_index.cpu()[torch.randperm(len(m.train_index), generator=g)] for m, g in zip(stack.members, shuffles)]
    steps_of = [math.ceil(len(order) / batch) for order in orders]
    steps = max(steps_of)
    index = torch.zeros(len(orders), steps * batch, dtype=torch.long)
    position = torch.arange(steps * batch)
    mask = torch.zeros(len(orders), steps * batch, dtype=torch.bool)
    for k, order in enumerate(orders):
        index[k, : len(order)] = order
        index[k, len(order) :] = order[0]  # padding: any real frame keeps the losses finite
        mask[k] = (position < len(order)) | (position >= steps_of[k] * batch)
    real = (position[None, :] < torch.tensor([len(o) for o in orders])[:, None]).float()
    rows = real.view(len(orders), steps, batch).sum(-1).T
    to_steps = lambda t: t.view(len(orders), steps, batch).transpose(0, 1).contiguous()  # noqa: E731
    return to_steps(index), to_steps(mask), rows, steps_of


def _validation_losses(stack: Stack, inputs: Tensor, targets: Tensor, keys: Tensor) -> Tensor:
    """Each member's mean over its validation frames of the deterministic estimate's summed
    squared error (the decoder fed the code or the VAE's mean), as the pre-ensemble loop logged it.

    Shape:
        - inputs: ``(frames, bins)``; targets: ``(keys, frames, bins)``; keys: ``(M,)``
        - output: ``(M,)``
    """
    padded, lengths = stack.val_index, stack.val_lengths
    total = inputs.new_zeros(len(lengths))
    with torch.no_grad():
        for start in range(0, padded.shape[1], _VALIDATION_CHUNK):
            index = padded[:, start : start + _VALIDATION_CHUNK]
            position = torch.arange(start, start + index.shape[1], device=inputs.device)
            _, estimate = stack.forward(inputs[index], None)
            error = (estimate.float() - targets[keys[:, None], index]).pow(2).sum(-1)
            total += (error * (position[None, :] < lengths[:, None])).sum(-1)
    return total / lengths


def whole(parts: list[Tensor]) -> Tensor | None:
    """The tensor ``parts`` are, in order, consecutive slices of and cover, or None: frames
    joined into one buffer (:func:`sepvae.train.join_frames`) need no copy."""
    base = parts[0]._base
    if base is None or not base.is_contiguous() or any(part._base is not base for part in parts):
        return None
    position = base.storage_offset()
    for part in parts:
        if part.storage_offset() != position or not part.is_contiguous():
            return None
        position += part.numel()
    return base if position == base.storage_offset() + base.numel() else None


def _stacked(targets: list[Tensor]) -> Tensor:
    """``torch.stack(targets)``, without a copy where they are the rows of one tensor in order."""
    base = whole(targets)
    return base if base is not None and base.shape == (len(targets), *targets[0].shape) else torch.stack(targets)


def _autocast(device: torch.device, precision: str):
    """bf16 autocast for the forward pass where asked; the weights and Adam stay fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SepvaeError("train precision = 'bf16' asked for, but this CUDA GPU has no bf16")
    if device.type == "cpu" and not _cpu_has_bf16():
        warnings.warn(SepvaeWarning(
            "train precision = 'bf16' on a CPU without bf16 kernels (oneDNN needs AVX-512): its matmuls are "
            "emulated, 13-19x slower than fp32 on such a CPU (make bench); use precision = 'fp32'"), stacklevel=3)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 matmuls on this CPU (private torch API: True if unknown)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def fit_ensemble(
    members: list[Member],
    inputs: Tensor,
    targets: dict[str, Tensor],
    device: torch.device | str | None = None,
    state_path: Path | None = None,
    on_epoch: EpochCallback | None = None,
    job: str = "",
) -> dict[str, tuple[dict[str, Tensor], list[dict]]]:
    """Train ``members`` as one stacked pass; returns ``{name: (best state dict, history)}``.

    ``inputs`` (normalized mixture frames) and ``targets`` are copied to ``device`` once
    (default: the device of ``inputs``); every batch is an index into them. ``on_epoch``
    gets ``(job, epoch, most epochs of any member, logs)`` after each epoch with the logs of
    the members that trained in it. With ``state_path`` the full state is saved after every
    epoch and a run finding it resumes there, ending with the same weights as an
    uninterrupted run. The members' ``train.precision`` ``"bf16"`` runs the forward pass
    under bf16 autocast.

    Raises:
        ValueError: members that cannot share a stack, indices out of range, bad shapes.
        SepvaeError: a member's loss is not finite (naming the member and the epoch).

    Shape:
        - inputs: ``(frames, n_bins)``; targets: key -> ``(frames, n_bins)``
    """
    n_bins = _check_inputs(members, inputs, targets)
    device = torch.device(device) if device is not None else inputs.device
    autocast = _autocast(device, members[0].train.precision)
    fused = device.type in _FUSED_ADAM_DEVICES
    batch = members[0].train.batch_size
    inputs = inputs.to(device)
    keys = sorted({m.targets_key for m in members})
    target_stack = _stacked([targets[k] for k in keys]).to(device)  # (keys, frames, bins)
    stack = Stack(members, n_bins, device)
    shuffles = {m.name: torch.Generator().manual_seed(m.seed) for m in members}
    noises = {m.name: torch.Generator(device=device).manual_seed(m.seed + 1) for m in members}
    best = {m.name: math.inf for m in members}
    since_best = {m.name: 0 for m in members}
    histories: dict[str, list[dict]] = {m.name: [] for m in members}
    results: dict[str, dict[str, Tensor]] = {}
    epoch = 1
    if state_path is not None and Path(state_path).is_file():
        epoch = _resume(stack, torch.load(state_path, map_location=device, weights_only=True),
                        shuffles, noises, best, since_best, histories, results)
    most_epochs = max(m.train.epochs for m in members)
    while stack.members:
        started = time.perf_counter()
        names = [m.name for m in stack.members]
        key_of = torch.tensor([keys.index(m.targets_key) for m in stack.members], device=device)
        index, mask, rows, steps_of = _epoch_batches(stack, [shuffles[n] for n in names], batch)
        index, mask, rows = index.to(device), mask.to(device), rows.to(device)
        latent = stack.latent
        eps = torch.zeros(len(names), batch, latent, device=device) if stack.vae_positions else None
        itl = [k for positions, _, _ in stack.itl_groups.values() for k in positions]
        prior = torch.empty(len(itl), batch, latent, device=device) if itl else None
        sums = torch.zeros(len(names), 3, device=device)
        for step in range(len(rows)):
            # Members without a batch here do not move, so the step computes only the first
            # n (the Stack holds most batches first: up to the last member with a batch).
            n = 1 + max(k for k, steps in enumerate(steps_of) if steps > step)
            params = stack.params if n == len(names) else [p[:n] for p in stack.params]
            # Each member draws its noise only on its own steps, from its own generator,
            # so its stream is the same as when it trains alone.
            for k in stack.vae_positions:
                if step < steps_of[k]:
                    eps[k].normal_(generator=noises[names[k]])
            for j, k in enumerate(itl):
                if step < steps_of[k]:
                    prior[j] = sample_prior(stack.members[k].model.prior, batch, latent,
                                            generator=noises[names[k]], device=device)
            frames, real = index[step, :n], rows[step, :n]
            with autocast:
                encoded, estimate = stack.forward(inputs[frames], None if eps is None else eps[:n], params)
            loss, recon, reg = stack.losses(encoded.float(), estimate.float(),
                                            target_stack[key_of[:n, None], frames], mask[step, :n], prior)
            # Members past their last batch add nothing: their gradient is zero and they
            # are left out of the Adam step.
            grads = torch.autograd.grad((loss * (real > 0)).sum(), params)
            with torch.no_grad():
                stack.adam_step(grads, step, fused)
                sums[:n] += torch.stack([loss, recon, reg], 1).detach() * real[:, None]
        # One host sync per epoch: the logs, the NaN guard and early stopping need numbers.
        sums = (sums / torch.tensor([len(m.train_index) for m in stack.members], device=device)[:, None]).tolist()
        stack_val = _validation_losses(stack, inputs, target_stack, key_of)
        val = stack_val.tolist()
        seconds = time.perf_counter() - started
        logs: dict = {"epoch": epoch}
        improved = []
        for k, member in enumerate(stack.members):
            loss, recon, reg = sums[k]
            if not all(math.isfinite(v) for v in (loss, recon, reg)):
                raise SepvaeError(
                    f"training {job or 'model'} ({member.name}): loss became {loss} at epoch "
                    f"{epoch}; lower the learning rate (now {member.train.lr}) or check the "
                    f"training data"
                )
            improved.append(val[k] < best[member.name])
            if improved[-1]:
                best[member.name], since_best[member.name] = val[k], 0
            else:
                since_best[member.name] += 1
            logs[member.name] = {"loss": loss, "recon": recon, "reg": reg, "val_recon": val[k]}
            histories[member.name].append(
                {"epoch": epoch, member.name: logs[member.name], "seconds": seconds})
        logs["seconds"] = seconds
        with torch.no_grad():
            better = torch.tensor(improved, device=device)
            for kept, current in zip(stack.best, stack.params):
                kept.copy_(torch.where(better.view(-1, *[1] * (current.dim() - 1)), current, kept))
        going_on = []
        for k, member in enumerate(stack.members):
            if epoch < member.train.epochs and since_best[member.name] < member.train.patience:
                going_on.append(k)
            else:
                results[member.name] = stack.state_dict_of(k, stack.best)
        if len(going_on) < len(stack.members):
            stack.keep(going_on)
        if state_path is not None:
            _save(state_path, stack, epoch, shuffles, noises, best, since_best, histories, results)
        if on_epoch:
            on_epoch(job, epoch, most_epochs, logs)
        epoch += 1
    return {m.name: (results[m.name], histories[m.name]) for m in members}


def _save(path, stack, epoch, shuffles, noises, best, since_best, histories, results) -> None:
    running = [m.name for m in stack.members]
    state = {
        "epoch": epoch,
        "running": running,
        "params": stack.params, "exp_avg": stack.exp_avg, "exp_avg_sq": stack.exp_avg_sq,
        "best_params": stack.best,
        "steps": list(stack.steps),
        "shuffles": {n: g.get_state() for n, g in shuffles.items()},
        "noises": {n: g.get_state() for n, g in noises.items()},
        "best": best, "since_best": since_best, "histories": histories, "results": results,
    }
    with atomic_output(Path(path)) as tmp:
        torch.save(state, tmp)


def _resume(stack, state, shuffles, noises, best, since_best, histories, results) -> int:
    """Load a saved state into the fresh ``stack`` and the per-member records; returns the
    epoch to run next."""
    if set(state["shuffles"]) != set(shuffles):
        raise SepvaeError(
            f"saved training state is for members {sorted(state['shuffles'])}, not {sorted(shuffles)}"
        )
    names = [m.name for m in stack.members]
    stack.keep([names.index(n) for n in state["running"]])
    with torch.no_grad():
        saved_tensors = ("params", "exp_avg", "exp_avg_sq", "best_params")
        for tensors, name in zip((stack.params, stack.exp_avg, stack.exp_avg_sq, stack.best), saved_tensors):
            for tensor, value in zip(tensors, state[name]):
                tensor.copy_(value)
        for counters, saved in zip(stack.steps, state["steps"]):
            counters.copy_(saved)
    for name, generator in shuffles.items():
        generator.set_state(state["shuffles"][name].cpu())
    for name, generator in noises.items():
        generator.set_state(state["noises"][name].cpu())
    best.update(state["best"])
    since_best.update(state["since_best"])
    histories.update(state["histories"])
    results.update(state["results"])
    return state["epoch"] + 1
