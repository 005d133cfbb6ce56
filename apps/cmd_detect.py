"""``aed detect FILE...``: events in audio files, in the DCASE TSV layout or as JSON lines.

Files are decoded, resampled and scored block by block, so memory does not grow with a file's length. Each file's
rows are written when the file is done: a file that turns out to be corrupt half way costs only its own rows and
one error line. ``-o`` writes a temporary file beside the output and renames it at the end (also after Ctrl-C, with
the files finished so far), and refuses to overwrite one of its inputs.

In the TSV layout a tab, newline, carriage return or backslash in a file name is written as ``\\t``, ``\\n``,
``\\r`` or ``\\\\``, so every row has exactly five fields. With ``--tags K`` the TSV gets a sixth column, ``kind``:
``event`` for the event rows, ``tag`` for each file's K clip tags, which span the whole file (onset 0, offset the
file's length), best first, with the tag's score.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from apps.common import add_detector_args, add_model_args, make_detector, open_engine
from apps.errors import UserError
from realtime.errors import AedError

log = logging.getLogger(__name__)

_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


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


def tsv_field(text: str) -> str:
    """``text`` safe as one TSV field: tab, newline, carriage return and backslash escaped."""
    return text.translate(_TSV_ESCAPES)


def _rows(name: str, events, tags, length_s: float):
    for e in events:
        if e.kind == "offset":
            yield {"filename": name, "onset": round(e.onset_s, 3), "offset": round(e.offset_s, 3),
                   "event_label": e.label, "score": round(e.score, 4)}
    for label, score in tags:
        yield {"filename": name, "tag": label, "score": round(score, 4), "onset": 0.0, "offset": round(length_s, 3)}


def _check_output(output: str, files: list[str]) -> None:
    """Refuse an output path that is one of the inputs (same file, same inode), before anything is opened."""
    out = Path(output)
    if out.is_dir():
        raise UserError(f"-o {output} is a directory; give a file path")
    if not out.exists():
        return
    for f in files:
        try:
            if os.path.samefile(out, f):
                raise UserError(f"-o {output} is the input file {f}; writing there would destroy it. "
                                "Choose another output path")
        except OSError:
            continue        # an input that does not exist is reported when its turn comes


class _AtomicOutput:
    """Rows go to a temporary file in the output's directory; :meth:`commit` renames it over the output."""

    def __init__(self, path: str):
        self.path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent or ".")
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "w", encoding="utf-8", newline="")

    def commit(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _detect_file(path: str, detectors: dict, args, engine):
    """Events and top tags of one file, decoded and scored in blocks."""
    from realtime.sources import AudioReader

    reader = AudioReader(path, block_s=10.0)
    det = detectors.get(reader.rate)
    if det is None:
        det = detectors[reader.rate] = make_detector(args, engine, reader.rate)
    det.reset()
    events = []
    for block in reader.blocks():
        for i in range(0, block.shape[0], det.chunk_samples):
            events += det.push(block[i:i + det.chunk_samples])
    events += det.flush()
    length_s = reader.frames_read / reader.rate
    tags = []
    if args.tags:
        scores = det.stream_tags()
        if scores is not None:
            order = scores.argsort()[::-1][: args.tags]
            tags = [(det.labels[i], float(scores[i])) for i in order]
    return events, tags, length_s


def run(args) -> int:
    if args.tags < 0:
        raise UserError(f"--tags must be >= 0, got {args.tags}")
    if args.output:
        _check_output(args.output, args.files)
    engine = open_engine(args)
    try:
        detectors = {16000: make_detector(args, engine, 16000)}   # checks the options before any file is read
    except UserError:
        engine.close()
        raise
    sink = _AtomicOutput(args.output) if args.output else None
    out = sink.file if sink else sys.stdout
    failures = 0
    done = False
    try:
        if args.format == "tsv":
            out.write("filename\tonset\toffset\tevent_label\tscore" + ("\tkind\n" if args.tags else "\n"))
        for f in args.files:
            try:
                events, tags, length_s = _detect_file(f, detectors, args, engine)
            except (AedError, OSError) as e:
                failures += 1
                print(f"aed detect: skipping {f}: {e}", file=sys.stderr)
                continue
            name = Path(f).name
            kind = "\tevent" if args.tags else ""
            for row in _rows(name, events, tags, length_s):
                if args.format == "jsonl":
                    out.write(json.dumps(row) + "\n")
                elif "event_label" in row:
                    out.write(f"{tsv_field(name)}\t{row['onset']:.3f}\t{row['offset']:.3f}\t"
                              f"{tsv_field(row['event_label'])}\t{row['score']:.4f}{kind}\n")
                else:
                    out.write(f"{tsv_field(name)}\t{row['onset']:.3f}\t{row['offset']:.3f}\t"
                              f"{tsv_field(row['tag'])}\t{row['score']:.4f}\ttag\n")
            out.flush()
        done = True
    finally:
        engine.close()
        if sink is not None:
            # what was finished is kept, also after Ctrl-C; an output that could not be written is not renamed
            try:
                sink.commit()
            except OSError:
                sink.discard()
                raise
            if not done:
                print(f"aed detect: wrote the rows of the files finished so far to {args.output}", file=sys.stderr)
    if failures:
        print(f"aed detect: {failures} of {len(args.files)} file(s) could not be read", file=sys.stderr)
    return 1 if failures else 0
