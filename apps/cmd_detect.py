"""``aed detect FILE...``: events in audio files, in the DCASE TSV layout or as JSON lines."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from apps.common import add_detector_args, add_model_args, make_detector, open_engine
from apps.errors import UserError

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("detect", help="detect events in audio files",
                       description="Writes one row per event: filename, onset, offset, event_label, score "
                                   "(DCASE TSV layout), or JSON lines.")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, OGG, MP3, ...)")
    p.add_argument("--format", choices=("tsv", "jsonl"), default="tsv")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of standard output")
    p.add_argument("--tags", type=int, default=0, metavar="K",
                   help="also report each file's top-K clip tags (mean window score)")
    add_model_args(p)
    add_detector_args(p)
    p.set_defaults(func=run)


def _rows(name: str, events, tags):
    for e in events:
        if e.kind == "offset":
            yield {"filename": name, "onset": round(e.onset_s, 3), "offset": round(e.offset_s, 3),
                   "event_label": e.label, "score": round(e.score, 4)}
    for label, score in tags:
        yield {"filename": name, "tag": label, "score": round(score, 4)}


def run(args) -> int:
    from realtime.sources import read_audio

    if args.tags < 0:
        raise UserError(f"--tags must be >= 0, got {args.tags}")
    engine = open_engine(args)
    try:
        detectors = {16000: make_detector(args, engine, 16000)}   # checks the options before any file is read
    except UserError:
        engine.close()
        raise
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    failures = 0
    try:
        if args.format == "tsv":
            out.write("filename\tonset\toffset\tevent_label\tscore\n")
        for f in args.files:
            try:
                audio, rate = read_audio(f)
                det = detectors.get(rate) or detectors.setdefault(rate, make_detector(args, engine, rate))
                events = det.process(audio)
                tags = []
                if args.tags:
                    scores = det.clip_scores(audio)
                    order = scores.argsort()[::-1][: args.tags]
                    tags = [(det.labels[i], float(scores[i])) for i in order]
            except (ValueError, FileNotFoundError) as e:
                failures += 1
                print(f"aed detect: skipping {f}: {e}", file=sys.stderr)
                continue
            name = Path(f).name
            for row in _rows(name, events, tags):
                if args.format == "jsonl":
                    out.write(json.dumps(row) + "\n")
                elif "event_label" in row:
                    out.write(f"{name}\t{row['onset']:.3f}\t{row['offset']:.3f}\t{row['event_label']}\t"
                              f"{row['score']:.4f}\n")
                else:
                    print(f"{name}\ttag\t{row['tag']}\t{row['score']:.4f}", file=sys.stderr)
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
        engine.close()
    if failures:
        print(f"aed detect: {failures} of {len(args.files)} file(s) could not be read", file=sys.stderr)
    return 1 if failures else 0
