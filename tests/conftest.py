"""Fixtures with real parts: a private PulseAudio daemon as a virtual microphone."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest


class PulseServer:
    """A private PulseAudio daemon: null sink ``aed_sink`` (its monitor is the default source) and
    a pipe source ``aed_pipe``; a keep-alive stream of silence keeps the monitor flowing."""

    def __init__(self, root: Path):
        self.root = root
        self.socket = root / "native"
        self.fifo = root / "mic.fifo"
        self.env = {"PULSE_RUNTIME_PATH": str(root / "run"), "PULSE_STATE_PATH": str(root / "state"),
                    "PULSE_SERVER": f"unix:{self.socket}", "PULSE_COOKIE": str(root / "cookie")}
        self.proc: subprocess.Popen | None = None
        self.keepalive: subprocess.Popen | None = None

    def start(self) -> None:
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        script = self.root / "default.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            "load-module module-null-sink sink_name=aed_sink rate=48000 channels=2\n"
            f"load-module module-pipe-source source_name=aed_pipe file={self.fifo} format=float32le rate=16000 "
            "channels=1\n"
            "set-default-sink aed_sink\nset-default-source aed_sink.monitor\n")
        env = {**os.environ, **self.env, "HOME": str(self.root)}
        with open(self.root / "pulse.log", "wb") as log:   # the child keeps its own copy of the handle
            self.proc = subprocess.Popen(["pulseaudio", "-n", "-F", str(script), "--daemonize=no",
                                          "--exit-idle-time=-1", "--disallow-exit", "--log-target=stderr"], env=env,
                                         stdout=subprocess.DEVNULL, stderr=log)
        for _ in range(100):
            if subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited: {(self.root / 'pulse.log').read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError("pulseaudio did not come up in 10 s")
        os.environ.update(self.env)
        self.keepalive = subprocess.Popen(["pacat", "--playback", "--device=aed_sink", "--format=float32le",
                                           "--rate=48000", "--channels=1", "--raw", "/dev/zero"], env=env)

    def play(self, path: Path, wait: bool = True) -> subprocess.Popen:
        p = subprocess.Popen(["paplay", "--device=aed_sink", str(path)], env={**os.environ, **self.env})
        if wait:
            p.wait(timeout=60)
        return p

    def kill(self) -> None:
        _wait_for_stream_closes()          # a stream closing against this server finishes before it goes
        for p in (self.keepalive, self.proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        for k in self.env:
            os.environ.pop(k, None)


def _wait_for_stream_closes(timeout_s: float = 20.0) -> None:
    from realtime.capture import wait_for_stream_closes

    left = wait_for_stream_closes(timeout_s)
    if left:
        raise RuntimeError(f"{left} audio stream(s) still closing inside PortAudio after {timeout_s:.0f} s; "
                           "terminating PortAudio now would abort the process")


def _rescan_portaudio() -> None:
    # PortAudio reads the device list when it initialises; re-initialise after the daemon is up. Never while a
    # stream is still closing on another thread (a frozen-server test's abort): Pa_Terminate beside it aborts.
    import sounddevice as sd

    _wait_for_stream_closes()
    sd._terminate()
    sd._initialize()


@pytest.fixture(scope="session")
def pulse(tmp_path_factory):
    if shutil.which("pulseaudio") is None or shutil.which("pacat") is None:
        pytest.skip("pulseaudio / pulseaudio-utils not installed (make test installs them)")
    try:
        import sounddevice  # noqa: F401
    except OSError as e:
        pytest.skip(f"PortAudio missing: {e} (apt-get install libportaudio2)")
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    server.start()
    _rescan_portaudio()
    yield server
    server.stop()
    _rescan_portaudio()
