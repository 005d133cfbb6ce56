"""The microphone path for real: a private PulseAudio daemon, PortAudio through ALSA, sounddevice."""
import os
import time

import numpy as np
import pytest
import soundfile as sf

from realtime import Detector, DetectorConfig, FrontEndConfig, WindowConfig
from realtime.capture import DeviceError, MicrophoneCapture, list_input_devices
from realtime.pipeline import LiveRunner
from tests.audio_helpers import LoudnessEngine, esc50_clips, tone_burst

pytestmark = pytest.mark.audio


def capture_while(pulse, play_path, rate=48000, channels=2, settle_s=0.3, tail_s=0.6):
    cap = MicrophoneCapture(samplerate=rate, channels=channels, block_s=0.02).start()
    got = []
    try:
        t_end = time.perf_counter() + 10
        while not got and time.perf_counter() < t_end:      # wait for the first callback
            b = cap.read(timeout=0.5)
            if b.size:
                got.append(b)
        time.sleep(settle_s)
        pulse.play(play_path)
        t_stop = time.perf_counter() + tail_s
        while time.perf_counter() < t_stop:
            got.append(cap.read(timeout=0.1))
    finally:
        cap.stop()
    got.append(cap.read(timeout=0))
    return np.concatenate(got), cap


def test_devices_are_listed(pulse):
    devs = list_input_devices()
    assert any(d["default"] for d in devs), devs


def test_real_clip_arrives_in_the_ring_intact(pulse, tmp_path):
    clip, rate = sf.read(esc50_clips(3)[2], dtype="float32")      # a real ESC-50 recording, 16 kHz
    clip = 0.8 * clip / max(1e-6, np.abs(clip).max())
    path = tmp_path / "clip.wav"
    sf.write(path, clip, rate, subtype="FLOAT")
    # capture at 16 kHz mono: PulseAudio resamples the 48 kHz stereo monitor for us
    mono, cap = capture_while(pulse, path, rate=16000, channels=1)
    assert cap.samplerate == 16000 and cap.callbacks > 10
    energy = np.convolve(clip ** 2, np.ones(8000), "valid")
    lo = int(np.argmax(energy))
    seg = clip[lo:lo + 8000]                                     # the loudest half second
    corr = np.correlate(mono, seg, "valid")
    i = int(np.argmax(np.abs(corr)))
    ncc = corr[i] / (np.linalg.norm(seg) * np.linalg.norm(mono[i:i + seg.shape[0]]) + 1e-12)
    assert ncc > 0.95, ncc


def test_stereo_48k_device_is_downmixed_and_burst_detected_within_one_hop(pulse, tmp_path):
    burst = tone_burst(48000, 3.0, 1.0, 0.8, noise=0.0)
    path = tmp_path / "burst.wav"
    sf.write(path, burst, 48000, subtype="FLOAT")
    mono, cap = capture_while(pulse, path, rate=48000, channels=2)
    assert cap.channels == 2 and mono.ndim == 1
    # where did the burst start in the captured signal? (sample-exact, from the waveform)
    start = int(np.argmax(np.abs(mono) > 0.05))
    true_onset_s = start / 48000
    cfg = DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), window=WindowConfig(1.0, 0.1), input_rate=48000)
    det = Detector(LoudnessEngine(), cfg)
    events = []
    for i in range(0, mono.shape[0], 960):                       # 20 ms device blocks, as captured
        events += det.push(mono[i:i + 960])
    events += det.flush()
    onsets = [e.onset_s for e in events if e.kind == "onset"]
    assert len(onsets) == 1, events
    assert abs(onsets[0] - true_onset_s) <= 0.1 + 1e-6, (onsets, true_onset_s)


def test_live_runner_through_the_virtual_microphone(pulse, tmp_path):
    burst = tone_burst(48000, 2.0, 0.5, 0.5, noise=0.0)
    path = tmp_path / "burst2.wav"
    sf.write(path, burst, 48000, subtype="FLOAT")
    cap = MicrophoneCapture(samplerate=48000, channels=1).start()
    cfg = DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), window=WindowConfig(1.0, 0.1), input_rate=cap.rate)
    det = Detector(LoudnessEngine(), cfg)
    runner = LiveRunner(det, cap, duration_s=6.0).start()
    time.sleep(2.0)
    pulse.play(path)
    assert runner.join(timeout=20)
    s = runner.summary()
    assert runner.error is None and runner.detector is det          # the caller's detector, never rebuilt
    assert s["events"] == 1 and s["windows"] > 30
    assert s["overruns"] == 0


def test_live_runner_refuses_a_detector_for_another_rate(pulse):
    from realtime.errors import ConfigError

    cap = MicrophoneCapture(samplerate=48000, channels=1)          # not started: the runner opens it
    det = Detector(LoudnessEngine(), DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64)))     # 16 kHz
    runner = LiveRunner(det, cap, duration_s=1.0)
    with pytest.raises(ConfigError, match=r"takes 16000 Hz but the source delivers 48000 Hz.*input_rate=48000"):
        runner.start()
    assert runner.detector is det and cap._stream is None            # nothing rebuilt; the stream closed again


def test_input_overflow_flags_are_counted():
    import sounddevice as sd

    cap = MicrophoneCapture(samplerate=16000, channels=1)
    from realtime.capture import StreamClock
    from realtime.ring import RingBuffer

    cap.ring, cap.clock = RingBuffer(1000, 1), StreamClock(16000)     # what start() sets up
    block = np.zeros((400, 1), np.float32)
    cap._callback(block, 400, None, sd.CallbackFlags(sd._lib.paInputOverflow))
    cap._callback(block, 400, None, sd.CallbackFlags())
    cap._callback(block, 400, None, sd.CallbackFlags(sd._lib.paInputOverflow))   # also overruns the ring
    assert cap.input_overflows == 2
    assert cap.overruns == 1 and cap.ring.dropped_samples == 200


def test_stalled_consumer_overruns_are_counted_not_hidden(pulse):
    cap = MicrophoneCapture(samplerate=16000, channels=1, ring_s=0.5).start()
    try:
        time.sleep(2.5)                     # consumer stalls: the 0.5 s ring must overflow
        assert cap.overruns > 0 and cap.ring.dropped_samples > 0
        gaps = cap.ring.pending_gaps()              # not reached by a reader yet: still all recorded
        assert sum(g.length for g in gaps) == cap.ring.dropped_samples
        assert len(gaps) == 1                       # one stall of the consumer is one gap
    finally:
        cap.stop()


def test_device_that_disappears_raises_instead_of_hanging(tmp_path):
    server, restore = _private_server(tmp_path / "p2")
    cap = MicrophoneCapture(samplerate=16000, channels=1, stall_timeout_s=1.0).start()
    try:
        t_end = time.perf_counter() + 10
        while cap.callbacks == 0 and time.perf_counter() < t_end:
            time.sleep(0.05)
        assert cap.callbacks > 0
        server.kill()                         # the device vanishes
        t0 = time.perf_counter()
        with pytest.raises(DeviceError):
            while time.perf_counter() - t0 < 15:
                cap.read(timeout=0.2)
        assert time.perf_counter() - t0 < 15
    finally:
        cap.abort()
        restore()


def _private_server(tmp_path):
    from tests.conftest import PulseServer, _rescan_portaudio

    saved = {k: os.environ.get(k) for k in ("PULSE_RUNTIME_PATH", "PULSE_STATE_PATH", "PULSE_SERVER",
                                            "PULSE_COOKIE")}
    server = PulseServer(tmp_path)
    try:
        server.start()
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"cannot start a private pulseaudio: {e}")
    _rescan_portaudio()

    def restore():
        server.stop()
        for k, v in saved.items():
            if v is not None:
                os.environ[k] = v
        _rescan_portaudio()
    return server, restore


def test_stream_gone_dry_is_aborted_with_a_device_error(tmp_path):
    """A stream that stays open but delivers nothing (the sound server hangs) is aborted, not waited on."""
    import signal
    import threading

    server, restore = _private_server(tmp_path / "p3")
    cap = MicrophoneCapture(samplerate=16000, channels=1, stall_timeout_s=1.0).start()
    try:
        t_end = time.perf_counter() + 10
        while cap.callbacks == 0 and time.perf_counter() < t_end:
            time.sleep(0.05)
        assert cap.callbacks > 0
        os.kill(server.proc.pid, signal.SIGSTOP)          # the server hangs: no more audio, stream still open
        resume = threading.Timer(4.0, os.kill, (server.proc.pid, signal.SIGCONT))
        resume.start()
        t0 = time.perf_counter()
        with pytest.raises(DeviceError, match="no audio from the input device"):
            while time.perf_counter() - t0 < 20:
                cap.read(timeout=0.2)
        assert cap._stream is None                         # aborted
        resume.join()
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        cap.abort()
        restore()
