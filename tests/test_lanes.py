"""Keyed work in lanes (pamd.alerts.lanes): each key's items in order, keys side by side up to a limit."""

from __future__ import annotations

import asyncio

import pytest

from pamd.alerts.lanes import in_lanes


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


ITEMS = [(user, n) for n in range(4) for user in "abcdefghij"]  # ten users' alerts, interleaved as stored


@pytest.mark.anyio
async def test_keys_go_side_by_side_up_to_the_limit_each_in_order() -> None:
    done: list[tuple[str, int]] = []
    in_flight, most = 0, 0

    async def work(item: tuple[str, int]) -> bool:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001 * (ord(item[0]) % 3))  # lanes of unequal pace
        in_flight -= 1
        done.append(item)
        return True

    await in_lanes(ITEMS, lambda item: item[0], 4, work)
    assert sorted(done) == sorted(ITEMS)
    assert most == 4
    for user in "abcdefghij":
        assert [n for u, n in done if u == user] == [0, 1, 2, 3]


@pytest.mark.anyio
async def test_limit_one_keeps_the_given_order_and_false_ends_a_lane() -> None:
    done: list[tuple[str, int]] = []

    async def work(item: tuple[str, int]) -> bool:
        done.append(item)
        return not (item[0] == "b" and item[1] == 1)  # b's second item ends b's lane

    await in_lanes(ITEMS, lambda item: item[0], 1, work)
    assert done == [item for item in ITEMS if item[0] != "b" or item[1] <= 1]

    done.clear()
    await in_lanes(ITEMS, lambda item: item[0], 3, work)
    assert sorted(done) == sorted(item for item in ITEMS if item[0] != "b" or item[1] <= 1)


@pytest.mark.anyio
async def test_an_error_ends_every_lane_and_is_raised() -> None:
    started: list[tuple[str, int]] = []

    async def work(item: tuple[str, int]) -> bool:
        started.append(item)
        if item == ("c", 0):
            raise ValueError("boom")
        await asyncio.sleep(0.01)
        return True

    with pytest.raises(ValueError, match="boom"):
        await in_lanes(ITEMS, lambda item: item[0], 3, work)
    await asyncio.sleep(0.05)  # nothing goes on in the background
    assert len(started) == 3  # a, b and c began; the error cancelled a and b mid-item
