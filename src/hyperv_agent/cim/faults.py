"""Provider and transport failures as the seam's typed errors (backend-neutral).

A WMI failure carries up to three codes: the CIM status (DSP0004 ``CIM_ERR_*``, also
MSFT_WmiError's ``CIMStatusCode`` and MI's ``MI_Result``, which PyMI reports as
``mi_result``), a WMI HRESULT (``WBEM_E_*``, 0x8004xxxx; PyMI's ``error_code``) and,
over WS-Management, a fault subcode (``w:InvalidSelectors``) with a fault detail
(``…/faultDetail/ResourceNotFound``). ``to_error`` picks the ``CimError`` subclass from
the most specific code present and keeps the provider's message on one line; ``describe``
goes the other way, for a server that has to report an error of the seam.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperv_agent.errors import (
    CimAccessDenied,
    CimEnumerationExpired,
    CimError,
    CimInvalidClass,
    CimInvalidMethod,
    CimInvalidParameter,
    CimInvalidProperty,
    CimInvalidQuery,
    CimNotFound,
    CimResponseTooLarge,
    CimTimedOut,
    CimUnavailable,
)

# CIM status codes (DSP0004 Annex, CIM_ERR_*).
CIM_FAILED = 1
CIM_ACCESS_DENIED = 2
CIM_INVALID_NAMESPACE = 3
CIM_INVALID_PARAMETER = 4
CIM_INVALID_CLASS = 5
CIM_NOT_FOUND = 6
CIM_NOT_SUPPORTED = 7
CIM_NO_SUCH_PROPERTY = 12
CIM_INVALID_QUERY = 15
CIM_METHOD_NOT_FOUND = 17
CIM_SERVER_LIMITS_EXCEEDED = 27  # WinRM's quotas (MaxConcurrentOperationsPerUser, ...)

# WMI HRESULTs (WBEMSTATUS).
WBEM_E_FAILED = 0x80041001
WBEM_E_NOT_FOUND = 0x80041002
WBEM_E_ACCESS_DENIED = 0x80041003
WBEM_E_INVALID_PARAMETER = 0x80041008
WBEM_E_NOT_SUPPORTED = 0x8004100C
WBEM_E_INVALID_NAMESPACE = 0x8004100E
WBEM_E_INVALID_CLASS = 0x80041010
WBEM_E_INVALID_QUERY = 0x80041017
WBEM_E_INVALID_METHOD = 0x8004102E
WBEM_E_INVALID_METHOD_PARAMETERS = 0x8004102F
WBEM_S_TIMEDOUT = 0x00040004  # an operation that did not finish in time (PyMI's timeouts)
# WinRM's quota errors (wsmerror.h ERROR_WSMAN_QUOTA_*): the request was refused while too
# many others were in flight; it may be sent again once some have ended.
# WinRM's ERROR_WSMAN_RESOURCE_NOT_FOUND: how Windows answers a Get or Invoke whose selectors
# name no instance (a:DestinationUnreachable whose fault detail says InvalidResourceURI, with
# no MSFT_WmiError), so this code, not the detail, tells that the instance is missing.
WSMAN_RESOURCE_NOT_FOUND = 0x80338000
# ERROR_WSMAN_INVALID_URI_WMI_SINGLETON: the WMI plugin's answer to a Get without keys of a
# class that is not a singleton; such a path names no instance (as the emulator says).
WSMAN_INVALID_URI_WMI_SINGLETON = 0x803380FA
WSMAN_QUOTA_ERRORS = (0x803381A5, 0x803381A6, 0x803381A7, 0x803381A8, 0x803381AB,
                      *range(0x803381E4, 0x803381EB))
# The host's WinRM setting a quota error names (ERROR_WSMAN_QUOTA_MAX_OPERATIONS), for the
# operator to raise: Windows' message says only that "the quota for this user" was exceeded.
WSMAN_QUOTA_SETTINGS = {0x803381A6: "MaxConcurrentOperationsPerUser"}

_BY_STATUS: dict[int, type[CimError]] = {
    CIM_ACCESS_DENIED: CimAccessDenied,
    CIM_INVALID_NAMESPACE: CimInvalidClass,
    CIM_INVALID_PARAMETER: CimInvalidParameter,
    CIM_INVALID_CLASS: CimInvalidClass,
    CIM_NOT_FOUND: CimNotFound,
    CIM_NO_SUCH_PROPERTY: CimInvalidProperty,
    CIM_INVALID_QUERY: CimInvalidQuery,
    CIM_METHOD_NOT_FOUND: CimInvalidMethod,
    CIM_SERVER_LIMITS_EXCEEDED: CimUnavailable,
}
_BY_HRESULT: dict[int, type[CimError]] = {
    WBEM_E_NOT_FOUND: CimNotFound,
    WBEM_E_ACCESS_DENIED: CimAccessDenied,
    WBEM_E_INVALID_PARAMETER: CimInvalidParameter,
    WBEM_E_INVALID_METHOD_PARAMETERS: CimInvalidParameter,
    WBEM_E_INVALID_NAMESPACE: CimInvalidClass,
    WBEM_E_INVALID_CLASS: CimInvalidClass,
    WBEM_E_INVALID_QUERY: CimInvalidQuery,
    WBEM_E_INVALID_METHOD: CimInvalidMethod,
    WBEM_S_TIMEDOUT: CimUnavailable,
    WSMAN_RESOURCE_NOT_FOUND: CimNotFound,
    WSMAN_INVALID_URI_WMI_SINGLETON: CimNotFound,
    **dict.fromkeys(WSMAN_QUOTA_ERRORS, CimUnavailable),
}
# WS-Management subcodes (local names) and fault details (URI suffixes).
_BY_SUBCODE: dict[str, type[CimError]] = {
    "AccessDenied": CimAccessDenied,
    "CannotProcessFilter": CimInvalidQuery,
    "EncodingLimit": CimResponseTooLarge,
    "TimedOut": CimTimedOut,
    "QuotaLimit": CimUnavailable,
    "InvalidSelectors": CimNotFound,
    "InvalidEnumerationContext": CimEnumerationExpired,
}
_BY_DETAIL: dict[str, type[CimError]] = {
    "ResourceNotFound": CimNotFound,
    "InvalidResourceURI": CimInvalidClass,
}
# The codes a server reports for each error of the seam: (CIM status, HRESULT).
_CODES: dict[type[CimError], tuple[int, int]] = {
    CimNotFound: (CIM_NOT_FOUND, WBEM_E_NOT_FOUND),
    CimAccessDenied: (CIM_ACCESS_DENIED, WBEM_E_ACCESS_DENIED),
    CimInvalidParameter: (CIM_INVALID_PARAMETER, WBEM_E_INVALID_PARAMETER),
    CimInvalidClass: (CIM_INVALID_CLASS, WBEM_E_INVALID_CLASS),
    CimInvalidProperty: (CIM_NO_SUCH_PROPERTY, WBEM_E_NOT_FOUND),
    CimInvalidQuery: (CIM_INVALID_QUERY, WBEM_E_INVALID_QUERY),
    CimInvalidMethod: (CIM_METHOD_NOT_FOUND, WBEM_E_INVALID_METHOD),
}


@dataclass(frozen=True)
class CimFault:
    """What a provider or transport reported; every field optional but the message."""

    message: str
    cim_status: int | None = None
    hresult: int | None = None
    subcode: str | None = None  # local name, e.g. "InvalidSelectors"
    detail: str | None = None  # fault detail suffix, e.g. "ResourceNotFound"


def to_error(fault: CimFault, where: str = "") -> CimError:
    """The ``CimError`` for ``fault``: by CIM status, else HRESULT, else subcode, else
    detail; plain ``CimError`` when none is known. ``where`` prefixes the message."""
    kind = (_BY_STATUS.get(fault.cim_status or 0) or _BY_HRESULT.get(fault.hresult or 0)
            or _BY_SUBCODE.get(fault.subcode or "") or _BY_DETAIL.get(fault.detail or "")
            or CimError)
    return kind(f"{where}{one_line(fault.message)}{_codes(fault)}{_quota(fault)}")


def _codes(fault: CimFault) -> str:
    parts = []
    if fault.hresult is not None:
        parts.append(f"0x{fault.hresult & 0xFFFFFFFF:08X}")
    if fault.subcode:
        parts.append(fault.subcode)
    return f" ({', '.join(parts)})" if parts else ""


def _quota(fault: CimFault) -> str:
    setting = WSMAN_QUOTA_SETTINGS.get(fault.hresult or 0)
    if setting is None:
        return ""
    return (f"; WinRM's {setting} quota (WSMan:\\localhost\\Service\\{setting} on the "
            "host): the request may be sent again once the account's other operations end")


def describe(error: CimError) -> tuple[int, int]:
    """(CIM status, HRESULT) a server reports for ``error``: those of its class or the
    nearest base with codes, else CIM_ERR_FAILED / WBEM_E_FAILED."""
    for kind in type(error).__mro__:
        if kind in _CODES:
            return _CODES[kind]
    return CIM_FAILED, WBEM_E_FAILED


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) folded to single spaces."""
    return " ".join(text.split()) or "no message"
