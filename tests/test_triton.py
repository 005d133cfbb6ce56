"""Triton serving with real parts: a real ``tritonserver`` (PyTriton) on loopback, real tritonclient requests, the
shipped model, real ESC-50 audio. One in-process server per module (ephemeral ports, stopped by its handle); the
outage test runs its own server in a child process so that it can kill it and bring it back on the same ports."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from engines.base import EngineError, MissingDependencyError, ModelFileError
from realtime.errors import AedError, ConfigError
from tests.audio_helpers import esc50_clips

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "pretrained" / "aed_default"
pytestmark = pytest.mark.skipif(not (MODEL / "model.onnx").is_file(), reason="the shipped model is not present")


def _threads_one():
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")
    from engines.triton_serve import TritonServer

    _threads_one()
    srv = TritonServer(MODEL, host="127.0.0.1", http_port=0, grpc_port=0, metrics_port=0, max_batch=64,
                       max_queue_delay_ms=2)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def local():
    from engines.ort_engine import OnnxRuntimeEngine

    with OnnxRuntimeEngine(MODEL) as eng:
        yield eng


def _one_line(e: BaseException, url: str) -> None:
    text = str(e)
    assert "\n" not in text and url in text, text


# -- no server needed ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, want", [
    ("grpc://10.0.0.1:9001/m", ("grpc", "10.0.0.1", 9001, "m", "")),
    ("http://host/m/2", ("http", "host", 8000, "m", "2")),
    ("grpc://host/m", ("grpc", "host", 8001, "m", "")),
])
def test_parse_url(url, want):
    from engines.triton_engine import parse_url

    u = parse_url(url)
    assert (u.scheme, u.host, u.port, u.model, u.version) == want and str(parse_url(str(u))) == str(u)


@pytest.mark.parametrize("url", ["localhost:8001/m", "ftp://h:1/m", "grpc://h:1/", "grpc://h:99999/m", "grpc://h/m/x"])
def test_bad_url_says_what_is_accepted(url):
    from engines.triton_engine import TritonEngine

    with pytest.raises(ConfigError, match="expected grpc://HOST:PORT/MODEL"):
        TritonEngine(url)


def test_missing_tritonclient_names_what_to_install():
    from engines.triton_engine import TritonEngine

    with mock.patch.dict(sys.modules, {"tritonclient": None, "tritonclient.grpc": None}):
        with pytest.raises(MissingDependencyError, match="tritonclient"):
            TritonEngine("grpc://127.0.0.1:1/m")


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_unreachable_server_is_one_line_with_the_url_quickly(scheme):
    from engines.triton_engine import TritonEngine
    from engines.triton_serve import free_port

    url = f"{scheme}://127.0.0.1:{free_port()}/aed_default"
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="cannot reach") as ei:
        TritonEngine(url, connect_timeout_s=2)
    assert time.monotonic() - t0 < 5
    _one_line(ei.value, url)


def test_export_repo_parses_round_trips_and_matches_the_engine_spec(tmp_path, local):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    from apps.cmd_serve import main

    assert main(["--model", str(MODEL), "--export-repo", str(tmp_path), "--max-batch", "16",
                 "--instances", "2"]) == 0
    entry = tmp_path / "aed_default"
    text = (entry / "config.pbtxt").read_text()
    cfg = text_format.Parse(text, pb.ModelConfig())
    assert text_format.MessageToString(cfg) == text                                   # round trip
    again = text_format.Parse(text_format.MessageToString(cfg), pb.ModelConfig())
    assert again == cfg
    assert cfg.name == "aed_default" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 16 and cfg.HasField("dynamic_batching")
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 5000
    assert [g.count for g in cfg.instance_group] == [2]
    (inp,) = cfg.input
    assert inp.name == "fbank" and inp.data_type == pb.TYPE_FP32 and list(inp.dims) == [-1, local.spec.num_mel_bins]
    c = len(local.labels)
    assert {o.name: list(o.dims) for o in cfg.output} == {"scores": [c], "frame_scores": [-1, c]}
    aed = json.loads(cfg.parameters["aed_config"].string_value)
    from realtime.config import ModelConfig
    assert ModelConfig.from_dict(aed) == local.config
    assert (entry / "1" / "model.onnx").read_bytes() == (MODEL / "model.onnx").read_bytes()
    # the exported spec is what the engine accepts at that batch limit
    from engines.ort_engine import OnnxRuntimeEngine
    with OnnxRuntimeEngine(entry / "1" / "model.onnx", max_batch=cfg.max_batch_size) as eng:
        assert (eng.spec.num_mel_bins, eng.spec.max_batch) == (inp.dims[1], cfg.max_batch_size)
        assert eng.labels == local.labels
    with pytest.raises(ModelFileError, match="already exists"):
        from engines.triton_repo import export_repository
        export_repository(MODEL, tmp_path)


def test_export_repo_of_a_plan_strips_the_aed_header(tmp_path, local):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    from engines.trt_build import write_plan
    from engines.triton_repo import export_repository

    blob = os.urandom(4096)
    f = local.spec.num_mel_bins
    profile = {"input_name": "fbank", "min": [1, 50, f], "opt": [1, 100, f], "max": [8, 300, f]}
    plan = tmp_path / "m.plan"
    write_plan(plan, blob, {"key": "k", "key_fields": {"profile": profile, "precision": "fp16"},
                            "config": local.config.to_dict(), "outputs": ["scores", "frame_scores"]})
    pbtxt = export_repository(plan, tmp_path / "repo", max_batch=64)
    cfg = text_format.Parse(pbtxt.read_text(), pb.ModelConfig())
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 8                # the profile's limit
    assert (pbtxt.parent / "1" / "model.plan").read_bytes() == blob
    aed = json.loads(cfg.parameters["aed_config"].string_value)
    assert (aed["input"]["t_min"], aed["input"]["t_max"], aed["input"]["max_batch"]) == (50, 300, 8)


def test_exported_repo_in_a_real_tritonserver_and_a_not_ready_server(tmp_path):
    """The bundled tritonserver reads the exported config.pbtxt (it gets as far as asking for the ONNX Runtime
    backend, which PyTriton does not bundle); with the model not loaded the server is live but not ready."""
    pytriton = pytest.importorskip("pytriton")
    from engines.triton_engine import TritonEngine
    from engines.triton_repo import export_repository
    from engines.triton_serve import free_port

    export_repository(MODEL, tmp_path / "repo")
    site = Path(pytriton.__file__).parent
    binary = site / "tritonserver" / "bin" / "tritonserver"
    http, grpc = free_port(), free_port()
    env = {**os.environ, "LD_LIBRARY_PATH": str(site.parent / "nvidia_pytriton.libs")}
    proc = subprocess.Popen([str(binary), f"--model-repository={tmp_path / 'repo'}",
                             f"--backend-directory={site / 'tritonserver' / 'backends'}", "--exit-on-error=false",
                             "--strict-readiness=true", "--allow-metrics=false", "--http-address=127.0.0.1",
                             "--grpc-address=127.0.0.1", f"--http-port={http}", f"--grpc-port={grpc}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = []
        for line in proc.stdout:
            log.append(line)
            if "Started HTTPService" in line:
                break
        url = f"grpc://127.0.0.1:{grpc}/aed_default"
        t0 = time.monotonic()
        with pytest.raises(EngineError, match="not ready") as ei:
            TritonEngine(url, connect_timeout_s=2)
        assert time.monotonic() - t0 < 5
        _one_line(ei.value, url)
        text = "".join(log)
        assert "unable to find backend library for backend 'onnxruntime'" in text      # parsed, platform mapped
        assert "config.pbtxt" not in text or "failed to parse" not in text.lower()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- against the module's server -------------------------------------------------------------------------------
def test_server_ready_on_ephemeral_ports_with_the_aed_config(server, local):
    assert all(p > 0 for p in server.ports.values()) and server.running
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    cfg = c.get_model_config("aed_default", as_json=True, client_timeout=5)["config"]
    c.close()
    assert int(cfg["max_batch_size"]) == 64 and "dynamic_batching" in cfg
    assert json.loads(cfg["parameters"]["aed_config"]["string_value"]) == local.config.to_dict()


def test_wrong_model_name_is_one_line_with_the_url(server):
    from engines.triton_engine import TritonEngine

    for url in (server.grpc_url[:-len("aed_default")] + "other", server.http_url[:-len("aed_default")] + "other"):
        t0 = time.monotonic()
        with pytest.raises(ModelFileError, match="serves no ready model 'other'") as ei:
            TritonEngine(url)
        assert time.monotonic() - t0 < 5
        _one_line(ei.value, url)


def test_a_model_without_the_aed_config_is_refused(server):
    from engines.triton_engine import TritonEngine

    with TritonEngine(server.grpc_url) as eng:
        cfg = dict(eng._config_json, parameters={})
        with pytest.raises(ModelFileError, match="is not an aed model") as ei:
            eng._read_config(cfg)
        _one_line(ei.value, server.grpc_url)


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_remote_infer_equals_local(server, local, scheme):
    from engines.triton_engine import TritonEngine

    url = server.grpc_url if scheme == "grpc" else server.http_url
    with TritonEngine(url) as eng:
        assert eng.config == local.config and eng.labels == local.labels and eng.has_frames
        assert eng.spec == local.spec
        rng = np.random.default_rng(0)
        for b, t in ((1, 100), (7, 50), (3, 250)):
            x = rng.standard_normal((b, t, local.spec.num_mel_bins)).astype(np.float32)
            np.testing.assert_allclose(eng.infer(x), local.infer(x), atol=1e-6)
            for got, want in zip(eng.infer_frames(x), local.infer_frames(x)):
                np.testing.assert_allclose(got, want, atol=1e-6)
        with pytest.raises(ValueError, match="outside the accepted range"):
            eng.infer(np.zeros((1, 20, local.spec.num_mel_bins), np.float32))
        assert eng.lost_windows == 0


def test_create_engine_knows_the_triton_kind(server):
    """``create_engine('triton', URL)``: fails (not skips) until engines/__init__.py lists the kind."""
    from engines import ENGINE_KINDS, create_engine

    assert "triton" in ENGINE_KINDS
    with create_engine("triton", server.grpc_url, threads=1) as eng:
        assert eng.name == "triton" and eng.url.model == "aed_default"


def test_events_from_a_real_file_equal_the_local_engine(server, local):
    import soundfile as sf

    from engines.triton_engine import TritonEngine
    from realtime.detector import Detector
    from realtime.pipeline import LiveRunner
    from realtime.sources import FileSource

    clips = esc50_clips(3)
    with TritonEngine(server.grpc_url) as remote:
        fired = 0
        for clip in clips:
            audio, rate = sf.read(clip, dtype="float32")
            det_l = Detector(local)
            det_l = det_l.with_config(input_rate=rate)
            want = [e.to_dict() for e in det_l.process(audio)]
            got = [e.to_dict() for e in Detector(remote).with_config(input_rate=rate).process(audio)]
            assert got == want
            fired += bool(want)
        assert fired, "the shipped model should fire on some of these ESC-50 clips"
        # the live path: a file through LiveRunner on the remote engine
        run = LiveRunner(Detector(remote), FileSource(clips[0], realtime=False))
        run.run_blocking()
        assert run.error is None and run.summary()["windows"] > 0
        assert [e.to_dict() for e in run.all_events] == [e.to_dict() for e in
                                                         Detector(local).with_config(input_rate=rate).process(
                                                             sf.read(clips[0], dtype="float32")[0])]
        assert remote.lost_windows == 0


def test_cli_listen_with_the_triton_engine(server, capsys):
    """``aed listen --source FILE --engine triton --server URL --fast``: fails (not skips) until the CLI is wired."""
    from apps.cli import main

    clip = esc50_clips(1)[0]
    code = main(["listen", "--source", str(clip), "--fast", "--engine", "triton", "--server", server.grpc_url])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = [json.loads(line) for line in out.out.splitlines()]
    summary = lines[-1]["summary"]
    assert summary["engine"] == "triton" and summary["windows"] > 0 and summary["error"] is None
    assert main(["listen", "--source", str(clip), "--fast", "--engine", "onnxruntime", "--model", str(MODEL)]) == 0
    local_lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[:-1] == local_lines[:-1]


def test_multistream_windows_go_out_as_one_request(server, local):
    from engines.triton_engine import TritonEngine
    from realtime.multistream import MultiStreamRunner

    rng = np.random.default_rng(1)
    n = 8
    with TritonEngine(server.grpc_url) as remote:
        ms = MultiStreamRunner(remote, range(n))
        ref = MultiStreamRunner(local, range(n))
        chunks = {i: (0.1 * rng.standard_normal(16000 + 160 * 12)).astype(np.float32) for i in range(n)}
        r0, b0, w0 = remote.requests, server.batches, server.windows
        got = ms.push(chunks)
        want = ref.push(chunks)
        assert ms.windows_scored == ref.windows_scored >= n and ms.infer_calls == 1
        assert remote.requests - r0 == 1                                   # one request from the client...
        assert server.batches - b0 == 1 and server.windows - w0 == ms.windows_scored   # ...one batch on the server
        assert {k: [e.to_dict() for e in v] for k, v in got.items()} == \
            {k: [e.to_dict() for e in v] for k, v in want.items()}
        for sid in range(n):
            np.testing.assert_allclose(ms.detectors[sid].last_scores, ref.detectors[sid].last_scores, atol=1e-6)


# -- a server that dies mid-stream -----------------------------------------------------------------------------
class ServerProcess:
    """``python -m apps.cmd_serve`` in its own session: killed (SIGKILL, the whole group) and restarted by handle."""

    def __init__(self, ports: dict[str, int]):
        self.ports = ports
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.stderr = None                             # the current child's stderr (a temporary file)
        self.hung_starts = 0

    def start(self, timeout: float = 90.0, attempts: int = 2) -> "ServerProcess":
        """Start the server and wait (at most ``timeout`` s, however silent the child is) for its ready line.

        A start that hangs (the child alive, no ready line) is killed and tried again, up to ``attempts`` times in
        all, and counted in ``hung_starts``: in full fresh-clone runs a restarted PyTriton child has twice stayed
        inside ``Triton.run()`` for minutes with its server and model already ready (an open problem, not what this
        test is about: the client's outage handling). A child that exits fails at once.
        """
        for attempt in range(attempts):
            if self._start_once(timeout):
                return self
            if self.proc.returncode is not None and self.proc.returncode >= 0:
                break                                          # it exited by itself: no point in trying again
            self.hung_starts += 1
            print(f"aed serve start {attempt + 1} hung for {timeout:.0f} s; killed", file=sys.stderr)
        self.stderr.seek(0)
        tail = self.stderr.read()[-3000:]
        raise RuntimeError(f"aed serve printed no ready line ({self.hung_starts} hung start(s) of {timeout:.0f} s, "
                           f"exit {self.proc.returncode}); its stderr ends:\n{tail}")

    def _start_once(self, timeout: float) -> bool:
        cmd = [sys.executable, "-m", "apps.cmd_serve", "--model", str(MODEL), "--host", "127.0.0.1",
               "--http-port", str(self.ports["http"]), "--grpc-port", str(self.ports["grpc"]),
               "--metrics-port", str(self.ports["metrics"])]
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     start_new_session=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:                                   # the child closed its stdout: it has exited
                break
            if line.startswith("aed serve: ready "):
                self.info = json.loads(line.split("ready ", 1)[1])
                return True
        self.kill()
        return False

    @staticmethod
    def _pump(out, lines) -> None:
        """Every stdout line into ``lines``, then None at end of file (a reader the caller can wait on with a timeout)."""
        for line in out:
            lines.put(line)
        lines.put(None)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)       # the server and its tritonserver child: a hard crash
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@pytest.mark.slow
def test_a_server_killed_mid_stream_loses_counted_windows_and_comes_back(local):
    from engines.triton_engine import TritonEngine
    from engines.triton_serve import free_port
    from realtime.detector import Detector

    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    proc = ServerProcess(ports)
    try:
        proc.start()
        remote = TritonEngine(proc.info["grpc"], timeout_s=2, retry_s=0.2)
        det, ref = Detector(remote), Detector(local)
        rng = np.random.default_rng(2)
        hop = 1600                                     # 0.1 s: one window per chunk once the first is full

        def feed(k: int) -> tuple[int, float]:
            t0 = time.monotonic()
            n = 0
            for _ in range(k):
                chunk = (0.1 * rng.standard_normal(hop)).astype(np.float32)
                det.push(chunk)
                ref.push(chunk)
                n += 1
            return n, time.monotonic() - t0

        feed(15)
        assert remote.lost_windows == 0 and det.windows_scored > 0
        np.testing.assert_allclose(det.last_scores, ref.last_scores, atol=1e-6)
        proc.kill()                                    # dies mid-stream
        _, took = feed(10)
        assert remote.lost_windows == 10 and remote.outages == 1 and not remote.connected
        assert took < 5                                # a dead server costs the stream no time: it never hangs
        assert det.windows_scored == ref.windows_scored          # lost windows are still accounted, as zeros
        proc.start()                                   # back on the same ports
        time.sleep(0.3)
        feed(5)
        assert remote.connected and remote.lost_windows == 10 and remote.outages == 1
        np.testing.assert_allclose(det.last_scores, ref.last_scores, atol=1e-6)
        remote.close()
    finally:
        proc.stop()


def test_on_error_raise_reports_a_dead_server(server):
    """``on_error='raise'``: a request to a server that has gone raises one line with the URL, and never hangs."""
    from dataclasses import replace

    from engines.triton_engine import TritonEngine
    from engines.triton_serve import free_port

    with TritonEngine(server.grpc_url, on_error="raise", timeout_s=1) as eng:
        eng.url = replace(eng.url, port=free_port())   # the client's server is gone: nothing listens there now
        eng._drop_client()
        t0 = time.monotonic()
        with pytest.raises(EngineError, match="is not answering") as ei:
            eng.infer(np.zeros((2, 100, eng.spec.num_mel_bins), np.float32))
        assert time.monotonic() - t0 < 5 and isinstance(ei.value, AedError)
        _one_line(ei.value, str(eng.url))


def test_serve_refuses_a_port_in_use_at_once(capsys):
    import socket

    pytest.importorskip("pytriton")
    from apps.cmd_serve import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        t0 = time.monotonic()
        code = main(["--model", str(MODEL), "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", str(busy),
                     "--metrics-port", "0"])
    assert code == 1 and time.monotonic() - t0 < 10
    assert f"grpc port {busy} already in use" in capsys.readouterr().err


@pytest.mark.audio
@pytest.mark.slow
def test_a_slow_server_backs_up_the_microphone_ring_and_every_drop_is_counted(server, pulse, tmp_path):
    """Back-pressure for real: a real microphone (the private PulseAudio daemon) with a 1 s ring feeds a LiveRunner
    on the ``triton`` engine while an ESC-50 clip plays into it; the server takes 0.15 s per 0.1 s window (1.5x
    slower than real time), so the ring fills and drops; then the server is fast again and the runner catches up.
    Nothing is lost silently: every dropped sample is in
    ``lost_s``, the detector is told of the gaps, no window is lost on the wire, and nothing hangs."""
    import soundfile as sf

    from engines.triton_engine import TritonEngine
    from realtime.capture import MicrophoneCapture
    from realtime.detector import Detector, DetectorConfig
    from realtime.pipeline import LiveRunner

    clip, rate = sf.read(esc50_clips(1)[0], dtype="float32")
    path = tmp_path / "clip.wav"
    sf.write(path, np.tile(clip, 2), rate, subtype="FLOAT")                     # 10 s: plays for the whole run
    block_s = 0.02
    server.delay_per_window_s = 0.15
    player = None
    try:
        with TritonEngine(server.grpc_url, timeout_s=10) as remote:             # a slow batch is never a failure
            cap = MicrophoneCapture(samplerate=16000, channels=1, block_s=block_s, ring_s=1.0).start()
            det = Detector(remote, DetectorConfig.from_model(remote.config).override(input_rate=cap.rate))
            runner = LiveRunner(det, cap).start()
            player = pulse.play(path, wait=False)
            time.sleep(5.0)                      # slow: the ring fills and drops
            server.delay_per_window_s = 0.0      # then fast again: the runner catches up and reaches the gaps
            t_end = time.monotonic() + 8.0
            while runner.gaps == 0 and time.monotonic() < t_end:
                time.sleep(0.1)
            time.sleep(0.5)
            runner.stop()
            assert runner.join(timeout=15), "the runner did not stop within 15 s of stop()"
            s = runner.summary()
    finally:
        server.delay_per_window_s = 0.0
        if player is not None:
            player.kill()
            player.wait(timeout=10)
    assert runner.error is None and s["error"] is None, s["error"]
    assert s["overruns"] > 0 and s["dropped_samples"] > 0, s
    dropped_s = s["dropped_samples"] / 16000
    assert abs(s["lost_s"] - dropped_s) <= block_s + 1e-3, s          # all lost audio is the ring's drops
    assert s["lost_windows"] == 0 and remote.lost_windows == 0        # slow, not down: nothing lost on the wire
    assert s["gaps"] > 0 and 0 < runner.gap_s <= s["lost_s"] + 1e-3, (runner.gap_s, s)   # the detector was told
    assert s["windows"] > 0 and s["windows"] < 10 * s["audio_s"] + 10 * s["lost_s"]   # fewer than real time needs
    # the stream's timeline is whole: audio fed + lost spans the detector was told of = stream time
    assert abs(runner.stream_s - (s["audio_s"] + runner.gap_s)) < 1e-6
