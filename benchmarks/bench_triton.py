"""Benchmark: N streams through ``MultiStreamRunner`` over the ``triton`` engine vs the same streams on local ONNX Runtime.

Real ESC-50 audio (resampled once to 16 kHz), the shipped model, one ``aed serve`` server on loopback in a child
process (ports picked free), 1 and 2 instances. For each stream count N, every stream gets the same seconds of
audio, pushed one hop (0.1 s) per stream per ``push``: each push sends the N streams' new windows as one request (up
to the server's max batch). Both engines run side by side in one run, alternating, ``--repeats`` times; medians of
the repeats are reported:

- windows/s: windows scored per wall-clock second, audio pushed as fast as the engine takes it;
- ms per window p50/p99: a push's wall time divided by its windows (the cost per window at that batch);
- request p50/p99: one ``infer`` call's wall time (one request to the server, or one local ONNX Runtime run);
- real-time streams: how many streams this rate holds at 10 windows/s each (windows/s / 10);
- server CPU: CPU seconds of the server's process tree / wall seconds (100 % = one core).

Usage:
    python benchmarks/bench_triton.py [--streams 1 8 32 128] [--seconds 3] [--repeats 3] [--instances 1 2]
        [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "pretrained" / "aed_default"
ESC50 = ROOT.parent / "shared" / "data" / "esc50" / "audio"


def _audio(n_clips: int, seconds: float) -> list:
    import numpy as np
    import soundfile as sf
    import soxr

    files = sorted(ESC50.glob("*.flac"))
    if not files:
        raise SystemExit(f"no ESC-50 audio under {ESC50}")
    step = max(1, len(files) // n_clips)
    out = []
    for f in files[::step][:n_clips]:
        x, rate = sf.read(f, dtype="float32")
        x = x.mean(axis=1) if x.ndim == 2 else x
        x = soxr.resample(x, rate, 16000).astype(np.float32)
        need = int(seconds * 16000)
        out.append(np.resize(x, need) if x.shape[0] < need else x[:need])
    return out


class _Timed:
    """Wrap an engine: record each infer call's wall time."""

    def __init__(self, eng):
        self.eng = eng
        self.times: list[float] = []
        for k in ("labels", "spec", "config", "name"):
            setattr(self, k, getattr(eng, k))

    @property
    def has_frames(self):
        return getattr(self.eng, "has_frames", False)

    def infer(self, x):
        t = time.perf_counter()
        y = self.eng.infer(x)
        self.times.append(time.perf_counter() - t)
        return y

    def infer_frames(self, x):
        t = time.perf_counter()
        y = self.eng.infer_frames(x)
        self.times.append(time.perf_counter() - t)
        return y


def _pct(v: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(v), q)) if v else float("nan")


def run_streams(engine, audio: list, n: int) -> dict:
    from realtime.multistream import MultiStreamRunner

    timed = _Timed(engine)
    ms = MultiStreamRunner(timed, range(n))
    hop = 1600
    total = min(a.shape[0] for a in audio)
    per_window: list[float] = []
    t_all = time.perf_counter()
    for start in range(0, total - hop + 1, hop):
        chunks = {i: audio[i % len(audio)][start:start + hop] for i in range(n)}
        before = ms.windows_scored
        t = time.perf_counter()
        ms.push(chunks)
        dt = time.perf_counter() - t
        w = ms.windows_scored - before
        if w:
            per_window.append(dt / w)
    wall = time.perf_counter() - t_all
    return {"windows": ms.windows_scored, "wall_s": wall, "windows_per_s": ms.windows_scored / wall,
            "ms_per_window_p50": 1e3 * _pct(per_window, 50), "ms_per_window_p99": 1e3 * _pct(per_window, 99),
            "request_ms_p50": 1e3 * _pct(timed.times, 50), "request_ms_p99": 1e3 * _pct(timed.times, 99),
            "requests": len(timed.times)}


class Server:
    def __init__(self, instances: int):
        from engines.triton_serve import free_port

        self.ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
        self.instances = instances
        self.proc = None
        self.info: dict = {}

    def start(self) -> "Server":
        cmd = [sys.executable, "-m", "apps.cmd_serve", "--model", str(MODEL), "--host", "127.0.0.1",
               "--instances", str(self.instances), "--max-batch", "64", "--max-queue-delay-ms", "2",
               *sum(([f"--{k}-port", str(v)] for k, v in self.ports.items()), [])]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        for line in self.proc.stdout:
            if line.startswith("aed serve: ready "):
                self.info = json.loads(line.split("ready ", 1)[1])
                return self
        raise RuntimeError("aed serve did not come up")

    def cpu_s(self) -> float:
        import psutil

        p = psutil.Process(self.proc.pid)
        total = 0.0
        for q in [p, *p.children(recursive=True)]:
            try:
                c = q.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--seconds", type=float, default=3.0, help="audio per stream per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    from engines.ort_engine import OnnxRuntimeEngine
    from engines.triton_engine import TritonEngine

    audio = _audio(16, args.seconds)
    local = OnnxRuntimeEngine(MODEL, intra_op_num_threads=1)
    rows = []
    for inst in args.instances:
        srv = Server(inst).start()
        try:
            remote = TritonEngine(srv.info["grpc"], timeout_s=60)
            run_streams(remote, audio, 8)                      # warm-up
            run_streams(local, audio, 8)
            for n in args.streams:
                res = {"triton": [], "local": []}
                cpu = []
                for _ in range(args.repeats):
                    c0, t0 = srv.cpu_s(), time.perf_counter()
                    res["triton"].append(run_streams(remote, audio, n))
                    cpu.append((srv.cpu_s() - c0) / (time.perf_counter() - t0))
                    if inst == args.instances[0]:
                        res["local"].append(run_streams(local, audio, n))
                for kind, runs in res.items():
                    if not runs:
                        continue
                    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    row = {"engine": f"triton ({inst} instance{'s' if inst > 1 else ''})" if kind == "triton"
                           else "local onnxruntime", "streams": n, **{k: round(v, 3) for k, v in med.items()},
                           "realtime_streams": int(med["windows_per_s"] // 10),
                           "server_cpu": round(statistics.median(cpu), 3) if kind == "triton" else None,
                           "lost_windows": remote.lost_windows if kind == "triton" else 0}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            remote.close()
        finally:
            srv.stop()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "python":
            platform.python_version(), "seconds_per_stream": args.seconds, "repeats": args.repeats,
            "model": "models/pretrained/aed_default", "client": "MultiStreamRunner, 1 process, ORT 1 thread locally"}
    (out / "triton.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Triton serving vs local ONNX Runtime (loopback, this machine)", "",
             f"`python benchmarks/bench_triton.py --streams {' '.join(map(str, args.streams))} --seconds "
             f"{args.seconds:g} --repeats {args.repeats} --instances {' '.join(map(str, args.instances))}`", "",
             f"{meta['machine']}, Python {meta['python']}; shipped model; real ESC-50 audio; {args.seconds:g} s per "
             f"stream, one hop (0.1 s) per stream per push; medians of {args.repeats} repeats. The server "
             "(`aed serve`, gRPC, max batch 64, queue delay 2 ms) runs in a child process on the same cores as the "
             "client.", "",
             "| engine | streams | windows/s | ms/window p50 | ms/window p99 | request ms p50 | request ms p99 | "
             "requests | real-time streams | server CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cpu = f"{100 * r['server_cpu']:.0f} %" if r["server_cpu"] is not None else "–"
        lines.append(f"| {r['engine']} | {r['streams']} | {r['windows_per_s']:.0f} | {r['ms_per_window_p50']:.2f} | "
                     f"{r['ms_per_window_p99']:.2f} | {r['request_ms_p50']:.1f} | {r['request_ms_p99']:.1f} | "
                     f"{r['requests']:.0f} | {r['realtime_streams']} | {cpu} |")
    (out / "triton.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
