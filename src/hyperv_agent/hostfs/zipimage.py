"""A downloaded .zip template: the bytes of its one disk image, read as the archive
streams (stream-unzip reads front to back, checking each member's CRC and sizes as it
arrives; no central directory is needed). Loaded only when a zip is copied.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from stream_unzip import (
    NO_ENCRYPTION,
    EncryptionMechanismNotAllowed,
    IntegrityError,
    PasswordError,
    TruncatedDataError,
    UnexpectedSignatureError,
    UnsupportedFeatureError,
    UnzipError,
    stream_unzip,
)

from hyperv_agent.errors import TransferError
from hyperv_agent.hostfs import images
from hyperv_agent.hostfs.api import COPY_CHUNK_BYTES


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def image(source: Readable, label: str) -> Iterator[bytes]:
    """The bytes of the archive's one image member (``images.IMAGE_SUFFIXES``); other
    members are read past. stream-unzip reads the archive front to back, checking each
    member's CRC and sizes, as it arrives (no central directory is needed)."""
    found: str | None = None
    member = ""
    try:
        for name, _, chunks in stream_unzip(_chunks(source),
                                            allowed_encryption_mechanisms=(NO_ENCRYPTION,)):
            member = name.decode("utf-8", "replace")
            if not member.lower().endswith(images.IMAGE_SUFFIXES):
                for _ in chunks:
                    pass
                continue
            if found is not None:
                raise TransferError(f"{label} holds several disk images ({found}, {member});"
                                    " expected one")
            found = member
            yield from chunks
    except UnzipError as error:
        raise TransferError(_zip_problem(label, member, error)) from None
    if found is None:
        raise TransferError(f"{label} holds no disk image (one of "
                            f"{', '.join(images.IMAGE_SUFFIXES)})")


def _chunks(source: Readable) -> Iterator[bytes]:
    while chunk := source.read(COPY_CHUNK_BYTES):
        yield chunk


def _zip_problem(label: str, member: str, error: UnzipError) -> str:
    """One line saying what is wrong with the archive ``label``."""
    where = f"{label}: member {member}" if member else label
    if isinstance(error, TruncatedDataError):
        return f"{label} ends inside {member or 'the zip archive'} (truncated)"
    if isinstance(error, UnexpectedSignatureError) and not member:
        return f"{label} is not a valid zip archive"
    if isinstance(error, IntegrityError):
        return f"{where} is corrupt ({type(error).__name__.removesuffix('Error')})"
    if isinstance(error, EncryptionMechanismNotAllowed | PasswordError):
        return f"{where} is encrypted"
    if isinstance(error, UnsupportedFeatureError):
        return f"{where} uses a zip feature this agent does not read ({type(error).__name__})"
    return f"{where} is corrupt ({type(error).__name__})"
