"""SOAP envelopes on the server side: reading a request's headers, writing answers and faults
shaped as WinRM writes them (MS-WSMV §4.1, §4.10)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from hyperv_agent.cim.faults import describe, one_line
from hyperv_agent.cim.wsman import writing
from hyperv_agent.cim.wsman.names import (
    ADDRESSING_FAULT,
    ANONYMOUS,
    CIMBINDING,
    ENUMERATION_FAULT,
    FAULT_DETAIL,
    WMIERROR,
    WSA,
    WSEN,
    WSMAN,
    WSMAN_FAULT,
    WSMANFAULT,
    XSI,
    S,
    q,
)
from hyperv_agent.errors import (
    CimAccessDenied,
    CimError,
    CimInvalidClass,
    CimInvalidQuery,
    CimNotFound,
    CimResponseTooLarge,
)

MIN_ENVELOPE_BYTES = 8192
# wsmerror.h ERROR_WSMAN_RESOURCE_NOT_FOUND (0x80338000), with its message text
RESOURCE_NOT_FOUND = 2150858752
RESOURCE_NOT_FOUND_TEXT = ("The WS-Management service cannot process the request. The service "
                           "cannot find the resource identified by the resource URI and "
                           "selectors.")
# f:WSManFault@Code of each subcode the face answers with, WinRM's own error codes
# (wsmerror.h): ERROR_WSMAN_MESSAGE_INFORMATION_HEADER_REQUIRED, ..._ACTION_NOT_SUPPORTED,
# ..._INVALID_RESOURCE_URI, ..._ENUMERATE_FILTER_DIALECT_REQUESTED_UNAVAILABLE,
# ..._ENUMERATE_CANNOT_PROCESS_FILTER, ..._ENUMERATE_INVALID_ENUMERATION_CONTEXT,
# ..._OPERATION_TIMEDOUT, ..._ENCODING_LIMIT, ..._INVALID_SELECTORS, ..._SCHEMA_VALIDATION_ERROR.
# A fault whose cause has a more precise code (a provider's HRESULT, too few selectors, an
# answer over MaxEnvelopeSize) names that one instead.
WSMAN_CODES = {
    "a:MessageInformationHeaderRequired": 0x80338011,
    "a:ActionNotSupported": 0x80338013,
    "a:DestinationUnreachable": 0x8033803B,
    "n:FilterDialectRequestedUnavailable": 0x80338019,
    "n:CannotProcessFilter": 0x8033801A,
    "n:InvalidEnumerationContext": 0x8033801B,
    "w:TimedOut": 0x80338029,
    "w:EncodingLimit": 0x80338035,
    "w:InvalidSelectors": 0x8033803D,
    "w:SchemaValidationError": 0x80338041,
}
INSUFFICIENT_SELECTORS = 0x8033805A
# How the WMI plugin refuses a Get without keys of a class that is not a singleton: wsmerror.h
# ERROR_WSMAN_INVALID_URI_WMI_SINGLETON (2150859002), outside and in its nested ProviderFault
# with this message (the WSManFault Microsoft's Session.Error reference shows for a Get of
# Win32_QuotaSetting without VolumePath). The s:Fault's subcode and detail are not recorded.
INVALID_URI_WMI_SINGLETON = 0x803380FA
INVALID_URI_WMI_SINGLETON_TEXT = (
    "The WinRM client cannot process the request. The resource URI is not valid: it does not "
    "contain keys, but the class selected is not a singleton. To access an instance which is "
    "not a singleton, keys must be provided. Use the following command to get more "
    'information in how to construct a resource URI: "winrm help uris".')
MAX_ENVELOPE_SIZE_EXCEEDED = 0x80338048
# How WinRM refuses an operation past MaxConcurrentOperationsPerUser: s:Receiver,
# w:InternalError (MS-WSMV 3.1.4.1.19), wsmerror.h ERROR_WSMAN_QUOTA_MAX_OPERATIONS in
# f:WSManFault, whose message names the quota's value, and no MSFT_WmiError (a Windows
# answer kept in txwinrm's test data, data_error/max_concurrent.xml).
QUOTA_MAX_OPERATIONS = 0x803381A6
QUOTA_MAX_OPERATIONS_TEXT = ("The WS-Management service cannot process the request. The "
                             "maximum number of concurrent operations for this user has been "
                             "exceeded. Close existing operations for this user, or raise the "
                             "quota for this user.")
# How the WMI plugin answers a WQL query over a class the namespace does not have: the
# reason WinRM gives for n:CannotProcessFilter and the plugin's own message, nested in
# f:ProviderFault (a Windows Server 2008 R2 answer to an Enumerate filtered by
# "Select * from Win32_Processa ...", kept in WinRb/WinRM's test stubs soap_fault_v2.xml).
CANNOT_PROCESS_FILTER_TEXT = ("The data source could not process the filter. The filter "
                              "might be missing or it might be invalid. Change the filter and "
                              "try the request again.")
NO_SUCH_CLASS_TEXT = "The specified class does not exist in the given namespace."
# w:TimedOut's reason as WinRM words it (a Windows answer kept in microsoft/omi's parser
# tests, TestTimeoutResponse)
TIMED_OUT_TEXT = ("The WS-Management service cannot complete the operation within the time "
                  "specified in OperationTimeout.")
EXTENDED_STATUS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/__ExtendedStatus"
# Where Microsoft names no code for a fault: ERROR_WSMAN_PROVIDER_FAILURE, the plugin failed
PROVIDER_FAILURE = 0x80338003
# The WMI plugin's registration, as WinRM names it in f:ProviderFault
WMI_PROVIDER = ("WMI Provider", "C:\\Windows\\system32\\WsmWmiPl.dll")
MAX_TIMEOUT_S = 60.0  # WinRM's MaxTimeoutms default
_DURATION_S = re.compile(r"PT(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?")
ENVELOPE_NS = (f'xmlns:s="{S}" xmlns:a="{WSA}" xmlns:n="{WSEN}" xmlns:w="{WSMAN}" '
               f'xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:xsi="{XSI}"')


class Fault(Exception):
    """A WS-Management fault to answer with (HTTP 500 unless ``status`` says otherwise)."""

    def __init__(self, subcode: str, reason: str, *, sender: bool = True,
                 detail: str | None = None, code: int | None = None,
                 wmi: tuple[int, int] | None = None, status: int = 500,
                 provider: str | None = None,
                 extended: tuple[str, str, str] | None = None,
                 message: str | None = None) -> None:
        super().__init__(reason)
        self.subcode = subcode  # prefixed: "w:EncodingLimit", "a:ActionNotSupported"
        self.reason = one_line(reason)
        self.sender = sender
        self.detail = detail
        self.code = WSMAN_CODES.get(subcode, PROVIDER_FAILURE) if code is None else code
        self.wmi = wmi  # (CIM status, HRESULT) for a provider error: MSFT_WmiError
        self.status = status
        # the WMI plugin's fault: its message, nested in f:ProviderFault
        self.provider = one_line(provider) if provider is not None else None
        # WMI's __ExtendedStatus beside it: (Operation, ParameterInfo, ProviderName)
        self.extended = extended
        # f:WSManFault's own message, where WinRM words it apart from the reason
        self.message = one_line(message) if message is not None else None


@dataclass(frozen=True)
class SoapRequest:
    action: str
    resource_uri: str
    message_id: str
    max_envelope_bytes: int
    timeout_s: float
    selector_set: Element | None
    option_set: Element | None
    body: Element


def read_request(data: bytes, server_max_bytes: int) -> SoapRequest:
    """The headers and body of a request; a Fault for malformed or refused ones."""
    try:
        root = fromstring(data)
    except (ParseError, DefusedXmlException, ValueError) as error:
        raise Fault("w:SchemaValidationError", f"the request is not well-formed XML: {error}",
                    status=400) from None
    header, body = root.find(q(S, "Header")), root.find(q(S, "Body"))
    if root.tag != q(S, "Envelope") or header is None or body is None:
        raise Fault("w:SchemaValidationError", "the request is not a SOAP 1.2 envelope",
                    status=400)
    action = (header.findtext(q(WSA, "Action")) or "").strip()
    message_id = (header.findtext(q(WSA, "MessageID")) or "").strip()
    if not action or not message_id:
        raise Fault("a:MessageInformationHeaderRequired", "the request has no Action or "
                    "MessageID header")
    timeout_s = min(operation_timeout_s(header.findtext(q(WSMAN, "OperationTimeout"))),
                    MAX_TIMEOUT_S)
    return SoapRequest(action, (header.findtext(q(WSMAN, "ResourceURI")) or "").strip(),
                       message_id, _max_envelope(header, server_max_bytes), timeout_s,
                       header.find(q(WSMAN, "SelectorSet")), header.find(q(WSMAN, "OptionSet")),
                       body)


def _max_envelope(header: Element, server_max_bytes: int) -> int:
    text = (header.findtext(q(WSMAN, "MaxEnvelopeSize")) or "").strip()
    if not text:
        return server_max_bytes
    if not text.isdigit():
        raise Fault("w:SchemaValidationError", f"MaxEnvelopeSize {text!r} is not a number")
    requested = int(text)
    if requested < MIN_ENVELOPE_BYTES:
        raise Fault("w:EncodingLimit", f"MaxEnvelopeSize {requested} is below the minimum of "
                    f"{MIN_ENVELOPE_BYTES} octets", detail="MinimumEnvelopeLimit")
    return min(requested, server_max_bytes)


def option(request: SoapRequest, name: str) -> str | None:
    if request.option_set is None:
        return None
    for item in request.option_set.findall(q(WSMAN, "Option")):
        if (item.get("Name") or "").lower() == name.lower():
            return (item.text or "").strip()
    return None


# --- answers ------------------------------------------------------------------------------


def envelope(action: str, relates_to: str, body: str) -> str:
    """A whole answer envelope around ``body`` (already XML text)."""
    return (f'<s:Envelope xml:lang="en-US" {ENVELOPE_NS}><s:Header>'
            f'<a:Action>{writing.text(action)}</a:Action>'
            f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
            f"<a:To>{ANONYMOUS}</a:To><a:RelatesTo>{writing.text(relates_to)}</a:RelatesTo>"
            f"</s:Header><s:Body>{body}</s:Body></s:Envelope>")


def fault_envelope(fault: Fault, relates_to: str, machine: str) -> str:
    code = "s:Sender" if fault.sender else "s:Receiver"
    detail = (f"<w:FaultDetail>{FAULT_DETAIL}{fault.detail}</w:FaultDetail>"
              if fault.detail else "")
    body = (f"<s:Fault><s:Code><s:Value>{code}</s:Value><s:Subcode><s:Value>{fault.subcode}"
            f'</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">'
            f"{writing.text(fault.reason)}</s:Text></s:Reason><s:Detail>{detail}"
            f"{_wsman_fault(fault, machine)}{_wmi_error(fault)}</s:Detail></s:Fault>")
    # WS-Enumeration's faults carry its own fault action, as WinRM sends n:CannotProcessFilter
    # (the WinRb/WinRM stubs soap_fault_v1.xml and soap_fault_v2.xml)
    action = {"a:": ADDRESSING_FAULT, "n:": ENUMERATION_FAULT}.get(fault.subcode[:2],
                                                                  WSMAN_FAULT)
    return envelope(action, relates_to, body)


def _wsman_fault(fault: Fault, machine: str) -> str:
    message = writing.text(fault.message if fault.message is not None else fault.reason)
    if fault.provider is not None:  # as WinRM wraps what its WMI plugin reported
        name, path = WMI_PROVIDER
        message = (f"<f:ProviderFault provider={writing.attr(name)} path={writing.attr(path)}>"
                   f'<f:WSManFault xmlns:f="{WSMANFAULT}" Code="{fault.code}" '
                   f"Machine={writing.attr(machine)}><f:Message>"
                   f"{writing.text(fault.provider)}</f:Message></f:WSManFault>"
                   f"{_extended_status(fault)}</f:ProviderFault>")
    return (f'<f:WSManFault xmlns:f="{WSMANFAULT}" Code="{fault.code}" '
            f"Machine={writing.attr(machine)}><f:Message>{message}</f:Message></f:WSManFault>")


def _extended_status(fault: Fault) -> str:
    """WMI's __ExtendedStatus in f:ExtendedError, typed as Windows Server 2012 R2 writes it
    (microsoft/omi's parser tests); Description and StatusCode are nil there."""
    if fault.extended is None:
        return ""
    operation, parameter, provider = fault.extended
    props = "".join(f'<p:{name} xsi:type="cim:cimString">{writing.text(value)}</p:{name}>'
                    for name, value in (("Operation", operation), ("ParameterInfo", parameter),
                                        ("ProviderName", provider)))
    return (f'<f:ExtendedError><p:__ExtendedStatus xmlns:p="{EXTENDED_STATUS}" '
            'xsi:type="p:__ExtendedStatus_Type"><p:Description xsi:nil="true" '
            f'xsi:type="cim:cimString"/>{props}<p:StatusCode xsi:nil="true" '
            'xsi:type="cim:cimUnsignedInt"/></p:__ExtendedStatus></f:ExtendedError>')


def _wmi_error(fault: Fault) -> str:
    if fault.wmi is None:
        return ""
    status, hresult = fault.wmi
    typed = (("CIMStatusCode", "cimUnsignedInt", str(status)),
             ("Message", "cimString", fault.reason),
             ("MessageID", "cimString", f"HRESULT 0x{hresult:08x}"),
             ("OwningEntity", "cimString", "HYPERV-AGENT-EMULATOR"),
             ("error_Code", "cimUnsignedInt", str(hresult)),
             ("error_Type", "cimString", "HRESULT"),
             ("error_WindowsErrorMessage", "cimString", fault.reason))
    props = "".join(f'<p:{name} xsi:type="cim:{kind}">{writing.text(value)}</p:{name}>'
                    for name, kind, value in typed)
    return (f'<p:MSFT_WmiError xmlns:p="{WMIERROR}" xmlns:b="{CIMBINDING}" '
            f'b:IsCIM_Error="true" xsi:type="p:MSFT_WmiError_Type">{props}</p:MSFT_WmiError>')


def provider_fault(error: CimError) -> Fault:
    """How WinRM reports an error the WMI provider raised: its class picks the subcode,
    MSFT_WmiError carries the CIM status and HRESULT."""
    codes = describe(error)
    text = str(error)
    if isinstance(error, CimInvalidClass):
        return Fault("a:DestinationUnreachable", text, detail="ResourceNotFound",
                     code=codes[1], wmi=codes)
    if isinstance(error, CimNotFound):
        # Windows answers a Get or Invoke naming no instance with the WMI plugin's
        # ERROR_WSMAN_RESOURCE_NOT_FOUND: no MSFT_WmiError, and the fault detail says
        # InvalidResourceURI although the URI is right (a Windows Server 2012 R2 answer to
        # a Get of Win32_Process.Handle="29", kept in microsoft/omi's parser tests).
        return Fault("a:DestinationUnreachable", RESOURCE_NOT_FOUND_TEXT,
                     detail="InvalidResourceURI", code=RESOURCE_NOT_FOUND,
                     provider=RESOURCE_NOT_FOUND_TEXT)
    if isinstance(error, CimInvalidQuery):
        return Fault("n:CannotProcessFilter", text, code=codes[1], wmi=codes)
    if isinstance(error, CimAccessDenied):
        return Fault("w:AccessDenied", text, code=5)
    if isinstance(error, CimResponseTooLarge):
        return Fault("w:EncodingLimit", text, detail="MaxEnvelopeSize")
    return Fault("w:InternalError", text, sender=False, code=codes[1], wmi=codes)


def quota_exceeded(limit: int) -> Fault:
    """How WinRM refuses an operation while the account has ``limit`` open
    (MaxConcurrentOperationsPerUser)."""
    return Fault("w:InternalError", QUOTA_MAX_OPERATIONS_TEXT, sender=False,
                 code=QUOTA_MAX_OPERATIONS,
                 message="The WS-Management service cannot process the request. This user "
                 f"is allowed a maximum number of {limit} concurrent operations, which has "
                 "been exceeded. Close existing operations for this user, or raise the quota "
                 "for this user.")


def unknown_class_in_query(wql: str) -> Fault:
    """How WinRM answers an Enumerate whose WQL names a class the namespace lacks: not the
    WMI provider's invalid class (no MSFT_WmiError, no WBEM_E_INVALID_CLASS anywhere) but
    n:CannotProcessFilter with ERROR_WSMAN_ENUMERATE_CANNOT_PROCESS_FILTER, outside and in
    the plugin's nested fault, whose message alone says that the class does not exist, and
    WMI's ExecQuery status beside it (the WinRb/WinRM stub soap_fault_v2.xml). An unknown
    namespace is answered alike: no recording of that answer is known."""
    return Fault("n:CannotProcessFilter", CANNOT_PROCESS_FILTER_TEXT,
                 provider=NO_SUCH_CLASS_TEXT, extended=("ExecQuery", wql, "WinMgmt"))


def operation_timeout_s(header_text: str | None, default_s: float = MAX_TIMEOUT_S) -> float:
    """Seconds of an ``OperationTimeout`` (``PT60S``, ``PT1M30.5S``); the default when
    absent or unreadable."""
    match = _DURATION_S.fullmatch((header_text or "").strip())
    seconds = (int(match.group("m") or 0) * 60 + float(match.group("s") or 0)) if match else 0
    return seconds if seconds > 0 else default_s
