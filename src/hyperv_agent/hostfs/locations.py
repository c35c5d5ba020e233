"""Where storage lives on the Hyper-V host, and keeping request paths inside it.

* ``parse_cifs_url`` / ``from_primary_store``: CloudStack's ``cifs://`` URLs and
  PrimaryDataStoreTO ``host``/``path``/``poolType`` as typed locations with a UNC root.
* ``confine`` / ``confine_absolute``: the Windows path of a request path inside a pool
  root, or ``PathNotAllowed``.
* ``template_properties`` / ``parse_template_properties``: CloudStack's template.properties.

Everything here is pure string work on Windows paths (no I/O, never ``os.path``).
Error messages are one line and never contain a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from hyperv_agent.errors import (
    AgentError,
    BadStorageUrl,
    BadTemplateProperties,
    PathNotAllowed,
)

_SMB_SCHEMES = frozenset({"cifs", "smb"})
_SMB_POOL_TYPES = frozenset({"smb", "networkfilesystem"})
_FORBIDDEN_CHARS = frozenset('<>"|?*')
_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]}
)
_MAX_SEGMENT_CHARS = 255
_SERVER = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_DRIVE = re.compile(r"[A-Za-z]:")
_EXTENSION = re.compile(r"[a-z0-9]+")


# --- typed locations -----------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """An account for an SMB share; ``password`` never appears in repr or str."""

    user: str
    domain: str
    password: str = field(repr=False)

    @property
    def qualified_user(self) -> str:
        """``domain\\user``, the form ``net use`` and LogonUser expect."""
        return f"{self.domain}\\{self.user}" if self.domain else self.user


@dataclass(frozen=True)
class ShareLocation:
    """A folder on an SMB share: ``\\\\server\\share[\\folder]``."""

    server: str
    share: str
    folder: str = ""
    credentials: Credentials | None = None

    @property
    def unc(self) -> str:
        base = f"\\\\{self.server}\\{self.share}"
        return f"{base}\\{self.folder}" if self.folder else base

    @property
    def root(self) -> str:
        """The folder to ``confine`` request paths to (the UNC)."""
        return self.unc


@dataclass(frozen=True)
class LocalFolder:
    """A folder on the host's own disks (a ``Filesystem`` pool), e.g. ``C:\\pool``."""

    path: str

    @property
    def root(self) -> str:
        return self.path


PoolLocation = ShareLocation | LocalFolder


# --- segment rules shared by URLs and paths ------------------------------------------------


def _segment_problem(segment: str) -> str | None:
    """Why Windows would misread ``segment`` as a single plain name, or None if it is fine."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in segment):
        return "contains a control character"
    if ":" in segment:
        return "uses NTFS stream or drive syntax (':')"
    if any(ch in _FORBIDDEN_CHARS for ch in segment):
        return 'contains a character Windows forbids (<>"|?*)'
    if segment.split(".")[0].rstrip(" ").upper() in _DEVICE_NAMES:
        return "is a reserved device name"
    if segment.endswith((".", " ")):
        return "ends with a dot or a space, which Windows strips"
    if len(segment) > _MAX_SEGMENT_CHARS:
        return f"is longer than {_MAX_SEGMENT_CHARS} characters"
    return None


def _check_segment(segment: str, error: type[AgentError], where: str) -> None:
    problem = _segment_problem(segment)
    if problem is not None:
        raise error(f"{where}: segment {_quote(segment)} {problem}")


def _quote(text: str, limit: int = 80) -> str:
    """A one-line, bounded rendering of untrusted text for an error message."""
    shown = "".join(ch if ch.isprintable() else f"\\x{{{ord(ch):x}}}" for ch in text[:limit])
    return f"'{shown}...'" if len(text) > limit else f"'{shown}'"


# --- cifs:// URLs --------------------------------------------------------------------------


def parse_cifs_url(url: str) -> ShareLocation:
    """Parse ``cifs://server/share/dir?user=u&password=p&domain=d`` (or ``smb://``).

    Percent-escapes are decoded in the path and in the query values (``+`` stays ``+``).
    ``domain`` defaults to the server (a local account there). Raises BadStorageUrl for
    anything malformed or unsafe; the message never contains the password.
    """
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise BadStorageUrl("storage URL contains a control character")
    scheme, separator, rest = url.strip().partition("://")
    if not separator:
        raise BadStorageUrl("storage URL has no scheme: expected cifs://server/share/folder")
    _check_scheme(scheme)
    location, _, query = rest.partition("?")
    netloc, _, path = location.replace("\\", "/").partition("/")
    server = _check_server(netloc)
    share, folder = _share_and_folder(path)
    return ShareLocation(server, share, folder, _credentials(query, server))


def _check_scheme(scheme: str) -> None:
    lowered = scheme.lower()
    if lowered in _SMB_SCHEMES:
        return
    if lowered == "nfs":
        raise BadStorageUrl(
            "nfs:// storage cannot be used: Hyper-V reaches storage over SMB, "
            "use a cifs://server/share URL"
        )
    raise BadStorageUrl(f"storage URL scheme {_quote(scheme, 20)} is not supported: use cifs://")


def _check_server(netloc: str) -> str:
    if "@" in netloc:
        raise BadStorageUrl(
            "storage URL carries credentials before the host: pass them as "
            "?user=...&password=...&domain=..."
        )
    if not netloc:
        raise BadStorageUrl("storage URL has no server: expected cifs://server/share")
    if ":" in netloc or "[" in netloc:
        raise BadStorageUrl("storage URL server has a port or an IPv6 literal, not supported")
    if not _SERVER.fullmatch(netloc):
        raise BadStorageUrl(f"storage URL server {_quote(netloc)} is not a host name or address")
    return netloc


def _share_and_folder(path: str) -> tuple[str, str]:
    segments = [_decode_segment(raw) for raw in path.split("/") if raw]
    if not segments:
        raise BadStorageUrl("storage URL has no share: expected cifs://server/share")
    return segments[0], "\\".join(segments[1:])


def _decode_segment(raw: str) -> str:
    segment = _unquote(raw, "a path segment")
    if segment in (".", ".."):
        raise BadStorageUrl(f"storage URL path has a {_quote(segment)} segment")
    if "/" in segment or "\\" in segment:
        raise BadStorageUrl(f"storage URL path segment {_quote(raw)} hides a separator")
    _check_segment(segment, BadStorageUrl, "storage URL path")
    return segment


def _unquote(raw: str, what: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadStorageUrl(f"storage URL: {what} is not valid percent-encoded UTF-8") from None


# --- credentials in the query ------------------------------------------------------------


_CREDENTIAL_KEYS = ("user", "password", "domain")


def _query_values(query: str) -> dict[str, str]:
    """The credential parameters of ``query``, decoded; other parameters are ignored."""
    values: dict[str, str] = {}
    for item in query.split("&"):
        raw_key, _, raw_value = item.partition("=")
        key = _unquote(raw_key, "a query parameter name").strip().lower()
        if key not in _CREDENTIAL_KEYS:
            continue
        if key in values:
            raise BadStorageUrl(f"storage URL query gives {key!r} more than once")
        values[key] = _unquote(raw_value, f"the {key!r} value")
    return values


def _credentials(query: str, server: str) -> Credentials | None:
    values = _query_values(query)
    for name, value in values.items():
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise BadStorageUrl(f"storage URL {name} contains a control character")
    user, password = values.get("user", "").strip(), values.get("password", "")
    domain = values.get("domain", "").strip()
    if not user:
        if password:
            raise BadStorageUrl("storage URL gives a password but no user")
        return None
    if "\\" in user and not domain:
        domain, _, user = user.partition("\\")
    return Credentials(user=user, domain=domain or server, password=password)


# --- PrimaryDataStoreTO ----------------------------------------------------------------------


def from_primary_store(host: str, path: str, pool_type: str) -> PoolLocation:
    """The location of a PrimaryDataStoreTO (or StorageFilerTO) from its wire fields.

    ``SMB`` (and ``NetworkFilesystem``, as the C# agent does): ``\\\\host`` + ``path``, with
    credentials from ``path``'s query. ``Filesystem``: ``path`` must be an absolute drive
    path (a LocalFolder) or a UNC (a ShareLocation without credentials). Anything else,
    or a relative path, raises BadStorageUrl.
    """
    kind = pool_type.strip().lower()
    if kind in _SMB_POOL_TYPES:
        server = _check_server(host.strip())
        slash = "" if path.startswith(("/", "\\")) else "/"
        return parse_cifs_url(f"cifs://{server}{slash}{path}")
    if kind == "filesystem":
        return _filesystem_location(path)
    raise BadStorageUrl(
        f"storage pool type {_quote(pool_type, 40)} is not supported: use SMB or Filesystem"
    )


def _filesystem_location(path: str) -> PoolLocation:
    parsed = _parse_absolute(path, BadStorageUrl, "Filesystem pool path")
    if parsed.anchor.startswith("\\\\"):
        server, share = parsed.anchor[2:].split("\\")
        return ShareLocation(server, share, "\\".join(parsed.parts))
    return LocalFolder(_join(parsed, ()))


# --- confinement ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _AbsolutePath:
    anchor: str  # "C:" or "\\server\share"
    parts: tuple[str, ...]


def confine(root: str, relative: str) -> str:
    """The Windows path of ``relative`` inside ``root`` (``C:\\pool`` or ``\\\\srv\\share\\dir``).

    Accepts ``/`` and ``\\``; ``.`` and ``..`` are resolved but may not climb out of
    ``root``. Raises PathNotAllowed for an absolute or drive path, a stream, a device
    name, a forbidden character, a segment ending in a dot or space, or a result that is
    ``root`` itself. Pure: touches no file.
    """
    base = _parse_absolute(root, PathNotAllowed, "pool root")
    text = relative.replace("/", "\\")
    if not text.strip():
        raise PathNotAllowed("path is empty")
    if text.startswith("\\") or _DRIVE.match(text):
        raise PathNotAllowed(f"path {_quote(relative)} is absolute; a pool-relative path is needed")
    parts = _resolve(text.split("\\"), relative)
    if not parts:
        raise PathNotAllowed(f"path {_quote(relative)} names the pool root itself")
    return _join(base, parts)


def confine_absolute(root: str, path: str) -> str:
    """``path`` (absolute) rebuilt inside ``root``, or PathNotAllowed if it lies outside.

    Comparison is case-insensitive after normalising separators, ``.`` and ``..``; the
    result keeps ``root``'s spelling. The same refusals as ``confine`` apply.
    """
    base = _parse_absolute(root, PathNotAllowed, "pool root")
    target = _parse_absolute(path, PathNotAllowed, "path")
    if not _is_within(base, target):
        raise PathNotAllowed(f"path {_quote(path)} is outside the pool {_quote(root)}")
    return _join(base, target.parts[len(base.parts) :])


def _is_within(base: _AbsolutePath, target: _AbsolutePath) -> bool:
    if base.anchor.casefold() != target.anchor.casefold():
        return False
    if len(target.parts) <= len(base.parts):
        return False
    pairs = zip(base.parts, target.parts, strict=False)
    return all(mine.casefold() == theirs.casefold() for mine, theirs in pairs)


def _parse_absolute(path: str, error: type[AgentError], what: str) -> _AbsolutePath:
    text = path.replace("/", "\\")
    if text.startswith("\\\\"):
        return _parse_unc(text, path, error, what)
    if _DRIVE.match(text) and text[2:3] == "\\":
        return _AbsolutePath(text[:2], _resolve(text[3:].split("\\"), path, error))
    raise error(f"{what} {_quote(path)} is not an absolute drive (C:\\...) or UNC path")


def _parse_unc(text: str, original: str, error: type[AgentError], what: str) -> _AbsolutePath:
    pieces = text[2:].split("\\")
    if pieces[0] in ("?", "."):
        raise error(f"{what} {_quote(original)} uses the \\\\?\\ or \\\\.\\ device namespace")
    if len(pieces) < 2 or not pieces[0] or not pieces[1]:
        raise error(f"{what} {_quote(original)} lacks a server or share")
    for name in pieces[:2]:
        if name in (".", ".."):
            raise error(f"{what} {_quote(original)} has a {_quote(name)} server or share")
        _check_segment(name, error, what)
    parts = _resolve(pieces[2:], original, error)
    return _AbsolutePath(f"\\\\{pieces[0]}\\{pieces[1]}", parts)


def _resolve(
    segments: list[str], original: str, error: type[AgentError] = PathNotAllowed
) -> tuple[str, ...]:
    """Apply ``.`` and ``..`` lexically, as Windows does; refuse climbing above the start."""
    stack: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not stack:
                raise error(f"path {_quote(original)} climbs out of its root with '..'")
            stack.pop()
            continue
        _check_segment(segment, error, f"path {_quote(original)}")
        stack.append(segment)
    return tuple(stack)


def _join(base: _AbsolutePath, parts: tuple[str, ...]) -> str:
    joined = "\\".join((base.anchor, *base.parts, *parts))
    return joined + "\\" if _DRIVE.fullmatch(joined) else joined


# --- template.properties -------------------------------------------------------------------


def template_properties(
    *,
    template_id: int,
    name: str,
    image_format: str,
    virtual_size_bytes: int,
    file_size_bytes: int,
) -> str:
    """The text of template.properties for a template made from a volume (§11 order).

    ``name`` is the TemplateObjectTO ``name`` (N), ``image_format`` its format (VHD,
    VHDX). Lines end in ``\\n``; values are escaped as java.util.Properties does, so the
    text is ISO-8859-1 safe. Raises BadTemplateProperties for a bad format or size.
    """
    ext = image_format.strip().lower()
    if not _EXTENSION.fullmatch(ext):
        raise BadTemplateProperties(f"image format {_quote(image_format)} is not a file type")
    if virtual_size_bytes < 0 or file_size_bytes < 0:
        raise BadTemplateProperties("template sizes must not be negative")
    if not name:
        raise BadTemplateProperties("template name is empty")
    entries = _template_entries(template_id, name, ext, virtual_size_bytes, file_size_bytes)
    return "".join(f"{_escape(key, True)}={_escape(value, False)}\n" for key, value in entries)


def _template_entries(
    template_id: int, name: str, ext: str, virtual_size_bytes: int, file_size_bytes: int
) -> tuple[tuple[str, str], ...]:
    file_name = f"{name}.{ext}"
    return (
        ("id", str(template_id)), ("filename", file_name), (f"{ext}.filename", file_name),
        ("uniquename", name), (ext, "true"),
        ("virtualsize", str(virtual_size_bytes)), (f"{ext}.virtualsize", str(virtual_size_bytes)),
        ("size", str(file_size_bytes)), (f"{ext}.size", str(file_size_bytes)),
        ("public", "false"),
    )  # fmt: skip


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}
_UNESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_ESCAPE_SEQUENCE = re.compile(r"\\(u[0-9A-Fa-f]{4}|u|.|$)", re.DOTALL)


def _escape(text: str, is_key: bool) -> str:
    out: list[str] = []
    for index, ch in enumerate(text):
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif (ch == " " and (is_key or index == 0)) or ch in "=:#!":
            out.append("\\" + ch)
        elif not " " <= ch <= "~":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else _surrogates(ch))
        else:
            out.append(ch)
    return "".join(out)


def _surrogates(ch: str) -> str:
    pair = ch.encode("utf-16-be")
    return "".join(f"\\u{int.from_bytes(pair[i : i + 2], 'big'):04x}" for i in (0, 2))


def parse_template_properties(text: str) -> dict[str, str]:
    """Read java.util.Properties text: comments, ``=``/``:``/space separators, escapes,
    continuation lines. A repeated key keeps its last value. Raises BadTemplateProperties
    for a malformed ``\\uXXXX`` escape."""
    entries: dict[str, str] = {}
    for line in _logical_lines(text):
        key, value = _split_entry(line)
        entries[key] = value
    return entries


def _logical_lines(text: str) -> Iterator[str]:
    pending: str | None = None
    for raw in text.splitlines():
        line = raw.lstrip(" \t\f")
        if pending is None and (not line or line[0] in "#!"):
            continue
        pending = line if pending is None else pending + line
        if _continues(pending):
            pending = pending[:-1]
            continue
        yield pending
        pending = None
    if pending:
        yield pending


def _continues(line: str) -> bool:
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def _split_entry(line: str) -> tuple[str, str]:
    index, escaped = 0, False
    while index < len(line):
        ch = line[index]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in "=: \t\f":
            break
        index += 1
    rest = line[index:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return _unescape(line[:index]), _unescape(rest)


def _unescape(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code == "u":
            raise BadTemplateProperties("template.properties has a malformed \\uXXXX escape")
        if len(code) == 5:
            return chr(int(code[1:], 16))
        return _UNESCAPES.get(code, code)

    decoded = _ESCAPE_SEQUENCE.sub(replace, text)
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
