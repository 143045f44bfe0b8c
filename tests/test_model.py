"""Alert ids: monotonic ULIDs that sort by creation time, checked against a plain reference encoder."""

from __future__ import annotations

from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from pamd.model import new_alert_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference_ulid(ms: int, randomness: bytes) -> str:
    value = (ms << 80) | int.from_bytes(randomness, "big")
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


@given(st.integers(0, 2**48 - 1), st.binary(min_size=10, max_size=10))
def test_ulid_matches_the_reference_encoding(ms: int, randomness: bytes) -> None:
    new_alert_id(ms + 1 if ms < 2**48 - 1 else 0)  # another millisecond first: ms then reads fresh randomness
    with mock.patch("os.urandom", return_value=randomness):
        assert new_alert_id(ms) == reference_ulid(ms, randomness)


@given(st.integers(0, 2**48 - 1), st.integers(2, 500))
def test_ids_of_one_millisecond_count_up(ms: int, count: int) -> None:
    new_alert_id(ms + 1 if ms < 2**48 - 1 else 0)
    with mock.patch("os.urandom", return_value=b"\x00" * 9 + b"\x07") as urandom:
        ids = [new_alert_id(ms) for _ in range(count)]
    assert urandom.call_count == 1  # the random source is read once per millisecond
    assert ids == sorted(ids) and len(set(ids)) == count
    assert ids[-1] == reference_ulid(ms, (7 + count - 1).to_bytes(10, "big"))


@given(st.integers(0, 2**48 - 2), st.integers(1, 10**6))
def test_later_ids_sort_later(ms: int, step: int) -> None:
    later = min(ms + step, 2**48 - 1)
    assert new_alert_id(ms) < new_alert_id(later)
    assert len(new_alert_id(ms)) == 26 and set(new_alert_id(ms)) <= set(CROCKFORD)


@given(st.integers(0, 2**48 - 1), st.sampled_from([1020, 2**20 - 3, 2**80 - 4]))
def test_counting_up_across_a_digit_boundary_and_the_wrap_matches_the_reference(ms: int, start: int) -> None:
    new_alert_id(ms + 1 if ms < 2**48 - 1 else 0)
    with mock.patch("os.urandom", return_value=start.to_bytes(10, "big")):
        ids = [new_alert_id(ms) for _ in range(8)]
    assert ids == [reference_ulid(ms, ((start + i) % 2**80).to_bytes(10, "big")) for i in range(8)]
