"""First-run messages: what ``aed devices`` suggests when it finds no microphone, and ``aed models`` without the
internal ``*_test`` variants."""
from __future__ import annotations

import pytest

from apps.cli import main


def test_devices_says_what_to_do_when_there_are_none(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    import realtime.capture

    monkeypatch.setattr(realtime.capture, "list_input_devices", lambda: [])
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no input devices found\n")
    assert "pactl info" in out  # check the sound server
    assert "--device N" in out and "--source FILE" in out and 'make run ARGS="--source FILE"' in out
    assert main(["devices", "--json"]) == 0 and capsys.readouterr().out.strip() == "[]"  # JSON stays plain


def test_devices_lists_without_the_hint(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import realtime.capture

    dev = {"index": 3, "name": "USB mic", "hostapi": "ALSA", "channels": 1, "default_samplerate": 48000.0,
           "default": True}
    monkeypatch.setattr(realtime.capture, "list_input_devices", lambda: [dev])
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "USB mic" in out and "*     3" in out and "--source" not in out


def test_models_hides_test_variants_unless_all(capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("torch")
    assert main(["models"]) == 0
    shown = capsys.readouterr().out.split()
    assert "datar_mn04" in shown and "ast_base" in shown
    assert not [n for n in shown if n.endswith("_test")]
    assert main(["models", "--all"]) == 0
    everything = capsys.readouterr().out.split()
    assert {"ast_test", "datar_test", "mn_test", "datar_mn_test"} <= set(everything)
    assert set(shown) < set(everything)
    assert main(["models", "*_test"]) == 1  # only hidden variants match: say how to see them
    captured = capsys.readouterr()
    assert captured.out == "" and "--all" in captured.err
    assert main(["models", "*_test", "--all"]) == 0
    from models import list_models

    assert capsys.readouterr().out.split() == list_models("*_test")
