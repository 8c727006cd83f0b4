import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SHARED_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "timit-sample"


def timit_sample_root() -> Path | None:
    root = Path(os.environ.get("TIMIT_ROOT") or SHARED_SAMPLE)
    return root if (root / "dr1-fvmh0").is_dir() else None


@pytest.fixture
def timit_root() -> Path:
    root = timit_sample_root()
    if root is None:
        pytest.skip("TIMIT sample not found: set TIMIT_ROOT or put it at ../shared/data/timit-sample")
    return root


def speechlike(seconds: float, sample_rate: int = 16000, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a syllable-rate envelope and a little noise: cheap fake speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    voiced = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 15))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6.3)))
    return (0.1 * voiced * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def write_sample_tree(root: Path, speakers=("dr1-fabc0", "dr1-mdef0", "dr2-fghi0", "dr2-mjkl0"), n_utts=4):
    """A tiny tree in the free sample's layout: drN-<g><id>/<utt>.wav (RIFF) + .txt."""
    for s, speaker in enumerate(speakers):
        folder = root / speaker
        folder.mkdir(parents=True)
        f0 = 210.0 if speaker.split("-")[1].startswith("f") else 110.0
        for u in range(n_utts):
            audio = speechlike(1.0 + 0.25 * u, f0=f0 + 5 * s, seed=10 * s + u)
            sf.write(folder / f"sx{u}.wav", audio, 16000, subtype="PCM_16")
            (folder / f"sx{u}.txt").write_text(f"0 {audio.size} Sentence number {u} of {speaker}.\n")
    return root


def make_model_folder(folder: Path, stft=None, model=None, sources=("male", "female"), done: bool = True,
                      source_mode: str = "gender", sample_rate: int = 16000) -> Path:
    """A tiny model folder of untrained models as training writes it: <source>.pt + model.json (+ done)."""
    import torch

    import sepvae
    from sepvae.checkpoint import ModelCard, init_model_folder
    from sepvae.config import ModelConfig, SourceMode, StftConfig

    stft = stft or StftConfig()
    model = model or ModelConfig(hidden=(16,), latent=4, decoder_hidden=(16,))
    n_bins = stft.n_bins(sample_rate)
    card = ModelCard(kind=model.name, source_mode=SourceMode(source_mode), sources=tuple(sorted(sources)),
                     sample_rate=sample_rate, stft=stft, n_bins=n_bins, model=model, version=sepvae.__version__)
    init_model_folder(folder, card, torch.linspace(0.5, 2.0, n_bins))
    if done:
        (folder / "done").write_text("")
    return folder


TINY_EXPERIMENT = """
name = "tiny"
[mix]
n_mixtures = 8
n_test = 2
[stft]
setting = "E"
[model]
hidden = [32]
latent = 8
decoder_hidden = [32]
[train]
epochs = 2
batch_size = 64
[[methods]]
kind = "mixture"
[[methods]]
kind = "oracle-irm"
[[methods]]
kind = "oracle-ibm"
[[methods]]
kind = "nmf"
nmf_components = 4
[[methods]]
kind = "vae"
[[methods]]
kind = "itl-ae"
source_mode = "speaker"
[[methods]]
kind = "vae-fit"
fit = { steps = 5 }
"""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Every stage up to evaluate on a tiny synthetic corpus; shared by the pipeline and the
    report tests (it takes most of their time): (experiment, layout, runs, metrics.csv)."""
    from typer.testing import CliRunner

    from sepvae.cli import app
    from sepvae.config import load_experiment
    from sepvae.layout import Layout
    from sepvae.pipeline import evaluate_all, manifest_of, separate_all, train_all

    runner = CliRunner()
    root = tmp_path_factory.mktemp("run")
    write_sample_tree(root / "timit")
    config = root / "tiny.toml"
    config.write_text(TINY_EXPERIMENT)
    paths = Layout(corpus=root / "corpus.csv", mixtures=root / "mixtures", runs=root / "runs", reports=root / "reports")
    result = runner.invoke(app, ["data", "--timit-root", str(root / "timit"), "--out", str(paths.corpus)])
    assert result.exit_code == 0, result.output
    experiment = load_experiment(config)
    manifest_of(experiment, paths)
    runs = train_all(experiment, paths, device="cpu")
    separate_all(experiment, paths)
    metrics = evaluate_all(experiment, paths)
    return experiment, paths, runs, metrics
