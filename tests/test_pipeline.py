"""A tiny end-to-end run on synthetic speech-like audio: every stage, its caching, the CLI."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sepvae.cli import app
from sepvae.config import StftConfig, load_experiment
from sepvae.errors import SepvaeError
from sepvae.layout import Layout
from sepvae.pipeline import evaluate_all, manifest_of, report, separate_all, train_all
from sepvae.filtering import apply_masks, ideal_ratio_mask
from sepvae.separator import Separator, reconstruct_phase, separate_with_masks
from sepvae.stft import istft, stft
from tests.conftest import write_sample_tree

runner = CliRunner()


def test_every_method_scored(tiny_run):
    experiment, paths, runs, metrics = tiny_run
    rows = list(csv.DictReader(metrics.open()))
    assert {(r["method"], r["source_mode"]) for r in rows} == {
        ("mixture", "gender"), ("oracle-irm", "gender"), ("oracle-ibm", "gender"), ("nmf", "gender"),
        ("vae", "gender"), ("itl-ae", "speaker"), ("vae-fit", "gender"),
    }
    assert len(rows) == 7 * 2 * 2  # methods x test mixtures x sources
    assert list(rows[0]) == ["experiment", "method", "source_mode", "mixture_id", "source", "sdr", "sir",
                             "sar", "si_sdr", "pesq", "stoi", "input_sdr", "input_sir", "input_sar",
                             "input_si_sdr", "input_pesq", "input_stoi"]
    irm = [float(r["sdr"]) for r in rows if r["method"] == "oracle-irm"]
    mixture = [float(r["sdr"]) for r in rows if r["method"] == "mixture"]
    assert min(irm) > max(mixture) + 5  # the oracle ceiling is far above doing nothing
    for row in rows:
        assert row["input_sdr"] == next(
            r["sdr"] for r in rows if r["method"] == "mixture" and (r["mixture_id"], r["source"]) == (row["mixture_id"], row["source"])
        )


def test_speaker_mode_has_one_model_per_speaker(tiny_run):
    _, _, runs, _ = tiny_run
    speakers = sorted(p.stem for p in runs["itl-ae (speaker)"].glob("*.pt"))
    assert speakers == ["fabc0", "fghi0", "mdef0", "mjkl0"]
    assert (runs["vae (gender)"] / "history.json").is_file()


def test_a_fitting_run_holds_clean_source_models_and_its_fit_settings(tiny_run):
    from sepvae.checkpoint import card_of
    from sepvae.config import FitConfig
    from sepvae.fitting import LatentFit

    _, _, runs, _ = tiny_run
    run = runs["vae-fit (gender)"]
    card = card_of(run)
    assert card.kind == "vae-fit" and card.fit == FitConfig(steps=5) and card.sources == ("female", "male")
    assert sorted(p.name for p in run.glob("history-*.json")) == ["history-female.json", "history-male.json"]
    separator = Separator.from_run(run, device="cpu")
    assert isinstance(separator.estimator, LatentFit)
    # Trained source -> source, each model normalizes by its own source's scale.
    assert not torch.equal(separator.models["male"].scale, separator.models["female"].scale)


def test_rerun_is_cached(tiny_run):
    experiment, paths, runs, metrics = tiny_run
    stamp = {p: p.stat().st_mtime_ns for p in paths.runs.rglob("*")}
    assert train_all(experiment, paths, device="cpu") == runs
    separate_all(experiment, paths)
    evaluate_all(experiment, paths)
    assert {p: p.stat().st_mtime_ns for p in paths.runs.rglob("*")} == stamp


def test_report_files(tiny_run, tmp_path):
    experiment, paths, _, metrics = tiny_run
    path = report(experiment, paths)
    assert path.is_file() and "| vae |" in path.read_text()
    for name in ("violins.png", "spectrograms.png", "summary.json"):
        assert (path.parent / name).stat().st_size > 0
    # The report reads what evaluate wrote, nothing else: no corpus, mixtures or models.
    shutil.copytree(paths.reports, tmp_path / "reports")
    alone = Layout(corpus=tmp_path / "none.csv", mixtures=tmp_path / "none", runs=tmp_path / "no-runs",
                   reports=tmp_path / "reports")
    (tmp_path / "reports" / experiment.name / "spectrograms.png").unlink()
    again = report(experiment, alone)
    assert (again.parent / "spectrograms.png").stat().st_size > 0
    assert not (tmp_path / "no-runs").exists() and not (tmp_path / "none").exists()


def test_training_times_written_by_evaluate(tiny_run):
    import json

    experiment, paths, runs, _ = tiny_run
    times = json.loads((paths.reports / experiment.name / "training.json").read_text())
    assert set(times) == {"vae", "itl-ae (speaker)", "vae-fit"}
    assert times["vae"]["run"] == runs["vae (gender)"].name and times["vae"]["source_mode"] == "gender"
    assert times["vae"]["epochs"] == 2 and times["vae"]["epoch_budget"] == 2 and times["vae"]["seconds"] > 0
    # Speaker mode: four speakers' jobs trained in one stack share each epoch's wall time.
    speakers = times["itl-ae (speaker)"]
    assert speakers["epochs"] == 2 and speakers["source_mode"] == "speaker"
    per_job = [json.loads(p.read_text()) for p in sorted(runs["itl-ae (speaker)"].glob("history-*.json"))]
    assert len(per_job) == 4 and speakers["seconds"] == pytest.approx(sum(e["seconds"] for e in per_job[0]))


def test_separator_output_length_and_finiteness(tiny_run):
    _, paths, runs, _ = tiny_run
    separator = Separator.from_run(runs["vae (gender)"], device="cpu")
    assert separator.sources == ["female", "male"]
    for length in (16000, 16001, 333):
        waveforms, masks = separator.separate_tensor(torch.randn(length) * 0.1)
        assert waveforms.shape == (2, length) and torch.isfinite(waveforms).all()
        assert torch.allclose(masks.sum(0), torch.ones(()), atol=1e-5)
    from sepvae.separator import SeparationWarning

    with pytest.warns(SeparationWarning, match="silent"):
        silence = separator.separate(np.zeros(4000, dtype=np.float32), 16000)
    assert all(np.isfinite(w).all() and not w.any() for w in silence.values())


def test_masking_reconstructs_with_unit_masks():
    mixture = torch.randn(8000)
    config = StftConfig()
    waveforms, _ = separate_with_masks(mixture, lambda spec: torch.ones(1, *spec.shape), config, 16000)
    assert torch.allclose(waveforms[0], mixture, atol=1e-5)


def _two_voices(length: int = 16000) -> torch.Tensor:
    """Two harmonic 'voices' with gliding pitch and different spectra: (2, time)."""
    t = torch.arange(length, dtype=torch.float64) / 16000
    voices = []
    for f0, glide, tilt in ((110.0, 20.0, 0.7), (210.0, -30.0, 0.5)):
        phase = 2 * torch.pi * (f0 * t + glide * t**2)
        voices.append(sum(tilt**h * torch.sin(h * phase) for h in range(1, 12)) * 0.1)
    return torch.stack(voices).float()


def test_phase_reconstruction_without_rounds_is_the_mixture_phase():
    sources = _two_voices()
    mixture = sources.sum(0)
    config = StftConfig()
    masks = lambda spec: ideal_ratio_mask(stft(sources, config.n_fft(16000), config.hop_length(16000)))  # noqa: E731
    plain, _ = separate_with_masks(mixture, masks, config, 16000)
    none, _ = separate_with_masks(mixture, masks, config, 16000, phase_iterations=0)
    assert torch.equal(plain, none)
    with pytest.raises(ValueError, match="phase iterations must be >= 0, got -1"):
        reconstruct_phase(mixture, stft(sources, 256, 128), 256, 128, -1)


def test_phase_reconstruction_finds_the_sources_from_their_true_magnitudes():
    """Known answer: given each source's true magnitudes, MISI's phases bring the estimates
    closer to the sources than the mixture's phase does, and more rounds closer still."""
    sources = _two_voices()
    mixture = sources.sum(0)
    n_fft, hop = 256, 128
    spec = stft(mixture, n_fft, hop)
    true_magnitudes = stft(sources, n_fft, hop).abs()
    start = true_magnitudes * torch.sgn(spec)  # the true magnitudes with the mixture's phase

    def snr(estimates):
        return (10 * torch.log10(sources.pow(2).sum(-1) / (sources - estimates).pow(2).sum(-1))).min().item()

    rounds = [snr(reconstruct_phase(mixture, start, n_fft, hop, n)) for n in (0, 5, 50)]
    assert rounds[0] < rounds[1] < rounds[2]
    assert rounds[2] > rounds[0] + 3


def test_shifts_average_passes_on_frame_grids_shifted_by_fractions_of_a_hop():
    """Known answer: shifts = 3 is the mean of three passes on the mixture delayed by 0,
    hop // 3 and 2 hop // 3 zeros, each advanced again; one shift is the plain pass. With
    complementary masks every pass, and so their mean, adds up to the mixture."""
    mixture = _two_voices().sum(0)
    config = StftConfig()
    n_fft, hop = config.n_fft(16000), config.hop_length(16000)

    def masks(spec):  # depends on the spectrogram only, as a model's mask does
        power = spec.abs() ** 2
        first = power / (power + power.mean())
        return torch.stack([first, 1 - first])

    def one_pass(delay):
        delayed = torch.cat([torch.zeros(delay), mixture])
        spec = stft(delayed, n_fft, hop)
        return istft(apply_masks(spec, masks(spec)), n_fft, hop, len(delayed))[:, delay:]

    plain, plain_masks = separate_with_masks(mixture, masks, config, 16000)
    one, one_masks = separate_with_masks(mixture, masks, config, 16000, shifts=1)
    assert torch.equal(plain, one) and torch.equal(plain_masks, one_masks)
    shifted, shifted_masks = separate_with_masks(mixture, masks, config, 16000, shifts=3)
    expected = (one_pass(0) + one_pass(hop // 3) + one_pass(2 * hop // 3)) / 3
    assert shifted.shape == plain.shape == (2, len(mixture))
    torch.testing.assert_close(shifted, expected, rtol=0, atol=1e-6)
    assert torch.equal(shifted_masks, plain_masks)  # the unshifted pass's
    assert (shifted - plain).abs().max() > 1e-3  # the other grids change the estimates
    torch.testing.assert_close(shifted.sum(0), mixture, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="shifts must be >= 1, got 0"):
        separate_with_masks(mixture, masks, config, 16000, shifts=0)


def test_a_negative_phase_iterations_is_a_config_error(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[[methods]]\nkind = "oracle-irm"\nphase_iterations = -2\n')
    with pytest.raises(SepvaeError, match=r"methods\[1\].*phase_iterations must be >= 0, got -2"):
        load_experiment(config)


def test_external_manifest_replaces_generated_mixtures(tiny_run, tmp_path):
    from sepvae.mixing import read_manifest

    experiment, paths, _, _ = tiny_run
    generated = read_manifest(manifest_of(experiment, paths), "test")
    listing = tmp_path / "mine.csv"
    listing.write_text("mixture_path,male_path,female_path\n" + "".join(
        f"{m.mixture_path},{m.source_paths['male']},{m.source_paths['female']}\n" for m in generated
    ))
    config = tmp_path / "external.toml"
    config.write_text(f'name = "external"\nmanifest = "{listing}"\n[[methods]]\nkind = "mixture"\n[[methods]]\nkind = "oracle-irm"\n')
    external = load_experiment(config)
    other = Layout(corpus=tmp_path / "none.csv", mixtures=tmp_path / "none", runs=paths.runs, reports=tmp_path / "reports")
    rows = list(csv.DictReader(evaluate_all(external, other).open()))
    assert len(rows) == 2 * len(generated) * 2
    assert {r["method"] for r in rows} == {"mixture", "oracle-irm"}


def test_later_stages_need_the_mixing_stage(tiny_run, tmp_path):
    experiment, paths, _, _ = tiny_run
    empty = Layout(corpus=paths.corpus, mixtures=tmp_path / "mixtures", runs=tmp_path / "runs", reports=tmp_path / "reports")
    for stage in (train_all, separate_all, evaluate_all):
        with pytest.raises(SepvaeError, match=r"manifest.csv: manifest not found \(run `sepvae mix"):
            stage(experiment, empty)
    assert not (tmp_path / "mixtures").exists() and not (tmp_path / "runs").exists()


def test_a_corrupted_run_is_trained_again(tiny_run):
    """Last in this file: it rewrites a checkpoint of the shared run (and removes another)."""
    from sepvae.checkpoint import verify_folder
    from sepvae.layout import is_done

    experiment, paths, runs, _ = tiny_run
    run = runs["vae (gender)"]
    # vae-fit's clean-speech VAEs trained in the vae's stack: the networks beside a member
    # are part of its float order, so the same weights need the same stack again.
    shutil.rmtree(runs["vae-fit (gender)"])
    good = (run / "male.pt").read_bytes()
    flipped = bytearray(good)
    flipped[-200:-136] = bytes(b ^ 0xFF for b in flipped[-200:-136])
    (run / "male.pt").write_bytes(bytes(flipped))
    assert not is_done(run, model_run=True)
    with pytest.raises(SepvaeError, match="male.pt: sha256 does not match"):
        separate_all(experiment, Layout(corpus=paths.corpus, mixtures=paths.mixtures, runs=paths.runs,
                                        reports=paths.reports))
    train_all(experiment, paths, device="cpu")
    assert is_done(run, model_run=True) and verify_folder(run)
    assert (run / "male.pt").read_bytes() == good  # same seed, same machine: the same weights


def test_cross_validation_pools_its_folds(tmp_path):
    root = tmp_path
    write_sample_tree(root / "timit")
    config = root / "cv.toml"
    config.write_text(
        'name = "cv"\n[mix]\nsplit = "fold"\nfolds = 2\nn_mixtures = 6\nn_test = 2\n[model]\nhidden = [16]\n'
        'latent = 4\ndecoder_hidden = [16]\n[train]\nepochs = 1\n[[methods]]\nkind = "oracle-irm"\n'
        '[[methods]]\nkind = "ae"\n'
    )
    layout = Layout(corpus=root / "corpus.csv", mixtures=root / "mixtures", runs=root / "runs", reports=root / "reports")
    assert runner.invoke(app, ["data", "--timit-root", str(root / "timit"), "--out", str(layout.corpus)]).exit_code == 0
    experiment = load_experiment(config)
    from sepvae.pipeline import mix_all

    assert len(mix_all(experiment, layout)) == 2
    runs = train_all(experiment, layout, device="cpu")
    assert set(runs) == {"ae (gender) [fold 0]", "ae (gender) [fold 1]"} and len(set(runs.values())) == 2
    rows = list(csv.DictReader(evaluate_all(experiment, layout).open()))
    assert len(rows) == 2 * 2 * 2 * 2  # folds x methods x test mixtures x sources
    assert {r["mixture_id"].split("-")[0] for r in rows} == {"fold0", "fold1"}
    import json

    times = json.loads((layout.reports / "cv" / "training.json").read_text())
    # Both folds' networks trained in one stack: its one epoch's wall time is counted once.
    assert times["ae"]["run"] == "2 runs" and times["ae"]["epochs"] == 1 and times["ae"]["seconds"] > 0


def test_the_generalization_recipe_trains_and_separates(tiny_run, tmp_path):
    """Global normalization, log1p inputs and remixed training mixtures, end to end."""
    from sepvae.checkpoint import card_of
    from sepvae.config import Method, TrainConfig, model_config
    from sepvae.train import train_models

    experiment, paths, _, _ = tiny_run
    recipe = TrainConfig(epochs=1, batch_size=64, normalization="global", inputs="log1p", remix=2, remix_gain_db=3.0)
    method = Method(label="recipe", kind="ae", train=recipe, model=model_config({"name": "ae", "hidden": [16], "latent": 4,
                                                                                 "decoder_hidden": [16]}))
    train_models(method, manifest_of(experiment, paths), tmp_path / "run", 16000, "cpu")
    card = card_of(tmp_path / "run")
    assert card.train == recipe and set(card.sha256) == {"female.pt", "male.pt"}
    # The card holds the training mixtures' median active level, for level matching.
    from sepvae.features import load_mono
    from sepvae.loudness import active_rms
    from sepvae.mixing import read_manifest

    levels = [active_rms(load_mono(m.mixture_path, 16000).numpy(), 16000)
              for m in read_manifest(manifest_of(experiment, paths), "train")]
    assert card.input_rms == pytest.approx(float(np.median(levels)))
    separator = Separator.from_run(tmp_path / "run", device="cpu")
    assert separator.models["male"].input_mean is not None
    waveforms, masks = separator.separate_tensor(torch.randn(4000) * 0.1)
    assert torch.isfinite(waveforms).all() and torch.allclose(masks.sum(0), torch.ones(()), atol=1e-5)
    # The evaluation's separator with level matching gives what `sepvae separate --match-level` does.
    import dataclasses

    matching = dataclasses.replace(method, match_level=True)
    test = read_manifest(manifest_of(experiment, paths), "test")[0]
    waveform = load_mono(test.mixture_path, 16000)
    evaluated = matching.entry.separator(matching, tmp_path / "run", 16000).separate(test, waveform)
    tool = Separator.from_run(tmp_path / "run", device="cpu", match_level=True)
    plain = Separator.from_run(tmp_path / "run", device="cpu")
    quiet, _ = tool.separate_tensor(waveform * 0.1)
    for k, name in enumerate(tool.sources):
        np.testing.assert_allclose(evaluated[name], tool.separate_tensor(waveform)[0][k].numpy(), atol=1e-6)
        np.testing.assert_allclose(quiet[k].numpy(), 0.1 * evaluated[name], atol=1e-6)
    assert not np.allclose(plain.separate_tensor(waveform * 0.1)[0].numpy(), quiet.numpy(), atol=1e-6)
    with pytest.raises(SepvaeError, match="match_level is for trained models, not nmf"):
        Method(label="x", kind="nmf", match_level=True)
    with pytest.raises(SepvaeError, match="remix re-pairs gender classes"):
        Method(label="x", kind="ae", source_mode="speaker", train=recipe)


def test_export_ships_the_best_model_with_the_medians_it_was_chosen_by(tiny_run, tmp_path):
    from sepvae.checkpoint import card_of, verify_folder
    from sepvae.pipeline import export_model

    experiment, paths, runs, _ = tiny_run
    out = export_model(experiment, "best", "tiny", root=tmp_path, layout=paths, chosen_by=experiment)
    card = verify_folder(out)
    evaluation = card.info["evaluation"]
    from sepvae.results import read_metrics, summary_table

    models = [row for row in summary_table(read_metrics(paths.reports / "tiny" / "metrics.csv"))
              if row["source_mode"] == "gender" and row["method"] in ("vae", "vae-fit")]
    best = max(models, key=lambda row: row["sdr_median"])["method"]
    assert evaluation["method"] == best and card.info["run"] == runs[f"{best} (gender)"].name
    assert card.info["mask_power"] == 1.0 and card.info["match_level"] is False
    assert evaluation["chosen_by"]["experiment"] == experiment.path and evaluation["test_estimates"] == 4
    assert card_of(out).sources == ("female", "male")
    with pytest.raises(SepvaeError, match="no evaluated gender-mode model method 'itl-ae'"):
        export_model(experiment, "itl-ae", "tiny", root=tmp_path, layout=paths)


def _small_methods(*kinds_and_seeds):
    """Methods of tiny networks trained for 2 epochs, one per (kind, seed), labelled by kind."""
    from sepvae.config import Method, TrainConfig, model_config

    sizes = {"hidden": [16], "latent": 4, "decoder_hidden": [16]}
    return [Method(label=kind, kind=kind, train=TrainConfig(epochs=2, batch_size=64, seed=seed),
                   model=model_config({"name": kind, **sizes})) for kind, seed in kinds_and_seeds]


def test_runs_trained_together_equal_runs_trained_alone(tiny_run, tmp_path):
    """The training stage stacks the networks of several runs (methods, folds) into one
    ensemble, vae-fit's clean-speech VAEs among them; each run ends with the weights it
    gets alone."""
    from sepvae.checkpoint import load_checkpoint
    from sepvae.features import fit_scale
    from sepvae.train import train_plans, training_data

    experiment, paths, _, _ = tiny_run
    data = training_data(manifest_of(experiment, paths), StftConfig.setting("E"), 16000)
    methods = _small_methods(("vae", 0), ("ae", 3), ("vae-fit", 5))

    def plan(method, folder):  # as the training stage plans a run: by the method's registry entry
        return method.entry.plan(method, data, folder / method.kind, 16000)

    clean = plan(methods[2], tmp_path / "planned")
    for name, (member,) in clean.jobs.items():  # a clean model's input is its own target
        frames = torch.cat([member.train_index, member.val_index])
        assert torch.equal(clean.inputs[frames], clean.targets[member.targets_key][frames])
        source = data.frames.sources[name]
        assert torch.allclose(clean.inputs[frames], source[frames - frames.min()] / fit_scale(source))
    stacks = set()
    train_plans([plan(m, tmp_path / "together") for m in methods], "cpu", lambda job, *_: stacks.add(job))
    assert stacks == {"ae, vae, vae-fit (6 models)"}
    for m in methods:
        train_plans([plan(m, tmp_path / "alone")], "cpu")
        for source in ("female", "male"):
            together, _ = load_checkpoint(tmp_path / "together" / m.kind / f"{source}.pt")
            alone, _ = load_checkpoint(tmp_path / "alone" / m.kind / f"{source}.pt")
            for (name, a), b in zip(together.state_dict().items(), alone.state_dict().values()):
                assert torch.allclose(a, b, atol=1e-5), (m.kind, source, name)
    assert not list((tmp_path / "together").glob(".stack-*.pt"))  # the stack's resume state is cleaned up


def test_a_stacks_frames_are_joined_into_one_buffer_once(tiny_run, tmp_path):
    """join_frames copies the runs' frames into one buffer; plans joined before (as the
    stage's jobs get them) train from it without another copy, nor does fit_ensemble stack
    the targets again."""
    from dataclasses import replace

    from sepvae.config import Method, TrainConfig, model_config
    from sepvae.ensemble import _stacked
    from sepvae.train import join_frames, training_data

    experiment, paths, _, _ = tiny_run
    data = training_data(manifest_of(experiment, paths), StftConfig.setting("E"), 16000)
    sizes = {"hidden": [16], "latent": 4, "decoder_hidden": [16]}
    planned = [m.entry.plan(m, data, tmp_path / m.kind, 16000) for m in (
        Method(label=kind, kind=kind, train=TrainConfig(epochs=1, normalization=norm), model=model_config({"name": kind, **sizes}))
        for kind, norm in (("vae", "bin"), ("ae", "global")))]
    plans = list(planned)
    joined, inputs, targets = join_frames(plans)
    assert joined is plans and all(a is not b for a, b in zip(planned, plans))  # each item replaced
    plans = planned
    assert torch.equal(inputs, torch.cat([p.inputs for p in plans]))
    assert [torch.equal(targets[i], torch.cat([p.targets[k] for p in plans])) for i, k in enumerate(["female", "male"])] == [True, True]
    for plan, part in zip(plans, joined):
        assert torch.equal(part.inputs, plan.inputs) and part.inputs._base is inputs
        assert all(torch.equal(part.targets[k], plan.targets[k]) for k in plan.targets)
    again, same_inputs, same_targets = join_frames([replace(p, out=tmp_path / "scratch") for p in joined])
    assert same_inputs is inputs and same_targets is targets and again[1].inputs is joined[1].inputs
    assert _stacked([targets[0], targets[1]]) is targets
    assert _stacked([targets[1], targets[0]]).data_ptr() != targets.data_ptr()  # other order: a copy
    _, swapped, _ = join_frames(joined[::-1])  # other order of runs: joined anew
    assert swapped.data_ptr() != inputs.data_ptr() and torch.equal(swapped, torch.cat([p.inputs for p in plans[::-1]]))


def test_a_jobs_cpus_train_its_stacks_parts_side_by_side(tiny_run, tmp_path):
    """A training job of --num-cpus 2 (run_job gives it 2 torch threads) splits its stack into
    two parts of balanced work, each trained in a single-thread worker process; every network
    ends with the weights and losses it gets in one process (to float tolerance: a stack's
    make-up changes its matmuls' shapes)."""
    from sepvae.checkpoint import load_checkpoint
    from sepvae.executor import run_job
    from sepvae.jobs import train_stack, write_runs
    from sepvae.train import train_plans, training_data

    experiment, paths, _, _ = tiny_run
    data = training_data(manifest_of(experiment, paths), StftConfig.setting("E"), 16000)
    methods = _small_methods(("vae", 0), ("ae", 3), ("itl-ae", 5))

    def plans(folder):
        return [m.entry.plan(m, data, folder / m.kind, 16000) for m in methods]

    stacks = []
    files = run_job(train_stack, 2, lambda job, *_: stacks.append(job), plans(tmp_path / "planned"), ("vae", "ae", "itl-ae"), "cpu")
    # Two parts of 3 networks (VAEs first, ITL-AEs last), two epochs each.
    assert sorted(stacks) == ["ae, itl-ae (3 models)"] * 2 + ["ae, vae (3 models)"] * 2
    run_job(lambda progress: train_plans(plans(tmp_path / "alone"), "cpu"), 1, None)
    write_runs([tmp_path / "split" / m.kind for m in methods], files)  # the stage's sink
    for m in methods:
        for source in ("female", "male"):
            split, _ = load_checkpoint(tmp_path / "split" / m.kind / f"{source}.pt")
            alone, _ = load_checkpoint(tmp_path / "alone" / m.kind / f"{source}.pt")
            for (name, a), b in zip(split.state_dict().items(), alone.state_dict().values()):
                assert torch.allclose(a, b, atol=1e-5), (m.kind, source, name, (a - b).abs().max())
        split, alone = (json.loads((tmp_path / folder / m.kind / "history.json").read_text()) for folder in ("split", "alone"))
        assert [e["epoch"] for e in split] == [e["epoch"] for e in alone]
        for a, b in zip(split, alone):
            for source in ("female", "male"):
                assert a[source]["loss"] == pytest.approx(b[source]["loss"], rel=1e-5), (m.kind, source, a["epoch"])


def test_runs_at_other_stft_settings_train_in_stacks_of_their_own(tiny_run, tmp_path):
    """sweep-window: networks with other frequency bins cannot share a frame tensor."""
    from sepvae.checkpoint import load_checkpoint
    from sepvae.jobs import training_jobs
    from sepvae.mixing import training_key
    from sepvae.train import training_data
    from tests.conftest import TINY_EXPERIMENT

    _, paths, _, _ = tiny_run
    settings = TINY_EXPERIMENT[: TINY_EXPERIMENT.index("[[methods]]")].replace("epochs = 2", "epochs = 1")
    config = tmp_path / "window.toml"
    config.write_text(settings + "".join(f'[[methods]]\nkind = "vae"\nlabel = "{s}"\nstft = {{ setting = "{s}" }}\n'
                                         for s in ("D", "E")))
    experiment = load_experiment(config)
    layout = Layout(paths.corpus, paths.mixtures, tmp_path / "runs", tmp_path / "reports")
    manifest = manifest_of(experiment, layout)
    todo = {layout.model_run(m, training_key(manifest), 16000): (m, training_data(manifest, m.stft, 16000), 16000)
            for m in experiment.methods}
    assert len(training_jobs(todo, "cpu")) == 2
    runs = train_all(experiment, layout, device="cpu")
    assert sorted(load_checkpoint(runs[f"{s} (gender)"] / "male.pt")[0].scale.numel() for s in ("D", "E")) == [129, 257]


def test_a_method_of_two_members_averages_the_runs_of_two_seeds(tiny_run, tmp_path):
    """``members = 2`` trains nothing of its own: its runs are those of the method alone with
    seeds 0 and 1, joined into one folder whose separator averages their estimates; the
    pipeline's estimates, the tool's and a shipped copy's agree, also with shifted passes and
    smoothed estimates."""
    import dataclasses

    from sepvae.checkpoint import add_files, card_of, join_members, sha256_of
    from sepvae.config import Method, TrainConfig, model_config
    from sepvae.features import load_mono
    from sepvae.mixing import read_manifest
    from sepvae.pretrained import export

    experiment, paths, _, _ = tiny_run
    layout = dataclasses.replace(paths, runs=tmp_path / "runs", reports=tmp_path / "reports")
    model = model_config({"name": "ae", "hidden": [16], "latent": 4, "decoder_hidden": [16]})
    alone = Method(label="ae", kind="ae", model=model, train=TrainConfig(epochs=1, batch_size=64))
    methods = (alone, dataclasses.replace(alone, label="ae seed1", train=TrainConfig(epochs=1, batch_size=64, seed=1)),
               dataclasses.replace(alone, label="ae x2", members=2),
               dataclasses.replace(alone, label="ae x2 shifts2", members=2, shifts=2, smooth_frames=2))
    twins = dataclasses.replace(experiment, methods=methods)
    runs = train_all(twins, layout, device="cpu")
    seed0, seed1, joined = runs["ae (gender)"], runs["ae seed1 (gender)"], runs["ae x2 (gender)"]
    assert runs["ae x2 shifts2 (gender)"] == joined  # an inference setting: the same networks
    assert joined == seed0.with_name(f"{seed0.name}-x2") and len(list((tmp_path / "runs" / "models").iterdir())) == 3
    card = card_of(joined)
    assert card.members == 2 and card.info["member_runs"] == [seed0.name, seed1.name] and card.info["method"] == "ae x2"
    for source in ("female", "male"):
        assert card.sha256[f"{source}.pt"] == sha256_of(seed0 / f"{source}.pt")
        assert card.sha256[f"{source}.1.pt"] == sha256_of(seed1 / f"{source}.pt")

    # The mean of the two seeds' magnitude estimates, then the usual mask.
    separator = Separator.from_run(joined, device="cpu")
    one, other = Separator.from_run(seed0, device="cpu"), Separator.from_run(seed1, device="cpu")
    magnitude = torch.rand(129, 30)
    expected = (one.estimate_magnitudes(magnitude) + other.estimate_magnitudes(magnitude)) / 2
    torch.testing.assert_close(separator.estimate_magnitudes(magnitude), expected)
    assert not torch.allclose(one.estimate_magnitudes(magnitude), other.estimate_magnitudes(magnitude))

    # The pipeline's estimates (through the jobs' copy of the folder) are the tool's.
    folders = separate_all(twins, layout)
    test = read_manifest(manifest_of(experiment, layout), "test")[0]
    waveforms, _ = separator.separate_tensor(load_mono(test.mixture_path, 16000))
    for k, source in enumerate(separator.sources):
        written = load_mono(folders["ae x2 (gender)"] / test.id / f"{source}.wav", 16000)
        np.testing.assert_allclose(written.numpy(), waveforms[k].numpy(), atol=1e-4)
    shifted, _ = Separator.from_run(joined, device="cpu", shifts=2, smooth_frames=2).separate_tensor(
        load_mono(test.mixture_path, 16000))
    assert not torch.allclose(shifted, waveforms, atol=1e-3)
    for k, source in enumerate(separator.sources):
        written = load_mono(folders["ae x2 shifts2 (gender)"] / test.id / f"{source}.wav", 16000)
        np.testing.assert_allclose(written.numpy(), shifted[k].numpy(), atol=1e-4)

    # Shipped, it keeps its members; a corrupted member is named.
    shipped = export(joined, "twins", root=tmp_path / "shipped")
    assert card_of(shipped).members == 2 and "2 networks of different seeds averaged" in card_of(shipped).info["description"]
    torch.testing.assert_close(Separator.from_run(shipped, device="cpu").estimate_magnitudes(magnitude), expected)
    (shipped / "male.1.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SepvaeError, match=r"male\.1\.pt: sha256 does not match"):
        Separator.from_run(shipped, device="cpu")
    # Runs that differ in more than their seed cannot be members of one folder.
    other_model = dataclasses.replace(alone, label="wide", model=dataclasses.replace(model, hidden=(8,)))
    wide = train_all(dataclasses.replace(experiment, methods=(other_model,)), layout, device="cpu")["wide (gender)"]
    with pytest.raises(SepvaeError, match="differ in more than their seed"):
        join_members(tmp_path / "bad", [seed0, wide])
    # A fitting method's decoders fit codes to each mixture: nothing to average.
    fitted = tiny_run[2]["vae-fit (gender)"]
    join_members(tmp_path / "fit-x2", [fitted, fitted])
    with pytest.raises(SepvaeError, match="vae-fit fits codes to each mixture; its card's 2 members cannot be averaged"):
        Separator.from_run(tmp_path / "fit-x2", device="cpu")
    # A member trained again with other weights (as a retrain elsewhere could give) is joined
    # again: here seed 0's male network put in seed 1's run.
    add_files(seed1, card_of(seed1), {"male.pt": lambda tmp: shutil.copyfile(seed0 / "male.pt", tmp)})
    assert card_of(joined).sha256["male.1.pt"] != sha256_of(seed1 / "male.pt")
    train_all(twins, layout, device="cpu")
    assert card_of(joined).sha256["male.1.pt"] == sha256_of(seed1 / "male.pt") == sha256_of(joined / "male.1.pt")


@pytest.mark.parametrize("kind, fields, message", [
    ("ae", {"members": 0}, "members must be >= 1, got 0"),
    ("nmf", {"members": 2}, "nmf has no networks"),
    ("vae-fit", {"members": 2}, "vae-fit fits codes to each mixture"),
    ("ae", {"shifts": 0}, "shifts must be >= 1, got 0"),
    ("oracle-irm", {"shifts": 2}, "oracle-irm has no model"),
    ("ae", {"smooth_frames": -1}, "smooth_frames must be >= 0, got -1"),
    ("nmf", {"smooth_frames": 2}, "nmf has no model"),
])
def test_inference_settings_are_checked(kind, fields, message):
    from sepvae.config import Method

    with pytest.raises(SepvaeError, match=message):
        Method(label="x", kind=kind, **fields)
