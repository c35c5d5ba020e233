"""WS-Management messages written from the MS-WSMV §4.1 and §4.10 examples (Get,
Enumerate + Pull, Invoke, fault detail), with the example's namespaces and values, plus
the shapes WinRM gives WMI data (nil, arrays, datetimes, projections, MSFT_WmiError)."""

from __future__ import annotations

S = 'xmlns:s="http://www.w3.org/2003/05/soap-envelope"'
A = 'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing"'
W = 'xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"'
N = 'xmlns:wsen="http://schemas.xmlsoap.org/ws/2004/09/enumeration"'
CIM = 'xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common"'
XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
MYCLASS = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/mynamespace/myclass"
PROCESS = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/cimv2/Win32_Process"
V2 = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/virtualization/v2"


def envelope(body: str, action: str = "x", relates_to: str = "uuid:1") -> str:
    return (f'<s:Envelope xml:lang="en-US" {S} {A} {W} {N} {CIM} {XSI}><s:Header>'
            f"<wsa:Action s:mustUnderstand=\"true\">{action}</wsa:Action>"
            f"<wsa:RelatesTo>{relates_to}</wsa:RelatesTo></s:Header>"
            f"<s:Body>{body}</s:Body></s:Envelope>")


def _location(uri: str, selectors: str) -> str:
    return (f"<cim:Location {CIM} {A} {W}><wsa:Address>"
            "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:Address>"
            f"<wsa:ReferenceParameters><wsman:ResourceURI>{uri}</wsman:ResourceURI>"
            f"<wsman:SelectorSet>{selectors}</wsman:SelectorSet></wsa:ReferenceParameters>"
            "</cim:Location>")


# §4.1.1 Get response
GET_RESPONSE = envelope(
    f'<p:myclass xmlns:p="{MYCLASS}"><p:Data1>Hello World</p:Data1><p:id>1</p:id>'
    + _location(MYCLASS, '<wsman:Selector Name="id">1</wsman:Selector>') + "</p:myclass>",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse")

# §4.1.2.2 Enumerate response (not optimized: a context only)
ENUMERATE_RESPONSE = envelope(
    "<wsen:EnumerateResponse><wsen:EnumerationContext>"
    "uuid:22EB9809-5543-4020-A75C-FD95FF06217B</wsen:EnumerationContext>"
    "</wsen:EnumerateResponse>")

# §4.1.2.4 first Pull response: one item and a new context
FIRST_PULL_RESPONSE = envelope(
    "<wsen:PullResponse><wsen:EnumerationContext>uuid:2504CA0D-94B9-4F91-B2F7-9F4CD9A2A96C"
    f'</wsen:EnumerationContext><wsen:Items><p:myclass xmlns:p="{MYCLASS}">'
    "<p:Data1>Test Message</p:Data1><p:id>1</p:id>"
    + _location(MYCLASS, '<wsman:Selector Name="id">1</wsman:Selector>')
    + "</p:myclass></wsen:Items></wsen:PullResponse>")

# §4.1.2.6 second Pull response with EndOfSequence (and no context)
LAST_PULL_RESPONSE = envelope(
    f'<wsen:PullResponse><wsen:Items><p:myclass xmlns:p="{MYCLASS}">'
    '<p:Data1>"Hello again"</p:Data1><p:id>2</p:id>'
    + _location(MYCLASS, '<wsman:Selector Name="id">2</wsman:Selector>')
    + "</p:myclass></wsen:Items><wsen:EndOfSequence/></wsen:PullResponse>")

# §4.1.4 Invoke response (Win32_Process.Create)
INVOKE_RESPONSE = envelope(
    f'<p:Create_OUTPUT xmlns:p="{PROCESS}"><p:ProcessId>4000</p:ProcessId>'
    "<p:ReturnValue>0</p:ReturnValue></p:Create_OUTPUT>",
    PROCESS + "/CreateResponse")

# An optimized Enumerate response: items in the answer, the sequence already ended
OPTIMIZED_RESPONSE = envelope(
    "<wsen:EnumerateResponse><wsen:EnumerationContext>uuid:5</wsen:EnumerationContext>"
    f'<wsman:Items><p:Msvm_ComputerSystem xmlns:p="{V2}/Msvm_ComputerSystem" '
    'xsi:type="p:Msvm_ComputerSystem_Type"><p:Caption>Virtual Machine</p:Caption>'
    "<p:CreationClassName>Msvm_ComputerSystem</p:CreationClassName>"
    "<p:ElementName>i-2-17-VM</p:ElementName><p:EnabledState>2</p:EnabledState>"
    '<p:InstallDate xsi:nil="true"/><p:Name>4B1F0C9E-2D7A-4E55-9C3B-1A2B3C4D5E6F</p:Name>'
    "<p:OperationalStatus>2</p:OperationalStatus><p:OperationalStatus>32768"
    "</p:OperationalStatus><p:StatusDescriptions xsi:nil=\"true\"/>"
    "<p:TimeOfLastStateChange><cim:Datetime>2025-01-10T09:15:02.123Z</cim:Datetime>"
    "</p:TimeOfLastStateChange><p:OnTimeInMilliseconds><cim:Interval>P1DT2H3M4.5S"
    "</cim:Interval></p:OnTimeInMilliseconds>"
    + _location(f"{V2}/Msvm_ComputerSystem",
                '<wsman:Selector Name="CreationClassName">Msvm_ComputerSystem</wsman:Selector>'
                '<wsman:Selector Name="Name">4B1F0C9E-2D7A-4E55-9C3B-1A2B3C4D5E6F'
                "</wsman:Selector>")
    + "</p:Msvm_ComputerSystem></wsman:Items><wsman:EndOfSequence/></wsen:EnumerateResponse>")

# A projected result (SELECT Name, ElementName, EnabledState …): no namespace, no
# Location, properties in alphabetical order (MS-WSMV <58>, <59>)
PROJECTED_RESPONSE = envelope(
    "<wsen:EnumerateResponse><wsen:EnumerationContext>uuid:6</wsen:EnumerationContext>"
    "<wsman:Items><wsman:XmlFragment><ElementName>i-2-17-VM</ElementName>"
    "<EnabledState>3</EnabledState><Name>4B1F0C9E-2D7A-4E55-9C3B-1A2B3C4D5E6F</Name>"
    "</wsman:XmlFragment></wsman:Items><wsman:EndOfSequence/></wsen:EnumerateResponse>")

# §4.10: a fault whose detail is a WSManFault (the provider's fault nested inside)
WSMAN_FAULT = envelope(
    "<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>"
    "a:DestinationUnreachable</s:Value></s:Subcode></s:Code><s:Reason>"
    '<s:Text xml:lang="en-US">The WS-Management service cannot process the request.\n'
    "The service cannot find the resource identified by the\nresource URI and selectors."
    "</s:Text></s:Reason><s:Detail><wsman:FaultDetail>wsman:faultDetail/ResourceNotFound"
    '</wsman:FaultDetail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/'
    'wsmanfault" Code="32768" Machine="http://localhost:80/wsman"><f:Message>'
    '<f:ProviderFault providerId="D9A2A039-A4B3-4A70-8CB9-8D7714EAD776"><f:WSManFault '
    'xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="32768" '
    'Machine=""><f:Message>The WS-Management service cannot process the request. The '
    "service cannot find the resource identified by the resource URI and selectors."
    "</f:Message></f:WSManFault></f:ProviderFault></f:Message></f:WSManFault></s:Detail>"
    "</s:Fault>", "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault")

# How Windows Server 2012 R2 answers a Get of a Win32_Process that does not exist: WinRM's
# ERROR_WSMAN_RESOURCE_NOT_FOUND (2150858752) from the WMI plugin, a fault detail of
# InvalidResourceURI (though the URI is right), no MSFT_WmiError; the WMI status is only in
# an __ExtendedStatus inside the ProviderFault
MISSING_INSTANCE_FAULT = envelope(
    "<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>"
    "a:DestinationUnreachable</s:Value></s:Subcode></s:Code><s:Reason>"
    '<s:Text xml:lang="en-US">The WS-Management service cannot process the request. The '
    "service cannot find the resource identified by the resource URI and selectors. "
    "</s:Text></s:Reason><s:Detail><wsman:FaultDetail>http://schemas.dmtf.org/wbem/wsman/1/"
    "wsman/faultDetail/InvalidResourceURI</wsman:FaultDetail>"
    '<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
    'Code="2150858752" Machine="hv01"><f:Message><f:ProviderFault provider="WMI Provider" '
    'path="C:\\Windows\\system32\\WsmWmiPl.dll"><f:WSManFault '
    'xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858752" '
    'Machine="hv01.example.test"><f:Message>The WS-Management service cannot process the '
    "request. The service cannot find the resource identified by the resource URI and "
    "selectors. </f:Message></f:WSManFault><f:ExtendedError><p:__ExtendedStatus "
    'xmlns:p="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/__ExtendedStatus" '
    'xsi:type="p:__ExtendedStatus_Type"><p:Operation xsi:type="cim:cimString">GetObject'
    '</p:Operation><p:ParameterInfo xsi:type="cim:cimString">Win32_Process.Handle=&quot;'
    '4242&quot;</p:ParameterInfo><p:ProviderName xsi:type="cim:cimString">CIMWin32'
    "</p:ProviderName></p:__ExtendedStatus></f:ExtendedError></f:ProviderFault></f:Message>"
    "</f:WSManFault></s:Detail></s:Fault>",
    "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault")

# An Enumerate whose WQL names a class the namespace lacks: n:CannotProcessFilter with
# ERROR_WSMAN_ENUMERATE_CANNOT_PROCESS_FILTER (2150858778) outside and in the WMI plugin's
# nested fault, whose message alone says the class does not exist; no MSFT_WmiError, and
# WMI's ExecQuery status carries no code
UNKNOWN_CLASS_QUERY_FAULT = envelope(
    "<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>"
    "wsen:CannotProcessFilter</s:Value></s:Subcode></s:Code><s:Reason>"
    '<s:Text xml:lang="en-US">The data source could not process the filter. The filter '
    "might be missing or it might be invalid. Change the filter and try the request again. "
    " </s:Text></s:Reason><s:Detail>"
    '<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
    'Code="2150858778" Machine="hv01"><f:Message><f:ProviderFault provider="WMI Provider" '
    'path="%systemroot%\\system32\\WsmWmiPl.dll"><f:WSManFault '
    'xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858778" '
    'Machine="hv01.example.test"><f:Message>The specified class\n  does not exist in the '
    "given namespace. </f:Message></f:WSManFault><f:ExtendedError><p:__ExtendedStatus "
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wmi/root/virtualization/v2/'
    '__ExtendedStatus" xsi:type="p:__ExtendedStatus_Type"><p:Operation>ExecQuery'
    "</p:Operation><p:ParameterInfo>SELECT * FROM Msvm_Nothing</p:ParameterInfo>"
    '<p:ProviderName>WinMgmt</p:ProviderName><p:StatusCode xsi:nil="true"/>'
    "</p:__ExtendedStatus></f:ExtendedError></f:ProviderFault></f:Message></f:WSManFault>"
    "</s:Detail></s:Fault>",
    "http://schemas.xmlsoap.org/ws/2004/09/enumeration/fault")

# A fault the WMI provider raised: MSFT_WmiError with its CIM status and HRESULT
WMI_ERROR_FAULT = envelope(
    "<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:InternalError"
    '</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">The WS-Management '
    "service cannot process the request.</s:Text></s:Reason><s:Detail>"
    '<p:MSFT_WmiError xmlns:p="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/'
    'MSFT_WmiError" xmlns:b="http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd" '
    'b:IsCIM_Error="true" xsi:type="p:MSFT_WmiError_Type">'
    '<p:CIMStatusCode xsi:type="cim:cimUnsignedInt">6</p:CIMStatusCode>'
    '<p:Message xsi:type="cim:cimString">Not found</p:Message>'
    '<p:error_Code xsi:type="cim:cimUnsignedInt">2147749890</p:error_Code>'
    '<p:error_Type xsi:type="cim:cimString">HRESULT</p:error_Type>'
    "</p:MSFT_WmiError></s:Detail></s:Fault>",
    "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault")

# EncodingLimit: the answer would exceed the client's MaxEnvelopeSize
ENCODING_LIMIT_FAULT = envelope(
    "<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>w:EncodingLimit"
    '</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">The response that '
    "the WS-Management service computed exceeds the maximum envelope size in the request."
    "</s:Text></s:Reason><s:Detail><wsman:FaultDetail>"
    "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/MaxEnvelopeSize"
    "</wsman:FaultDetail></s:Detail></s:Fault>",
    "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault")

# MaxConcurrentOperationsPerUser exceeded: WinRM answers w:InternalError and an
# MSFT_WmiError whose CIMStatusCode is 27 (CIM_ERR_SERVER_LIMITS_EXCEEDED) and whose
# error_Code is ERROR_WSMAN_QUOTA_MAX_OPERATIONS (0x803381A6), its unset fields nil
QUOTA_FAULT = envelope(
    "<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:InternalError"
    '</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">The WS-Management '
    "service cannot process the request. This user is allowed a maximum number of 1500 "
    "concurrent operations, which has been exceeded. Close existing operations for this "
    "user, or raise the quota for this user. </s:Text></s:Reason><s:Detail>"
    '<p:MSFT_WmiError xmlns:p="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/'
    'MSFT_WmiError" xmlns:b="http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd" '
    'b:IsCIM_Error="true" xsi:type="p:MSFT_WmiError_Type">'
    '<p:CIMStatusCode xsi:type="cim:cimUnsignedInt">27</p:CIMStatusCode>'
    '<p:CIMStatusCodeDescription xsi:type="cim:cimString" xsi:nil="true"/>'
    '<p:ErrorSource xsi:type="cim:cimString" xsi:nil="true"/>'
    '<p:Message xsi:type="cim:cimString">The WS-Management service cannot process the '
    "request. This user is allowed a maximum number of 1500 concurrent operations, which "
    "has been exceeded. Close existing operations for this user, or raise the quota for "
    "this user. </p:Message>"
    '<p:MessageID xsi:type="cim:cimString">HRESULT 0x803381a6</p:MessageID>'
    '<p:OwningEntity xsi:type="cim:cimString" xsi:nil="true"/>'
    '<p:error_Category xsi:type="cim:cimUnsignedInt">30</p:error_Category>'
    '<p:error_Code xsi:type="cim:cimUnsignedInt">2150859174</p:error_Code>'
    '<p:error_Type xsi:type="cim:cimString">HRESULT</p:error_Type>'
    "</p:MSFT_WmiError></s:Detail></s:Fault>",
    "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault")

# An optimized Enumerate whose items all came at once, as Windows answers it: the
# EnumerationContext element present but empty, then Items and EndOfSequence
ENDED_AT_ONCE_RESPONSE = envelope(
    "<wsen:EnumerateResponse><wsen:EnumerationContext></wsen:EnumerationContext>"
    f'<wsman:Items><p:myclass xmlns:p="{MYCLASS}" xsi:type="p:myclass_Type">'
    "<p:Data1>Hello World</p:Data1><p:id>1</p:id></p:myclass></wsman:Items>"
    "<wsman:EndOfSequence/></wsen:EnumerateResponse>",
    "http://schemas.xmlsoap.org/ws/2004/09/enumeration/EnumerateResponse")
