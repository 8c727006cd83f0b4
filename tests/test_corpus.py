import csv
import zipfile

import pytest
import soundfile as sf
from typer.testing import CliRunner

from sepvae.io import file_md5
from sepvae.cli import app
from sepvae.corpus import index_timit, read_corpus_csv, unpack_sample
from sepvae.errors import SepvaeError
from tests.conftest import speechlike, write_sample_tree

runner = CliRunner()


def write_ldc_tree(root):
    """LDC layout, upper-case names, NIST SPHERE audio."""
    layout = {("TRAIN", "DR1", "FCJF0"): ["SA1", "SI1027"], ("TEST", "DR3", "MADC0"): ["SX5", "SA1"]}
    for (split, region, speaker), utts in layout.items():
        folder = root / split / region / speaker
        folder.mkdir(parents=True)
        for u, utt in enumerate(utts):
            audio = speechlike(1.5, seed=u)
            sf.write(folder / f"{utt}.WAV", audio, 16000, format="NIST", subtype="PCM_16")
            (folder / f"{utt}.TXT").write_text(f"0 24000 Utterance {utt}.\n")
    return root


def test_ldc_layout_nist_sphere_upper_case(tmp_path):
    utterances = index_timit(write_ldc_tree(tmp_path))
    assert len(utterances) == 4
    assert sf.info(utterances[0].path).format == "NIST"
    by_speaker = {u.speaker: u for u in utterances}
    assert by_speaker["fcjf0"].gender == "female" and by_speaker["fcjf0"].split == "train"
    assert by_speaker["madc0"].gender == "male" and by_speaker["madc0"].split == "test"
    assert by_speaker["madc0"].dialect_region == "dr3"
    assert {u.utterance for u in utterances} == {"sa1", "si1027", "sx5"}
    assert all(u.sample_rate == 16000 and u.duration == pytest.approx(1.5) for u in utterances)
    assert any(u.transcript == "Utterance SA1." for u in utterances)


def test_sample_layout(tmp_path):
    utterances = index_timit(write_sample_tree(tmp_path))
    assert len(utterances) == 16
    genders = {u.speaker: u.gender for u in utterances}
    assert genders == {"fabc0": "female", "mdef0": "male", "fghi0": "female", "mjkl0": "male"}
    assert {u.dialect_region for u in utterances} == {"dr1", "dr2"}
    assert all(u.split == "" for u in utterances)


def test_real_sample_index(timit_root):
    utterances = index_timit(timit_root)
    speakers = {(u.speaker, u.gender) for u in utterances}
    assert len(utterances) == 160
    assert sum(g == "male" for _, g in speakers) == 8 and sum(g == "female" for _, g in speakers) == 8


def test_zip_is_verified_and_unpacked(tmp_path):
    tree = write_sample_tree(tmp_path / "src" / "timit")
    archive = tmp_path / "timit.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(tree.rglob("*")):
            handle.write(path, path.relative_to(tmp_path / "src"))
    dest = tmp_path / "raw" / "timit"
    unpack_sample(archive, dest, md5=file_md5(archive))
    assert (dest / "dr1-fabc0" / "sx0.wav").is_file()
    assert len(index_timit(dest)) == 16
    with pytest.raises(SepvaeError, match="md5 is .* expected 0+"):
        unpack_sample(archive, tmp_path / "other", md5="0" * 32)
    assert not (tmp_path / "other").exists()


def test_corpus_csv_of_any_corpus(tmp_path):
    write_sample_tree(tmp_path / "audio")
    table = tmp_path / "mine.csv"
    table.write_text("path,speaker,gender\naudio/dr1-fabc0/sx0.wav,alice,f\naudio/dr1-mdef0/sx1.wav,bob,M\n")
    utterances = read_corpus_csv(table)
    assert [(u.speaker, u.gender) for u in utterances] == [("alice", "female"), ("bob", "male")]
    assert utterances[0].sample_rate == 16000 and utterances[0].duration == pytest.approx(1.0)


def test_cli_data_writes_table(tmp_path):
    root = write_sample_tree(tmp_path / "timit")
    out = tmp_path / "corpus.csv"
    result = runner.invoke(app, ["data", "--timit-root", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "16 utterances, 4 speakers (2 male, 2 female)" in result.output
    rows = list(csv.DictReader(out.open()))
    assert {"path", "speaker", "gender", "dialect_region", "utterance", "split", "duration",
            "sample_rate", "transcript"} <= set(rows[0])


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda p: None, ["--timit-root", "{p}/missing"], "missing: TIMIT root does not exist"),
        (lambda p: (p / "empty").mkdir(), ["--timit-root", "{p}/empty"], "empty: no TIMIT utterances found"),
        (lambda p: None, ["--corpus-csv", "{p}/none.csv"], "none.csv: corpus CSV not found"),
        (lambda p: (p / "bad.csv").write_text("path,who\nx.wav,a\n"), ["--corpus-csv", "{p}/bad.csv"],
         "bad.csv: corpus CSV lacks column(s) gender, speaker"),
    ],
)
def test_cli_data_errors(tmp_path, setup, args, message):
    setup(tmp_path)
    out = tmp_path / "corpus.csv"
    result = runner.invoke(app, ["data", *[a.format(p=tmp_path) for a in args], "--out", str(out)])
    assert result.exit_code == 1
    assert message in result.output and result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_corrupt_audio_is_named(tmp_path):
    root = write_sample_tree(tmp_path / "timit")
    bad = root / "dr1-fabc0" / "sx2.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    out = tmp_path / "corpus.csv"
    result = runner.invoke(app, ["data", "--timit-root", str(root), "--out", str(out)])
    assert result.exit_code == 1
    assert "sx2.wav: cannot read audio" in result.output
    assert not out.exists()


def test_no_timit_and_no_download(tmp_path, monkeypatch):
    monkeypatch.delenv("TIMIT_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["data", "--no-download"])
    assert result.exit_code == 1
    assert "no TIMIT found" in result.output


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    from sepvae import corpus

    monkeypatch.delenv("TIMIT_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(corpus, "SAMPLE_URL", "http://127.0.0.1:9/timit.zip")
    result = runner.invoke(app, ["data"])
    assert result.exit_code == 1
    assert "could not download the TIMIT sample" in result.output and "--timit-root" in result.output
    assert not (tmp_path / "data" / "raw" / "timit.zip").exists()
    assert not (tmp_path / "data" / "corpus.csv").exists()


def test_truncated_utterance_is_an_error_or_with_allow_truncated_a_warning(tmp_path):
    root = write_sample_tree(tmp_path / "timit")
    cut = root / "dr1-fabc0" / "sx1.wav"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # 1.25 s announced, ~0.62 s there
    out = tmp_path / "corpus.csv"
    result = runner.invoke(app, ["data", "--timit-root", str(root), "--out", str(out), "--no-download"])
    assert result.exit_code == 1
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: {cut}: truncated: its header says 20000 frames (1.25 s)"), line
    assert not out.exists()
    result = runner.invoke(app, ["data", "--timit-root", str(root), "--out", str(out), "--no-download", "--allow-truncated"])
    assert result.exit_code == 0, result.output
    assert f"warning: {cut}: truncated" in result.stderr
    rows = {row["path"]: row for row in csv.DictReader(out.open())}
    assert float(rows[str(cut.resolve())]["duration"]) == pytest.approx(sf.info(str(cut)).frames / 16000, abs=1e-4)
