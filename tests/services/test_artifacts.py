"""retrainer.services.artifacts: atomic write with a checksum, verified before every load."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrainer.demo import synthetic
from retrainer.models.base import ArtifactError, load_family
from retrainer.services import artifacts
from retrainer.services.artifacts import sha256_file


@pytest.fixture(scope="module")
def fitted():
    rows = synthetic.generate(150, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 10, tzinfo=UTC), seed=1)
    x = pd.DataFrame([r.features for r in rows])
    est = load_family("ctr", {"n_estimators": 20, "max_depth": 3}).fit(x, pd.Series([r.label for r in rows]))
    return est, x


def test_write_is_atomic_and_checksummed(fitted, tmp_path: Path) -> None:
    est, x = fitted
    directory = tmp_path / "artifacts" / "ctr"  # created on demand
    path, checksum = artifacts.write(est, directory, "run_1")
    assert path == directory / "run_1.json"
    assert path.is_file()
    assert sorted(p.name for p in directory.iterdir()) == ["run_1.json"]  # no temp file left behind
    assert checksum == sha256_file(path) and len(checksum) == 64
    loaded = artifacts.load("ctr", str(path), checksum)
    np.testing.assert_array_equal(loaded.predict(x).value, est.predict(x).value)


def test_failed_save_leaves_nothing(fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    est, _ = fitted

    def half_write(path: Path) -> None:
        Path(path).write_text('{"partial": ')
        raise OSError("disk full")

    monkeypatch.setattr(est, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        artifacts.write(est, tmp_path, "run_2")
    assert list(tmp_path.iterdir()) == []


def test_corrupted_byte_is_refused_naming_the_file(fitted, tmp_path: Path) -> None:
    est, _ = fitted
    path, checksum = artifacts.write(est, tmp_path, "run_3")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as info:
        artifacts.load("ctr", str(path), checksum)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert "checksum" in str(info.value)


def test_wrong_expected_checksum_is_refused(fitted, tmp_path: Path) -> None:
    est, _ = fitted
    path, _ = artifacts.write(est, tmp_path, "run_4")
    with pytest.raises(ArtifactError, match="checksum"):
        artifacts.load("ctr", str(path), "0" * 64)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.json"
    with pytest.raises(ArtifactError) as info:
        artifacts.load("ctr", str(path), "0" * 64)
    assert str(path) in str(info.value)
    assert "missing" in str(info.value)


def test_checksummed_garbage_is_reported_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-model.json"
    path.write_text('{"hello": "world"}')
    with pytest.raises(ArtifactError) as info:
        artifacts.load("ctr", str(path), sha256_file(path))
    assert str(path) in str(info.value)


def test_remove(fitted, tmp_path: Path) -> None:
    est, _ = fitted
    path, _ = artifacts.write(est, tmp_path, "run_5")
    artifacts.remove(str(path))
    assert not path.exists()
    artifacts.remove(str(path))  # already gone: fine
    artifacts.remove(None)
