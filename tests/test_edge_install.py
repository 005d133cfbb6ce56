"""An edge-only install (no torch, rich, Qt, training or TensorRT packages): every command that needs an extra says
which one in a single line, and the edge commands still run.

Each case runs in a fresh interpreter in which the optional packages are blocked with ``sys.modules[name] = None``
(importing them raises ``ModuleNotFoundError``, as in an install without them); ``/tmp`` venvs built with
``pip install -e .`` give the same lines.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audio_helpers import esc50_clips

ROOT = Path(__file__).resolve().parents[1]

#: Everything outside the base install (numpy, onnxruntime, sounddevice, soundfile, soxr).
OPTIONAL = ["torch", "torchaudio", "safetensors", "onnx", "onnxscript", "transformers", "rich", "psutil",
            "matplotlib", "tqdm", "pandas", "sed_eval", "psds_eval", "pyqtgraph", "PySide6", "tensorrt", "cuda"]

_RUN = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
from apps.cli import main
sys.exit(main({argv!r}))
"""


def _edge(argv: list[str], tmp_path: Path, blocked: list[str] = OPTIONAL) -> subprocess.CompletedProcess:
    code = _RUN.format(blocked=blocked, argv=argv)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
                               "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("argv, module, extra", [
    (["train", "--model", "datar_test", "-o", "{tmp}/run"], "torch", "torch,train"),
    (["export", "datar_test", "-o", "{tmp}/m.onnx"], "torch", "torch"),
    (["models"], "torch", "torch"),
    (["import-checkpoint", "{tmp}/none.pt", "-o", "{tmp}/ckpt"], "torch", "torch"),
    (["profile", "--engines", "loudness", "--source", "synthetic", "--bursts", "1", "--quiet"], "rich", "profile"),
], ids=["train", "export", "models", "import-checkpoint", "profile"])
def test_command_names_the_extra_it_needs(argv: list[str], module: str, extra: str, tmp_path: Path) -> None:
    p = _edge([a.format(tmp=tmp_path) for a in argv], tmp_path)
    err = p.stderr.strip()
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and len(err.splitlines()) == 1, p.stderr
    assert err.startswith(f"aed {argv[0]}: error: ") and f"'{module}'" in err, err
    assert f"pip install 'aed[{extra}]'" in err, err


def test_profile_with_rich_but_without_matplotlib_names_the_profile_extra(tmp_path: Path) -> None:
    blocked = [m for m in OPTIONAL if m != "rich"]
    p = _edge(["profile", "--engines", "loudness", "--source", "synthetic", "--bursts", "1", "--quiet",
               "--report", str(tmp_path / "report")], tmp_path, blocked)
    assert p.returncode == 1, p.stderr  # the PNG report needs matplotlib, which the profile extra brings
    err = p.stderr.strip().splitlines()[-1]
    assert "'matplotlib'" in err and "pip install 'aed[profile]'" in err, p.stderr


def test_edge_commands_run_without_any_extra(tmp_path: Path) -> None:
    clip = esc50_clips(1)[0]
    p = _edge(["detect", str(clip), "--format", "jsonl"], tmp_path)
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert events and all("event_label" in e or "label" in e for e in events), p.stdout
    p = _edge(["devices", "--json"], tmp_path)
    assert p.returncode == 0 and isinstance(json.loads(p.stdout), list), p.stderr
