"""Copying one file onto the host: from a host path, an S3 object or an http(s) URL,
decompressing and verifying on the way, written aside and renamed into place.

A copy is written aside to ``.<name>.partial-<agent>-<hex>`` in the target's folder
(``hostfs.aside``) and renamed to the target only when every byte arrived and the checksum
matched, so a partial copy never appears under the final name and a failed copy leaves the
target as it was.

A copy never fills the volume it writes to: it may write no more than the volume's free
space at its start less ``KEEP_FREE_BYTES`` (``hostfs.room``). A pool that fills up stops
every VM whose dynamic disks grow on it, and a compressed template may expand to any size
(a ``.gz`` of zeros), so a source known to be too large is refused before a byte is written and a
stream that grows past the room is stopped there. A host file's size and a download's
announced size (Content-Length, an S3 object's size) are judged up front; a compressed
source's size says nothing of what it expands to, so it is judged as it streams.
"""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import gzip
import hashlib
import io
import logging
import lzma
import re
import secrets
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol, TypeVar

from hyperv_agent.errors import AgentError, TransferError
from hyperv_agent.hostfs import images
from hyperv_agent.hostfs.api import COPY_CHUNK_BYTES, HostFiles, OpenMode
from hyperv_agent.hostfs.aside import AsideFiles, split
from hyperv_agent.hostfs.http import HttpObject, open_url
from hyperv_agent.hostfs.room import KEEP_FREE_BYTES, Room
from hyperv_agent.hostfs.s3 import S3Object, open_object
from hyperv_agent.hostfs.web import StartOver, Stopped, announced_length

__all__ = ["KEEP_FREE_BYTES", "Checksum", "Source", "TransferError", "Transferred",
           "parse_checksum", "transfer"]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

_HEX_LENGTHS = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
_PREFIXES = {"md5": "md5", "sha1": "sha1", "sha-1": "sha1", "sha256": "sha256",
             "sha-256": "sha256", "sha512": "sha512", "sha-512": "sha512"}
_PREFIXED = re.compile(r"\{([A-Za-z0-9-]+)\}([0-9A-Fa-f]+)")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_WATCH_MIN_S = 0.5  # a native copy's progress comes from stat calls: not more often

_STREAMS = {"bz2": "bzip2", "gz": "gzip", "xz": "xz"}  # codec: what its stream is called
Source = str | S3Object | HttpObject  # a host path, an S3 object or a file on a web server


@dataclass(frozen=True)
class Transferred:
    target: str  # final host path
    size: int  # bytes written (after decompression)
    source_bytes: int  # bytes read from the source (before decompression)
    digest: str | None = None  # hex digest of the source, when one was checked or asked for


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # a hashlib name
    hex: str  # lower case


def parse_checksum(text: str) -> Checksum:
    """CloudStack's checksum: plain hex (its length picks md5, sha1, sha256 or sha512) or
    ``{ALGORITHM}hex``; TransferError for anything else."""
    stripped = text.strip()
    prefixed = _PREFIXED.fullmatch(stripped)
    digest = prefixed[2] if prefixed else stripped
    if prefixed:
        algorithm = _PREFIXES.get(prefixed[1].lower())
    else:
        algorithm = _HEX_LENGTHS.get(len(digest)) if _HEX.fullmatch(digest) else None
    if algorithm is None or len(digest) != hashlib.new(algorithm).digest_size * 2:
        raise TransferError(f"checksum {text[:140]!r} is not recognised: expected the hex "
                            "digest of md5, sha1, sha256 or sha512, or {ALGORITHM}hex")
    return Checksum(algorithm, digest.lower())


async def transfer(files: HostFiles, source: Source, target: str, *,
                   checksum: str | None = None, decompress: bool = True,
                   progress_every_s: float = 10.0, digest: str | None = None,
                   verify: Callable[[str], Awaitable[None]] | None = None,
                   aside: AsideFiles | None = None) -> Transferred:
    """Copy ``source`` (a host path, an S3 object or an http(s) file) to the host path
    ``target``.

    With ``decompress``, a source named ``.bz2``, ``.gz``, ``.xz`` or ``.zip`` (whose single
    image member, ``images.IMAGE_SUFFIXES``, is taken) is expanded while it streams.
    ``checksum`` is checked against the source as stored. The copy is written aside and
    renamed over ``target`` only on success; on any failure or cancellation the aside
    file is removed and ``target`` is left as it was, so a repeat is safe. A missing
    source, a corrupt stream, a checksum mismatch or a full disk raise TransferError or
    HostFileError with one line. ``digest`` (a hashlib name, e.g. "md5") asks for the
    source's digest in the result. ``verify`` is awaited with the aside file's path once
    every byte is in; an error it raises fails the copy like any other (the aside file is
    removed, ``target`` left as it was). Aside files an earlier attempt at the same target
    left behind (its process was killed) are removed first, and with ``aside`` (the
    agent's) every aside file of the agent in the target's folder that no copy is writing
    now; callers serialise copies to one target. A copy that would leave less than
    ``KEEP_FREE_BYTES`` free on the target's volume fails with TransferError: up front
    when the source is a host file that large or a download that announces as much (an
    uncompressed one), else when the bytes written reach the room
    (a file ``target`` replaces counts as taken until the copy is done).
    """
    expected = parse_checksum(checksum) if checksum is not None else None
    algorithm = expected.algorithm if expected else digest
    if algorithm is not None and algorithm not in hashlib.algorithms_available:
        raise TransferError(f"unknown digest algorithm {algorithm!r}")
    codec = _codec(source) if decompress else None
    label = source if isinstance(source, str) else source.label
    namer = aside or AsideFiles(secrets.token_hex(4))  # alone: sweeps the target's only
    meter = _Meter(label, target, progress_every_s)
    await namer.sweep(files, split(target)[0], target)
    room = await Room.measure(files, target)
    if room is not None and isinstance(source, str):
        await room.check_source(files, source, label)
    async with namer.replacing(files, target) as temp:
        hexdigest = None
        if isinstance(source, str) and codec is None and algorithm is None:
            read = written = await _native_copy(files, source, temp, meter)
        else:
            plan = _Plan(files, source, label, temp, codec, expected, meter, algorithm, room)
            written, read, hexdigest = await _in_worker(plan.run)
        if verify is not None:
            await verify(temp)
    meter.finished(written, read)
    return Transferred(target, written, read, hexdigest)


def _codec(source: Source) -> str | None:
    return images.compression(_source_name(source))


def _source_name(source: Source) -> str:
    if isinstance(source, S3Object):
        return source.key
    if isinstance(source, HttpObject):
        return source.name  # the URL's path, never its query
    return source


async def _native_copy(files: HostFiles, source: str, temp: str, meter: _Meter) -> int:
    """``files.copy_file`` (the backend's fast copy) with progress from the growing file.
    A native copy cannot be interrupted: cancellation takes effect when it returns."""
    async def watch() -> None:
        while True:
            await asyncio.sleep(max(meter.every_s, _WATCH_MIN_S))
            stat = await files.stat(temp)
            meter.report(stat.size if stat else 0, None)

    watcher = asyncio.ensure_future(watch())
    try:
        return await _finish_first(files.copy_file(source, temp), lambda: None)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, AgentError):
            await watcher


async def _in_worker(work: Callable[[threading.Event], _T]) -> _T:
    """Run ``work`` in one worker thread; on cancellation, set its stop event and wait for
    it to notice (it checks once per chunk) before letting the cancellation through."""
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    return await _finish_first(loop.run_in_executor(None, work, stop), stop.set)


async def _finish_first(work: Awaitable[_T], stop: Callable[[], None]) -> _T:
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop()
        await asyncio.wait({future})
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller sees
        raise


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class _Meter:
    """Progress log lines: one every ``every_s`` while copying, one at the end."""

    def __init__(self, label: str, target: str, every_s: float) -> None:
        self.label, self.target, self.every_s = label, target, every_s
        self.started = time.monotonic()
        self._next = self.started + every_s

    def report(self, written: int, read: int | None) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every_s
        extra = f", {read} bytes read" if read is not None and read != written else ""
        _LOG.info("copying %s to %s: %d bytes written so far%s (%.1f MB/s)", self.label,
                  self.target, written, extra, self._rate(written, now))

    def finished(self, written: int, read: int) -> None:
        now = time.monotonic()
        _LOG.info("copied %s to %s: %d bytes written, %d read in %.1f s (%.1f MB/s)",
                  self.label, self.target, written, read, now - self.started,
                  self._rate(written, now))

    def _rate(self, written: int, now: float) -> float:
        return written / max(now - self.started, 1e-6) / 1e6


class _Source:
    """The source as stored: counts and hashes every byte read, and serves small reads
    (the decompressors') from a chunk-sized buffer."""

    def __init__(self, raw: BinaryIO, label: str, hasher: _Hasher | None,
                 stop: threading.Event) -> None:
        self._raw, self._label, self._hasher, self._stop = raw, label, hasher, stop
        self._buffer = b""
        self._offset = 0
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if self._offset < len(self._buffer):
            end = len(self._buffer) if size < 0 else self._offset + size
            data = self._buffer[self._offset:end]
            self._offset += len(data)
            return data
        if 0 <= size < COPY_CHUNK_BYTES:
            self._buffer, self._offset = self._pull(COPY_CHUNK_BYTES), 0
            return self.read(size) if self._buffer else b""
        return self._pull(COPY_CHUNK_BYTES if size < 0 else size)

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, /) -> int:
        raise io.UnsupportedOperation("the source is read once, front to back")

    def drain(self) -> None:
        while self.read(COPY_CHUNK_BYTES):
            pass

    def _pull(self, size: int) -> bytes:
        if self._stop.is_set():
            raise Stopped
        try:
            data = self._raw.read(size)
        except OSError as error:
            raise TransferError(f"cannot read {self._label}: "
                                f"{error.strerror or type(error).__name__}") from None
        if self._hasher is not None:
            self._hasher.update(data)
        self.count += len(data)
        return data


@dataclass
class _Plan:
    """One streamed copy, run whole in one worker thread."""

    files: HostFiles
    source: Source
    label: str
    temp: str
    codec: str | None
    expected: Checksum | None
    meter: _Meter
    algorithm: str | None = None  # the digest to compute: the checksum's, or one asked for
    room: Room | None = None  # how much may be written; None: unbounded

    def run(self, stop: threading.Event) -> tuple[int, int, str | None]:
        """The copy; a download that must start over (StartOver: it could not be resumed
        where it broke off) is written again from its first byte, hashed and bounded
        afresh."""
        mode: OpenMode = "xb"
        try:
            raw = self._open_source(stop)
            while True:
                hasher = hashlib.new(self.algorithm) if self.algorithm else None
                try:
                    with raw:
                        self._check_length(announced_length(raw))
                        source = _Source(raw, self.label, hasher, stop)
                        written = self._write(source, stop, mode)
                        source.drain()
                    break
                except StartOver as again:
                    raw, mode = again.stream, "wb"  # "wb": what was written goes
        except Stopped:
            return 0, 0, None  # the awaiting side raises CancelledError
        if self.codec in _STREAMS and source.count == 0:
            raise TransferError(f"{self.label} is empty, not a compressed file")
        if self.expected and hasher and hasher.hexdigest() != self.expected.hex:
            raise TransferError(f"checksum mismatch for {self.label}: expected "
                                f"{self.expected.algorithm} {self.expected.hex}, got "
                                f"{hasher.hexdigest()}")
        return written, source.count, hasher.hexdigest() if hasher else None

    def _open_source(self, stop: threading.Event) -> BinaryIO:
        if isinstance(self.source, S3Object):
            return open_object(self.source, stop)
        if isinstance(self.source, HttpObject):
            return open_url(self.source, stop=stop)
        return self.files.open_binary(self.source, "rb")

    def _check_length(self, length: int | None) -> None:
        """Refuse a download whose announced size (an http Content-Length, an S3 object's
        size) alone would not fit, before a byte is written. A compressed one may expand
        to any size whatever its length: the stream is stopped when it reaches the room."""
        if self.room is not None and self.codec is None and length is not None \
                and length > self.room.bytes:
            raise self.room.refusal(self.label, f"it holds {length} bytes")

    def _write(self, source: _Source, stop: threading.Event, mode: OpenMode) -> int:
        written = 0
        with self.files.open_binary(self.temp, mode) as writer:
            for chunk in _decoded(source, self.codec, self.label):
                if stop.is_set():
                    raise Stopped
                if self.room is not None and written + len(chunk) > self.room.bytes:
                    grows = "expands to" if self.codec else "holds"
                    raise self.room.refusal(self.label,
                                            f"it {grows} more than {self.room.bytes} bytes")
                try:
                    writer.write(chunk)
                except OSError as error:
                    raise TransferError(f"cannot write {self.meter.target}: "
                                        f"{error.strerror or type(error).__name__}") from None
                written += len(chunk)
                self.meter.report(written, source.count)
        return written


def _decoded(source: _Source, codec: str | None, label: str) -> Iterator[bytes]:
    if codec == "zip":
        # stream-unzip and its ciphers load only when a zip is read (a tenth of a second)
        from hyperv_agent.hostfs import zipimage

        yield from zipimage.image(source, label)
        return
    if codec is None:
        while chunk := source.read(COPY_CHUNK_BYTES):
            yield chunk
        return
    kind = _STREAMS[codec]
    try:
        if codec == "xz":
            yield from _xz_chunks(source)
            return
        with _decompressor(codec, source) as stream:
            while chunk := stream.read(COPY_CHUNK_BYTES):
                yield chunk
    except EOFError:
        if source.count == 0:
            raise TransferError(f"{label} is empty, not a compressed file") from None
        raise TransferError(f"{label} is truncated: the {kind} stream ends early") from None
    except (OSError, zlib.error, lzma.LZMAError) as error:
        raise TransferError(f"{label} is not a valid {kind} stream ({error})") from None


def _decompressor(codec: str, source: _Source) -> bz2.BZ2File | gzip.GzipFile:
    if codec == "bz2":
        return bz2.BZ2File(source)
    return gzip.GzipFile(fileobj=source, mode="rb")


#: The memory an xz stream may make its decoder take. Its header names a dictionary of up
#: to 1.5 GiB, which the decoder allocates; xz's own presets need at most 65 MiB (-9) to
#: decode. A stream asking for more fails as not valid ("Memory usage limit reached").
XZ_MEMORY_LIMIT_BYTES = 256 << 20


def _xz_chunks(source: _Source) -> Iterator[bytes]:
    """The bytes of the xz file ``source``, ``COPY_CHUNK_BYTES`` at most at a time, its
    streams one after another (xz writes several when asked; null padding may follow
    each), each decoded within ``XZ_MEMORY_LIMIT_BYTES`` (``lzma.LZMAFile`` sets no
    limit). EOFError when the file ends inside a stream (or holds none)."""
    decoder = _xz_decoder()
    pending = b""
    while True:
        if decoder.eof:
            pending = decoder.unused_data.lstrip(b"\0")
            while not pending:
                more = source.read(COPY_CHUNK_BYTES)
                if not more:
                    return
                pending = more.lstrip(b"\0")
            decoder = _xz_decoder()
        if decoder.needs_input and not pending:
            pending = source.read(COPY_CHUNK_BYTES)
            if not pending:
                raise EOFError("the xz stream ends early")
        chunk = decoder.decompress(pending, max_length=COPY_CHUNK_BYTES)
        pending = b""
        if chunk:
            yield chunk


def _xz_decoder() -> lzma.LZMADecompressor:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT_BYTES)
