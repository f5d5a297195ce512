"""inference/prefetch.py: loading overlapped with generation keeps order and raises where a loop would."""

import threading

import pytest

from domainvlm.inference.prefetch import prefetched


def test_prefetched_keeps_order_and_loads_the_next_chunk_in_a_worker():
    threads = []

    def load(c):
        threads.append(threading.current_thread().name)
        return [x * 10 for x in c]

    got = list(prefetched(iter([[1, 2], [3], [4, 5]]), load))
    assert got == [([1, 2], [10, 20]), ([3], [30]), ([4, 5], [40, 50])]
    assert all(t.startswith("prefetch") for t in threads) and len(threads) == 3
    assert list(prefetched([], load)) == []


def test_prefetched_raises_at_the_failing_chunk_after_yielding_the_earlier_ones():
    def load(c):
        if c == "bad":
            raise ValueError("bad chunk")
        return c.upper()

    it = prefetched(["a", "bad", "c"], load)
    assert next(it) == ("a", "A")
    with pytest.raises(ValueError, match="bad chunk"):
        next(it)


def test_parallel_map_keeps_order_and_raises_like_a_loop():
    from domainvlm.inference.prefetch import parallel_map

    assert parallel_map(lambda x: x * x, list(range(1000))) == [x * x for x in range(1000)]
    assert parallel_map(str, []) == []

    def boom(x):
        if x == 500:
            raise ValueError("row 500")
        return x

    with pytest.raises(ValueError, match="row 500"):
        parallel_map(boom, list(range(1000)))


def test_even_chunks_split_as_equally_as_the_batch_size_allows():
    from domainvlm.inference.prefetch import even_chunks

    sizes = [len(c) for c in even_chunks(list(range(5703)), 2048)]
    assert sizes == [1901, 1901, 1901]
    sizes = [len(c) for c in even_chunks(list(range(12450)), 2048)]
    assert len(sizes) == 7 and max(sizes) - min(sizes) <= 1 and max(sizes) <= 2048 and sum(sizes) == 12450
    items = list(range(10))
    assert [x for c in even_chunks(items, 3) for x in c] == items  # order kept, nothing lost or repeated
    assert [len(c) for c in even_chunks(items, 3)] == [2, 3, 2, 3]
    assert list(even_chunks([], 8)) == [] and [len(c) for c in even_chunks([1], 8)] == [1]
