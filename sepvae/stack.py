"""The weights of an ensemble's running members as stacked tensors (see :mod:`sepvae.ensemble`).

A :class:`Member` says what one model is and on which frames it trains; members with the
same layer sizes and batch size (:func:`group_members`) share a :class:`Stack`: their
weights as ``(members, in, out)`` tensors, one ``baddbmm`` forward for all, per-member
losses, and torch's Adam applied to runs of members that step together.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.adam import adam

from sepvae.config import ModelConfig, TrainConfig
from sepvae.losses import cauchy_schwarz_divergence, euclidean_divergence, gaussian_kl
from sepvae.models import ITLAE, MODELS, VAE, build_model

DIVERGENCE_FUNCTIONS = {"cs": cauchy_schwarz_divergence, "euclidean": euclidean_divergence}

# Adam's averages of a weight whose gradient is exactly 0 (a dead ReLU unit's) decay by beta
# each step into float32's subnormal range and stick at its smallest value (0.9 x 1.4e-45
# rounds back up); subnormal arithmetic is slow on x86, and after a few epochs 40 % of a
# layer's first moments were subnormal and an epoch took twice as long. Every FLUSH_EVERY
# steps of a member's epoch and at its end (so a member's schedule is the same alone or in
# any stack) its averages under FLUSH_BELOW are set to 0: a value under 1e-30 needs > 150 steps
# to decay below float32's smallest normal (1.2e-38), so none gets there, and what it changes
# in a step (lr x 1e-30 / (sqrt(v) + 1e-8)) is far below float32 resolution of the weights.
FLUSH_EVERY = 32
FLUSH_BELOW = 1e-30


@dataclass(eq=False)
class Member:
    """One model of an ensemble: what it is, how it trains and on which frames.

    ``train_index`` / ``val_index`` index the frames of the ``inputs`` given to
    :func:`fit_ensemble`; ``targets_key`` picks its target frames from ``targets``.
    ``seed`` defaults to ``train.seed``; ``init`` (a ``build_model`` state dict) replaces
    the seeded initial weights.

    Shape:
        - train_index: ``(n_train,)``, val_index: ``(n_val,)``, integer
    """

    name: str
    model: ModelConfig
    train: TrainConfig
    train_index: Tensor
    val_index: Tensor
    targets_key: str
    seed: int | None = None
    init: dict[str, Tensor] | None = None

    def __post_init__(self):
        for field_name in ("train_index", "val_index"):
            index = getattr(self, field_name)
            if not isinstance(index, Tensor) or index.dim() != 1 or index.is_floating_point():
                raise ValueError(f"member {self.name!r}: {field_name} must be a 1-d integer tensor")
            if len(index) == 0:
                raise ValueError(f"member {self.name!r}: {field_name} is empty")
        if self.seed is None:
            self.seed = self.train.seed


def stack_key(member: Member) -> tuple:
    """Members with equal keys can share one pass: same layer sizes, batch size and precision."""
    config = member.model
    return (config.hidden, config.latent, config.decoder_hidden, member.train.batch_size, member.train.precision)


def group_members(members: list[Member]) -> list[list[Member]]:
    """Split ``members`` into groups that :func:`fit_ensemble` can train as one stack.

    A stack needs one set of layer sizes, one batch size and one precision; kinds, seeds, data, learning
    rates, epochs and patience may differ within a group. Order is kept.
    """
    groups: dict[tuple, list[Member]] = {}
    for member in members:
        groups.setdefault(stack_key(member), []).append(member)
    return list(groups.values())


def _linear_names(model: nn.Module) -> list[str]:
    """The Linear layers of a FrameAutoencoder in forward order: encoder, head, decoder."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def batches_per_epoch(member: Member) -> int:
    """How many batches (Adam steps) ``member`` takes per epoch; its last may be partial."""
    return math.ceil(len(member.train_index) / member.train.batch_size)


class Stack:
    """The running members' weights as ``(members, in, out)`` tensors and their Adam state.

    ``params`` alternates weight ``(M, in, out)`` and bias ``(M, 1, out)`` per layer:
    ``len(hidden)`` encoder layers, the latent head, then the decoder layers.

    Members are held most batches per epoch first, then by learning rate (stable), so
    that members with equal batches per epoch and learning rate are neighbours: such a
    run always has one Adam step count, and its slices ``[start:stop]`` of the stacked
    tensors take one Adam call (:meth:`adam_step`). ``members`` is in that order.
    """

    def __init__(self, members: list[Member], n_bins: int, device: torch.device):
        self.members = sorted(members, key=lambda m: (-batches_per_epoch(m), m.train.lr))
        members = self.members
        config = members[0].model
        self.n_encoder = len(config.hidden)
        self.latent = config.latent
        self.heads = max(MODELS[m.model.name].n_heads for m in members)
        self.device = device
        models = [self._initial_model(m, n_bins) for m in members]
        self.names = _linear_names(models[0])
        layers = [[dict(model.named_modules())[name] for name in self.names] for model in models]
        self.params: list[Tensor] = []
        for i in range(len(self.names)):
            out_features = layers[0][i].out_features
            if i == self.n_encoder:  # the head: padded to the widest member's
                out_features = self.heads * self.latent
            weight = torch.zeros(len(members), layers[0][i].in_features, out_features)
            bias = torch.zeros(len(members), 1, out_features)
            for k, member_layers in enumerate(layers):
                width = member_layers[i].out_features
                weight[k, :, :width] = member_layers[i].weight.detach().T
                bias[k, 0, :width] = member_layers[i].bias.detach()
            self.params += [weight.to(device).requires_grad_(), bias.to(device).requires_grad_()]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        # Adam step counts per member and tensor (M, tensors); the functional Adam
        # increments each counter it is given once per call. Equal within a run.
        self.steps = torch.zeros(len(members), len(self.params), device=device)
        self.best = [p.detach().clone() for p in self.params]
        self._index_members()

    @staticmethod
    def _initial_model(member: Member, n_bins: int) -> nn.Module:
        # build_model's init draws from the global RNG: seed it, and leave the caller's
        # global RNG as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(member.seed)
            model = build_model(member.model, n_bins)
        if member.init is not None:
            model.load_state_dict(member.init, strict=True)
        return model

    def _index_members(self):
        """What follows from the member list, redone when it shrinks: per-member loss
        constants ``(M,)`` on the device, kind groups, Adam views, validation indices."""
        configs = [m.model for m in self.members]
        is_vae = [_is_kind(c, VAE) for c in configs]
        is_itl = [_is_kind(c, ITLAE) for c in configs]
        device = self.device
        self.is_vae = torch.tensor(is_vae, device=device)
        self.noise_scale = torch.tensor(
            [c.eps_std if v else 0.0 for c, v in zip(configs, is_vae)], device=device
        )[:, None, None]
        self.reg_weight = torch.tensor(
            [c.beta if v else c.itl_lambda if i else 0.0 for c, v, i in zip(configs, is_vae, is_itl)],
            device=device,
        )
        self.vae_positions = [k for k, v in enumerate(is_vae) if v]
        self.itl_groups = {}  # divergence -> (positions list, positions tensor, sigma (K,))
        for kind in DIVERGENCE_FUNCTIONS:
            positions = [k for k, c in enumerate(configs) if is_itl[k] and c.divergence == kind]
            if positions:
                sigma = [configs[k].kernel_sigma or math.sqrt(configs[k].latent) for k in positions]
                self.itl_groups[kind] = (
                    positions,
                    torch.tensor(positions, device=device),
                    torch.tensor(sigma, device=device),
                )
        # Runs of neighbours with equal batches per epoch and learning rate: (start, stop,
        # lr, batches, their (weights, averages, squared averages) as dim-0 views of the
        # stacked tensors, made once: the optimizer steps them in place).
        self.runs = []
        for k, member in enumerate(self.members):
            key = (member.train.lr, batches_per_epoch(member))
            if self.runs and tuple(self.runs[-1][2:]) == key:
                self.runs[-1][1] = k + 1
            else:
                self.runs.append([k, k + 1, *key])
        self.runs = [
            (start, stop, lr, batches,
             [[t.detach()[start:stop] for t in ts] for ts in (self.params, self.exp_avg, self.exp_avg_sq)])
            for start, stop, lr, batches in self.runs
        ]
        # Validation frames of every member, padded to the longest with its first frame.
        indices = [m.val_index.to(device) for m in self.members] or [torch.zeros(1, dtype=torch.long, device=device)]
        longest = max(len(i) for i in indices)
        self.val_index = torch.stack([torch.cat([i, i[:1].expand(longest - len(i))]) for i in indices])
        self.val_lengths = torch.tensor([len(i) for i in indices], device=device)

    def keep(self, positions: list[int]) -> None:
        """Drop the members not at ``positions`` (they are done)."""
        index = torch.tensor(positions, dtype=torch.long, device=self.device)
        with torch.no_grad():
            for tensors in (self.params, self.exp_avg, self.exp_avg_sq, self.best):
                tensors[:] = [t.index_select(0, index) for t in tensors]
        for param in self.params:
            param.requires_grad_()
        self.steps = self.steps[index]
        self.members = [self.members[k] for k in positions]
        self._index_members()

    def forward(self, mixture: Tensor, eps: Tensor | None, params: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The latent head's output and the estimate of the first ``n`` members (all ``M``
        by default), with ``params`` (default ``self.params``; else their first ``n`` rows).

        ``eps`` (VAE noise, zero rows for other members) samples z; None decodes the mean.

        Shape:
            - mixture: ``(n, batch, n_bins)``; eps: ``(n, batch, latent)``
            - output: ``(n, batch, heads * latent)``, ``(n, batch, n_bins)``
        """
        params = self.params if params is None else params
        weights, biases = params[0::2], params[1::2]
        hidden = mixture
        for weight, bias in zip(weights[: self.n_encoder], biases[: self.n_encoder]):
            # In place: baddbmm's backward needs its inputs, not its output.
            hidden = torch.baddbmm(bias, hidden, weight).relu_()
        encoded = torch.baddbmm(biases[self.n_encoder], hidden, weights[self.n_encoder])
        z = encoded[..., : self.latent]
        if eps is not None and self.heads == 2:
            logvar = encoded[..., self.latent :]
            z = z + self.noise_scale[: len(mixture)] * torch.exp(0.5 * logvar) * eps
        decoder = list(zip(weights[self.n_encoder + 1 :], biases[self.n_encoder + 1 :]))
        for i, (weight, bias) in enumerate(decoder):
            z = torch.baddbmm(bias, z, weight)
            if i < len(decoder) - 1:
                z = z.relu_()
        return encoded, F.softplus(z)

    def losses(
        self, encoded: Tensor, estimate: Tensor, target: Tensor, mask: Tensor, prior: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Each of the first ``n`` members' (loss, recon, reg) on its rows of the batch
        (``mask``).

        The same terms as ``FrameAutoencoder.forward``: recon summed over bins and averaged
        over the member's frames; the KL likewise; the ITL divergence over the member's
        codes and as many prior samples.

        Shape:
            - encoded: ``(n, batch, heads * latent)``; estimate, target: ``(n, batch, n_bins)``
            - mask: ``(n, batch)`` bool; prior: ``(K, batch, latent)`` (all ITL-AE members)
            - output: three ``(n,)``
        """
        n = len(estimate)
        weight = mask.to(estimate.dtype)
        count = weight.sum(-1)
        recon = ((estimate - target).pow(2).sum(-1) * weight).sum(-1) / count
        reg = torch.zeros_like(recon)
        if self.vae_positions and self.vae_positions[0] < n:
            mu, logvar = encoded[..., : self.latent], encoded[..., self.latent :]
            kl = (gaussian_kl(mu, logvar) * weight).sum(-1) / count
            reg = torch.where(self.is_vae[:n], kl, reg)
        start = 0
        for kind, (positions, index, sigma) in self.itl_groups.items():
            used = bisect.bisect_left(positions, n)  # positions ascend: the first `used` are < n
            if used:
                index_used = index[:used]
                codes = encoded[index_used, :, : self.latent]
                samples = prior[start : start + used]
                divergence = DIVERGENCE_FUNCTIONS[kind](codes, samples, sigma[:used], mask[index_used])
                reg = reg.index_put((index_used,), divergence)
            start += len(positions)
        return recon + self.reg_weight[:n] * reg, recon, reg

    def adam_step(self, grads: list[Tensor], step: int, fused: bool) -> None:
        """torch's Adam, one call per run of members that have a batch at ``step`` (of the
        epoch); the others' weights, averages and step counts do not move.

        Shape:
            - grads: like ``params``, or their first ``n`` rows (``n`` covering every
              member with a batch at ``step``)
        """
        for start, stop, lr, batches, (params, exp_avg, exp_avg_sq) in self.runs:
            if step >= batches:
                continue
            counts = self.steps[start]
            adam(
                params, [g[start:stop] for g in grads], exp_avg, exp_avg_sq, [], list(counts.unbind(0)),
                fused=fused, foreach=False if not fused else None,
                amsgrad=False, beta1=0.9, beta2=0.999, lr=lr, weight_decay=0.0, eps=1e-8,
                maximize=False,
            )
            # The call counted on the run's first row; the run shares its count.
            self.steps[start + 1 : stop] = counts
            if step % FLUSH_EVERY == FLUSH_EVERY - 1 or step == batches - 1:
                for average in exp_avg + exp_avg_sq:
                    average.masked_fill_(average.abs() < FLUSH_BELOW, 0.0)

    def state_dict_of(self, k: int, tensors: list[Tensor]) -> dict[str, Tensor]:
        """Member ``k``'s weights from ``tensors`` (``params`` or ``best``) as a
        ``build_model`` state dict, on the CPU."""
        width = MODELS[self.members[k].model.name].n_heads * self.latent
        state = {}
        for i, name in enumerate(self.names):
            weight, bias = tensors[2 * i][k], tensors[2 * i + 1][k, 0]
            if i == self.n_encoder:
                weight, bias = weight[:, :width], bias[:width]
            state[f"{name}.weight"] = weight.T.detach().cpu().clone()
            state[f"{name}.bias"] = bias.detach().cpu().clone()
        return state


def _is_kind(config: ModelConfig, cls: type) -> bool:
    """Whether ``config.name`` builds a ``cls`` (the VAE family, the ITL-AE)."""
    return issubclass(MODELS[config.name], cls)


def model_family(config: ModelConfig) -> int:
    """0 for the VAE family, 1 for plain autoencoders, 2 for ITL-AEs: what a stack computes
    beyond the shared layers (VAE noise and wider heads, the ITL divergence) depends on it."""
    return 0 if _is_kind(config, VAE) else 2 if _is_kind(config, ITLAE) else 1


