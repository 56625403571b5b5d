"""A coroutine run at once, on the caller's stack, until it first waits.

Most loads the fast transport starts never wait: a decided segment
(``?abr=origin``) with the in-process session store awaits nothing that
suspends.  A task per request would cost a task object, a loop turn before it
starts and its scheduling, a measurable share of a decided request.
:func:`start` runs the coroutine now and, only when it has to wait, gives back
an awaitable that goes on from where it stopped (to be awaited in a task), as
Python 3.12's eager tasks do."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """A coroutine that finished without waiting, and its value."""

    value: T


class Started(Generic[T]):
    """A coroutine that stopped at its first wait (``waiting``: what it yielded,
    the future it waits for, or None for a bare loop turn).  Awaiting this hands
    that to the awaiting task, then drives the coroutine on: what the task sends
    in or throws in (a cancellation) goes on to the coroutine, as ``await``
    would have passed it."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, T], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, T]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                sent = yield waiting
            except BaseException as exc:  # thrown in by the task: the coroutine's to handle
                try:
                    waiting = coro.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]


def start(coro: Coroutine[Any, Any, T]) -> Done[T] | Started[T]:
    """Run ``coro`` until it finishes (:class:`Done`) or first waits
    (:class:`Started`: await it in a task).  Raises what ``coro`` raises before
    it first waits."""
    try:
        waiting = coro.send(None)
    except StopIteration as done:
        return Done(done.value)
    return Started(coro, waiting)
