"""The bounded expiring map the memory session and population stores keep
their values in: the rules of ``cachetools.TTLCache``, which they used before."""

from __future__ import annotations

import random

import pytest
from cachetools import TTLCache

from cadenza.origin.expiring import ExpiringLru


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_an_entry_expires_ttl_after_its_last_set_not_its_last_read() -> None:
    clock = Clock()
    entries: ExpiringLru[str, int] = ExpiringLru(10, 5.0, timer=clock)
    entries["a"] = 1
    clock.now_s += 4.0
    assert entries.get("a") == 1  # a read does not make it live longer
    clock.now_s += 1.0
    assert entries.get("a") is None
    entries["b"] = 2
    assert len(entries) == 1  # "a" was dropped on the set
    clock.now_s += 4.0
    entries["b"] = 3  # a set does
    clock.now_s += 4.0
    assert entries.get("b") == 3


def test_the_least_recently_used_makes_room_and_is_counted() -> None:
    clock = Clock()
    entries: ExpiringLru[str, int] = ExpiringLru(2, 60.0, timer=clock)
    entries["a"] = 1
    entries["b"] = 2
    assert entries.get("a") == 1  # "b" is now the least recently used
    entries["c"] = 3
    assert entries.get("b") is None
    assert (entries.get("a"), entries.get("c")) == (1, 3)
    assert entries.evictions == 1
    clock.now_s += 61.0
    entries["d"] = 4  # the others expired: no eviction
    assert entries.evictions == 1
    assert list(entries.values()) == [4]


def test_values_are_in_the_order_keys_were_first_set() -> None:
    clock = Clock()
    entries: ExpiringLru[str, int] = ExpiringLru(10, 60.0, timer=clock)
    for key in "abc":
        entries[key] = ord(key)
    entries["a"] = 0  # an update keeps its place
    assert list(entries.values()) == [0, ord("b"), ord("c")]


def test_it_keeps_what_a_ttl_cache_keeps() -> None:
    """The same random operations on both: the same answers, the same contents
    in the same order, and as many evictions as a TTLCache's popitem makes."""
    rng = random.Random(15)
    clock = Clock()
    mine: ExpiringLru[int, int] = ExpiringLru(8, 10.0, timer=clock)
    evicted = []

    class Counting(TTLCache[int, int]):
        def popitem(self) -> tuple[int, int]:
            item = super().popitem()
            evicted.append(item)
            return item

    theirs = Counting(maxsize=8, ttl=10.0, timer=clock)
    for step in range(20_000):
        key = rng.randrange(20)
        action = rng.random()
        if action < 0.45:
            mine[key] = step
            theirs[key] = step
        elif action < 0.9:
            assert mine.get(key) == theirs.get(key)
        elif action < 0.95:
            clock.now_s += rng.choice((0.5, 3.0, 10.0))
        else:
            mine.expire()
            theirs.expire()
            assert len(mine) == len(theirs)
            assert list(mine.values()) == list(theirs.values())
    assert mine.evictions == len(evicted) > 0


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        ExpiringLru(0, 1.0)
