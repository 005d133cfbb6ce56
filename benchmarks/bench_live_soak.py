"""RSS of a long live run: 3 hours of audio through LiveRunner, accelerated (issue 15, item 4).

A generator source produces synthetic audio block by block (a tone burst every few seconds over
noise, so events open and close all the time) as fast as the detector takes it, in the shape a
microphone delivers it to ``aed listen``: 20 ms blocks at 48 kHz by default, resampled to 16 kHz.
The engine is a cheap stand-in (the loudness engine of the tests) unless ``--engine onnx`` runs the
shipped ONNX model. RSS (``VmRSS`` from /proc/self/status) is sampled every simulated 10 minutes; the
slope is a least-squares fit in MB per hour of audio, over the whole run and after the first hour
(by then every bounded container, the per-stage timer's included, has reached its cap).

Usage: python benchmarks/bench_live_soak.py [--hours 3] [--rate 48000] [--block-s 0.02] [--engine fake|onnx]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class SoakSource:
    """``hours`` of audio, generated per block; calls ``on_sample(sim_s)`` every ``sample_every_s`` of audio."""

    def __init__(self, hours: float, rate: int, block_s: float, on_sample, sample_every_s: float = 600.0,
                 every_s: float = 4.0):
        from tests.audio_helpers import tone_burst

        self.rate, self.block = rate, int(round(block_s * rate))
        self.n_blocks = int(hours * 3600 * rate) // self.block
        period = tone_burst(rate, every_s, 1.0, 0.3, noise=3e-3)
        self.period = period[: (period.shape[0] // self.block) * self.block].reshape(-1, self.block)
        self.on_sample, self.every = on_sample, int(sample_every_s * rate) // self.block
        self._stop = False

    def stop(self) -> None:
        self._stop = True

    def blocks(self):
        for i in range(self.n_blocks):
            if self._stop:
                return
            if i % self.every == 0:
                self.on_sample(i * self.block / self.rate)
            yield self.period[i % self.period.shape[0]]
        self.on_sample(self.n_blocks * self.block / self.rate)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--block-s", type=float, default=0.02)
    ap.add_argument("--engine", choices=("fake", "onnx"), default="fake")
    ap.add_argument("--timer-maxlen", type=int, default=None,
                    help="cap the detector's StageTimer at this many samples per stage (default: its own 100 000)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "live_soak"))
    args = ap.parse_args()

    from realtime import Detector, DetectorConfig, FrontEndConfig, WindowConfig
    from realtime.pipeline import LiveRunner

    if args.engine == "onnx":
        from engines import create_engine, default_model_path

        engine = create_engine("onnxruntime", default_model_path(), threads=1)
        from apps.common import detector_config

        cfg = detector_config(argparse.Namespace(window=None, hop=None, threshold=None, min_duration=None,
                                                 merge_gap=None, onset_anchor=None), engine, args.rate)
        what = f"shipped ONNX model ({default_model_path()})"
    else:
        from tests.audio_helpers import LoudnessEngine

        engine = LoudnessEngine(record=False)     # the test engine's batch log would be the only growth
        cfg = DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), window=WindowConfig(1.0, 0.1),
                             input_rate=args.rate)
        what = "loudness stand-in engine (tests/audio_helpers.py)"
    samples: list[dict] = []
    t0 = time.perf_counter()
    runner_box: list = []

    def on_sample(sim_s: float) -> None:
        r = runner_box[0] if runner_box else None
        samples.append({"audio_min": round(sim_s / 60, 1), "rss_mb": round(rss_mb(), 2),
                        "wall_s": round(time.perf_counter() - t0, 1),
                        "events": r.onsets if r else 0, "kept_events": len(r.recent_events) if r else 0,
                        "timer_samples": sum(len(v) for v in r.detector.timer.samples.values()) if r else 0})
        print(samples[-1], flush=True)

    src = SoakSource(args.hours, args.rate, args.block_s, on_sample)
    det = Detector(engine, cfg)
    if args.timer_maxlen:
        det.timer.maxlen = args.timer_maxlen
    runner = LiveRunner(det, src)
    runner_box.append(runner)
    runner.run_blocking()
    if runner.error is not None:
        raise SystemExit(f"soak run failed: {runner.error}")
    s = runner.summary()

    h = np.array([x["audio_min"] for x in samples]) / 60
    mb = np.array([x["rss_mb"] for x in samples])
    slope_all = float(np.polyfit(h[1:], mb[1:], 1)[0])
    late = h >= 1.0
    slope_late = float(np.polyfit(h[late], mb[late], 1)[0]) if late.sum() >= 3 else float("nan")
    res = {"engine": what, "hours": args.hours, "timer_maxlen": det.timer.maxlen, "rate": args.rate,
           "block_s": args.block_s,
           "wall_s": round(time.perf_counter() - t0, 1), "windows": s["windows"], "events": s["events"],
           "rtf": s["rtf"], "samples": samples, "slope_mb_per_h": round(slope_all, 3),
           "slope_mb_per_h_after_1h": round(slope_late, 3),
           "rss_first_mb": float(mb[1]), "rss_last_mb": float(mb[-1]),
           "command": "python benchmarks/bench_live_soak.py " + " ".join(sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    md = ["# RSS of a long live run (accelerated LiveRunner soak)", "",
          f"{args.hours:g} h of synthetic audio at {args.rate} Hz in {args.block_s * 1e3:g} ms blocks (the shape "
          f"`aed listen` gets from a microphone), fed as fast as possible; engine: {what}. A tone burst every 4 s, "
          f"so events open and close all run long. {s['windows']} windows, {s['events']} events, "
          f"{res['wall_s']} s wall. Stage timer cap: {det.timer.maxlen} samples per stage.", "",
          "| audio (min) | RSS (MB) | onsets so far | events kept | stage-timer samples |",
          "|---:|---:|---:|---:|---:|"]
    md += [f"| {x['audio_min']:.0f} | {x['rss_mb']:.1f} | {x['events']} | {x['kept_events']} | {x['timer_samples']} |"
           for x in samples]
    md += ["", f"RSS slope: **{slope_all:+.2f} MB per hour of audio** over the run (from the 10 min sample on), "
           f"**{slope_late:+.2f} MB/h** after the first hour. Before the fix the runner kept every event twice "
           "(a list and an unread queue) and one float per block, about 10 MiB per hour.", "",
           "The runner keeps the last 1000 events and block waits. The stage timer (`realtime/stats.py`, "
           "`StageTimer(maxlen=100_000)`) holds each stage's newest durations in a float64 ring of that size, "
           "allocated and written when the stage is first timed (0.8 MB a stage), so it does not grow during the "
           "run; the `stage-timer samples` column counts the durations held.",
           "", f"Command: `{res['command']}`"]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
