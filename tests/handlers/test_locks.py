"""The lock tables: a command that needs a name twice, or several names, never waits for
itself, and two commands that need the same names never wait for each other."""

from __future__ import annotations

import asyncio

from hyperv_agent.handlers.locks import NamedLocks

PROMPT_S = 5.0  # far above what any of these takes; a deadlock fails the test
SOURCE, TARGET = "C:\\pool\\a.vhdx", "D:\\pool2\\a.vhdx"


async def test_holding_one_name_twice_at_once_does_not_wait_for_itself() -> None:
    locks = NamedLocks()

    async def both() -> None:
        async with locks.hold_all(SOURCE, SOURCE.upper()):
            assert locks.busy(SOURCE) and len(locks) == 1

    await asyncio.wait_for(both(), PROMPT_S)
    assert len(locks) == 0


async def test_a_name_held_again_inside_its_own_block_is_held_at_once() -> None:
    locks = NamedLocks()
    order: list[str] = []

    async def nested() -> None:
        async with locks.hold(SOURCE):
            await asyncio.sleep(0.05)  # another command now waits for the name
            async with locks.hold(SOURCE.lower()):
                order.append("inner")
            order.append("outer")

    async def other() -> None:
        await asyncio.sleep(0.01)
        async with locks.hold(SOURCE):
            order.append("other")

    await asyncio.wait_for(asyncio.gather(nested(), other()), PROMPT_S)
    assert order == ["inner", "outer", "other"]  # the other command still waited its turn
    assert len(locks) == 0


async def test_two_commands_needing_the_same_names_in_opposite_orders_both_finish() -> None:
    locks = NamedLocks()
    done: list[str] = []

    async def move(first: str, second: str) -> None:
        async with locks.hold_all(first, second):
            await asyncio.sleep(0.05)
            done.append(first)

    await asyncio.wait_for(asyncio.gather(move(SOURCE, TARGET), move(TARGET, SOURCE)),
                           PROMPT_S)
    assert sorted(done) == sorted([SOURCE, TARGET]) and len(locks) == 0


async def test_every_name_is_released_when_the_block_fails() -> None:
    locks = NamedLocks()
    try:
        async with locks.hold_all(SOURCE, TARGET):
            raise ValueError("the command failed")
    except ValueError:
        pass
    assert len(locks) == 0 and not locks.busy(SOURCE) and not locks.busy(TARGET)
    async with asyncio.timeout(PROMPT_S), locks.hold_all(TARGET, SOURCE):
        pass


# --- shared holds ----------------------------------------------------------------------------


async def test_shared_holders_of_a_name_hold_it_together() -> None:
    locks = NamedLocks()
    inside = asyncio.Event()
    together = 0

    async def share() -> None:
        nonlocal together
        async with locks.hold_shared(SOURCE):
            together += 1
            if together == 3:
                inside.set()
            await inside.wait()  # each waits until all three are inside at once

    await asyncio.wait_for(asyncio.gather(share(), share(), share()), PROMPT_S)
    assert len(locks) == 0


async def test_a_holder_alone_waits_for_the_shared_ones_and_later_sharers_wait_for_it() -> None:
    locks = NamedLocks()
    order: list[str] = []
    release = asyncio.Event()

    async def share(tag: str) -> None:
        async with locks.hold_shared(SOURCE.upper()):
            order.append(f"{tag} in")
            await release.wait()
            order.append(f"{tag} out")

    async def alone() -> None:
        async with locks.hold(SOURCE):
            order.append("alone")

    first = asyncio.create_task(share("first"))
    await asyncio.sleep(0)
    exclusive = asyncio.create_task(alone())
    await asyncio.sleep(0)
    later = asyncio.create_task(share("later"))
    await asyncio.sleep(0.05)
    assert order == ["first in"]  # the exclusive holder waits; the later sharer behind it
    release.set()
    await asyncio.wait_for(asyncio.gather(first, exclusive, later), PROMPT_S)
    assert order == ["first in", "first out", "alone", "later in", "later out"]
    assert len(locks) == 0


async def test_hold_all_takes_shared_names_shared_and_a_name_in_both_alone() -> None:
    locks = NamedLocks()

    async def clone(target: str) -> None:
        async with locks.hold_all(target, shared=(SOURCE,)):
            await asyncio.sleep(0.05)
            async with locks.hold_shared(SOURCE), locks.hold(target):  # held at once
                pass

    async def both() -> None:
        async with locks.hold_all(SOURCE, shared=(SOURCE.lower(),)):
            assert locks.busy(SOURCE)
            async with locks.hold(SOURCE):  # held alone: held again at once
                pass

    await asyncio.wait_for(asyncio.gather(clone(TARGET), clone(TARGET + "2"), both()),
                           PROMPT_S)
    assert len(locks) == 0


async def test_a_cancelled_waiter_leaves_the_name_usable() -> None:
    locks = NamedLocks()
    release = asyncio.Event()

    async def share() -> None:
        async with locks.hold_shared(SOURCE):
            await release.wait()

    sharing = asyncio.create_task(share())
    await asyncio.sleep(0)

    async def alone() -> None:
        async with locks.hold(SOURCE):
            pass

    waiting = asyncio.create_task(alone())
    await asyncio.sleep(0.01)
    waiting.cancel()
    release.set()
    await sharing
    async with asyncio.timeout(PROMPT_S), locks.hold(SOURCE), locks.hold_all(TARGET):
        pass
    assert len(locks) == 0
