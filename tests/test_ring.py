import threading

import numpy as np
import pytest

from realtime.ring import Gap, RingBuffer


def test_fifo_order_with_real_threads():
    rb = RingBuffer(capacity=4096, channels=1)
    total = 200_000
    src = np.arange(total, dtype=np.float32)[:, None]
    got = []

    def produce():
        i = 0
        rng = np.random.default_rng(1)
        while i < total:
            n = int(rng.integers(1, 700))
            block = src[i:i + n]
            # never overrun in this test: wait for room like a well-behaved producer
            while rb.capacity - rb.available < block.shape[0]:
                pass
            assert rb.write(block) == block.shape[0]
            i += n
        rb.close()

    t = threading.Thread(target=produce)
    t.start()
    while True:
        b = rb.read(max_frames=999, timeout=0.5)
        if b.shape[0] == 0 and rb.closed and rb.available == 0:
            break
        got.append(b)
    t.join()
    out = np.concatenate(got)[:, 0]
    np.testing.assert_array_equal(out, src[:, 0])
    assert rb.overruns == 0 and rb.dropped_samples == 0


def test_overrun_is_counted_and_gap_reported():
    rb = RingBuffer(capacity=10, channels=2)
    assert rb.write(np.ones((8, 2), np.float32)) == 8
    assert rb.write(np.full((5, 2), 2, np.float32)) == 2          # 3 dropped
    assert (rb.overruns, rb.dropped_samples, rb.missed()) == (1, 3, 3)
    assert rb.take_gaps() == [Gap(start=10, length=3)]
    assert rb.take_gaps() == []
    data = rb.read()
    assert data.shape == (10, 2) and data[-1, 0] == 2
    # consumer caught up: the next block fits again, and lands after the gap on the timeline
    assert rb.write(np.full((4, 2), 3, np.float32)) == 4
    assert rb.read().shape == (4, 2)


def test_stalled_consumer_with_real_threads_counts_every_dropped_sample():
    rb = RingBuffer(capacity=1000, channels=1)
    stop = threading.Event()
    offered = [0]

    def produce():
        while not stop.is_set() and offered[0] < 50_000:
            rb.write(np.zeros((100, 1), np.float32))
            offered[0] += 100

    t = threading.Thread(target=produce)
    t.start()
    t.join(timeout=10)
    stop.set()
    kept = rb.read().shape[0]
    assert kept == 1000
    assert rb.dropped_samples == offered[0] - kept
    assert sum(g.length for g in rb.take_gaps()) == rb.dropped_samples


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
