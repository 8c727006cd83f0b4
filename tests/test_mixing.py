import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from sepvae.cli import app
from sepvae.config import MixConfig
from sepvae.corpus import index_timit
from sepvae.errors import SepvaeError
from sepvae.mixing import make_mixtures, mix_pair, plan_mixtures, read_manifest
from tests.conftest import write_sample_tree

runner = CliRunner()


@pytest.fixture(scope="module")
def sample_mixtures(tmp_path_factory):
    from tests.conftest import timit_sample_root

    root = timit_sample_root()
    if root is None:
        pytest.skip("TIMIT sample not found: set TIMIT_ROOT or put it at ../shared/data/timit-sample")
    utterances = index_timit(root)
    out = tmp_path_factory.mktemp("mixtures")
    manifest = make_mixtures(utterances, MixConfig(), out)
    return utterances, manifest


def test_paper_protocol_split(sample_mixtures):
    _, manifest = sample_mixtures
    train, test = read_manifest(manifest, "train"), read_manifest(manifest, "test")
    assert (len(train), len(test)) == (80, 10)
    import csv

    rows = list(csv.DictReader(manifest.open()))
    used = lambda split: {(r[f"{g}_speaker"], r[f"{g}_utterance"]) for r in rows if r["split"] == split for g in ("male", "female")}  # noqa: E731
    assert not used("test") & used("train")
    assert len(used("test")) == 20  # each test utterance once
    pairs = [(r["male_speaker"], r["male_utterance"], r["female_speaker"], r["female_utterance"]) for r in rows]
    assert len(set(pairs)) == 90


def test_mixture_is_sum_of_sources_and_never_clips(sample_mixtures):
    _, manifest = sample_mixtures
    for mixture in read_manifest(manifest):
        mix, rate = sf.read(mixture.mixture_path, dtype="float32")
        male, _ = sf.read(mixture.source_paths["male"], dtype="float32")
        female, _ = sf.read(mixture.source_paths["female"], dtype="float32")
        assert rate == 16000 and mix.shape == male.shape == female.shape
        assert np.abs(mix - (male + female)).max() < 1e-5
        assert np.abs(mix).max() <= 1.0 and np.abs(male).max() <= 1.0


def test_same_seed_same_manifest_other_seed_other_pairs(sample_mixtures, tmp_path):
    utterances, manifest = sample_mixtures
    again = make_mixtures(utterances, MixConfig(), tmp_path / "again")
    assert again.read_bytes() == manifest.read_bytes()
    other = plan_mixtures(utterances, MixConfig(seed=1))
    first = plan_mixtures(utterances, MixConfig())
    key = lambda plan: [(s, m.path, f.path) for s, m, f in plan]  # noqa: E731
    assert key(other) != key(first)


def test_speaker_disjoint_and_same_region(sample_mixtures):
    utterances, _ = sample_mixtures
    plan = plan_mixtures(utterances, MixConfig(split="speaker", same_region=True))
    test_speakers = {u.speaker for split, m, f in plan if split == "test" for u in (m, f)}
    train_speakers = {u.speaker for split, m, f in plan if split == "train" for u in (m, f)}
    assert test_speakers and not test_speakers & train_speakers
    assert all(m.dialect_region == f.dialect_region for _, m, f in plan)
    assert all(m.transcript != f.transcript for _, m, f in plan)


def test_snr_and_gain():
    rng = np.random.default_rng(0)
    male, female = rng.standard_normal(16000), 3 * rng.standard_normal(12000)
    mixture, m, f, gain = mix_pair(male, female, 6.0, MixConfig(snr_db=(6.0, 6.0)))
    assert len(mixture) == 12000  # cut to the shorter
    assert 10 * np.log10(np.sum(m.astype(float) ** 2) / np.sum(f.astype(float) ** 2)) == pytest.approx(6.0, abs=1e-3)
    assert max(np.abs(mixture).max(), np.abs(m).max(), np.abs(f).max()) == pytest.approx(0.9, abs=1e-6)
    padded, *_ = mix_pair(male, female, 0.0, MixConfig(length="longest"))
    assert len(padded) == 16000


def test_too_many_mixtures_is_refused(tmp_path):
    utterances = index_timit(write_sample_tree(tmp_path / "timit"))
    # 8 male x 8 female utterances: 3 test pairs leave 5 x 5 = 25 training pairs at most.
    with pytest.raises(SepvaeError, match="cannot make 30 training mixtures"):
        plan_mixtures(utterances, MixConfig(n_mixtures=33, n_test=3))
    assert len(plan_mixtures(utterances, MixConfig(n_mixtures=28, n_test=3))) == 28


def test_cli_mix_errors(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text('[mix]\nn_mixtures = 500\nn_test = 3\n[[methods]]\nkind = "mixture"\n')
    root = write_sample_tree(tmp_path / "timit")
    assert runner.invoke(app, ["data", "--timit-root", str(root), "--out", str(tmp_path / "c.csv")]).exit_code == 0
    out = tmp_path / "mixtures"
    result = runner.invoke(app, ["mix", "--config", str(config), "--corpus", str(tmp_path / "c.csv"), "--out", str(out)])
    assert result.exit_code == 1 and "error: cannot make 497 training mixtures" in result.output
    assert not any(out.rglob("*.wav"))
    result = runner.invoke(app, ["mix", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1 and "nope.toml: experiment file not found" in result.output
    config.write_text('[mix]\nsnr = 3\n[[methods]]\nkind = "mixture"\n')
    result = runner.invoke(app, ["mix", "--config", str(config), "--corpus", str(tmp_path / "c.csv")])
    assert result.exit_code == 1 and "unknown MixConfig option(s): snr" in result.output


def test_external_manifest(tmp_path):
    sf.write(tmp_path / "m.wav", np.zeros(100, dtype=np.float32), 16000)
    (tmp_path / "list.csv").write_text("mixture_path,alice_path,bob_path\nm.wav,m.wav,/abs/b.wav\n")
    (mixture,) = read_manifest(tmp_path / "list.csv")
    assert mixture.split == "test" and set(mixture.source_paths) == {"alice", "bob"}
    assert mixture.mixture_path == tmp_path / "m.wav"


def test_all_test_pairs_keep_training_mixtures(sample_mixtures):
    utterances, _ = sample_mixtures
    distinct = plan_mixtures(utterances, MixConfig())
    every = plan_mixtures(utterances, MixConfig(test_pairs="all"))
    train = lambda plan: [(m.path, f.path) for s, m, f in plan if s == "train"]  # noqa: E731
    assert train(every) == train(distinct)
    tests = [(m, f) for s, m, f in every if s == "test"]
    assert 80 <= len(tests) <= 100 and all(m.transcript != f.transcript for m, f in tests)
    assert {u.path for p in tests for u in p} == {u.path for s, m, f in distinct if s == "test" for u in (m, f)}


def test_speaker_folds_test_every_speaker_once_and_never_train_on_them(timit_root):
    utterances = index_timit(timit_root)
    tested = []
    for fold in range(8):
        plan = plan_mixtures(utterances, MixConfig(split="fold", folds=8, fold=fold))
        test_speakers = {u.speaker for split, m, f in plan if split == "test" for u in (m, f)}
        train_speakers = {u.speaker for split, m, f in plan if split == "train" for u in (m, f)}
        assert len(test_speakers) == 2 and not test_speakers & train_speakers
        assert sum(split == "test" for split, _, _ in plan) == 10 and len(train_speakers) == 14
        tested += sorted(test_speakers)
    assert len(tested) == len(set(tested)) == 16  # every speaker of the sample tested exactly once


def test_fold_ids_are_unique_across_folds(tmp_path):
    utterances = index_timit(write_sample_tree(tmp_path / "timit"))
    ids = []
    for fold in range(2):
        config = MixConfig(n_mixtures=5, n_test=2, split="fold", folds=2, fold=fold)
        ids += [m.id for m in read_manifest(make_mixtures(utterances, config, tmp_path / "mixtures"))]
    assert len(ids) == len(set(ids)) == 10 and ids[0].startswith("fold0-")
    with pytest.raises(SepvaeError, match="3 folds need at least 3 speakers of each gender"):
        plan_mixtures(utterances, MixConfig(n_mixtures=5, n_test=2, split="fold", folds=3))
    with pytest.raises(SepvaeError, match=r"fold = 2: expected in \[0, folds = 2\)"):
        MixConfig(split="fold", folds=2, fold=2)


def test_nested_folds_never_use_the_outer_folds_speakers(timit_root):
    utterances = index_timit(timit_root)
    outer = {u.speaker for split, m, f in plan_mixtures(utterances, MixConfig(split="fold", folds=8, fold=0))
             if split == "test" for u in (m, f)}
    for fold in (2, 5):
        plain = plan_mixtures(utterances, MixConfig(split="fold", folds=8, fold=fold))
        nested = plan_mixtures(utterances, MixConfig(split="fold", folds=8, fold=fold, outer_fold=0))
        speakers = lambda plan, part: {u.speaker for s, m, f in plan if s == part for u in (m, f)}  # noqa: E731
        # The validation speakers are those of the same fold without nesting; the outer
        # fold's two speakers are in neither part.
        assert speakers(nested, "test") == speakers(plain, "test")
        assert speakers(nested, "train") == speakers(plain, "train") - outer
        assert len(speakers(nested, "train")) == 12
    with pytest.raises(SepvaeError, match="fold 0 is the outer fold"):
        plan_mixtures(utterances, MixConfig(split="fold", folds=8, fold=0, outer_fold=0))


def test_an_experiment_runs_the_folds_it_names_and_never_the_outer_one():
    from sepvae.config import Experiment

    def folds(**mix):
        return [f.mix.fold for f in Experiment("x", MixConfig(split="fold", folds=4, **mix), ()).folds()]

    assert folds() == [0, 1, 2, 3]
    assert folds(outer_fold=1) == [0, 2, 3]
    assert folds(outer_fold=0, fold_ids=(3, 1)) == [3, 1]
    with pytest.raises(SepvaeError, match=r"fold_ids = \[1, 0\]: expected folds in \[0, 4\) other than outer_fold"):
        MixConfig(split="fold", folds=4, outer_fold=0, fold_ids=(1, 0))
    with pytest.raises(SepvaeError, match="outer_fold = 5"):
        MixConfig(split="fold", folds=4, outer_fold=5)
    with pytest.raises(SepvaeError, match="split = \"utterance\": expected 'fold'"):
        MixConfig(outer_fold=1)
