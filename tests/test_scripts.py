"""The scripts beside the package: every one compiles, and the GPU check runs end to end on CPU.

``benchmarks/gpu_check.py`` is run on a GPU in sessions that have a few minutes of one: a script that
fails there wastes them. Its CPU dry run (``--device cpu --quick``) goes through every section's code
at small sizes, skipping only the CUDA measurements.
"""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from features import needs_transformers_5

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("examples/*.py"), ROOT / "compare.py"])


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_compiles(path: Path, tmp_path: Path) -> None:
    py_compile.compile(str(path), cfile=str(tmp_path / "compiled.pyc"), doraise=True)


@needs_transformers_5  # its sweep runs transformers models with SDPA, which T5 gains in 5
def test_gpu_check_dry_run_has_no_failures(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    pytest.importorskip("torchvision")
    pytest.importorskip("transformers")
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, env={**_environment(), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    sections = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert [s["number"] for s in sections] == [0, 2, 3, 4, 5, 1]  # the pre-flight first, the long sweep last
    assert (tmp_path / "trace_preflight.json").is_file()
    failed = {s["number"]: s["error"] for s in sections if s["status"] == "failed"}
    assert not failed
    row_errors = [(s["number"], row) for s in sections for row in s["rows"] if "error" in row]
    assert not row_errors
    assert all(s["rows"] for s in sections)  # every section measured something, if only the CPU side


def _environment() -> dict[str, str]:
    """This process's environment without ``TIMM_FUSED_ATTN`` (an empty value breaks timm's import)."""
    return {k: v for k, v in os.environ.items() if k != "TIMM_FUSED_ATTN"}
