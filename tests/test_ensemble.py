import dataclasses
import math

import pytest
import torch

from sepvae.config import ModelConfig, TrainConfig, model_config
from sepvae.ensemble import Member, fit_ensemble, group_members, merge_histories
from sepvae.errors import SepvaeError
from sepvae.models import build_model
from sepvae.stack import Stack

SMALL = dict(hidden=(16,), latent=4, decoder_hidden=(16,))
N_BINS = 9
KINDS = {  # the four kinds of reproduce.toml, plus the ITL-AE's other divergence and prior
    "vae": ModelConfig(name="vae", **SMALL),
    "beta-vae": model_config({"name": "beta-vae", **SMALL}),
    "itl-ae": ModelConfig(name="itl-ae", **SMALL),
    "itl-ae-ed": ModelConfig(name="itl-ae", divergence="euclidean", prior="laplacian", itl_lambda=0.5, **SMALL),
    "ae": ModelConfig(name="ae", **SMALL),
}


def frames(n=150, seed=0):
    generator = torch.Generator().manual_seed(seed)
    male, female = torch.rand(n, N_BINS, generator=generator), torch.rand(n, N_BINS, generator=generator)
    return male + female, {"male": male, "female": female}


def member(name, kind, source, train_index, val_index, seed=0, **train):
    config = TrainConfig(**{"batch_size": 16, "epochs": 3, "patience": 100, **train})
    return Member(name, KINDS[kind], config, train_index, val_index, source, seed=seed)


def eight_members():
    """4 kinds x 2 sources, each its own seed and its own train frames (different counts,
    so members run out of batches at different steps and end on partial batches)."""
    members = []
    for i, kind in enumerate(["vae", "beta-vae", "itl-ae", "ae"]):
        for j, source in enumerate(["male", "female"]):
            n_train = 70 + 13 * i + 7 * j
            train_index = torch.randperm(120, generator=torch.Generator().manual_seed(i + 10 * j))[:n_train]
            members.append(member(f"{kind}-{source}", kind, source, train_index, torch.arange(120, 150), seed=2 * i + j))
    return members


def assert_same_history(a, b, name):
    assert [h["epoch"] for h in a] == [h["epoch"] for h in b]
    for x, y in zip(a, b):
        for key in ("loss", "recon", "reg", "val_recon"):
            assert x[name][key] == pytest.approx(y[name][key], rel=1e-4, abs=1e-6), (name, key, x["epoch"])


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_one_member_is_the_plain_model_with_torch_adam():
    """The stacked network, losses and Adam are those of build_model + torch.optim.Adam."""
    inputs, targets = frames()
    train_index, val_index = torch.arange(0, 128), torch.arange(128, 150)  # 8 full batches
    for kind, config in KINDS.items():
        train = TrainConfig(batch_size=16, epochs=2, patience=100, seed=3)
        (weights, history), = fit_ensemble(
            [Member(kind, config, train, train_index, val_index, "male")], inputs, targets).values()
        torch.manual_seed(3)
        model = build_model(config, N_BINS)
        optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
        shuffle, noise = torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)
        for _ in range(2):
            model.train()
            order = train_index[torch.randperm(128, generator=shuffle)]
            for start in range(0, 128, 16):
                batch = order[start : start + 16]
                out = model(inputs[batch], targets["male"][batch], noise)
                optimizer.zero_grad()
                out.loss.backward()
                optimizer.step()
        model.eval()
        val = (model.estimate(inputs[val_index]) - targets["male"][val_index]).pow(2).sum(-1).mean()
        assert history[-1][kind]["val_recon"] == pytest.approx(float(val), rel=1e-4)
        assert_same_weights(weights, model.state_dict())


def test_ensemble_equals_each_member_trained_alone():
    inputs, targets = frames()
    # The 8 of reproduce.toml and an ITL-AE with the other divergence and prior in one stack.
    members = eight_members() + [member("itl-ae-ed", "itl-ae-ed", "male", torch.arange(60), torch.arange(120, 150), seed=9)]
    logged = []
    together = fit_ensemble(members, inputs, targets, on_epoch=lambda *args: logged.append(args))
    assert [(job, epoch, epochs) for job, epoch, epochs, _ in logged] == [("", 1, 3), ("", 2, 3), ("", 3, 3)]
    for m in members:
        weights, history = together[m.name]
        alone_weights, alone_history = fit_ensemble([m], inputs, targets)[m.name]
        assert len(history) == 3 and set(history[0]) == {"epoch", m.name, "seconds"}
        assert history[0][m.name]["reg"] != 0 or m.model.name == "ae"
        assert_same_history(history, alone_history, m.name)
        assert_same_weights(weights, alone_weights)
        model = build_model(m.model, N_BINS)
        model.load_state_dict(weights, strict=True)  # loads as today's checkpoints do
        assert not torch.equal(model.decoder[0].weight, build_model(m.model, N_BINS).decoder[0].weight)


def test_a_stopped_member_keeps_its_best_weights_while_the_others_go_on():
    inputs, targets = frames()
    train_index, val_index = torch.arange(120), torch.arange(120, 150)
    diverging = member("diverging", "ae", "male", train_index, val_index, lr=0.5, patience=2, epochs=12)
    steady = member("steady", "vae", "female", train_index, val_index, patience=100, epochs=12)
    seen = {}
    result = fit_ensemble([diverging, steady], inputs, targets,
                          on_epoch=lambda job, epoch, epochs, logs: seen.setdefault(epoch, set(logs) - {"epoch", "seconds"}))
    stopped, _ = result["diverging"][1], result["steady"][1]
    assert len(stopped) < 12 and len(result["steady"][1]) == 12
    assert seen[len(stopped) + 1] == {"steady"}  # the others go on without it
    val = [h["diverging"]["val_recon"] for h in stopped]
    best_epoch = val.index(min(val)) + 1
    assert len(stopped) == best_epoch + 2  # patience 2
    # Its weights are those of its best epoch: training it alone for exactly that many
    # epochs gives them, so nothing after that epoch (its own or the others') moved them.
    up_to_best = member("diverging", "ae", "male", train_index, val_index, lr=0.5, patience=100, epochs=best_epoch)
    assert_same_weights(result["diverging"][0], fit_ensemble([up_to_best], inputs, targets)["diverging"][0])


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    inputs, targets = frames()
    members = eight_members()[1::2]  # one of each kind
    members[0] = member("early", "vae", "male", torch.arange(100), torch.arange(120, 150), lr=0.5, patience=1, epochs=4)
    members = [Member(m.name, m.model, TrainConfig(batch_size=16, epochs=4, patience=m.train.patience, lr=m.train.lr),
                      m.train_index, m.val_index, m.targets_key, m.seed) for m in members]
    reference = fit_ensemble(members, inputs, targets)
    state = tmp_path / "state.pt"

    def interrupt(job, epoch, epochs, logs):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_ensemble(members, inputs, targets, state_path=state, on_epoch=interrupt)
    torch.manual_seed(12345)  # a resumed process starts with another global RNG state
    resumed = fit_ensemble(members, inputs, targets, state_path=state)
    for m in members:
        assert [h["epoch"] for h in resumed[m.name][1]] == [h["epoch"] for h in reference[m.name][1]]
        for key, value in reference[m.name][0].items():
            assert torch.equal(value, resumed[m.name][0][key]), (m.name, key)


def test_bf16_autocast_trains_with_finite_losses():
    inputs, targets = frames()
    members = eight_members()[::2]  # one of each kind
    bf16 = [dataclasses.replace(m, train=dataclasses.replace(m.train, precision="bf16")) for m in members]
    result = fit_ensemble(bf16, inputs, targets)
    fp32 = fit_ensemble(members, inputs, targets)
    for m in members:
        weights, history = result[m.name]
        assert all(math.isfinite(h[m.name][k]) for h in history for k in ("loss", "recon", "reg", "val_recon"))
        assert all(w.dtype == torch.float32 for w in weights.values())
        # The setting reaches the forward pass: other weights than float32's, but close to them.
        first = history[0][m.name]["loss"]
        assert first != fp32[m.name][1][0][m.name]["loss"]
        assert first == pytest.approx(fp32[m.name][1][0][m.name]["loss"], rel=0.05)
    # One precision per stack.
    assert len(group_members(members + [dataclasses.replace(bf16[0], name="bf16")])) == 2


def test_nan_guard_names_the_member_and_epoch():
    inputs, targets = frames()
    targets["female"][5, 3] = float("nan")
    members = [member("m", "vae", "male", torch.arange(120), torch.arange(120, 150)),
               member("f", "vae", "female", torch.arange(120), torch.arange(120, 150))]
    with pytest.raises(SepvaeError, match=r"training job-1 \(f\): loss became nan at epoch 1"):
        fit_ensemble(members, inputs, targets, job="job-1")


def test_bad_members_and_shapes_are_refused():
    inputs, targets = frames()
    index = torch.arange(120)
    wide = Member("wide", ModelConfig(hidden=(32,), latent=4, decoder_hidden=(16,)), TrainConfig(batch_size=16), index, index, "male")
    small = member("small", "vae", "male", index, index)
    with pytest.raises(ValueError, match="group_members"):
        fit_ensemble([small, wide], inputs, targets)
    other = member("other", "ae", "female", index, index)
    assert group_members([small, wide, other]) == [[small, other], [wide]]
    with pytest.raises(ValueError, match="frame index out of range"):
        fit_ensemble([member("x", "ae", "male", torch.arange(200), index)], inputs, targets)
    with pytest.raises(ValueError, match="inputs must be"):
        fit_ensemble([small], inputs[None], targets)
    with pytest.raises(ValueError, match="no targets 'child'"):
        fit_ensemble([member("x", "ae", "child", index, index)], inputs, targets)
    with pytest.raises(ValueError, match="1-d integer tensor"):
        member("x", "ae", "male", index.float(), index)


def test_merge_histories_gives_the_job_format():
    merged = merge_histories({
        "male": [{"epoch": 1, "male": {"loss": 1.0}, "seconds": 2.0}, {"epoch": 2, "male": {"loss": 0.5}, "seconds": 2.0}],
        "female": [{"epoch": 1, "female": {"loss": 3.0}, "seconds": 2.0}],
    })
    assert merged == [{"epoch": 1, "male": {"loss": 1.0}, "female": {"loss": 3.0}, "seconds": 2.0},
                      {"epoch": 2, "male": {"loss": 0.5}, "seconds": 2.0}]


def test_members_with_other_learning_rates_and_frame_counts_equal_their_alone_training():
    """Adam runs over neighbours with equal batches per epoch and learning rate: members
    that share both, and members that differ in one, still train as they would alone."""
    inputs, targets = frames()
    val_index = torch.arange(120, 150)
    members = [
        member("a", "vae", "male", torch.arange(96), val_index, seed=1, lr=2e-3, epochs=2),  # leaves its run first
        member("b", "ae", "female", torch.arange(96), val_index, seed=2, lr=2e-3),  # a's run
        member("c", "itl-ae", "male", torch.arange(96), val_index, seed=3, lr=5e-4),  # a's batches, another lr
        member("d", "beta-vae", "female", torch.arange(40), val_index, seed=4, lr=2e-3),  # a's lr, fewer batches
        member("e", "vae", "female", torch.arange(110), val_index, seed=5),
    ]
    together = fit_ensemble(members, inputs, targets)
    for m in members:
        alone = fit_ensemble([m], inputs, targets)[m.name]
        assert_same_history(together[m.name][1], alone[1], m.name)
        assert_same_weights(together[m.name][0], alone[0])
    stack = Stack(members, N_BINS, torch.device("cpu"))
    assert [m.name for m in stack.members] == ["e", "c", "a", "b", "d"]  # most batches first, then lr
    assert [(start, stop) for start, stop, *_ in stack.runs] == [(0, 1), (1, 2), (2, 4), (4, 5)]


def test_a_member_without_a_batch_keeps_its_weights_and_adam_state():
    val_index = torch.arange(120, 150)
    members = [member("long", "vae", "male", torch.arange(64), val_index, seed=1),   # 4 batches of 16
               member("short", "ae", "female", torch.arange(20), val_index, seed=2)]  # 2 batches
    stack = Stack(members, N_BINS, torch.device("cpu"))
    assert [m.name for m in stack.members] == ["long", "short"]
    for step in range(3):
        before = [t.detach().clone() for t in stack.params + stack.exp_avg + stack.exp_avg_sq] + [stack.steps.clone()]
        grads = [torch.randn_like(p) for p in stack.params]
        with torch.no_grad():
            stack.adam_step(grads, step, fused=True)
        after = [t.detach() for t in stack.params + stack.exp_avg + stack.exp_avg_sq] + [stack.steps]
        for old, new in zip(before, after):
            assert not torch.equal(old[0], new[0])  # "long" has a batch at every step
            assert torch.equal(old[1], new[1]) == (step >= 2)  # "short" only at steps 0 and 1
    assert stack.steps.tolist() == [[3.0] * len(stack.params), [2.0] * len(stack.params)]


def test_adam_averages_never_become_subnormal():
    # A weight whose gradient is exactly 0 (a dead unit's): Adam's averages decay by beta per
    # step and, unflushed, stick at float32's smallest subnormal, which makes x86 slow.
    from sepvae.stack import FLUSH_EVERY

    # One epoch longer than all the steps below, so that only the every-FLUSH_EVERY flush acts.
    steps = 1280  # unflushed, 0.9 ** 1280 ~ 1e-59: the first moments would be subnormal after ~800
    stack = Stack([member("a", "vae", "male", torch.arange(70 * (steps + 1)), torch.arange(16))], N_BINS,
                  torch.device("cpu"))
    grads = [torch.ones_like(p) for p in stack.params]
    tiny = torch.finfo(torch.float32).tiny
    with torch.no_grad():
        stack.adam_step(grads, 0, fused=True)
        for step in range(1, steps):
            stack.adam_step([torch.zeros_like(g) for g in grads], step, fused=True)
            if step % FLUSH_EVERY == FLUSH_EVERY - 2:  # the last step before a flush: the smallest values
                subnormal = sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in stack.exp_avg + stack.exp_avg_sq)
                assert subnormal == 0, step
    assert all(torch.equal(t, torch.zeros_like(t)) for t in stack.exp_avg)  # flushed, not stuck at 1.4e-45
    assert all(bool((t > 0).all()) for t in stack.exp_avg_sq)  # 0.999 ** 1280 ~ 0.28: still there


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_kernels_warns(monkeypatch, recwarn, native):
    from sepvae import ensemble
    from sepvae.errors import SepvaeWarning

    monkeypatch.setattr(ensemble, "_cpu_has_bf16", lambda: native)
    inputs, targets = frames()
    members = [dataclasses.replace(m, train=dataclasses.replace(m.train, precision="bf16", epochs=1))
               for m in eight_members()[:1]]
    fit_ensemble(members, inputs, targets, device="cpu")
    fit_ensemble([dataclasses.replace(m, train=dataclasses.replace(m.train, precision="fp32")) for m in members],
                 inputs, targets, device="cpu")
    warned = [w for w in recwarn if issubclass(w.category, SepvaeWarning)]
    assert len(warned) == (0 if native else 1)
    if warned:
        assert "precision = 'bf16'" in str(warned[0].message) and "use precision = 'fp32'" in str(warned[0].message)
