"""`retrainer demo` end to end: real worker and beat children on the embedded default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_whole_loop_and_leaves_no_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")}
    done = subprocess.run([sys.executable, "-m", "retrainer.cli", "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "ctr-v1: retrained — First model" in out
    assert "above threshold" in out  # the replayed drift pushed live MAE over 0.02
    assert "(trigger: accuracy)" in out and "same holdout rows for both: yes" in out
    assert "decision: PROMOTED — New model is" in out
    assert "540/540 events stored, 0 lost" in out
    assert "events inside the debounce window -> 1 retrain" in out
    assert "demo finished" in out
    assert processes_in(tmp_path) == []
    assert (tmp_path / "var" / "demo" / "retrainer.db").exists()


def processes_in(folder: Path) -> list[str]:
    """Processes whose working directory is `folder` (the demo starts its children there)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd").startswith(str(folder)):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {command[:120]}")
        except OSError:  # gone, or not ours to read
            continue
    return found
