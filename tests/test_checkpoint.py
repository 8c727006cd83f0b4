"""Model folders: cards, checkpoints, and the integrity check on every load."""

import json

import pytest
import torch

from sepvae.checkpoint import (
    CARD, ModelCard, card_of, load_checkpoint, read_card, save_checkpoints, sha256_of, verify_folder, write_card,
)
from sepvae.config import ModelConfig, SourceMode, StftConfig, TrainConfig
from sepvae.errors import SepvaeError
from sepvae.layout import is_done
from sepvae.methods import model_kinds
from sepvae.models import SourceModel, build_model
from tests.conftest import make_model_folder

SMALL = dict(hidden=(16,), latent=4, decoder_hidden=(16,))
N_BINS = 9


def card(name="vae", sources=("female", "male"), **changes) -> ModelCard:
    fields = dict(kind=name, source_mode=SourceMode.GENDER, sources=sources, sample_rate=16000,
                  stft=StftConfig(), n_bins=N_BINS, model=ModelConfig(name=name, **SMALL), train=TrainConfig())
    return ModelCard(**{**fields, **changes})


@pytest.mark.parametrize("name", model_kinds())
def test_save_load_identical_outputs(tmp_path, name):
    model = SourceModel(build_model(ModelConfig(name=name, **SMALL), N_BINS), torch.rand(N_BINS) + 0.5).eval()
    save_checkpoints(tmp_path, {"male": model}, card(name, sources=("male",)))
    torch.load(tmp_path / "male.pt", weights_only=True)  # no pickled classes
    loaded, loaded_card = load_checkpoint(tmp_path / "male.pt")
    frames = torch.rand(7, N_BINS)
    assert torch.equal(model(frames), loaded(frames))
    assert torch.equal(model.scale, loaded.scale) and loaded_card.model.name == name
    assert loaded_card.sources == ("male",) and loaded_card.sha256 == {}


def test_card_round_trips_through_json(tmp_path):
    written = card(info={"name": "x", "evaluation": {"sdr_median": 6.4}}, training_mixtures="abc", version="0.1")
    write_card(tmp_path, written)
    assert read_card(tmp_path) == written
    data = json.loads((tmp_path / CARD).read_text())
    assert data["source_mode"] == "gender" and data["model"]["hidden"] == [16]
    assert read_card(tmp_path / "elsewhere") is None


def test_a_card_of_several_members_names_their_files(tmp_path):
    joined = card(members=3)
    write_card(tmp_path, joined)
    assert read_card(tmp_path).members == 3 and json.loads((tmp_path / CARD).read_text())["members"] == 3
    assert [joined.weights_file("male", k) for k in range(3)] == ["male.pt", "male.1.pt", "male.2.pt"]
    with pytest.raises(SepvaeError, match="model 'male' has 3 member"):
        joined.weights_file("male", 3)
    data = json.loads((tmp_path / CARD).read_text())
    del data["members"]  # cards written before members existed hold one network per source
    assert ModelCard.from_json(data, "old").members == 1
    with pytest.raises(SepvaeError, match="bad: not a valid sepvae model card .*members must be >= 1"):
        ModelCard.from_json({**data, "members": 0}, "bad")


def test_checkpoint_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    write_card(tmp_path, card(sha256={"junk.pt": sha256_of(tmp_path / "junk.pt")}))
    with pytest.raises(SepvaeError, match="junk.pt: not a readable sepvae checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    model = SourceModel(build_model(ModelConfig(**SMALL), N_BINS), torch.ones(N_BINS))
    save_checkpoints(tmp_path, {"bad": model}, card(model=ModelConfig(hidden=(32,), latent=4, decoder_hidden=(16,))))
    with pytest.raises(SepvaeError, match="bad.pt: checkpoint tensors do not match its card"):
        load_checkpoint(tmp_path / "bad.pt")


def test_every_load_verifies_the_sha256(tmp_path):
    folder = make_model_folder(tmp_path / "run")
    assert verify_folder(folder).sha256.keys() == {"female.pt", "male.pt"}
    data = bytearray((folder / "male.pt").read_bytes())
    data[-300:-236] = bytes(b ^ 0xFF for b in data[-300:-236])  # 64 flipped bytes in the tensors
    (folder / "male.pt").write_bytes(bytes(data))
    with pytest.raises(SepvaeError, match=r"male.pt: sha256 does not match .*model.json"):
        load_checkpoint(folder / "male.pt")
    with pytest.raises(SepvaeError, match="male.pt: sha256 does not match"):
        verify_folder(folder)
    assert not is_done(folder, model_run=True)  # the training cache runs it again


def test_files_the_card_does_not_list_are_refused(tmp_path):
    folder = make_model_folder(tmp_path / "run")
    (folder / "extra.pt").write_bytes((folder / "male.pt").read_bytes())
    with pytest.raises(SepvaeError, match="extra.pt: not listed in"):
        load_checkpoint(folder / "extra.pt")
    assert is_done(folder, model_run=True)
    (folder / CARD).unlink()
    with pytest.raises(SepvaeError, match="no model.json"):
        card_of(folder)
    assert not is_done(folder, model_run=True)


def test_equal_tensors_give_equal_bytes(tmp_path):
    make_model_folder(tmp_path / "a")
    make_model_folder(tmp_path / "b")
    assert card_of(tmp_path / "a").sha256 == card_of(tmp_path / "b").sha256


def test_older_checkpoints_name_their_format(tmp_path):
    torch.save({"format": "sepvae-checkpoint-1", "config": {}, "state_dict": {}, "scale": torch.ones(3)},
               tmp_path / "old.pt")
    write_card(tmp_path, card(sha256={"old.pt": sha256_of(tmp_path / "old.pt")}))
    with pytest.raises(SepvaeError, match="format sepvae-checkpoint-1.*older sepvae"):
        load_checkpoint(tmp_path / "old.pt")
