"""Where storage lives on the Hyper-V host, and keeping request paths inside it.

* ``parse_cifs_url`` / ``from_primary_store``: CloudStack's ``cifs://`` URLs and
  PrimaryDataStoreTO ``host``/``path``/``poolType`` as typed locations with a UNC root;
  ``root_to_register``: the same for a pool being registered, whose path is taken as
  written (no ``.`` or ``..``).
* ``confine`` / ``confine_absolute``: the Windows path of a request path inside a pool
  root, or ``PathNotAllowed``; ``contains``, ``same_folder`` and ``steps_below`` compare
  and walk such paths; ``is_admin_share`` names Windows' administrative shares;
  ``in_device_namespace`` tells the ``\\\\?\\`` and ``\\\\.\\`` forms, refused wherever a
  path is taken.

Everything here is pure string work on Windows paths (no I/O, never ``os.path``).
Error messages are one line and never contain a password.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, unquote_plus

from hyperv_agent.errors import (
    AgentError,
    BadStorageUrl,
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
#: An 8.3 short name of the form Windows generates: at most 8 characters ending in ~ and a
#: number, before an extension of at most 3. Names CloudStack makes (uuids) never are one.
_SHORT_NAME = re.compile(r"(?=[^.]{1,8}(?:\.|$))[^.~]{1,6}~[0-9]{1,6}(?:\.[^.]{1,3})?")
_SERVER = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_DRIVE = re.compile(r"[A-Za-z]:")


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
    from_details: bool = field(default=False, compare=False)  # credentials not from a URL

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
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in segment):
        # Windows takes them, but a name that reads other than it is (a right-to-left
        # override, a zero-width space) is never one CloudStack makes
        return "contains an invisible control or formatting character"
    if ":" in segment:
        return "uses NTFS stream or drive syntax (':')"
    if any(ch in _FORBIDDEN_CHARS for ch in segment):
        return 'contains a character Windows forbids (<>"|?*)'
    if segment.split(".")[0].rstrip(" ").upper() in _DEVICE_NAMES:
        return "is a reserved device name"
    if segment.endswith((".", " ")):
        return "ends with a dot or a space, which Windows strips"
    if _SHORT_NAME.fullmatch(segment):
        # an 8.3 alias (PROGRA~1, 13131~1.VHD) names a file by a second name, which the
        # agent's confinement, locks and comparisons would take for another file
        return "looks like an 8.3 short name (NAME~1.EXT); give the file's long name"
    if len(segment) > _MAX_SEGMENT_CHARS:
        return f"is longer than {_MAX_SEGMENT_CHARS} characters"
    return None


def _check_segment(segment: str, error: type[AgentError], where: str) -> None:
    problem = _segment_problem(segment)
    if problem is not None:
        raise error(f"{where}: segment {quoted(segment)} {problem}")


def quoted(text: str, limit: int = 80) -> str:
    """A one-line, bounded rendering of untrusted text for an error message."""
    shown = "".join(ch if ch.isprintable() else f"\\x{{{ord(ch):x}}}" for ch in text[:limit])
    return f"'{shown}...'" if len(text) > limit else f"'{shown}'"


# --- cifs:// URLs --------------------------------------------------------------------------


def parse_cifs_url(url: str) -> ShareLocation:
    """Parse ``cifs://server/share/dir?user=u&password=p&domain=d`` (or ``smb://``).

    Percent-escapes are decoded in the path; the query values are decoded as form fields
    (``+`` a space, ``%2B`` a ``+``: ``_query_values``).
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
    raise BadStorageUrl(f"storage URL scheme {quoted(scheme, 20)} is not supported: use cifs://")


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
        raise BadStorageUrl(f"storage URL server {quoted(netloc)} is not a host name or address")
    return netloc


def _share_and_folder(path: str) -> tuple[str, str]:
    segments = [_decode_segment(raw) for raw in path.split("/") if raw]
    if not segments:
        raise BadStorageUrl("storage URL has no share: expected cifs://server/share")
    return segments[0], "\\".join(segments[1:])


def _decode_segment(raw: str) -> str:
    segment = _unquote(raw, "a path segment")
    if segment in (".", ".."):
        raise BadStorageUrl(f"storage URL path has a {quoted(segment)} segment")
    if "/" in segment or "\\" in segment:
        raise BadStorageUrl(f"storage URL path segment {quoted(raw)} hides a separator")
    _check_segment(segment, BadStorageUrl, "storage URL path")
    return segment


def _unquote(raw: str, what: str, form: bool = False, where: str = "storage URL") -> str:
    """``raw`` percent-decoded; ``form``: as a form field, where ``+`` stands for a space.
    Refused, the message names ``where`` the value came from, never the value. An escape
    that is not one (``%zz``) stays as written, as the SSVM's ``URLEncodedUtils`` and the
    older C# agent's ``HttpUtility.UrlDecode`` leave it."""
    try:
        return (unquote_plus if form else unquote)(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadStorageUrl(f"{where}: {what} is not valid percent-encoded UTF-8") from None


# --- credentials in the query ------------------------------------------------------------


_CREDENTIAL_KEYS = ("user", "password", "domain")


def _query_values(query: str) -> dict[str, str]:
    """The credential parameters of ``query``, decoded; other parameters are ignored.

    Decoded as form fields, ``+`` a space: the management server writes an SMB pool's
    password with Java's ``URLEncoder`` (a space as ``+``, a ``+`` as ``%2B``) and sends it
    so, and the secondary storage VM reads a cifs image store's query the same way
    (``URLEncodedUtils``). The MS writes ``user`` and ``domain`` as given, not encoded,
    but neither can hold a ``+`` (Active Directory refuses it in account names, and DNS
    and NetBIOS in domain names), so one there can only be a space written as a form
    writes it."""
    values: dict[str, str] = {}
    for item in query.split("&"):
        raw_key, _, raw_value = item.partition("=")
        key = _unquote(raw_key, "a query parameter name", form=True).strip().lower()
        if key not in _CREDENTIAL_KEYS:
            continue
        if key in values:
            raise BadStorageUrl(f"storage URL query gives {key!r} more than once")
        values[key] = _unquote(raw_value, f"the {key!r} value", form=True)
    return values


def _credentials(query: str, server: str) -> Credentials | None:
    return _account(_query_values(query), server, "storage URL")


def details_credentials(details: Mapping[str, str] | None, server: str) -> Credentials | None:
    """The account of an SMB pool's ``details`` (ModifyStoragePoolCommand): ``user``,
    ``password`` and ``domain``, as the management server keeps them for the pool; None
    when they name no user.

    A CloudStack 4.22 management server never sends an SMB pool's credentials in its path:
    ``StoragePoolVO.getPath`` cuts the ``?user=..&password=..&domain=..`` query off any
    path holding a password (CLOUDSTACK-7234). They come only in the details of the
    ModifyStoragePoolCommand sent when the host connects, where the password is
    ``URLEncoder``-encoded (so decoded here as a form field) and, on a management server
    that encrypts its database, encrypted with its database key, which no file server
    takes (the caller says so when the logon is refused)."""
    if not details:
        return None
    values = {key.lower(): value for key, value in details.items()
              if key.lower() in _CREDENTIAL_KEYS}
    if "password" in values:
        values["password"] = _unquote(values["password"], "the 'password' value", form=True,
                                      where="pool details")
    return _account(values, server, "pool details")


def _account(values: Mapping[str, str], server: str, where: str) -> Credentials | None:
    """The account of decoded ``user``, ``password`` and ``domain`` values (``account``).
    A domain ``null`` is none: the management server writes ``"&domain=" + domain`` and a
    domain nobody gave becomes the string ``null`` (PrimaryDataStoreHelper); no Active
    Directory domain is named so."""
    for name, value in values.items():
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise BadStorageUrl(f"{where} {name} contains a control character")
    user, password = values.get("user", "").strip(), values.get("password", "")
    domain = values.get("domain", "").strip()
    if domain.lower() == "null":
        domain = ""
    if not user:
        if password:
            raise BadStorageUrl(f"{where} gives a password but no user")
        return None
    return account(user, password, domain, server)


def account(user: str, password: str, domain: str, server: str) -> Credentials:
    """The account ``user`` (with ``domain``, which may be empty) names for the shares of
    ``server``, wherever it was given (a URL, a pool's details, ``[agent.smb_credentials]``).
    Without a domain it is one of ``server`` itself, unless ``user`` is ``DOMAIN\\user``
    or a user principal name (``user@domain``)."""
    user, domain = user.strip(), domain.strip()
    if "\\" in user and not domain:
        domain, _, user = user.partition("\\")
    elif "@" in user and not domain:
        # A user principal name (alice@corp.example) names its own domain: it logs on with
        # an empty domain, as Windows takes one ("User Name Formats"); the server's name
        # as the domain would make it a local account of that name, which none is.
        return Credentials(user=user, domain="", password=password)
    return Credentials(user=user, domain=domain or server, password=password)


def same_user(first: Credentials, second: Credentials) -> bool:
    """Whether two credentials name one account (its password aside): the same user of
    the same domain, compared case-insensitively as Windows compares account names."""
    return first.qualified_user.casefold() == second.qualified_user.casefold()


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
        f"storage pool type {quoted(pool_type, 40)} is not supported: use SMB or Filesystem"
    )


def root_to_register(host: str, path: str, pool_type: str) -> PoolLocation:
    """The location of a pool being registered: ``from_primary_store``, except that a path
    with a ``.`` or ``..`` segment is refused (BadStorageUrl) instead of resolved. A root is
    registered as the folder its path names as written, never one the path reaches by
    climbing (``C:\\pool\\..\\Windows`` is not ``C:\\Windows``). An SMB path is held to this
    by ``parse_cifs_url``, which refuses such segments in any URL; paths below a root keep
    being resolved by ``confine`` and ``confine_absolute``, which keep them inside it.
    """
    location = from_primary_store(host, path, pool_type)
    if pool_type.strip().lower() == "filesystem":
        for segment in path.replace("/", "\\").split("\\"):
            if segment in (".", ".."):
                raise BadStorageUrl(
                    f"Filesystem pool path {quoted(path)} has a {quoted(segment)} segment: a "
                    "pool root is named as it is, without '.' or '..'")
    return location


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
        raise PathNotAllowed(f"path {quoted(relative)} is absolute; a pool-relative path is needed")
    parts = _resolve(text.split("\\"), relative)
    if not parts:
        raise PathNotAllowed(f"path {quoted(relative)} names the pool root itself")
    return _join(base, parts)


def confine_absolute(root: str, path: str) -> str:
    """``path`` (absolute) rebuilt inside ``root``, or PathNotAllowed if it lies outside.

    Comparison is case-insensitive as Windows compares names (``_upcase``) after
    normalising separators, ``.`` and ``..``; the
    result keeps ``root``'s spelling. The same refusals as ``confine`` apply.
    """
    base = _parse_absolute(root, PathNotAllowed, "pool root")
    target = _parse_absolute(path, PathNotAllowed, "path")
    if not _is_within(base, target):
        raise PathNotAllowed(f"path {quoted(path)} is outside the pool {quoted(root)}")
    return _join(base, target.parts[len(base.parts) :])


def contains(root: str, path: str) -> bool:
    """Whether ``path`` is the folder ``root`` or lies below it (case-insensitive, after
    separators, ``.`` and ``..`` are normalised); False when either is not a safe
    absolute path. Pure."""
    try:
        base = _parse_absolute(root, PathNotAllowed, "root")
        target = _parse_absolute(path, PathNotAllowed, "path")
    except PathNotAllowed:
        return False
    return _is_within(base, target, strictly=False)


def same_folder(first: str, second: str) -> bool:
    """Whether two absolute paths name the same folder (as ``contains`` compares)."""
    return contains(first, second) and contains(second, first)


def same_path(first: str, second: str) -> bool:
    """Whether two absolute paths name the same file or folder as Windows resolves them:
    case-insensitive, after separators, ``.`` and ``..`` are normalised, and with the
    ``\\\\?\\C:\\...`` and ``\\\\?\\UNC\\srv\\share`` long forms read as their plain
    ones. False when either is not a safe absolute path. Pure."""
    plain_first, plain_second = _plain(first), _plain(second)
    return contains(plain_first, plain_second) and contains(plain_second, plain_first)


def _plain(path: str) -> str:
    """A path without its ``\\\\?\\`` (or ``\\\\.\\``) long-path prefix."""
    text = path.replace("/", "\\")
    if text[:8].upper() == "\\\\?\\UNC\\":
        return "\\\\" + text[8:]
    if text[:4] in ("\\\\?\\", "\\\\.\\") and _DRIVE.match(text[4:]):
        return text[4:]
    return text


def steps_below(root: str, path: str) -> tuple[str, ...]:
    """The paths from the first folder below ``root`` down to ``path`` itself, each in
    ``root``'s spelling (``C:\\p``, ``C:\\p\\a\\b`` -> ``C:\\p\\a``, ``C:\\p\\a\\b``);
    PathNotAllowed when ``path`` is not below ``root``. Pure."""
    inside = confine_absolute(root, path)
    base = _parse_absolute(root, PathNotAllowed, "pool root")
    parts = _parse_absolute(inside, PathNotAllowed, "path").parts[len(base.parts):]
    return tuple(_join(base, parts[:count]) for count in range(1, len(parts) + 1))


_ADMIN_SHARES = frozenset({"ADMIN$", "IPC$", "PRINT$"})


def is_admin_share(share: str) -> bool:
    """Whether ``share`` is one of Windows' administrative shares (``C$``, ``ADMIN$``,
    ``IPC$``, ``PRINT$``): the whole drive or the system folder, never an image store."""
    name = share.upper()
    return name in _ADMIN_SHARES or (len(name) == 2 and name[0].isalpha() and name[1] == "$")


def in_device_namespace(path: str) -> bool:
    """Whether ``path`` is in Windows' ``\\\\?\\`` or ``\\\\.\\`` namespace (``\\\\?\\C:\\...``,
    ``\\\\?\\UNC\\...``, ``\\\\?\\Volume{guid}\\...``, ``\\\\.\\PhysicalDrive0``), with either
    separator. Such a path is no UNC path, though it starts as one: its "server" is ``?``
    or ``.``. Pure."""
    text = path.replace("/", "\\")
    return text.startswith("\\\\") and text[2:].split("\\", 1)[0] in ("?", ".")


def _is_within(base: _AbsolutePath, target: _AbsolutePath, strictly: bool = True) -> bool:
    if _upcase(base.anchor) != _upcase(target.anchor):
        return False
    if len(target.parts) < len(base.parts) + (1 if strictly else 0):
        return False
    pairs = zip(base.parts, target.parts, strict=False)
    return all(_upcase(mine) == _upcase(theirs) for mine, theirs in pairs)


def _upcase(name: str) -> str:
    """``name`` as NTFS and SMB servers compare names: each UTF-16 unit upper-cased by
    itself (the volume's upcase table, Unicode's simple mapping), so ``Straße`` and
    ``STRASSE`` (equal to ``casefold``) stay two names, and ``ß`` stays itself."""
    return "".join(upper if ord(ch) < 0x10000 and len(upper := ch.upper()) == 1 else ch
                   for ch in name)


def _parse_absolute(path: str, error: type[AgentError], what: str) -> _AbsolutePath:
    text = path.replace("/", "\\")
    if text.startswith("\\\\"):
        return _parse_unc(text, path, error, what)
    if _DRIVE.match(text) and text[2:3] == "\\":
        return _AbsolutePath(text[:2], _resolve(text[3:].split("\\"), path, error))
    raise error(f"{what} {quoted(path)} is not an absolute drive (C:\\...) or UNC path")


def _parse_unc(text: str, original: str, error: type[AgentError], what: str) -> _AbsolutePath:
    pieces = text[2:].split("\\")
    if in_device_namespace(text):
        raise error(f"{what} {quoted(original)} uses the \\\\?\\ or \\\\.\\ device namespace")
    if len(pieces) < 2 or not pieces[0] or not pieces[1]:
        raise error(f"{what} {quoted(original)} lacks a server or share")
    for name in pieces[:2]:
        if name in (".", ".."):
            raise error(f"{what} {quoted(original)} has a {quoted(name)} server or share")
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
                raise error(f"path {quoted(original)} climbs out of its root with '..'")
            stack.pop()
            continue
        _check_segment(segment, error, f"path {quoted(original)}")
        stack.append(segment)
    return tuple(stack)


def _join(base: _AbsolutePath, parts: tuple[str, ...]) -> str:
    joined = "\\".join((base.anchor, *base.parts, *parts))
    return joined + "\\" if _DRIVE.fullmatch(joined) else joined
