"""The tick's fingerprint collection that the stores' sweeps compare with."""

from __future__ import annotations

from pamd.alerts.seen import TickFingerprints
from pamd.model import Alert, Priority


def test_default_fingerprints_pack_to_16_bytes_and_others_stay_as_spelled() -> None:
    defaults = [Alert(user_id=f"u{i}", kind="fuel_low", priority=Priority.HIGH, title="t", body="b",
                      monitor="fuel").default_fingerprint() for i in range(3)]
    odd = ["Fuel:u3:Custom", "ABCDEF0123456789ABCDEF0123456789", "a" * 31, "g" * 32, ""]
    seen = TickFingerprints()
    seen.add([defaults[0], odd[0], defaults[1]])
    seen.add(iter([*odd[1:], defaults[2], defaults[0]]))
    assert len(seen) == 9
    assert len(seen.digests) == 4 * 16
    assert seen.others == odd  # upper case, short, non-hex and empty ones: not packed
    assert list(seen) == [defaults[0], defaults[1], defaults[2], defaults[0], *odd]
    assert list(TickFingerprints()) == []
