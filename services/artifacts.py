"""Model artifacts on disk: written atomically with a sha256, verified before every load."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from retrainer.models.base import ArtifactError, Family, family_class


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# The names `write` gives: "<run_id><suffix>" and, while writing, ".<run_id>.<pid>.tmp<suffix>".
_OURS = re.compile(r"^\.?(run_\d{8}_\d{6}_[0-9a-f]{6})(\.\d+\.tmp)?\.\w+$")


def write(estimator: Family, directory: Path, name: str) -> tuple[Path, str]:
    """Save to a temporary name, fsync, then rename: a crash leaves no half-written artifact."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{name}{estimator.artifact_suffix}"
    tmp = directory / f".{name}.{os.getpid()}.tmp{estimator.artifact_suffix}"
    try:
        estimator.save(tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        checksum = sha256_file(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final, checksum


def load(family: str, uri: str, expected_sha256: str) -> Family:
    path = Path(uri)
    if not path.is_file():
        raise ArtifactError(path, "file is missing")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ArtifactError(path, f"checksum mismatch (expected sha256 {expected_sha256[:12]}…, found {actual[:12]}…); refusing to load")
    try:
        return family_class(family).load(path)
    except Exception as exc:  # the library's own parse error: report it against the file
        raise ArtifactError(path, f"cannot be read by the {family} family: {exc}") from exc


def remove(uri: str | Path | None) -> None:
    if uri:
        Path(uri).unlink(missing_ok=True)


def orphans(root: Path, running: set[str], referenced: set[str], grace: timedelta) -> Iterator[Path]:
    """Artifact files under root/<model>/ that no version references and no live run is writing,
    older than `grace`: what a run killed between writing its file and committing left behind.
    Files retrainer did not name are never touched."""
    if not root.is_dir():
        return
    cutoff = time.time() - grace.total_seconds()
    for path in root.glob("*/*"):
        match = _OURS.match(path.name)
        if match is None or match.group(1) in running or path.name in referenced:
            continue
        try:
            if path.stat().st_mtime < cutoff:
                yield path
        except FileNotFoundError:  # removed meanwhile (its run's own clean-up)
            continue
