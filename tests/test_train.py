
from dataclasses import dataclass

import pytest
import torch
from typer.testing import CliRunner

from sepvae.cli import app
from sepvae.config import ModelConfig, TrainConfig
from sepvae.ensemble import Member, fit_ensemble, merge_histories
from sepvae.errors import SepvaeError
from sepvae.models import MODELS, build_model

runner = CliRunner()
SMALL = dict(hidden=(16,), latent=4, decoder_hidden=(16,))
N_BINS = 9


@dataclass
class Split:
    """Inputs and per-source targets of one job's training or validation part."""

    inputs: torch.Tensor  # (frames, bins)
    targets: dict[str, torch.Tensor]  # source -> (frames, bins)


def fit(models, train, valid, config, state_path=None, on_epoch=None):
    """One job's models (source -> model) trained as one stack, as the training stage does;
    each model ends with its best weights; returns the job's history."""
    n_train = len(train.inputs)
    index = torch.arange(n_train + len(valid.inputs))
    members = [Member(name, model.config, config, index[:n_train], index[n_train:], name, init=model.state_dict())
               for name, model in models.items()]
    targets = {name: torch.cat([train.targets[name], valid.targets[name]]) for name in models}
    results = fit_ensemble(members, torch.cat([train.inputs, valid.inputs]), targets, None, state_path, on_epoch)
    for name, model in models.items():
        model.load_state_dict(results[name][0])
    return merge_histories({name: history for name, (_, history) in results.items()})


def data(n=120, seed=0):
    generator = torch.Generator().manual_seed(seed)
    male, female = torch.rand(n, N_BINS, generator=generator), torch.rand(n, N_BINS, generator=generator)
    return Split(male + female, {"male": male, "female": female})


def models(name="vae", seed=0):
    torch.manual_seed(seed)
    return {s: build_model(ModelConfig(name=name, **SMALL), N_BINS) for s in ("male", "female")}


def weights(trained):
    return {f"{s}.{k}": v.clone() for s, m in trained.items() for k, v in m.state_dict().items()}


def test_every_model_method_of_the_registry_builds():
    from sepvae.methods import model_kinds

    assert set(MODELS) == set(model_kinds())


@pytest.mark.parametrize("batch_size", [1, 17, 34, 70])
def test_paper_batch_sizes_train_and_log(batch_size):
    trained = models()
    before = weights(trained)
    history = fit(trained, data(), data(40, seed=1), TrainConfig(epochs=1, batch_size=batch_size))
    assert len(history) == 1 and set(history[0]) == {"epoch", "male", "female", "seconds"}
    assert set(history[0]["male"]) == {"loss", "recon", "reg", "val_recon"}
    after = weights(trained)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_same_seed_same_weights():
    config = TrainConfig(epochs=2, batch_size=17)
    first, second = models(), models()
    fit(first, data(), data(40, 1), config)
    fit(second, data(), data(40, 1), config)
    assert all(torch.equal(a, b) for a, b in zip(weights(first).values(), weights(second).values()))


def test_resume_gives_the_same_weights(tmp_path):
    config = TrainConfig(epochs=4, batch_size=17, patience=100)
    reference = models("vae")
    fit(reference, data(), data(40, 1), config)

    state = tmp_path / "state.pt"

    def interrupt(job, epoch, epochs, logs):
        if epoch == 2:
            raise KeyboardInterrupt

    interrupted = models("vae")
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, data(), data(40, 1), config, state, interrupt)
    torch.manual_seed(12345)  # a resumed process starts with another global RNG state
    resumed = models("vae")
    history = fit(resumed, data(), data(40, 1), config, state)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert all(torch.equal(a, b) for a, b in zip(weights(reference).values(), weights(resumed).values()))


def test_nan_guard_names_the_epoch():
    poisoned = data()
    poisoned.targets["male"][5, 3] = float("nan")
    with pytest.raises(SepvaeError, match=r"\(male\): loss became nan at epoch 1"):
        fit(models(), poisoned, data(40, 1), TrainConfig(epochs=3, batch_size=17))


def test_early_stopping_keeps_best_epoch():
    config = TrainConfig(epochs=30, batch_size=120, patience=2, lr=0.5)  # lr far too high: diverges
    history = fit(models("ae"), data(), data(40, 1), config)
    assert len(history) < 30


@pytest.mark.parametrize(
    "method, message",
    [
        ('kind = "transformer"', "unknown method kind 'transformer'"),
        ('kind = "vae"\nsource_mode = "dialect"', 'source_mode = "dialect": expected one of \'gender\', \'speaker\''),
        ('kind = "vae"\nmodel = { latnt = 3 }', "unknown ModelConfig option(s): latnt"),
        ('label = "x"', "[[methods]] entry 1 has no kind"),
        ('kind = "vae"\nmask_power = 0', "mask_power must be > 0"),
        ('kind = "vae"\ntrain = { batch_size = 0 }', "batch_size, epochs and patience must be >= 1"),
        ('kind = "vae"\nmodel = { hidden = 256 }', "model hidden must be a list of positive layer sizes"),
    ],
)
def test_bad_settings_fail_when_the_file_is_read(tmp_path, method, message):
    config = tmp_path / "exp.toml"
    config.write_text(f"[[methods]]\n{method}\n")
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and str(config) in result.output
    assert message in result.output


def test_train_command_prints_each_epoch_when_not_on_a_terminal(tmp_path, monkeypatch):
    # In a log file or CI the progress bars are not drawn; a line per epoch says it is alive.
    from tests.conftest import TINY_EXPERIMENT, write_sample_tree

    write_sample_tree(tmp_path / "timit")
    settings = TINY_EXPERIMENT[: TINY_EXPERIMENT.index("[[methods]]")]
    (tmp_path / "exp.toml").write_text(settings + '[[methods]]\nkind = "vae"\n')
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["data", "--timit-root", "timit"]).exit_code == 0
    assert runner.invoke(app, ["mix", "-c", "exp.toml"]).exit_code == 0
    result = runner.invoke(app, ["train", "-c", "exp.toml", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    epochs = [line for line in result.output.splitlines() if line.startswith("train vae (2 models): epoch")]
    assert [line.split(",")[0] for line in epochs] == ["train vae (2 models): epoch 1/2", "train vae (2 models): epoch 2/2"]
    assert all(", 2 training, " in line for line in epochs)


def test_a_stack_splits_into_parts_of_balanced_work_by_model_family():
    """Ordered VAEs, autoencoders, ITL-AEs, the stack is cut where the work (Adam steps:
    batches x epochs) crosses each part's share; every member lands in one part, in its order."""
    from sepvae.train import _work, split_stack

    def member(name, kind, frames, epochs=1):
        return Member(name, ModelConfig(name=kind), TrainConfig(epochs=epochs, batch_size=10), torch.arange(frames),
                      torch.arange(1), "male")

    stack = [member("a", "ae", 100), member("b", "itl-ae", 20), member("c", "vae", 90), member("d", "beta-vae", 10, 2),
             member("e", "ae", 10)]
    parts = split_stack(stack, 2)
    assert [[m.name for m in part] for part in parts] == [["c", "d"], ["a", "b", "e"]]
    assert [_work(part) for part in parts] == [11, 13]
    eight = [member(f"{kind}-{source}", kind, 70) for kind in ("vae", "beta-vae", "itl-ae", "ae") for source in "mf"]
    assert [[m.name for m in part] for part in split_stack(eight, 2)] == [
        ["vae-m", "vae-f", "beta-vae-m", "beta-vae-f"], ["itl-ae-m", "itl-ae-f", "ae-m", "ae-f"]]
    assert [[m.name for m in part] for part in split_stack(stack[:1], 2)] == [["a"]]  # no empty part


def test_a_part_that_fails_in_its_worker_fails_the_stacks_with_its_message():
    """fit_stacks with two workers: the NaN guard's one-line message comes back from the
    worker process that trained the poisoned member's part."""
    from sepvae.train import fit_stacks

    train, valid = data(), data(40, 1)
    inputs = torch.cat([train.inputs, valid.inputs])
    targets = {s: torch.cat([train.targets[s], valid.targets[s]]) for s in ("male", "female")}
    targets["female"][5, 3] = float("nan")
    index = torch.arange(len(inputs))
    stack = [Member(f"{s}-{k}", ModelConfig(name="vae", **SMALL), TrainConfig(epochs=2, batch_size=17),
                    index[:120], index[120:], s, seed=k) for s in ("male", "female") for k in range(2)]
    with pytest.raises(SepvaeError, match=r"\(female-[01]\): loss became nan at epoch 1.*\n.*1 job\(s\) failed"):
        fit_stacks([stack], inputs, targets, torch.device("cpu"), workers=2)
