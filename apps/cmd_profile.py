"""``aed profile``: latency stage by stage and engine by engine, with injected events and a report."""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from apps.common import add_detector_args, add_model_args, cli_names, detector_overrides
from apps.errors import UserError
from engines import ENGINE_KINDS as _ENGINES

log = logging.getLogger(__name__)

#: the engines a profile compares: every real engine kind (``auto`` aside) and the model-free loudness reference
ENGINE_KINDS = tuple(k for k in _ENGINES if k != "auto") + ("loudness",)


def register(sub) -> None:
    p = sub.add_parser(
        "profile", help="profile latency per stage and end to end, comparing engines",
        description="Replays audio with injected events at real-time pace (or plays them into a microphone), "
                    "alternating between engines and window/hop settings, and reports per-stage p50/p95/p99/max, "
                    "end-to-end onset latency with its breakdown, real-time factor, CPU share and memory.")
    p.add_argument("--source", default="synthetic", metavar="synthetic|mic|FILE",
                   help="synthetic: scheduled tone bursts, no hardware; mic: bursts played to the default output and "
                        "captured from the microphone; FILE: an audio file replayed at real-time pace")
    p.add_argument("--events", metavar="TSV", help="with --source FILE: ground-truth onsets (onset, offset, label)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds of audio per session (default: from --bursts)")
    p.add_argument("--bursts", type=int, metavar="N", help="injected events per session (default 10)")
    p.add_argument("--trigger", choices=("auto", "model", "loudness"), default="auto",
                   help="who decides an onset: the model's scores, or a loudness reference on the same windows (the "
                        "model still runs on every window, so the cost is real). auto: model with --events, else "
                        "loudness (a tone burst is not a class the model knows)")
    p.add_argument("--block", type=float, default=0.02, metavar="S", help="capture block in seconds (default 0.02)")
    p.add_argument("--device", metavar="N", help="with --source mic: input device index or name")
    p.add_argument("--report", metavar="DIR", help="write profile.json, profile.md and PNG plots here")
    p.add_argument("--seed", type=int, default=0, help="seed for burst timing jitter")
    p.add_argument("--quiet", action="store_true", help="no live table or final table")
    add_model_args(p, engine_list=True)
    add_detector_args(p, sweep=True)     # --threshold etc. apply with --trigger model
    p.set_defaults(func=run)


def _floats(text: str | None, name: str) -> list[float] | None:
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{name} takes comma-separated seconds like 0.5,1,2; got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise UserError(f"--{name} needs positive seconds, got {text!r}")
    return vals


def _check(args) -> tuple[list[str], list[float] | None, list[float] | None]:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINE_KINDS]
    if not engines or bad:
        raise UserError(f"unknown engine(s) {', '.join(bad) or repr(args.engines)}; "
                        f"choose from {', '.join(ENGINE_KINDS)}")
    if len(set(engines)) != len(engines):
        raise UserError(f"--engines lists an engine twice: {args.engines}")
    windows, hops = _floats(args.window, "window"), _floats(args.hop, "hop")
    for w in windows or []:
        if not 0.5 <= w <= 10:
            raise UserError(f"--window must be between 0.5 and 10 seconds, got {w:g}")
    for h in hops or []:
        if h > min(windows or [1.0]):
            raise UserError(f"--hop {h:g} s is longer than the window")
    if args.duration is not None and args.duration <= 0:
        raise UserError(f"--duration must be positive seconds, got {args.duration}")
    if args.bursts is not None and args.bursts < 1:
        raise UserError(f"--bursts must be at least 1, got {args.bursts}")
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    if not 0.001 <= args.block <= 0.5:
        raise UserError(f"--block must be between 0.001 and 0.5 seconds, got {args.block}")
    if args.source not in ("synthetic", "mic"):
        if not Path(args.source).is_file():
            raise UserError(f"--source must be synthetic, mic or an audio file; {args.source!r} is none of them")
    elif args.events:
        raise UserError("--events only applies with --source FILE")
    if args.events and not Path(args.events).is_file():
        raise UserError(f"--events file not found: {args.events}")
    return engines, windows, hops


def _open_engines(args, kinds: list[str], trigger: str) -> tuple[list, Path | None]:
    """One :class:`EngineSpec` per engine kind, in the order given; the loudness reference takes the front end of
    the first real engine (64 mel bins without one). On any failure every engine opened so far is closed."""
    from apps.profiler.core import EngineSpec, LoudnessReference

    specs, path = [], None
    if any(k != "loudness" for k in kinds):
        from engines import default_model_path

        path = args.model or default_model_path()
    try:
        for k in kinds:
            if k == "loudness":
                continue
            from engines import create_engine

            if k == "triton":       # the served model, compared with the local engines on the same audio
                if not args.server:
                    raise UserError("--engines triton needs --server URL, e.g. grpc://127.0.0.1:8001/aed_default")
                specs.append(EngineSpec(k, create_engine(k, args.server), trigger))
                continue
            specs.append(EngineSpec(k, create_engine(k, path, threads=args.threads), trigger))
        if "loudness" in kinds:
            frontend = specs[0].engine.config.frontend if specs else None
            specs.insert(kinds.index("loudness"), EngineSpec("loudness", LoudnessReference(frontend=frontend), "model"))
    except BaseException:
        for s in specs:
            s.engine.close()
        raise
    return specs, path


def _windows_and_hops(specs: list, windows: list[float] | None, hops: list[float] | None
                      ) -> tuple[list[float], list[float]]:
    """The sweep: the user's windows and hops, or the first real engine's model window and hop."""
    from realtime.config import WindowConfig

    model_window = next((s.engine.config.window for s in specs if s.kind != "loudness"), WindowConfig())
    windows = windows or [model_window.window_s]
    hops = hops or [model_window.hop_s]
    for h in hops:
        if h > min(windows):
            raise UserError(f"--hop {h:g} s is longer than the window {min(windows):g} s")
    return windows, hops


def _build_source(args, windows: list[float], hops: list[float]):
    """The replayed source (``--source``) sized for the longest window and hop of the sweep."""
    from apps.profiler.core import FileReplaySource, MicSource, SyntheticSource, read_events_tsv

    bursts = args.bursts if args.bursts is not None else (0 if args.duration else 10)
    try:
        if args.source == "synthetic":
            return SyntheticSource(bursts=bursts, window_s=max(windows), hop_s=max(hops), duration_s=args.duration,
                                   block_s=args.block, seed=args.seed)
        if args.source == "mic":
            dev = int(args.device) if args.device and str(args.device).isdigit() else args.device
            return MicSource(bursts or 10, max(windows), max(hops), device=dev, block_s=args.block, seed=args.seed)
        events = read_events_tsv(args.events) if args.events else None
        source = FileReplaySource(args.source, events, segment_s=max(5.0, max(windows) + 2.0), block_s=args.block)
        if args.duration:
            source.audio = source.audio[:int(args.duration * source.rate)]
        return source
    except ValueError as e:
        raise UserError(str(e)) from e


def _run_config(args, kinds: list[str], model_path: Path | None, windows: list[float], hops: list[float],
                trigger: str, source) -> dict:
    """The run's settings as the report records them."""
    return {"engines": kinds, "model": str(model_path) if model_path else None, "source": args.source,
            "events": args.events, "windows_s": windows, "hops_s": hops, "trigger": trigger,
            "threads": args.threads, "block_s": args.block,
            "bursts": len(getattr(source, "bursts", [])) or getattr(source, "slots", None),
            "segment_s": source.segment_s, "source_rate": getattr(source, "rate", None), "threshold": args.threshold,
            "seed": args.seed, "alternation": "round-robin per segment, order rotated every segment"}


def _notes(specs: list, kinds: list[str], trigger: str) -> list[str]:
    """What a reader of the report must know about the sessions (trigger, untrained models, the reference)."""
    notes = []
    if trigger == "loudness" and any(s.kind != "loudness" for s in specs):
        notes.append("Onset trigger: loudness reference. Every window runs through the model (its cost is "
                     "measured), but the onset decision is a loudness threshold on the same window, so the "
                     "latency is the pipeline's, not the classifier's.")
    for sp in specs:
        cfg = sp.engine.config
        if sp.kind != "loudness" and not cfg.training:
            notes.append(f"The {sp.kind} model ({cfg.name or '?'}) carries no training record in its "
                         "config: probably untrained (random weights); its compute cost is real, its scores "
                         "are not.")
    if "loudness" in kinds:
        notes.append("Session 'loudness' is a model-free reference engine (no model at all): pipeline latency "
                     "without inference cost.")
    return notes


def _profile(prof, n_segments: int, quiet: bool):
    """Run the profiler under a live view; Ctrl-C finishes the current block, then the run reports."""
    from apps.profiler.report import LiveView

    view = LiveView(len(prof.sessions) * n_segments, enabled=False if quiet else None)
    prof.on_progress = view.update
    old = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *_: prof.stop())
    try:
        with view:
            return prof.run()
    finally:
        signal.signal(signal.SIGINT, old)


def _print_summary(result) -> None:
    from rich.console import Console

    from apps.profiler.report import summary_table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(summary_table(result.sessions, title="aed profile" + (" (interrupted)" if result.interrupted
                                                                          else "")))


def run(args) -> int:
    from apps.profiler.core import Profiler
    from apps.profiler.report import write_report

    kinds, windows, hops = _check(args)
    trigger = args.trigger if args.trigger != "auto" else ("model" if args.events else "loudness")
    specs, model_path = _open_engines(args, kinds, trigger)
    source = None
    try:
        windows, hops = _windows_and_hops(specs, windows, hops)
        source = _build_source(args, windows, hops)
        config = _run_config(args, kinds, model_path, windows, hops, trigger, source)
        try:
            prof = Profiler(specs, source, windows=windows, hops=hops, overrides=detector_overrides(args))
        except ValueError as e:
            raise UserError(cli_names(str(e))) from e
        notes = _notes(specs, kinds, trigger)
        result = _profile(prof, source.n_segments, args.quiet)
        result.notes += notes
        config["source_rate"] = config["source_rate"] or getattr(source, "rate", None)   # a microphone's, once open
        if not args.quiet:
            _print_summary(result)
        if args.report:
            paths = write_report(result, args.report, config)
            print(f"report written to {paths['markdown'].parent}", file=sys.stderr)
        return 130 if result.interrupted else 0
    finally:
        if source is not None and getattr(source, "live", False):
            source.stop()
        for s in specs:
            s.engine.close()
