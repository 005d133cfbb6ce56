"""The README's Python API example runs as written, from a directory other than the repository."""
import re
import subprocess
import sys
from pathlib import Path

from tests.audio_helpers import esc50_clips

ROOT = Path(__file__).resolve().parents[1]


def test_python_api_example_runs_from_any_directory(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    clip = esc50_clips(1)[0]                                   # a real 44.1 kHz ESC-50 recording
    (tmp_path / "clip.flac").write_bytes(clip.read_bytes())
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines and lines[-1].isdigit(), p.stdout            # the clip tag's class index was printed last
    if len(lines) > 1:
        assert all(ln.startswith("Event(") for ln in lines[:-1]), lines
