"""The mixing stage: a seeded, written-down protocol from a corpus table to mixtures.

The protocol (README, "Mixing protocol", says the same in words):

1. Split. ``utterance`` (default, the paper's): the test mixtures use ``n_test`` male and
   ``n_test`` female utterances, each once, and no training mixture uses any of them.
   ``speaker``: whole speakers (a male and a female at a time) are set aside for testing until
   they have ``n_test`` utterances of each gender; training never sees those speakers.
2. Pairing. Each mixture is one male + one female utterance, never the same sentence (TIMIT's
   sa1/sa2 are read by every speaker), never the same pair twice; utterances are reused as
   evenly as possible. ``same_region`` pairs only speakers of the same dialect region.
3. Signals. Both utterances resampled to ``sample_rate``; cut to the shorter one's length
   (``length="shortest"``, from the start) or the shorter zero-padded at the end
   (``"longest"``); each scaled to unit RMS; the male scaled by 10^(snr/20), snr drawn
   uniformly from ``snr_db``; then one common gain brings the largest absolute sample of the
   mixture and both sources to ``peak`` (0.9), so nothing clips.
4. Written as float32 WAVs ``<split>/<id>/mixture.wav, male.wav, female.wav`` (mixture = male
   + female to float rounding) and ``manifest.csv`` in a folder named by the hash of the
   config and the corpus table.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sepvae.io import csv_text, read_audio, read_csv, to_mono, write_wav
from sepvae.config import MixConfig, config_hash, key_dict, to_dict
from sepvae.corpus import Utterance
from sepvae.errors import SepvaeError

MANIFEST_COLUMNS = [
    "id", "split", "mixture_path", "male_path", "female_path",
    "male_speaker", "female_speaker", "male_utterance", "female_utterance",
    "male_region", "female_region", "snr_db", "gain", "duration", "sample_rate",
]


@dataclass(frozen=True)
class Mixture:
    """One row of a manifest: a mixture file and its source files (absolute paths)."""

    id: str
    split: str
    mixture_path: Path
    source_paths: dict[str, Path]
    speakers: dict[str, str]


def _sentence(utterance: Utterance) -> str:
    return utterance.transcript.strip().lower() or utterance.utterance


def _compatible(male: Utterance, female: Utterance, same_region: bool) -> bool:
    if same_region and male.dialect_region != female.dialect_region:
        return False
    return _sentence(male) != _sentence(female)


def draw_pairs(
    males: list[Utterance],
    females: list[Utterance],
    n: int,
    rng: np.random.Generator,
    same_region: bool,
    once: bool = False,
    what: str = "",
) -> list[tuple[Utterance, Utterance]]:
    """Draw ``n`` distinct compatible (male, female) pairs, reusing utterances evenly.

    Males are taken round by round in a shuffled order; each picks, among the compatible
    females it is not yet paired with, one of the least used. ``once``: no utterance twice.
    """
    pairs: list[tuple[Utterance, Utterance]] = []
    seen: set[tuple[str, str]] = set()
    female_uses = {f.path: 0 for f in females}
    used_males: set[str] = set()
    while len(pairs) < n:
        added = 0
        for index in rng.permutation(len(males)):
            if len(pairs) == n:
                break
            male = males[index]
            if once and male.path in used_males:
                continue
            candidates = [
                f for f in females
                if (male.path, f.path) not in seen
                and not (once and female_uses[f.path])
                and _compatible(male, f, same_region)
            ]
            if not candidates:
                continue
            fewest = min(female_uses[f.path] for f in candidates)
            least_used = [f for f in candidates if female_uses[f.path] == fewest]
            female = least_used[rng.integers(len(least_used))]
            pairs.append((male, female))
            seen.add((male.path, female.path))
            female_uses[female.path] += 1
            used_males.add(male.path)
            added += 1
        if added == 0:
            raise SepvaeError(
                f"cannot make {n} {what}mixtures: the corpus allows only {len(pairs)} distinct "
                f"male+female pairs{' of unused utterances' if once else ''} under this protocol "
                f"({len(males)} male and {len(females)} female utterances"
                f"{', same dialect region' if same_region else ''})"
            )
    return pairs


def plan_mixtures(utterances: list[Utterance], config: MixConfig) -> list[tuple[str, Utterance, Utterance]]:
    """The (split, male, female) triples of the protocol, deterministic from ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    ordered = sorted(utterances, key=lambda u: u.path)
    males = [u for u in ordered if u.gender == "male"]
    females = [u for u in ordered if u.gender == "female"]
    if not males or not females:
        raise SepvaeError(
            f"the corpus needs male and female utterances; it has {len(males)} male and "
            f"{len(females)} female"
        )
    if config.split in ("speaker", "fold"):
        if config.split == "fold":
            test_speakers = _fold_speakers(males, females, config.fold, config.folds)
            if config.outer_fold is not None:  # nested validation: the outer test speakers are never used
                if config.outer_fold == config.fold:
                    raise SepvaeError(f"fold {config.fold} is the outer fold: its speakers are left out")
                left_out = _fold_speakers(males, females, config.outer_fold, config.folds)
                males = [u for u in males if u.speaker not in left_out]
                females = [u for u in females if u.speaker not in left_out]
        else:
            test_speakers = _test_speakers(males, females, config, rng)
        test_m = [u for u in males if u.speaker in test_speakers]
        test_f = [u for u in females if u.speaker in test_speakers]
        train_m = [u for u in males if u.speaker not in test_speakers]
        train_f = [u for u in females if u.speaker not in test_speakers]
    else:
        test_m, test_f, train_m, train_f = males, females, males, females
    test = _draw_test_pairs(test_m, test_f, config, rng)
    test_paths = {u.path for pair in test for u in pair}
    train_m = [u for u in train_m if u.path not in test_paths]
    train_f = [u for u in train_f if u.path not in test_paths]
    n_train = config.n_mixtures - config.n_test
    train = draw_pairs(train_m, train_f, n_train, rng, config.same_region, what="training ")
    if config.test_pairs == "all":
        chosen_m = sorted({m.path: m for m, _ in test}.values(), key=lambda u: u.path)
        chosen_f = sorted({f.path: f for _, f in test}.values(), key=lambda u: u.path)
        test = [(m, f) for m in chosen_m for f in chosen_f if _compatible(m, f, config.same_region)]
    return [("train", m, f) for m, f in train] + [("test", m, f) for m, f in test]


def _draw_test_pairs(males, females, config: MixConfig, rng, attempts: int = 50):
    """n_test pairs using no utterance twice. The greedy draw can paint itself into a corner
    (the last male reads the one sentence the last free female reads: TIMIT's sa1/sa2), which
    a few speakers' utterances make likely; another draw order then finds a matching."""
    for attempt in range(attempts):
        try:
            return draw_pairs(males, females, config.n_test, rng, config.same_region, once=True, what="test ")
        except SepvaeError:
            if attempt == attempts - 1:
                raise


def _fold_speakers(males: list[Utterance], females: list[Utterance], fold: int, folds: int) -> set[str]:
    """The test speakers of ``fold``: of each gender, every ``folds``-th speaker in (dialect
    region, id) order, so each speaker is tested once."""
    chosen = set()
    for utterances in (males, females):
        speakers = sorted({(u.dialect_region, u.speaker) for u in utterances})
        if len(speakers) < folds:
            raise SepvaeError(
                f"{folds} folds need at least {folds} speakers of each gender, "
                f"the corpus has {len(speakers)} {utterances[0].gender} speakers"
            )
        chosen |= {speaker for _, speaker in speakers[fold::folds]}
    return chosen


def _test_speakers(males, females, config: MixConfig, rng) -> set[str]:
    """Set aside (male, female) speaker pairs until each side has n_test utterances."""
    def by_speaker(items):
        groups: dict[str, list[Utterance]] = {}
        for u in items:
            groups.setdefault(u.speaker, []).append(u)
        return groups

    male_groups, female_groups = by_speaker(males), by_speaker(females)
    male_order = [list(male_groups)[i] for i in rng.permutation(len(male_groups))]
    female_order = [list(female_groups)[i] for i in rng.permutation(len(female_groups))]
    chosen: set[str] = set()
    n_male = n_female = 0
    for male in male_order:
        if n_male >= config.n_test and n_female >= config.n_test:
            break
        region = male_groups[male][0].dialect_region
        female = next(
            (f for f in female_order
             if f not in chosen and (not config.same_region or female_groups[f][0].dialect_region == region)),
            None,
        )
        if female is None:
            continue
        chosen |= {male, female}
        n_male += len(male_groups[male])
        n_female += len(female_groups[female])
    if n_male < config.n_test or n_female < config.n_test or len(chosen) >= len(male_groups) + len(female_groups):
        raise SepvaeError(
            f"cannot set aside test speakers for {config.n_test} test mixtures and still keep "
            f"training speakers ({len(male_groups)} male, {len(female_groups)} female speakers)"
        )
    return chosen


def mix_pair(male: np.ndarray, female: np.ndarray, snr_db: float, config: MixConfig):
    """Normalize, align, weight and scale one pair. Returns (mixture, male, female, gain) float32."""
    n = min(len(male), len(female)) if config.length == "shortest" else max(len(male), len(female))
    signals = []
    for signal in (male, female):
        signal = np.asarray(signal, dtype=np.float64)[:n]
        signal = np.pad(signal, (0, n - len(signal)))
        rms = np.sqrt(np.mean(signal**2))
        signals.append(signal / rms if rms > 0 else signal)
    male64 = signals[0] * 10 ** (snr_db / 20)
    female64 = signals[1]
    peak = max(np.abs(male64 + female64).max(), np.abs(male64).max(), np.abs(female64).max())
    gain = config.peak / peak if peak > 0 else 1.0
    male32 = (male64 * gain).astype(np.float32)
    female32 = (female64 * gain).astype(np.float32)
    # Sum the stored float32 sources so the files satisfy mixture == male + female exactly.
    mixture32 = male32 + female32
    return mixture32, male32, female32, gain


def _load(path: str, sample_rate: int) -> np.ndarray:
    audio, rate = read_audio(path)
    audio = to_mono(audio)
    if rate != sample_rate:
        import soxr

        audio = soxr.resample(audio, rate, sample_rate, quality="HQ")
    return audio


def mixtures_dir(root: str | Path, config: MixConfig, utterances: list[Utterance]) -> Path:
    """Where mixtures of this config and corpus live: ``root/<hash>``."""
    # Everything the plan reads (transcripts, regions, ...) is part of the key.
    corpus_key = [asdict(u) for u in sorted(utterances, key=lambda u: u.path)]
    return Path(root) / config_hash(key_dict(config), corpus_key)


def make_mixtures(
    utterances: list[Utterance],
    config: MixConfig,
    root: str | Path = "data/mixtures",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """The mixing stage. Returns the manifest path; does nothing if it is already there."""
    out = mixtures_dir(root, config, utterances)
    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    plan = plan_mixtures(utterances, config)
    rng = np.random.default_rng([config.seed, 1])  # SNRs: independent of the pairing draws
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    rows = []
    counters = {"train": 0, "test": 0}
    for done, (split, male, female) in enumerate(plan):
        snr = float(rng.uniform(*config.snr_db)) if config.snr_db[0] != config.snr_db[1] else config.snr_db[0]
        mixture, male_sig, female_sig, gain = mix_pair(
            _load(male.path, config.sample_rate), _load(female.path, config.sample_rate), snr, config
        )
        # Fold ids stay unique when the folds' rows meet in one metrics.csv.
        mixture_id = f"{f'fold{config.fold}-' if config.split == 'fold' else ''}{split}-{counters[split]:04d}"
        counters[split] += 1
        folder = Path(split) / mixture_id
        for name, signal in (("mixture", mixture), ("male", male_sig), ("female", female_sig)):
            write_wav(staging / folder / f"{name}.wav", signal, config.sample_rate)
        rows.append({
            "id": mixture_id, "split": split,
            "mixture_path": str(folder / "mixture.wav"),
            "male_path": str(folder / "male.wav"),
            "female_path": str(folder / "female.wav"),
            "male_speaker": male.speaker, "female_speaker": female.speaker,
            "male_utterance": male.utterance, "female_utterance": female.utterance,
            "male_region": male.dialect_region, "female_region": female.dialect_region,
            "snr_db": f"{snr:.3f}", "gain": f"{gain:.6f}",
            "duration": f"{len(mixture) / config.sample_rate:.4f}",
            "sample_rate": config.sample_rate,
        })
        if progress:
            progress(done + 1, len(plan))
    (staging / "manifest.csv").write_text(csv_text(rows, MANIFEST_COLUMNS))
    (staging / "mix_config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return manifest


def training_key(path: str | Path) -> str:
    """A hash of a manifest's header and training rows: what trained models depend on.

    Two manifests with the same training mixtures (e.g. the default test set and the
    larger one) share their trained models.
    """
    import hashlib

    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    split = header.index("split") if "split" in header else None
    kept = [header] + [row for row in rows[1:] if split is None or row[split] == "train"]
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16]


def read_manifest(path: str | Path, split: str | None = None) -> list[Mixture]:
    """Read a manifest: ours, or any CSV with ``mixture_path`` and one ``<source>_path`` column
    per source (e.g. ``male_path, female_path``). Optional ``id`` and ``split`` (default
    ``test``) columns; relative paths are relative to the manifest's folder.
    """
    path = Path(path)
    columns, rows = read_csv(path, "manifest", ("mixture_path",), "run `sepvae mix` first")
    sources = [c[: -len("_path")] for c in columns if c.endswith("_path") and c != "mixture_path"]
    if len(sources) < 2:
        raise SepvaeError(f"{path}: manifest needs at least two <source>_path columns, found {sources}")
    mixtures = []
    for line, row in enumerate(rows, start=2):
        row_split = row.get("split") or "test"
        if split is not None and row_split != split:
            continue
        resolve = lambda p: p if Path(p).is_absolute() else path.parent / p  # noqa: E731
        mixtures.append(
            Mixture(
                id=row.get("id") or f"row{line}",
                split=row_split,
                mixture_path=Path(resolve(row["mixture_path"])),
                source_paths={s: Path(resolve(row[f"{s}_path"])) for s in sources},
                speakers={s: row.get(f"{s}_speaker", "") for s in sources},
            )
        )
    return mixtures
