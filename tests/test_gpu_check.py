"""scripts/gpu_check.py: without a CUDA device it refuses in one line with exit code 2 and writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def test_without_cuda_exits_2_in_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: run the script itself")
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Error: no CUDA device (torch.cuda.is_available() is False); run this on a GPU machine"]
    assert not out.exists()
