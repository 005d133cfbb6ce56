import threading
import time

import numpy as np
import pytest

from realtime.ring import Gap, RingBuffer


def test_fifo_order_with_real_threads():
    rb = RingBuffer(capacity=4096, channels=1)
    total = 200_000
    src = np.arange(total, dtype=np.float32)[:, None]
    got = []
    problems: list[str] = []            # the producer reports here; the main thread asserts

    def produce():
        try:
            i = 0
            rng = np.random.default_rng(1)
            t_end = time.monotonic() + 30
            while i < total:
                n = int(rng.integers(1, 700))
                block = src[i:i + n]
                # never overrun in this test: wait for room like a well-behaved producer
                while rb.capacity - rb.available < block.shape[0]:
                    if time.monotonic() > t_end:
                        raise TimeoutError("consumer stopped reading")
                    time.sleep(0)
                stored = rb.write(block)
                if stored != block.shape[0]:
                    problems.append(f"write at {i} stored {stored} of {block.shape[0]} frames")
                i += n
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            problems.append(repr(e))
        finally:
            rb.close()

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end:
        b = rb.read(max_frames=999, timeout=0.5)
        if b.shape[0] == 0 and rb.closed and rb.available == 0:
            break
        got.append(b)
    t.join(timeout=10)
    assert not t.is_alive(), "producer thread did not finish"
    assert problems == []
    out = np.concatenate(got)[:, 0]
    np.testing.assert_array_equal(out, src[:, 0])
    assert rb.overruns == 0 and rb.dropped_samples == 0


def test_overrun_is_counted_and_gap_reported():
    rb = RingBuffer(capacity=10, channels=2)
    assert rb.write(np.ones((8, 2), np.float32)) == 8
    assert rb.write(np.full((5, 2), 2, np.float32)) == 2          # 3 dropped
    assert (rb.overruns, rb.dropped_samples, rb.missed()) == (1, 3, 3)
    assert rb.pending_gaps() == [Gap(start=10, length=3)]
    assert rb.take_gaps() == []                                    # the reader has not reached it yet
    data = rb.read()
    assert data.shape == (10, 2) and data[-1, 0] == 2
    assert rb.take_gaps() == [Gap(start=10, length=3)]
    assert rb.take_gaps() == []
    # consumer caught up: the next block fits again, and lands after the gap on the timeline
    assert rb.write(np.full((4, 2), 3, np.float32)) == 4
    assert rb.read().shape == (4, 2)


def test_read_stops_at_each_gap_so_audio_and_gaps_come_in_stream_order():
    rb = RingBuffer(capacity=100, channels=1)
    rb.write(np.full((30, 1), 1, np.float32))
    rb.mark_gap(7)                                                 # the device skipped 7 frames
    rb.write(np.full((20, 1), 2, np.float32))
    rb.write(np.full((60, 1), 3, np.float32))                      # 50 fit, 10 dropped
    rb.write(np.full((5, 1), 4, np.float32))                       # consecutive drop: same stall
    timeline = []
    t_end = time.monotonic() + 5
    while time.monotonic() < t_end:
        b = rb.read(timeout=0.01)
        if b.shape[0]:
            timeline.append(("audio", int(b[0, 0]), b.shape[0]))
        gaps = rb.take_gaps()
        timeline += [(g.kind, g.start, g.length) for g in gaps]
        if not b.shape[0] and not gaps:
            break
    assert timeline == [("audio", 1, 30), ("discontinuity", 30, 7), ("audio", 2, 70),
                        ("overrun", 107, 15)]
    assert (rb.overruns, rb.dropped_samples, rb.lost_frames, rb.gaps_total) == (2, 15, 7, 2)
    # a read with a timeout does not wait when a gap is due
    rb.mark_gap(3)
    t0 = time.monotonic()
    assert rb.read(timeout=2.0).shape == (0, 1) and time.monotonic() - t0 < 1.0
    assert rb.take_gaps() == [Gap(122, 3, "discontinuity")]


def test_close_error_comes_after_the_last_audio_and_gaps():
    rb = RingBuffer(capacity=10)
    rb.write(np.ones((4, 1), np.float32))
    rb.mark_gap(2)
    rb.close(RuntimeError("device gone"))
    assert rb.read().shape == (4, 1)
    assert rb.read().shape == (0, 1) and rb.take_gaps() == [Gap(4, 2, "discontinuity")]
    with pytest.raises(RuntimeError, match="device gone"):
        rb.read()


def test_stalled_consumer_with_real_threads_counts_every_dropped_sample():
    rb = RingBuffer(capacity=1000, channels=1)
    stop = threading.Event()
    offered = [0]

    def produce():
        while not stop.is_set() and offered[0] < 50_000:
            rb.write(np.zeros((100, 1), np.float32))
            offered[0] += 100

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    t.join(timeout=10)
    stop.set()
    t.join(timeout=10)
    assert not t.is_alive()
    kept = rb.read().shape[0]
    assert kept == 1000
    assert rb.dropped_samples == offered[0] - kept
    gaps = rb.take_gaps()
    assert len(gaps) == 1 and rb.gaps_total == 1                 # one stall: one gap, however many blocks
    assert gaps[0].length == rb.dropped_samples


def test_read_waits_then_times_out_and_close_propagates_error():
    rb = RingBuffer(capacity=16)
    assert rb.read(timeout=0.05).shape == (0, 1)
    timer = threading.Timer(0.05, lambda: rb.write(np.ones((3, 1), np.float32)))
    timer.start()
    assert rb.read(timeout=2.0).shape == (3, 1)
    rb.write(np.ones((2, 1), np.float32))
    rb.close(RuntimeError("device gone"))
    assert rb.read().shape == (2, 1)          # what was captured is not lost
    with pytest.raises(RuntimeError, match="device gone"):
        rb.read(timeout=1.0)


def test_bad_construction():
    with pytest.raises(ValueError):
        RingBuffer(0)
