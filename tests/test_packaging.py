"""The wheel is installable and carries the shipped model (issue 15)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.conftest import speechlike

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("male.pt", "female.pt", "male.1.pt", "female.1.pt", "model.json")


def _build_wheel(tmp_path: Path) -> Path:
    # From a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "sepvae", source / "sepvae", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("sepvae-*.whl")
    return wheel


def test_wheel_carries_the_model_and_separates_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"sepvae/pretrained/default/{name}" for name in SHIPPED} <= names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Python: >=3.10" in metadata
    requirements = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    pinned = [line for line in requirements if re.search(r"(?<![!<>~=])==", line.split(";")[0])]
    assert requirements and not pinned, pinned  # ranges here; exact pins in constraints.txt

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                    "--target", str(target), str(wheel)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    sf.write(work / "mix.wav", speechlike(1.0, f0=110) + speechlike(1.0, f0=220, seed=1), 16000)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    where = subprocess.run([sys.executable, "-c", "import sepvae.cli; print(sepvae.cli.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout
    run = subprocess.run([sys.executable, "-m", "sepvae", "separate", "mix.wav", "--threads", "1"],
                         cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for source in ("male", "female"):
        audio, rate = sf.read(work / f"mix_{source}.wav")
        assert rate == 16000 and audio.shape == (16000,) and np.isfinite(audio).all()
