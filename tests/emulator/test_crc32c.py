"""CRC-32C as VHDX checksums use it, trailing zero runs included."""

from __future__ import annotations

import random

from hyperv_agent.emulator.vhdfmt_vhdx import CRC32C_POLYNOMIAL, crc32c


def _bitwise(data: bytes) -> int:
    """CRC-32C one bit at a time, straight from the polynomial."""
    crc = 0xFFFF_FFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CRC32C_POLYNOMIAL if crc & 1 else 0)
    return crc ^ 0xFFFF_FFFF


def test_crc32c_matches_bitwise_crc_when_data_ends_in_zero_runs() -> None:
    rng = random.Random(32)
    for zeros in (0, 1, 2, 3, 7, 8, 255, 256, 4000, 4096, 65536 - 80):
        head = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 90)))
        data = head + bytes(zeros)
        assert crc32c(data) == _bitwise(data), zeros


def test_crc32c_matches_bitwise_crc_when_data_is_all_zeros() -> None:
    for size in (1, 4, 4096):
        assert crc32c(bytes(size)) == _bitwise(bytes(size))
