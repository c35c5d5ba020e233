"""Reading SOAP 1.2 faults as WinRM sends them (MS-WSMV §2.2.4.43, §4.10).

``s:Code`` holds ``s:Sender``/``s:Receiver`` and a subcode (``w:InvalidSelectors``,
``w:EncodingLimit``, ``a:DestinationUnreachable``, ``wsen:CannotProcessFilter`` …);
``s:Detail`` may hold a ``wsman:FaultDetail`` URI, a ``f:WSManFault`` (its ``Code`` a
Win32/WinRM code or an HRESULT, its message possibly inside a nested ``ProviderFault``)
and, for errors the WMI provider raised, a ``p:MSFT_WmiError`` instance with
``CIMStatusCode``, ``Message`` and ``error_Code`` (the WMI HRESULT).
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from hyperv_agent.cim.faults import CIM_INVALID_CLASS, CimFault
from hyperv_agent.cim.wsman.names import WMIERROR, WSMAN, WSMANFAULT, S, q


def find_fault(root: Element) -> Element | None:
    """The ``s:Fault`` of an envelope (or body), if any."""
    if root.tag == q(S, "Fault"):
        return root
    body = root if root.tag == q(S, "Body") else root.find(q(S, "Body"))
    return body.find(q(S, "Fault")) if body is not None else None


# WinRM's WMI plugin answers a WQL query over a class the namespace does not have with
# n:CannotProcessFilter, as it answers a query it cannot parse, and no WMI error code; only
# its nested message tells the two apart: "The specified class does not exist in the given
# namespace." (a Windows Server 2008 R2 answer kept in WinRb/WinRM's soap_fault_v2.xml). The
# message is in the request's Locale, which pypsrp sends as en-US.
_NO_SUCH_CLASS = "class does not exist"


def read_fault(fault: Element) -> CimFault:
    """What the fault says, as the seam's neutral fault description."""
    detail = fault.find(q(S, "Detail"))
    wsman_fault = detail.find(q(WSMANFAULT, "WSManFault")) if detail is not None else None
    wmi_error = detail.find(q(WMIERROR, "MSFT_WmiError")) if detail is not None else None
    message = (_wmi_text(wmi_error, "Message") or _wsman_message(wsman_fault)
               or fault.findtext(f"{q(S, 'Reason')}/{q(S, 'Text')}") or "")
    subcode = _subcode(fault)
    status = _integer(_wmi_text(wmi_error, "CIMStatusCode"))
    if status is None and subcode == "CannotProcessFilter" and \
            _NO_SUCH_CLASS in " ".join(message.lower().split()):
        status = CIM_INVALID_CLASS
    return CimFault(
        message=message.strip(),
        cim_status=status,
        hresult=_integer(_wmi_text(wmi_error, "error_Code")) or _hresult(wsman_fault),
        subcode=subcode,
        detail=_detail(detail),
    )


def _subcode(fault: Element) -> str | None:
    code = fault.find(q(S, "Code"))
    if code is None:
        return None
    value = code.findtext(f"{q(S, 'Subcode')}/{q(S, 'Value')}") or code.findtext(q(S, "Value"))
    return value.strip().rpartition(":")[2] if value else None


def _detail(detail: Element | None) -> str | None:
    text = detail.findtext(q(WSMAN, "FaultDetail")) if detail is not None else None
    return text.strip().rstrip("/").rpartition("/")[2] if text and text.strip() else None


def _wsman_message(wsman_fault: Element | None) -> str | None:
    if wsman_fault is None:
        return None
    message = wsman_fault.find(q(WSMANFAULT, "Message"))
    if message is None:
        return None
    provider = message.find(q(WSMANFAULT, "ProviderFault"))
    if provider is not None:
        inner = provider.find(q(WSMANFAULT, "WSManFault"))
        nested = _wsman_message(inner) if inner is not None else None
        return nested or "".join(provider.itertext()).strip() or None
    return "".join(message.itertext()).strip() or None


def _hresult(wsman_fault: Element | None) -> int | None:
    code = _integer(wsman_fault.get("Code")) if wsman_fault is not None else None
    if code is not None and code & 0xFFFF0000 in (0x80040000, 0x80330000, 0x80070000):
        return code
    return None


def _wmi_text(error: Element | None, name: str) -> str | None:
    return error.findtext(q(WMIERROR, name)) if error is not None else None


def _integer(text: str | None) -> int | None:
    if text is None:
        return None
    stripped = text.strip()
    try:
        value = int(stripped, 16) if stripped.lower().startswith("0x") else int(stripped)
    except ValueError:
        return None
    return value & 0xFFFFFFFF if value < 0 else value
