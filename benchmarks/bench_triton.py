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

``--paced`` measures at real-time pace instead: every stream has its own 2 s ``RingBuffer`` that a pacing thread
fills on schedule, one hop (0.1 s) of audio per stream per 0.1 s of wall time (hops that came due while it was late
are written at once, so the schedule never slips). One client thread reads what each ring holds (at most 0.4 s
per stream per push), pushes it through ``MultiStreamRunner`` and tells each detector of the ring's gaps; a client
that falls behind fills its rings, and each ring drops and counts the audio it has no room for. Per point:
windows/s, request latency p50/p99, server (and client) CPU share, dropped seconds (all streams), the largest
backlog seen, and whether the point held real time (no drop, and less than 0.5 s backlog at the end). After the
points of each server, ``aed profile --engines onnxruntime,triton --server URL --source synthetic --bursts 10``
measures the end-to-end onset latency of both engines on the same audio (its ``profile.json``: p50 per engine).
A paced run keeps the throughput rows already in ``triton.json`` and rewrites both files with both tables.

Usage:
    python benchmarks/bench_triton.py [--streams 1 8 32 128] [--seconds 3] [--repeats 3] [--instances 1 2]
        [--out benchmarks/results]
    python benchmarks/bench_triton.py --paced [--streams 1 8 32 128 256] [--seconds 8] [--instances 1 2]
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


HOP = 1600                    # 0.1 s at 16 kHz: one window per stream per hop
RING_S = 2.0                  # per-stream ring in the paced mode
READ_CAP = 4 * HOP            # most audio one push takes from a stream (a client catching up does so in steps)


def run_paced(engine, audio: list, n: int, seconds: float, server=None) -> dict:
    """N streams at real-time pace for ``seconds`` of wall time; see the module docstring."""
    import threading

    import numpy as np
    import psutil

    from realtime.multistream import MultiStreamRunner
    from realtime.ring import RingBuffer

    timed = _Timed(engine)
    ms = MultiStreamRunner(timed, range(n))
    rate = 16000
    rings = [RingBuffer(int(RING_S * rate), 1) for _ in range(n)]
    clips = [audio[i % len(audio)] for i in range(n)]
    stop = threading.Event()
    produced = [0]                 # hops written per stream
    max_backlog = [0]

    def pace(t0: float) -> None:
        while not stop.is_set():
            due = int((time.perf_counter() - t0) / (HOP / rate)) + 1
            while produced[0] < due:
                k = produced[0]
                for i, rb in enumerate(rings):
                    x = clips[i]
                    a = (k * HOP) % (x.shape[0] - HOP)
                    rb.write(x[a:a + HOP, None])
                produced[0] += 1
            max_backlog[0] = max(max_backlog[0], max(rb.available for rb in rings))
            stop.wait(max(0.0, t0 + produced[0] * HOP / rate - time.perf_counter()))

    me = psutil.Process()
    c_cli = sum(me.cpu_times()[:2])
    c_srv = server.cpu_s() if server is not None else 0.0
    t0 = time.perf_counter()
    pacer = threading.Thread(target=pace, args=(t0,), name="pacer", daemon=True)
    pacer.start()
    gaps_told = 0
    while time.perf_counter() - t0 < seconds:
        chunks, gaps = {}, {}
        for i, rb in enumerate(rings):
            x = rb.read(max_frames=READ_CAP)
            if x.shape[0]:
                chunks[i] = x[:, 0]
            g = rb.take_gaps()
            if g:
                gaps[i] = g
        if chunks:
            ms.push(chunks)
        for i, g in gaps.items():                 # after the audio before them: the stream's timeline stays true
            for gap in g:
                ms.detectors[i].gap(gap.length / rate)
                gaps_told += 1
        if not chunks and not gaps:
            time.sleep(0.005)
    wall = time.perf_counter() - t0
    stop.set()
    pacer.join(5)
    cli_cpu = (sum(me.cpu_times()[:2]) - c_cli) / wall
    srv_cpu = (server.cpu_s() - c_srv) / wall if server is not None else None
    dropped = sum(rb.dropped_samples for rb in rings) / rate
    due = n * max(0, produced[0] - 9)            # windows whose audio had arrived (the first needs 10 hops)
    backlog_end = max(rb.available for rb in rings) / rate
    return {"streams": n, "seconds": round(wall, 2), "windows": ms.windows_scored,
            "windows_per_s": ms.windows_scored / wall, "needed_windows_per_s": 10 * n,
            "windows_due": due, "scored_share": ms.windows_scored / due if due else float("nan"),
            "request_ms_p50": 1e3 * _pct(timed.times, 50), "request_ms_p99": 1e3 * _pct(timed.times, 99),
            "requests": len(timed.times), "dropped_s": dropped, "overruns": sum(rb.overruns for rb in rings),
            "gaps_told": gaps_told, "max_backlog_s": max_backlog[0] / rate, "backlog_end_s": backlog_end,
            "held": dropped == 0 and backlog_end < 0.5, "client_cpu": cli_cpu, "server_cpu": srv_cpu,
            "lost_windows": int(getattr(engine, "lost_windows", 0) or 0)}


def run_profile(url: str, workdir: Path) -> dict:
    """``aed profile --engines onnxruntime,triton --server URL --source synthetic --bursts 10``: onset p50 per
    engine (ms), from its profile.json."""
    report = workdir / "profile"
    cmd = [str(Path(sys.executable).parent / "aed"), "profile", "--engines", "onnxruntime,triton", "--server", url,
           "--source", "synthetic", "--bursts", "10", "--quiet", "--report", str(report)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1], "command": " ".join(cmd[1:])}
    data = json.loads((report / "profile.json").read_text())
    out = {"command": "aed " + " ".join(cmd[1:-1]) + " DIR", "wall_s": round(time.perf_counter() - t0, 1)}
    per: dict[str, dict] = {}
    for sess in data["sessions"]:                 # the engines alternate: pool each one's sessions
        key = sess["label"].split()[0]            # "triton w1/h0.1": the engine, then window/hop
        p = per.setdefault(key, {"total": [], "detected": 0, "missed": 0, "sessions": 0})
        p["total"] += [r["total"] for r in sess["raw"]["latencies"]]
        p["detected"] += sess["cost"]["detected"]
        p["missed"] += sess["cost"]["missed"]
        p["sessions"] += 1
    for label, p in per.items():
        out[label] = {"onset_p50_ms": 1e3 * _pct(p["total"], 50), "onset_p99_ms": 1e3 * _pct(p["total"], 99),
                      "detected": p["detected"], "missed": p["missed"], "sessions": p["sessions"]}
    return out


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
    ap.add_argument("--paced", action="store_true", help="real-time pace with per-stream rings (see above)")
    ap.add_argument("--no-profile", action="store_true", help="with --paced: skip the aed profile onset latency")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    from engines.ort_engine import OnnxRuntimeEngine
    from engines.triton_engine import TritonEngine

    local = OnnxRuntimeEngine(MODEL, intra_op_num_threads=1)
    if args.paced:
        return paced_main(args, local, TritonEngine)
    audio = _audio(16, args.seconds)
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
    old = json.loads((out / "triton.json").read_text()) if (out / "triton.json").is_file() else {}
    data = {**old, "meta": meta, "rows": rows}
    (out / "triton.json").write_text(json.dumps(data, indent=1))
    write_markdown(out, data)
    return 0


def _throughput_lines(meta: dict, rows: list) -> list[str]:
    streams = " ".join(str(s) for s in dict.fromkeys(r["streams"] for r in rows))
    inst = " ".join(str(i) for i in dict.fromkeys(int(r["engine"].split("(")[1].split()[0]) for r in rows
                                                  if r["engine"].startswith("triton")))
    seconds, repeats = meta["seconds_per_stream"], meta["repeats"]
    lines = ["# Triton serving vs local ONNX Runtime (loopback, this machine)", "",
             f"`python benchmarks/bench_triton.py --streams {streams} --seconds {seconds:g} --repeats {repeats} "
             f"--instances {inst}`", "",
             "## As fast as it goes (throughput)", "",
             f"{meta['machine']}, Python {meta['python']}; shipped model; real ESC-50 audio; {seconds:g} s per "
             f"stream, one hop (0.1 s) per stream per push; medians of {repeats} repeats. The server "
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
    return lines


def write_markdown(out: Path, data: dict) -> None:
    lines = ["# Triton serving vs local ONNX Runtime (loopback, this machine)", ""]
    if data.get("rows"):
        lines += _throughput_lines(data["meta"], data["rows"])[2:]
    if data.get("paced"):
        lines += [""] + _paced_lines(data["paced_meta"], data["paced"], data.get("profile", {}))
    if data.get("notes"):
        lines += ["", "Notes:", *[f"- {n}" for n in data["notes"]]]
    (out / "triton.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _paced_lines(meta: dict, rows: list, profile: dict) -> list[str]:
    lines = ["## At real-time pace (paced mode)", "", f"`{meta['command']}`", "",
             f"{meta['machine']}; {meta['seconds']:g} s of wall time per point; every stream fed one hop (0.1 s) per "
             f"0.1 s of wall time into its own {RING_S:g} s ring; one client thread reads at most "
             f"{READ_CAP / 16000:g} s per stream per push. Server as above (max batch 64, queue delay 2 ms). "
             "\"held\": no drop and under 0.5 s backlog at the end.", "",
             "| engine | streams | windows/s (needed) | scored / due | request ms p50 | request ms p99 | server CPU | "
             "client CPU | dropped s | max backlog s | held |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        cpu = f"{100 * r['server_cpu']:.0f} %" if r["server_cpu"] is not None else "–"
        lines.append(f"| {r['engine']} | {r['streams']} | {r['windows_per_s']:.0f} ({r['needed_windows_per_s']}) | "
                     f"{100 * r['scored_share']:.0f} % | {r['request_ms_p50']:.1f} | {r['request_ms_p99']:.1f} | "
                     f"{cpu} | "
                     f"{100 * r['client_cpu']:.0f} % | {r['dropped_s']:.1f} | {r['max_backlog_s']:.2f} | "
                     f"{'yes' if r['held'] else 'no'} |")
    lines += ["", "| engine | most streams held in real time with no drop (streams tried) |", "|---|---:|"]
    for eng in dict.fromkeys(r["engine"] for r in rows):
        tried = [r for r in rows if r["engine"] == eng]
        held = [r["streams"] for r in tried if r["held"]]
        lines.append(f"| {eng} | {max(held) if held else 0} ({', '.join(str(r['streams']) for r in tried)}) |")
    if profile:
        lines += ["", "End-to-end onset latency (injected tone bursts, loudness trigger, the model on every window):",
                  "", "| server | command | onnxruntime p50 ms | triton p50 ms | triton p99 ms | "
                  "detected (ort / triton) |",
                  "|---|---|---:|---:|---:|---:|"]
        for inst, p in profile.items():
            if "error" in p:
                lines.append(f"| {inst} | `{p['command']}` | failed: {p['error']} | | | |")
                continue
            o, t = p.get("onnxruntime", {}), p.get("triton", {})
            lines.append(f"| {inst} | `{p['command']}` | {o.get('onset_p50_ms', float('nan')):.1f} | "
                         f"{t.get('onset_p50_ms', float('nan')):.1f} | {t.get('onset_p99_ms', float('nan')):.1f} | "
                         f"{o.get('detected')} / {t.get('detected')} |")
    return lines


def paced_main(args, local, TritonEngine) -> int:
    import tempfile

    audio = _audio(16, 5.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, profile = [], {}
    cmd = ("python benchmarks/bench_triton.py --paced --streams " + " ".join(map(str, args.streams)) +
           f" --seconds {args.seconds:g} --instances " + " ".join(map(str, args.instances)))
    t_run = time.perf_counter()
    for inst in args.instances:
        srv = Server(inst).start()
        name = f"triton ({inst} instance{'s' if inst > 1 else ''})"
        try:
            remote = TritonEngine(srv.info["grpc"], timeout_s=60)
            run_streams(remote, audio, 8)                      # warm-up
            if inst == args.instances[0]:
                run_streams(local, audio, 8)
            for n in args.streams:
                for kind in (("triton", "local") if inst == args.instances[0] else ("triton",)):
                    r = run_paced(remote, audio, n, args.seconds, srv) if kind == "triton" else \
                        run_paced(local, audio, n, args.seconds)
                    r = {"engine": name if kind == "triton" else "local onnxruntime", "instances": inst,
                         **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}}
                    rows.append(r)
                    print(json.dumps(r), flush=True)
            remote.close()
            if not args.no_profile:
                with tempfile.TemporaryDirectory() as tmp:
                    profile[name] = run_profile(srv.info["grpc"], Path(tmp))
                print(json.dumps({name: profile[name]}), flush=True)
        finally:
            srv.stop()
    rows.sort(key=lambda r: (r["engine"] != "local onnxruntime", r["instances"], r["streams"]))
    old = json.loads((out / "triton.json").read_text()) if (out / "triton.json").is_file() else {}
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}", "seconds": args.seconds, "command": cmd, "ring_s": RING_S,
            "read_cap_s": READ_CAP / 16000, "run_wall_s": round(time.perf_counter() - t_run, 1)}
    data = {**old, "paced_meta": meta, "paced": rows, "profile": profile}
    (out / "triton.json").write_text(json.dumps(data, indent=1))
    write_markdown(out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
