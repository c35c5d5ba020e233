"""CIM values as text, for backends whose transport carries text (backend-neutral).

Across the seam a ``datetime`` is DMTF text (DSP0004): a point in time
``yyyymmddHHMMSS.mmmmmmsUUU`` (``s`` the sign, ``UUU`` the offset in minutes) or an
interval ``ddddddddHHMMSS.mmmmmm:000``. WS-Management carries them as XML Schema values
(DSP0230): ``cim:Datetime`` holds an ISO 8601 time (``2025-01-10T09:15:02.123456Z``) and
``cim:Interval`` an ``xs:duration`` (``P1DT2H3M4.5S``). The converters here are exact in
both directions for every value the DMTF form can carry to the microsecond. PyMI hands
datetimes over as Python ``datetime`` (without the UTC offset, which it drops) and
intervals as ``timedelta``; those convert here too.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal, InvalidOperation

from hyperv_agent.cim.api import INTEGER_TYPES, CimScalar
from hyperv_agent.errors import CimError

_INTEGER = re.compile(r"[+-]?\d+")
_DMTF_TIME = re.compile(
    r"(?P<y>\d{4})(?P<mo>\d{2})(?P<d>\d{2})(?P<h>\d{2})(?P<mi>\d{2})(?P<s>\d{2})"
    r"\.(?P<us>\d{6})(?P<sign>[+-])(?P<off>\d{3})")
_DMTF_INTERVAL = re.compile(
    r"(?P<days>\d{8})(?P<h>\d{2})(?P<mi>\d{2})(?P<s>\d{2})\.(?P<us>\d{6}):000")
_ISO_TIME = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})T(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:\.(?P<frac>\d{1,9}))?(?P<zone>Z|[+-]\d{2}:\d{2})?")
_DURATION = re.compile(
    r"P(?:(?P<days>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?")


# --- scalars ------------------------------------------------------------------------------


def parse_scalar(cim_type: str, text: str, name: str = "value") -> CimScalar:
    """A property's text as its CIM type: integers as int, booleans as bool, everything
    else (strings, datetimes, reals, char16, references) as text. CimError names ``name``
    when the text is not of that type."""
    if cim_type in INTEGER_TYPES:
        if text.isdigit():
            return int(text)
        stripped = text.strip()
        if not _INTEGER.fullmatch(stripped):
            raise CimError(f"{name} is not an integer: {text!r}")
        return int(stripped)
    if cim_type == "boolean":
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise CimError(f"{name} is not a boolean: {text!r}")
        return lowered in ("true", "1")
    return text


def format_scalar(cim_type: str, value: CimScalar) -> str:
    """The text of one value: booleans ``true``/``false``, everything else as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- datetimes ----------------------------------------------------------------------------


def is_interval(dmtf: str) -> bool:
    """Whether DMTF datetime text is an interval (``…:000``) rather than a time."""
    return len(dmtf) == 25 and dmtf[21] == ":"


def dmtf_to_iso(dmtf: str) -> str:
    """``20250110091502.123456+060`` -> ``2025-01-10T09:15:02.123456+01:00`` (``Z`` for
    a zero offset). CimError for anything else."""
    match = _DMTF_TIME.fullmatch(dmtf)
    if match is None:
        raise CimError(f"not a DMTF datetime: {dmtf!r}")
    g = match.groupdict()
    minutes = int(g["off"])
    zone = "Z" if minutes == 0 else f"{g['sign']}{minutes // 60:02d}:{minutes % 60:02d}"
    return f"{g['y']}-{g['mo']}-{g['d']}T{g['h']}:{g['mi']}:{g['s']}.{g['us']}{zone}"


def iso_to_dmtf(iso: str) -> str:
    """``2025-01-10T09:15:02.123Z`` -> ``20250110091502.123000+000``; a missing zone is
    UTC, fractions are cut to microseconds. CimError for anything else (negative times
    included, which WinRM does not carry)."""
    match = _ISO_TIME.fullmatch(iso.strip())
    if match is None:
        raise CimError(f"not an ISO 8601 datetime: {iso!r}")
    g = match.groupdict()
    micros = (g["frac"] or "").ljust(6, "0")[:6]
    sign, minutes = _offset_minutes(g["zone"] or "Z")
    return f"{g['y']}{g['mo']}{g['d']}{g['h']}{g['mi']}{g['s']}.{micros}{sign}{minutes:03d}"


def _offset_minutes(zone: str) -> tuple[str, int]:
    if zone == "Z":
        return "+", 0
    hours, minutes = zone[1:].split(":")
    return zone[0], int(hours) * 60 + int(minutes)


def dmtf_interval_to_duration(dmtf: str) -> str:
    """``00000001020304.500000:000`` -> ``P1DT2H3M4.5S``."""
    match = _DMTF_INTERVAL.fullmatch(dmtf)
    if match is None:
        raise CimError(f"not a DMTF interval: {dmtf!r}")
    g = match.groupdict()
    seconds = str(int(g["s"]))
    if int(g["us"]):
        seconds += "." + g["us"].rstrip("0")
    return f"P{int(g['days'])}DT{int(g['h'])}H{int(g['mi'])}M{seconds}S"


def duration_to_dmtf_interval(duration: str) -> str:
    """An ``xs:duration`` of days, hours, minutes and seconds as a DMTF interval, carried
    over into larger units; years and months (of no fixed length) are refused."""
    match = _DURATION.fullmatch(duration.strip())
    if match is None or duration.strip() in ("P", "PT"):
        raise CimError(f"not a day-time duration: {duration!r}")
    g = match.groupdict()
    try:
        total = Decimal(g["s"] or 0) + 60 * (int(g["mi"] or 0) + 60 * (
            int(g["h"] or 0) + 24 * int(g["days"] or 0)))
    except InvalidOperation:
        raise CimError(f"not a day-time duration: {duration!r}") from None
    return _interval_from_timedelta(datetime.timedelta(microseconds=int(total * 1_000_000)))


# --- Python's datetime and timedelta (PyMI) -----------------------------------------------


def dmtf_from_python(value: datetime.datetime | datetime.timedelta) -> str:
    """A ``datetime`` as a DMTF time (``+000`` when it carries no UTC offset) or a
    ``timedelta`` as a DMTF interval; CimError for a negative interval."""
    if isinstance(value, datetime.timedelta):
        return _interval_from_timedelta(value)
    offset = value.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    return f"{value:%Y%m%d%H%M%S.%f}{sign}{abs(minutes):03d}"


def _interval_from_timedelta(value: datetime.timedelta) -> str:
    if value < datetime.timedelta(0):
        raise CimError(f"a CIM interval cannot be negative: {value}")
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{value.days:08d}{hours:02d}{minutes:02d}{seconds:02d}.{value.microseconds:06d}:000"


def python_from_dmtf(dmtf: str) -> datetime.datetime | datetime.timedelta:
    """DMTF text as PyMI gives it: an interval as ``timedelta``, a time as a ``datetime``
    without its UTC offset. CimError for anything else."""
    interval = _DMTF_INTERVAL.fullmatch(dmtf)
    if interval is not None:
        g = interval.groupdict()
        return datetime.timedelta(days=int(g["days"]), hours=int(g["h"]), minutes=int(g["mi"]),
                                  seconds=int(g["s"]), microseconds=int(g["us"]))
    time = _DMTF_TIME.fullmatch(dmtf)
    if time is None:
        raise CimError(f"not a DMTF datetime: {dmtf!r}")
    g = time.groupdict()
    try:
        return datetime.datetime(int(g["y"]), int(g["mo"]), int(g["d"]), int(g["h"]),
                                 int(g["mi"]), int(g["s"]), int(g["us"]))
    except ValueError as error:
        raise CimError(f"not a DMTF datetime: {dmtf!r} ({error})") from None
