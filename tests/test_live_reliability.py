"""Long and disturbed live runs (issue 15): bounded memory, our own stalls, lost audio, frozen sound server.

The live-path tests use the real private PulseAudio daemon (``pulse`` fixture) and real sounddevice capture;
stalls of our own process are real SIGSTOP/SIGCONT of a child process. Every wait has a timeout and every
stopped process is continued in a ``finally``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime import Detector, DetectorConfig, FrontEndConfig, WindowConfig
from realtime.capture import MicrophoneCapture, StreamClock
from realtime.pipeline import LiveRunner
from realtime.ring import RingBuffer
from tests.audio_helpers import LoudnessEngine, tone_burst

ROOT = Path(__file__).resolve().parents[1]
AED = ROOT / ".venv" / "bin" / "aed"
HOP = 0.1
CFG = DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), window=WindowConfig(0.5, HOP))


class BurstSource:
    """``seconds`` of synthetic audio generated block by block (nothing held in memory): a burst every ``every_s``."""

    def __init__(self, seconds: float, rate: int = 16000, block_s: float = 0.1, every_s: float = 2.0):
        self.rate, self.seconds, self.block, self.every = rate, seconds, int(block_s * rate), every_s
        self._stop = False
        burst = tone_burst(rate, every_s, 0.5, 0.2, noise=1e-3)
        self._period = burst.reshape(-1, self.block)                    # (blocks per period, block)

    def stop(self) -> None:
        self._stop = True

    def blocks(self):
        n = int(self.seconds * self.rate) // self.block
        for i in range(n):
            if self._stop:
                return
            yield self._period[i % self._period.shape[0]]


def test_runner_history_stays_bounded_over_many_blocks():
    src = BurstSource(600.0)                                            # 10 min of audio, a burst every 2 s
    runner = LiveRunner(Detector(LoudnessEngine(), CFG), src, keep=100)
    runner.run_blocking()
    assert runner.error is None
    s = runner.summary()
    assert s["events"] == 300                                           # counted, though only 100 are kept
    assert len(runner.all_events) == 100 and len(runner.block_waits) == 100
    assert runner.all_events[-1].kind == "offset" and not hasattr(runner, "events")


def test_non_finite_duration_is_a_one_line_user_error(capsys):
    from apps.cli import main

    for bad in ("nan", "inf", "-inf", "0"):
        assert main(["listen", f"--duration={bad}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--duration must be a finite number of seconds" in err[0], err
    from realtime.errors import ConfigError

    with pytest.raises(ConfigError, match="finite"):
        LiveRunner(Detector(LoudnessEngine(), CFG), BurstSource(1.0), duration_s=float("nan"))


# -- the stream clock: lost audio found from the callbacks themselves ----------------------------------------

def _drive(cap: MicrophoneCapture, audio: np.ndarray, rate: int, lost: tuple[float, float] | None = None,
           late: tuple[float, float] | None = None, adc: bool = False) -> None:
    """Feed ``audio`` (the true timeline) through the real callback in 20 ms blocks, on a fake wall clock.

    ``lost=(t, d)``: the device never delivers ``d`` seconds from ``t`` (callbacks pause, then go on live).
    ``late=(t, d)``: callbacks pause ``d`` seconds at ``t``, then the backlog comes in a burst (nothing lost).
    """
    import sounddevice as sd

    class TimeInfo:
        inputBufferAdcTime = 0.0

    n = int(0.02 * rate)
    now = [0.0]
    cap._clock = lambda: now[0]
    ti = TimeInfo()
    flags = sd.CallbackFlags()
    burst_until = None
    for i in range(0, audio.shape[0] - n + 1, n):
        t = i / rate                                  # true time of the block's first sample
        if lost and lost[0] <= t < lost[0] + lost[1]:
            continue                                  # never delivered
        if late and late[0] <= t < late[0] + late[1]:
            burst_until = late[0] + late[1]
            now[0] = burst_until + 1e-4 * ((t - late[0]) / 0.02)    # the backlog, 0.1 ms apart
        else:
            now[0] = t + n / rate + 0.002             # a callback runs just after its block is complete
        ti.inputBufferAdcTime = (1000.0 + t) if adc else 0.0
        cap._callback(audio[i:i + n, None], n, ti, flags)


@pytest.mark.parametrize("adc", [False, True], ids=["wall-clock", "adc-clock"])
@pytest.mark.parametrize("case", ["lost", "late"])
def test_lost_audio_becomes_a_gap_in_place_and_event_times_stay_true(case, adc):
    rate = 16000
    audio = tone_burst(rate, 6.0, 1.0, 0.2) + tone_burst(rate, 6.0, 4.5, 0.2, seed=1)
    cap = MicrophoneCapture(samplerate=rate, channels=1)
    cap.samplerate, cap.channels = rate, 1
    cap.ring, cap.clock = RingBuffer(10 * rate, 1), StreamClock(rate)
    span = (2.0, 1.2)
    _drive(cap, audio, rate, lost=span if case == "lost" else None, late=span if case == "late" else None, adc=adc)
    cap.ring.close()
    fed = cap.ring.available
    runner = LiveRunner(Detector(LoudnessEngine(), CFG), cap, duration_s=fed / rate)
    runner.run_blocking()
    assert runner.error is None
    onsets = [e.onset_s for e in runner.all_events if e.kind == "onset"]
    assert len(onsets) == 2 and abs(onsets[0] - 1.0) <= HOP + 1e-6 and abs(onsets[1] - 4.5) <= HOP + 1e-6, onsets
    s = runner.summary()
    if case == "lost":
        assert s["gaps"] == 1 and cap.clock.discontinuities == 1
        assert s["lost_s"] == pytest.approx(1.2, abs=0.05)
    else:
        assert s["gaps"] == 0 and s["lost_s"] == 0.0
    assert s["stalls"] == 1


def test_plain_read_runs_across_gaps_and_still_reports_them():
    from realtime.ring import Gap

    cap = MicrophoneCapture(samplerate=16000, channels=1)
    cap.samplerate, cap.channels, cap.ring = 16000, 1, RingBuffer(100, 1)
    cap.ring.write(np.ones((30, 1), np.float32))
    cap.ring.mark_gap(5)
    cap.ring.write(np.ones((20, 1), np.float32))
    assert cap.read(timeout=0, until_gap=True).shape == (30,)          # the runner's way: stop at the gap
    assert cap.take_gaps() == [Gap(30, 5, "discontinuity")]
    cap.ring.mark_gap(2)
    cap.ring.write(np.ones((4, 1), np.float32))
    assert cap.read(timeout=0).shape == (24,)                          # other callers read across it
    assert cap.take_gaps() == [Gap(55, 2, "discontinuity")]


# -- real capture through the private PulseAudio daemon -------------------------------------------------------

class _TapCapture(MicrophoneCapture):
    """The real capture, also keeping every block it was given (the producer's timeline, for ground truth)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.tapped: list[np.ndarray] = []

    def _callback(self, indata, frames, time_info, status):
        self.tapped.append(indata[:, 0].copy())
        super()._callback(indata, frames, time_info, status)


class _StallOnce(LoudnessEngine):
    """The loudness engine, hanging once for ``stall_s`` at its ``at``-th call (a slow consumer)."""

    def __init__(self, at: int, stall_s: float):
        super().__init__()
        self.at, self.stall_s = at, stall_s

    def infer(self, x):
        if self.calls == self.at:
            time.sleep(self.stall_s)
        return super().infer(x)


def _onsets_from(wave: np.ndarray, rate: int, level: float = 0.25) -> np.ndarray:
    loud = np.flatnonzero(np.abs(wave) > level)
    if loud.size == 0:
        return np.array([])
    starts = [loud[0]] + [b for a, b in zip(loud[:-1], loud[1:]) if b - a > rate // 2]
    return np.array(starts) / rate


@pytest.mark.audio
@pytest.mark.slow
def test_ring_overrun_keeps_buffered_audio_before_the_gap(pulse, tmp_path, caplog):
    rate = 48000
    track = sum(tone_burst(rate, 12.0, 0.6 + 1.3 * k, 0.15, noise=0.0, amp=0.6) for k in range(9))
    path = tmp_path / "bursts.wav"
    sf.write(path, track, rate, subtype="FLOAT")
    cap = _TapCapture(samplerate=rate, channels=1, ring_s=1.0).start()
    det = Detector(_StallOnce(at=40, stall_s=3.0), CFG.override(input_rate=cap.rate))     # for the stream's rate
    runner = LiveRunner(det, cap, duration_s=11.0)
    caplog.set_level(logging.WARNING, logger="realtime.pipeline")
    player = None
    try:
        runner.start()
        time.sleep(0.5)
        player = pulse.play(path, wait=False)
        assert runner.join(timeout=40)
    finally:
        runner.stop()
        runner.join(10)
        if player is not None and player.poll() is None:
            player.kill()
            player.wait(10)
    s = runner.summary()
    assert runner.error is None
    assert s["overruns"] > 0 and s["dropped_samples"] > rate              # the 1 s ring overflowed for ~2 s
    assert s["gaps"] == 1 and s["lost_s"] == pytest.approx(s["dropped_samples"] / rate, abs=1e-3)
    assert len([r for r in caplog.records if "lost" in r.getMessage()]) == 1   # one warning for one stall
    truth = _onsets_from(np.concatenate(cap.tapped), rate)                 # on the producer's timeline
    onsets = np.array([e.onset_s for e in runner.all_events if e.kind == "onset"])
    assert len(truth) >= 7 and len(onsets) >= 5, (truth, onsets)
    # where the gap ended: after it the detector waits for one full window, so a burst that starts within that
    # window is stamped at the first window's newest hop, not at its own onset (where the stall ends depends on
    # the machine's load)
    lost = next(r for r in caplog.records if "lost" in r.getMessage()).getMessage()
    gap_end = float(re.search(r"at ([0-9.]+) s", lost).group(1)) + s["lost_s"]
    win = CFG.window.window_s
    for t in onsets:                                                       # none shifted by the drop
        near = truth[np.argmin(np.abs(truth - t))]
        if gap_end - 0.01 <= near < gap_end + win and t <= gap_end + win:
            continue
        assert np.min(np.abs(truth - t)) <= HOP + 0.03, (t, truth, gap_end)


CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from realtime import Detector, DetectorConfig, FrontEndConfig, WindowConfig
from realtime.capture import MicrophoneCapture
from realtime.pipeline import LiveRunner
from tests.audio_helpers import LoudnessEngine

cfg = DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), window=WindowConfig(0.5, 0.1))
cap = MicrophoneCapture(samplerate=48000, channels=1).start()
t_end = time.perf_counter() + 10
while cap.callbacks == 0 and time.perf_counter() < t_end:
    time.sleep(0.02)
det = Detector(LoudnessEngine(), cfg.override(input_rate=cap.rate))
runner = LiveRunner(det, cap, duration_s=float(sys.argv[2]),
                    on_event=lambda e: print(json.dumps(e.to_dict()), flush=True))
print("ready", flush=True)
runner.run_blocking()
print(json.dumps({"summary": runner.summary()}), flush=True)
"""


def _child_stalls(pulse, tmp_path, stops: list[tuple[float, float]], seconds: float, every_s: float = 1.5):
    rate = 48000
    track = sum(tone_burst(rate, seconds, 0.5 + every_s * k, 0.15, noise=0.0, amp=0.6)
                for k in range(int((seconds - 1.0) / every_s)))
    path = tmp_path / "track.wav"
    sf.write(path, track, rate, subtype="FLOAT")
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(seconds + 1.5)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ})
    player = None
    try:
        assert p.stdout.readline().strip() == "ready"
        player = pulse.play(path, wait=False)
        t0 = time.perf_counter()
        for at, dur in stops:
            time.sleep(max(0.0, at - (time.perf_counter() - t0)))
            os.kill(p.pid, signal.SIGSTOP)
            try:
                time.sleep(dur)
            finally:
                os.kill(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=seconds + 30)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.communicate(timeout=10)
        if player is not None and player.poll() is None:
            player.kill()
            player.wait(10)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    summary = lines[-1]["summary"]
    onsets = np.array([e["onset_s"] for e in lines[:-1] if e.get("kind") == "onset"])
    return p.returncode, summary, onsets, err


@pytest.mark.audio
@pytest.mark.slow
def test_sigstop_of_our_process_keeps_listening_and_keeps_the_timeline(pulse, tmp_path):
    """A 1.2 s and a 3 s pause of our own process: no false device error, stalls counted, and every onset
    after the pauses still lies on the 1.5 s grid of the bursts (audio lost would have to be counted)."""
    rc, s, onsets, err = _child_stalls(pulse, tmp_path, [(2.3, 1.2), (6.2, 3.0)], seconds=13.0)
    assert rc == 0 and s["error"] is None, err[-2000:]
    assert s["stalls"] >= 2                                             # both pauses seen and counted
    assert len(onsets) >= 7, onsets
    # lost audio is either counted (lost_s) or did not happen: the grid holds across both pauses
    steps = np.diff(onsets) / 1.5
    assert np.all(np.abs(steps - np.round(steps)) * 1.5 <= 2 * HOP + 0.03), (onsets, s)
    assert s["lost_s"] >= 0.0 and (s["lost_s"] == 0.0) == (s["gaps"] == 0)


@pytest.mark.audio
@pytest.mark.slow
def test_aed_listen_survives_sigstop_sigcont(pulse):
    p = subprocess.Popen([str(AED), "listen", "--duration", "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ})
    try:
        time.sleep(3.0)
        os.kill(p.pid, signal.SIGSTOP)
        try:
            time.sleep(3.0)
        finally:
            os.kill(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=40)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.communicate(timeout=10)
    assert p.returncode == 0, err[-2000:]
    s = json.loads(out.splitlines()[-1])["summary"]
    assert s["error"] is None and s["stalls"] >= 1 and "lost_s" in s
    assert s["audio_s"] >= 7.9


def _tail(f, n: int = 2000) -> str:
    f.seek(0)
    return f.read()[-n:]


@pytest.mark.audio
@pytest.mark.slow
@pytest.mark.parametrize("interrupt", [True, False], ids=["ctrl-c", "device-error"])
def test_frozen_sound_server_ends_aed_listen_in_bounded_time(pulse, interrupt):
    # ctrl-c first: a sound server just thawed from the device-error case can stay dry for seconds, and a dry
    # stream before the freeze makes the device error win the race against Ctrl-C
    err_file = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen([str(AED), "-v", "listen", "--duration", "60"], stdout=subprocess.PIPE,
                         stderr=err_file, text=True, env={**os.environ})
    frozen = False
    try:
        deadline = time.monotonic() + 30                              # it loads the model (slow on a busy machine)
        while time.monotonic() < deadline and p.poll() is None:
            err_file.seek(0)
            if "capturing from" in err_file.read():
                break
            time.sleep(0.1)
        assert p.poll() is None, _tail(err_file)
        time.sleep(2.0)                                               # then captures for a while
        assert p.poll() is None, _tail(err_file)
        os.kill(pulse.proc.pid, signal.SIGSTOP)
        frozen = True
        t0 = time.perf_counter()
        if interrupt:
            time.sleep(0.5)
            p.send_signal(signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("aed listen hung on a frozen sound server")
        took = time.perf_counter() - t0
    finally:
        if frozen:
            os.kill(pulse.proc.pid, signal.SIGCONT)
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)
    err = _tail(err_file, 100_000)
    assert took < 15
    s = json.loads([line for line in out.splitlines() if line.startswith('{"summary"')][-1])["summary"]
    if interrupt:
        # a clean stop; or, a known race seen only in full fresh-clone runs (issue 14/18 closing note): the stream
        # was already dry before the freeze, so the dry-device error was raised before Ctrl-C arrived. Either way
        # the run ends in bounded time with a one-line outcome and no traceback.
        dry_first = p.returncode == 1 and s["error"] is not None and "no audio from the input device" in s["error"]
        assert (p.returncode == 0 and s["error"] is None) or dry_first, (s, err[-2000:])
    else:
        assert p.returncode == 1 and "sound server" in s["error"] and "no audio from the input device" in s["error"]
        assert err.strip().splitlines()[-1].startswith("aed listen: error:"), err[-2000:]
    assert "Traceback" not in err
