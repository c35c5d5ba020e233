"""transfer(): plain, decompressing and verified copies onto host folders, and what a
failed or cancelled copy leaves behind (nothing)."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

import pytest
from bench.bench_copy import RSS_BUDGET_MB, big_copy

from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.api import COPY_CHUNK_BYTES, OpenMode
from hyperv_agent.hostfs.aside import AsideFiles
from hyperv_agent.hostfs.local import LocalFiles
from hyperv_agent.hostfs.transfer import (
    TransferError,
    parse_checksum,
    transfer,
)
from tests.cramped import Cramped

DISK = os.urandom(700_000) + bytes(2_300_000) + b"end of disk"
OLD = b"the target as it was"
SHARE = "\\\\10.1.1.2\\secondary"


@pytest.fixture
def files() -> LocalFiles:
    return LocalFiles()


def _store(folder: Path, name: str, data: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return str(folder / name)


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED,
         streamed: bool = False) -> bytes:
    """A zip archive; ``streamed`` writes it as to a pipe (sizes in data descriptors, zip64)."""
    sink = io.BytesIO()
    target: BinaryIO = _Unseekable(sink) if streamed else sink  # type: ignore[assignment]
    with zipfile.ZipFile(target, "w", method) as archive:
        for name, data in members.items():
            with archive.open(name, "w", force_zip64=streamed) as member:
                member.write(data)
    return sink.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self, sink: io.BytesIO) -> None:
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        return self._sink.write(data)  # type: ignore[arg-type]


def _untouched(folder: Path, before: dict[str, bytes]) -> None:
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


# --- plain, decompressing and zip copies -------------------------------------------------


async def test_plain_copy_lands_under_the_target_name_when_the_source_is_a_host_path(
        files: LocalFiles, tmp_path: Path) -> None:
    source = _store(tmp_path / "src", "t.vhd", DISK)
    target = tmp_path / "pool" / "t.vhd"
    target.parent.mkdir()
    done = await transfer(files, source, str(target))
    assert target.read_bytes() == DISK
    assert (done.target, done.size, done.source_bytes) == (str(target), len(DISK), len(DISK))
    assert os.listdir(target.parent) == ["t.vhd"]


async def test_plain_copy_uses_the_backends_copy_file_when_nothing_is_checked(
        tmp_path: Path) -> None:
    class Recording(LocalFiles):
        copies: list[tuple[str, str]] = []  # noqa: RUF012

        async def copy_file(self, source: str, target: str) -> int:
            self.copies.append((source, target))
            return await super().copy_file(source, target)

    recording = Recording()
    source = _store(tmp_path, "t.vhd", DISK)
    await transfer(recording, source, str(tmp_path / "out.vhd"))
    assert len(recording.copies) == 1
    assert recording.copies[0][0] == source
    assert Path(recording.copies[0][1]).name.startswith(".out.vhd.partial-")
    await transfer(recording, source, str(tmp_path / "sum.vhd"),
                   checksum=hashlib.md5(DISK).hexdigest())
    assert len(recording.copies) == 1  # a verified copy streams instead


async def test_digest_is_returned_when_asked_for_and_refused_when_unknown(
        files: LocalFiles, tmp_path: Path) -> None:
    source = _store(tmp_path / "src", "t.vhd", DISK)
    done = await transfer(files, source, str(tmp_path / "src" / "copy.vhd"), digest="md5")
    assert done.digest == hashlib.md5(DISK).hexdigest()
    assert (tmp_path / "src" / "copy.vhd").read_bytes() == DISK
    plain = await transfer(files, source, str(tmp_path / "src" / "plain.vhd"))
    assert plain.digest is None
    with pytest.raises(TransferError, match="unknown digest algorithm 'nope'"):
        await transfer(files, source, str(tmp_path / "src" / "never.vhd"), digest="nope")
    assert sorted(os.listdir(tmp_path / "src")) == ["copy.vhd", "plain.vhd", "t.vhd"]


@pytest.mark.parametrize(("name", "pack"), [
    ("t.vhd.bz2", bz2.compress),
    ("t.vhd.gz", gzip.compress),
    ("t.vhd.bz2", lambda data: bz2.compress(data[:1000]) + bz2.compress(data[1000:])),
    ("t.vhd.gz", lambda data: gzip.compress(data[:1000]) + gzip.compress(data[1000:])),
    ("t.vhd.xz", lzma.compress),
    ("t.vhd.XZ", lambda data: lzma.compress(data[:1000]) + lzma.compress(data[1000:])),
])
async def test_compressed_source_is_expanded_when_its_name_says_so(
        files: LocalFiles, tmp_path: Path, name: str, pack: Callable[[bytes], bytes]) -> None:
    packed = pack(DISK)
    source = _store(tmp_path, name, packed)
    done = await transfer(files, source, str(tmp_path / "t.vhd"))
    assert (tmp_path / "t.vhd").read_bytes() == DISK
    assert (done.size, done.source_bytes) == (len(DISK), len(packed))


async def test_compressed_source_is_copied_as_is_when_decompression_is_off(
        files: LocalFiles, tmp_path: Path) -> None:
    packed = bz2.compress(DISK)
    source = _store(tmp_path, "t.vhd.bz2", packed)
    await transfer(files, source, str(tmp_path / "copy.bz2"), decompress=False)
    assert (tmp_path / "copy.bz2").read_bytes() == packed


@pytest.mark.parametrize(("method", "streamed"), [
    (zipfile.ZIP_DEFLATED, False), (zipfile.ZIP_STORED, False), (zipfile.ZIP_DEFLATED, True)])
async def test_zip_source_yields_its_single_disk_image_when_other_members_surround_it(
        files: LocalFiles, tmp_path: Path, method: int, streamed: bool) -> None:
    archive = _zip({"README.txt": b"read me", "disk/T.VHDX": DISK, "notes/": b""},
                   method, streamed)
    source = _store(tmp_path, "t.zip", archive)
    done = await transfer(files, source, str(tmp_path / "t.vhdx"),
                          checksum=hashlib.sha256(archive).hexdigest())
    assert (tmp_path / "t.vhdx").read_bytes() == DISK
    assert (done.size, done.source_bytes) == (len(DISK), len(archive))


@pytest.mark.parametrize(("members", "message"), [
    ({"a.vhd": b"one", "b.iso": b"two"}, "several disk images (a.vhd, b.iso)"),
    ({"readme.txt": b"nothing here"}, "holds no disk image"),
])
async def test_zip_source_is_refused_when_it_does_not_hold_exactly_one_image(
        files: LocalFiles, tmp_path: Path, members: dict[str, bytes], message: str) -> None:
    source = _store(tmp_path, "t.zip", _zip(members))
    with pytest.raises(TransferError, match=re.escape(message)):
        await transfer(files, source, str(tmp_path / "t.vhd"))
    assert sorted(os.listdir(tmp_path)) == ["t.zip"]


def _xz_asking_for(dictionary_property: int) -> bytes:
    """An xz file of ``DISK`` whose block header asks the decoder for the LZMA2 dictionary
    that property byte names (36: 1 GiB), its header checksum made right again."""
    data = bytearray(lzma.compress(DISK))
    header = 12  # the stream header; the block header follows: size, flags, filter 0x21
    assert data[header:header + 4] == bytes([0x02, 0x00, 0x21, 0x01])
    data[header + 4] = dictionary_property
    data[header + 8:header + 12] = zlib.crc32(data[header:header + 8]).to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize(("name", "data", "message"), [
    ("t.vhd.bz2", b"BZh91AY&SY" + b"\x00" * 100, "is not a valid bzip2 stream"),
    ("t.vhd.bz2", b"this is plain text, not bzip2", "is not a valid bzip2 stream"),
    ("t.vhd.gz", gzip.compress(DISK)[:200_000], "is truncated: the gzip stream ends early"),
    ("t.vhd.bz2", bz2.compress(DISK)[:-40], "is truncated: the bzip2 stream ends early"),
    ("t.vhd.gz", b"", "is empty"),
    ("t.vhd.xz", b"", "is empty"),
    ("t.vhd.xz", lzma.compress(DISK)[:-40], "is truncated: the xz stream ends early"),
    ("t.vhd.xz", bz2.compress(DISK), "is not a valid xz stream"),
    ("t.vhd.xz", _xz_asking_for(36), "is not a valid xz stream .Memory usage limit"),
    ("t.zip", b"PK\x03\x04 cut short", "truncated"),
    ("t.zip", b"this is no zip archive at all", "is not a valid zip archive"),
    ("t.zip", _zip({"t.vhd": DISK})[:-5000], "truncated"),
])
async def test_corrupt_source_fails_with_one_line_and_leaves_the_target_when_it_existed(
        files: LocalFiles, tmp_path: Path, name: str, data: bytes, message: str) -> None:
    source = _store(tmp_path, name, data)
    (tmp_path / "t.vhd").write_bytes(OLD)
    with pytest.raises(TransferError, match=message) as caught:
        await transfer(files, source, str(tmp_path / "t.vhd"))
    assert "\n" not in str(caught.value) and source in str(caught.value)
    _untouched(tmp_path, {name: data, "t.vhd": OLD})


async def test_zip_member_with_a_bad_crc_is_refused_when_stored(
        files: LocalFiles, tmp_path: Path) -> None:
    archive = bytearray(_zip({"t.vhd": DISK}, zipfile.ZIP_STORED))
    archive[30 + len("t.vhd") + 5] ^= 0xFF  # one byte of the stored member's data
    source = _store(tmp_path, "t.zip", bytes(archive))
    with pytest.raises(TransferError, match=re.escape("t.vhd is corrupt")):
        await transfer(files, source, str(tmp_path / "t.vhd"))
    assert os.listdir(tmp_path) == ["t.zip"]


# --- checksums ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", [
    hashlib.md5(DISK).hexdigest(), hashlib.sha1(DISK).hexdigest().upper(),
    hashlib.sha256(DISK).hexdigest(), hashlib.sha512(DISK).hexdigest(),
    "{SHA-256}" + hashlib.sha256(DISK).hexdigest(), "{md5}" + hashlib.md5(DISK).hexdigest(),
])
async def test_checksum_passes_when_it_matches_in_any_accepted_form(
        files: LocalFiles, tmp_path: Path, form: str) -> None:
    source = _store(tmp_path, "t.vhd", DISK)
    await transfer(files, source, str(tmp_path / "out.vhd"), checksum=form)
    assert (tmp_path / "out.vhd").read_bytes() == DISK


async def test_checksum_is_of_the_source_as_stored_when_it_is_compressed(
        files: LocalFiles, tmp_path: Path) -> None:
    packed = gzip.compress(DISK)
    source = _store(tmp_path, "t.vhd.gz", packed)
    await transfer(files, source, str(tmp_path / "t.vhd"),
                   checksum=hashlib.md5(packed).hexdigest())
    assert (tmp_path / "t.vhd").read_bytes() == DISK
    with pytest.raises(TransferError, match="checksum mismatch"):
        await transfer(files, source, str(tmp_path / "u.vhd"),
                       checksum=hashlib.md5(DISK).hexdigest())


async def test_checksum_mismatch_names_both_and_leaves_the_target_when_it_existed(
        files: LocalFiles, tmp_path: Path) -> None:
    source = _store(tmp_path, "t.vhd", DISK)
    (tmp_path / "out.vhd").write_bytes(OLD)
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(TransferError) as caught:
        await transfer(files, source, str(tmp_path / "out.vhd"), checksum=wrong)
    message = str(caught.value)
    assert wrong in message and hashlib.sha256(DISK).hexdigest() in message
    _untouched(tmp_path, {"t.vhd": DISK, "out.vhd": OLD})


@pytest.mark.parametrize("bad", ["", "abc", "z" * 32, "{SHA-256}" + "a" * 32,
                                 "{CRC32}deadbeef", "a" * 33])
async def test_malformed_checksum_is_refused_when_nothing_was_written(
        files: LocalFiles, tmp_path: Path, bad: str) -> None:
    source = _store(tmp_path, "t.vhd", DISK)
    with pytest.raises(TransferError, match="checksum"):
        await transfer(files, source, str(tmp_path / "out.vhd"), checksum=bad)
    assert os.listdir(tmp_path) == ["t.vhd"]


def test_checksum_forms_pick_their_algorithm_when_parsed() -> None:
    assert parse_checksum("A" * 40).algorithm == "sha1"
    assert parse_checksum(" {SHA-512}" + "b" * 128).algorithm == "sha512"
    assert parse_checksum("{Sha1}" + "C" * 40).hex == "c" * 40


# --- replacing, failing and cancelling ----------------------------------------------------


async def test_existing_target_is_replaced_when_the_copy_succeeds(
        files: LocalFiles, tmp_path: Path) -> None:
    source = _store(tmp_path, "t.vhd.bz2", bz2.compress(DISK))
    (tmp_path / "t.vhd").write_bytes(OLD)
    await transfer(files, source, str(tmp_path / "t.vhd"))
    assert (tmp_path / "t.vhd").read_bytes() == DISK
    assert sorted(os.listdir(tmp_path)) == ["t.vhd", "t.vhd.bz2"]


async def test_missing_source_fails_when_nothing_is_there(
        files: LocalFiles, tmp_path: Path) -> None:
    for checksum in (None, hashlib.md5(b"").hexdigest()):
        with pytest.raises(HostFileError, match=re.escape("no-such.vhd")):
            await transfer(files, str(tmp_path / "no-such.vhd"), str(tmp_path / "t.vhd"),
                           checksum=checksum)
    assert os.listdir(tmp_path) == []


class _Gated(LocalFiles):
    """Reads of the source pause after the first chunk until ``release`` is set; writes can
    be made to fail once ``full_after`` bytes were written."""

    def __init__(self, full_after: int | None = None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.full_after = full_after

    def open_binary(self, path: str, mode: OpenMode) -> BinaryIO:
        handle = super().open_binary(path, mode)
        if mode == "rb":
            return _PausingReader(handle, self.started, self.release)  # type: ignore[return-value]
        if self.full_after is not None:
            return _FillingWriter(handle, self.full_after)  # type: ignore[return-value]
        return handle


class _PausingReader(io.RawIOBase):
    def __init__(self, inner: BinaryIO, started: threading.Event,
                 release: threading.Event) -> None:
        self._inner, self._started, self._release = inner, started, release

    def read(self, size: int = -1) -> bytes:
        if self._started.is_set():
            assert self._release.wait(10)
        self._started.set()
        return self._inner.read(size)

    def close(self) -> None:
        self._inner.close()
        super().close()


class _FillingWriter(io.RawIOBase):
    def __init__(self, inner: BinaryIO, room: int) -> None:
        self._inner, self._room = inner, room

    def write(self, data: object) -> int:
        chunk = bytes(data)  # type: ignore[call-overload]
        if len(chunk) > self._room:
            raise OSError(28, "No space left on device")
        self._room -= len(chunk)
        return self._inner.write(chunk)

    def close(self) -> None:
        self._inner.close()
        super().close()


async def test_copy_sweeps_its_agents_stale_aside_files_but_not_a_running_copys_or_others(
        tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    mine, theirs, older = (".lost.vhd.partial-aaaa0001-0123456789ab",
                           ".x.vhd.partial-bbbb0002-0123456789ab", ".y.vhd.partial-0123456789ab")
    for name in (mine, theirs, older):
        (pool / name).write_bytes(b"left by a killed copy")
    big, small = tmp_path / "big.vhd", tmp_path / "small.vhd"
    big.write_bytes(os.urandom(3 * COPY_CHUNK_BYTES))
    small.write_bytes(b"small disk")
    aside, gated = AsideFiles("aaaa0001"), _Gated()
    running = asyncio.create_task(transfer(gated, str(big), str(pool / "slow.vhd"),
                                           digest="md5", aside=aside))
    assert await asyncio.to_thread(gated.started.wait, 10)
    (writing,) = [n for n in os.listdir(pool) if n.startswith(".slow.vhd.partial-aaaa0001-")]
    await transfer(LocalFiles(), str(small), str(pool / "new.vhd"), aside=aside)
    assert sorted(os.listdir(pool)) == sorted(["new.vhd", writing, theirs, older])
    gated.release.set()
    await running
    assert sorted(os.listdir(pool)) == sorted(["new.vhd", "slow.vhd", theirs, older])
    assert (pool / "slow.vhd").read_bytes() == big.read_bytes()


@pytest.mark.parametrize("name", ["t.vhd", "t.vhd.gz"])
async def test_cancelled_copy_leaves_nothing_when_cancelled_midway(
        tmp_path: Path, name: str) -> None:
    big = os.urandom(COPY_CHUNK_BYTES) * 4
    data = gzip.compress(big, 1) if name.endswith(".gz") else big
    source = _store(tmp_path / "src", name, data)
    (tmp_path / "t.vhd").write_bytes(OLD)
    gated = _Gated()
    task = asyncio.ensure_future(transfer(gated, source, str(tmp_path / "t.vhd"),
                                          checksum=hashlib.md5(data).hexdigest()))
    assert await asyncio.to_thread(gated.started.wait, 10)
    task.cancel()
    gated.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(os.listdir(tmp_path)) == ["src", "t.vhd"]
    assert (tmp_path / "t.vhd").read_bytes() == OLD


async def test_cancelled_native_copy_leaves_nothing_when_the_copy_returns(
        tmp_path: Path) -> None:
    gate = asyncio.Event()

    class Slow(LocalFiles):
        async def copy_file(self, source: str, target: str) -> int:
            copied = await super().copy_file(source, target)
            await gate.wait()
            return copied

    source = _store(tmp_path / "src", "t.vhd", DISK)
    task = asyncio.ensure_future(transfer(Slow(), source, str(tmp_path / "t.vhd")))
    while not any(name.startswith(".t.vhd.partial-") for name in os.listdir(tmp_path)):
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.05)
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert os.listdir(tmp_path) == ["src"]


async def test_full_disk_fails_with_one_line_when_a_write_is_refused(tmp_path: Path) -> None:
    source = _store(tmp_path / "src", "t.vhd.bz2", bz2.compress(DISK))
    (tmp_path / "t.vhd").write_bytes(OLD)
    with pytest.raises(TransferError, match="No space left on device"):
        await transfer(_Filling(COPY_CHUNK_BYTES), source, str(tmp_path / "t.vhd"))
    assert sorted(os.listdir(tmp_path)) == ["src", "t.vhd"]
    assert (tmp_path / "t.vhd").read_bytes() == OLD


class _Filling(LocalFiles):
    def __init__(self, room: int) -> None:
        self._room = room

    def open_binary(self, path: str, mode: OpenMode) -> BinaryIO:
        handle = super().open_binary(path, mode)
        if mode == "xb":
            return _FillingWriter(handle, self._room)  # type: ignore[return-value]
        return handle


@pytest.mark.parametrize("name", ["t.vhd", "t.vhd.bz2"])
async def test_source_larger_than_the_free_space_is_refused_before_anything_is_written(
        tmp_path: Path, name: str) -> None:
    data = bz2.compress(DISK) if name.endswith(".bz2") else DISK
    source = _store(tmp_path / "src", name, data)
    (tmp_path / "t.vhd").write_bytes(OLD)
    files = Cramped(len(data) - 1)
    with pytest.raises(TransferError, match=f"not enough free space .* holds {len(data)} "
                                            f"bytes.* only {len(data) - 1} may be written"):
        await transfer(files, source, str(tmp_path / "t.vhd"))
    assert files.writes == 0
    assert sorted(os.listdir(tmp_path)) == ["src", "t.vhd"]
    assert (tmp_path / "t.vhd").read_bytes() == OLD
    done = await transfer(Cramped(len(DISK)), source, str(tmp_path / "t.vhd"))
    assert (tmp_path / "t.vhd").read_bytes() == DISK and done.size == len(DISK)


@pytest.mark.parametrize(("name", "pack"), [("t.vhd.gz", gzip.compress),
                                           ("t.vhd.xz", lzma.compress)])
async def test_compressed_source_that_expands_past_the_free_space_is_stopped_there(
        tmp_path: Path, name: str, pack: Callable[[bytes], bytes]) -> None:
    bomb = pack(bytes(64 * COPY_CHUNK_BYTES))  # 64 MiB of zeros in a few KiB
    source = _store(tmp_path / "src", name, bomb)
    room = 3 * COPY_CHUNK_BYTES
    with pytest.raises(TransferError, match=f"expands to more than {room} bytes"):
        await transfer(Cramped(room), source, str(tmp_path / "t.vhd"))
    assert sorted(os.listdir(tmp_path)) == ["src"]


# --- the emulated host: shares and pools in Windows paths --------------------------------


@pytest.fixture
async def emulated(tmp_path: Path) -> AsyncIterator[EmulatedFiles]:
    share = tmp_path / "share"
    (share / "template" / "tmpl").mkdir(parents=True)
    config = EmulatorConfig(state_dir=tmp_path / "state", drives={"C": tmp_path / "C"},
                            shares={SHARE: share})
    cim = EmulatorCim.open(config)
    yield EmulatedFiles(cim.host)
    await cim.close()


@pytest.mark.parametrize(("name", "pack"), [("t.vhd", bytes), ("t.vhd.bz2", bz2.compress)])
async def test_share_file_lands_in_the_pool_when_given_as_windows_paths(
        emulated: EmulatedFiles, tmp_path: Path, name: str,
        pack: Callable[[bytes], bytes]) -> None:
    (tmp_path / "share" / "template" / "tmpl" / name).write_bytes(pack(DISK))
    await emulated.make_dirs("C:\\pool")
    done = await transfer(emulated, f"{SHARE}\\template\\tmpl\\{name}", "C:\\pool\\t.vhd")
    assert done.target == "C:\\pool\\t.vhd"
    assert (tmp_path / "C" / "pool" / "t.vhd").read_bytes() == DISK
    assert await emulated.list_dir("C:\\pool") == ["t.vhd"]


async def test_copy_outside_the_emulated_host_fails_when_the_share_is_unknown(
        emulated: EmulatedFiles) -> None:
    await emulated.make_dirs("C:\\pool")
    with pytest.raises(HostFileError, match="no such share"):
        await transfer(emulated, "\\\\other\\share\\t.vhd", "C:\\pool\\t.vhd",
                       checksum=hashlib.md5(b"").hexdigest())
    assert await emulated.list_dir("C:\\pool") == []


# --- progress and memory -----------------------------------------------------------------


async def test_progress_is_logged_when_a_copy_runs_long(
        files: LocalFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hyperv_agent.hostfs.transfer")
    source = _store(tmp_path, "t.vhd.gz", gzip.compress(DISK * 2))
    await transfer(files, source, str(tmp_path / "t.vhd"), progress_every_s=0)
    lines = [record.getMessage() for record in caplog.records]
    assert any("bytes written so far" in line and "MB/s" in line for line in lines)
    assert f"{len(DISK) * 2} bytes written" in lines[-1] and "MB/s" in lines[-1]


async def test_streamed_copy_holds_little_memory_when_the_file_is_large(
        files: LocalFiles, tmp_path: Path) -> None:
    size = 256 * 1024 * 1024
    with (tmp_path / "big.raw").open("wb") as sparse:
        sparse.truncate(size)
    expected = hashlib.new("sha1")
    zeros = bytes(COPY_CHUNK_BYTES)
    for _ in range(size // COPY_CHUNK_BYTES):
        expected.update(zeros)
    tracemalloc.start()
    try:
        done = await transfer(files, str(tmp_path / "big.raw"), str(tmp_path / "out.raw"),
                              checksum=expected.hexdigest())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert done.size == size == (tmp_path / "out.raw").stat().st_size
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"


def test_agent_process_stays_small_when_it_copies_a_large_verified_file(
        tmp_path: Path) -> None:
    figures = big_copy(tmp_path, 256 * 1024 * 1024)
    assert figures["size"] == 256 * 1024 * 1024
    assert figures["hwm_kb"] * 1024 < RSS_BUDGET_MB * 1_000_000
    assert figures["hwm_kb"] - figures["loaded_kb"] < 32 * 1024  # the copy's own share
    assert os.listdir(tmp_path) == []


_KILLED_CHILD = """
import asyncio, sys
from hyperv_agent.hostfs.aside import AsideFiles
from hyperv_agent.hostfs.local import LocalFiles
from hyperv_agent.hostfs.transfer import transfer
asyncio.run(transfer(LocalFiles(), sys.argv[1], sys.argv[2], digest="sha256"))
"""


async def test_copy_killed_midway_never_shows_the_final_name_and_a_retry_cleans_up(
        files: LocalFiles, tmp_path: Path) -> None:
    source, pool = tmp_path / "share" / "t.vhd", tmp_path / "pool"
    source.parent.mkdir()
    pool.mkdir()
    (pool / "other.vhdx").write_bytes(b"another volume")
    with source.open("wb") as sparse:
        sparse.truncate(8 * 1024**3)  # long enough to be caught mid-stream
    target = pool / "t.vhd"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(source), str(target)])
    try:
        deadline = time.monotonic() + 30
        while not any(p.name.startswith(".t.vhd.partial-") and p.stat().st_size > 0
                      for p in pool.iterdir()):
            assert child.poll() is None and time.monotonic() < deadline, "no copy started"
            await asyncio.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    left = sorted(p.name for p in pool.iterdir())
    assert len(left) == 2 and left[0].startswith(".t.vhd.partial-"), left  # hidden, aside
    assert left[1] == "other.vhdx" and "t.vhd" not in left

    with source.open("r+b") as small:
        small.truncate(3 * 1024 * 1024)
    done = await transfer(files, str(source), str(target))
    assert done.size == 3 * 1024 * 1024
    assert sorted(p.name for p in pool.iterdir()) == ["other.vhdx", "t.vhd"]
    assert (pool / "other.vhdx").read_bytes() == b"another volume"
