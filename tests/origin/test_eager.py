"""origin/transport/eager.py: a coroutine run until it first waits, then handed
to a task that goes on exactly as ``await`` would have."""

from __future__ import annotations

import asyncio

import pytest

from cadenza.origin.transport import eager


async def _never_waits(log: list[str]) -> int:
    log.append("ran")
    return 7


async def _waits_for(future: asyncio.Future[int], log: list[str]) -> int:
    log.append("before")
    try:
        value = await future
    except ValueError as exc:
        log.append(f"caught {exc}")
        return -1
    except asyncio.CancelledError:
        log.append("cancelled")
        raise
    log.append("after")
    await asyncio.sleep(0)  # a bare loop turn: a yield of None
    log.append("turned")
    return value * 2


async def _fails_at_once() -> int:
    raise KeyError("at once")


def test_a_coroutine_that_never_waits_is_done_on_the_callers_stack() -> None:
    log: list[str] = []
    started = eager.start(_never_waits(log))
    assert log == ["ran"]
    assert isinstance(started, eager.Done)
    assert started.value == 7


def test_an_error_before_the_first_wait_is_the_callers() -> None:
    with pytest.raises(KeyError, match="at once"):
        eager.start(_fails_at_once())


def test_a_coroutine_that_waits_goes_on_in_a_task_with_the_futures_value() -> None:
    async def main() -> tuple[int, list[str]]:
        log: list[str] = []
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        started = eager.start(_waits_for(future, log))
        assert isinstance(started, eager.Started)
        assert log == ["before"]

        async def resume() -> int:
            return await started

        task = asyncio.get_running_loop().create_task(resume())
        await asyncio.sleep(0)
        assert log == ["before"]  # still waiting for the future
        future.set_result(21)
        return await task, log

    value, log = asyncio.run(main())
    assert value == 42
    assert log == ["before", "after", "turned"]


def test_the_futures_error_and_a_cancellation_reach_the_coroutine() -> None:
    async def main() -> tuple[int, list[str], list[str], bool]:
        loop = asyncio.get_running_loop()
        failing_log: list[str] = []
        failing: asyncio.Future[int] = loop.create_future()
        started = eager.start(_waits_for(failing, failing_log))
        assert isinstance(started, eager.Started)

        async def resume(awaited: eager.Started[int]) -> int:
            return await awaited

        failed = loop.create_task(resume(started))
        await asyncio.sleep(0)
        failing.set_exception(ValueError("broken"))
        value = await failed

        cancelled_log: list[str] = []
        never: asyncio.Future[int] = loop.create_future()
        waiting = eager.start(_waits_for(never, cancelled_log))
        assert isinstance(waiting, eager.Started)
        task = loop.create_task(resume(waiting))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return value, failing_log, cancelled_log, never.cancelled()

    value, failing_log, cancelled_log, never_cancelled = asyncio.run(main())
    assert value == -1
    assert failing_log == ["before", "caught broken"]
    assert cancelled_log == ["before", "cancelled"]
    assert never_cancelled
