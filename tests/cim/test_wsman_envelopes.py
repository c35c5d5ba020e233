"""The WS-Management envelope builder and parser, on the MS-WSMV §4.1 / §4.10 examples."""

from __future__ import annotations

from xml.etree.ElementTree import Element, tostring

import pytest
from defusedxml.ElementTree import fromstring

from hyperv_agent.cim import faults
from hyperv_agent.cim.api import CimInstance, CimProperty, ObjectPath
from hyperv_agent.cim.classdecl import (
    CimClass,
    MethodDecl,
    ParameterDecl,
    PropertyDecl,
    RawInstance,
    typed_instance,
)
from hyperv_agent.cim.wsman import envelope, writing
from hyperv_agent.cim.wsman.config import WinrmLimits, read_config, write_config
from hyperv_agent.cim.wsman.faultxml import find_fault, read_fault
from hyperv_agent.cim.wsman.names import WSEN, WSMAN, S, q
from hyperv_agent.cim.wsman.reading import read_instance
from hyperv_agent.errors import (
    CimInvalidClass,
    CimInvalidParameter,
    CimInvalidQuery,
    CimNotFound,
    CimResponseTooLarge,
    CimUnavailable,
)
from tests.cim import wsmv_examples as ex

MYCLASS = CimClass.build("myclass", "root\\mynamespace", ["Base"], [
    PropertyDecl("id", "sint32", key=True), PropertyDecl("Data1", "string")])
SYSTEM = CimClass.build("Msvm_ComputerSystem", "root\\virtualization\\v2", [], [
    PropertyDecl("Caption", "string"), PropertyDecl("CreationClassName", "string", key=True),
    PropertyDecl("ElementName", "string"), PropertyDecl("EnabledState", "uint16"),
    PropertyDecl("InstallDate", "datetime"), PropertyDecl("Name", "string", key=True),
    PropertyDecl("OperationalStatus", "uint16", is_array=True),
    PropertyDecl("StatusDescriptions", "string", is_array=True),
    PropertyDecl("TimeOfLastStateChange", "datetime"),
    PropertyDecl("OnTimeInMilliseconds", "datetime"), PropertyDecl("Dedicated", "uint16", True)])
CREATE = MethodDecl("Create", (ParameterDecl("CommandLine", "string", False, "in"),
                               ParameterDecl("CurrentDirectory", "string", False, "in"),
                               ParameterDecl("ProcessId", "uint32", False, "out")))
PROCESS = CimClass.build("Win32_Process", "root\\cimv2", [], [], [CREATE])
GUID = "4B1F0C9E-2D7A-4E55-9C3B-1A2B3C4D5E6F"


def _body(text: str) -> Element:
    root = fromstring(text)
    body = root.find(q(S, "Body"))
    assert body is not None
    return body


def _fault(text: str) -> faults.CimFault:
    fault = find_fault(fromstring(text))
    assert fault is not None
    return read_fault(fault)


# --- Get -----------------------------------------------------------------------------------


def test_get_response_reads_as_typed_instance_with_path_from_location() -> None:
    raw = read_instance(_body(ex.GET_RESPONSE)[0])
    assert (raw.class_name, raw.namespace) == ("myclass", "root\\mynamespace")
    instance = typed_instance(MYCLASS, raw)
    assert (instance["id"], instance["Data1"]) == (1, "Hello World")
    assert instance.path == ObjectPath("myclass", (("id", "1"),), "root\\mynamespace")
    assert instance.superclasses == ("Base",)


# --- Enumerate + Pull ----------------------------------------------------------------------


def test_enumerate_request_is_optimized_with_wql_filter_escaped() -> None:
    body = envelope.enumerate_body("SELECT * FROM X WHERE A < 3 AND B = 'a&b'", 500)
    text = tostring(body, encoding="unicode")
    assert "&lt; 3" in text and "'a&amp;b'" in text
    assert body.find(q(WSMAN, "OptimizeEnumeration")) is not None
    assert body.findtext(q(WSMAN, "MaxElements")) == "500"
    filter_element = body.find(q(WSMAN, "Filter"))
    assert filter_element is not None
    assert filter_element.get("Dialect") == "http://schemas.microsoft.com/wbem/wsman/1/WQL"


def test_enumerate_response_without_items_gives_the_context_to_pull_with() -> None:
    batch = envelope.read_batch(_body(ex.ENUMERATE_RESPONSE))
    assert (batch.items, batch.ended) == ([], False)
    assert batch.context == "uuid:22EB9809-5543-4020-A75C-FD95FF06217B"


def test_pull_responses_carry_items_until_end_of_sequence() -> None:
    first = envelope.read_batch(_body(ex.FIRST_PULL_RESPONSE))
    assert first.context == "uuid:2504CA0D-94B9-4F91-B2F7-9F4CD9A2A96C" and not first.ended
    assert [typed_instance(MYCLASS, i)["id"] for i in first.items] == [1]
    last = envelope.read_batch(_body(ex.LAST_PULL_RESPONSE))
    assert (last.context, last.ended) == (None, True)
    assert [typed_instance(MYCLASS, i)["Data1"] for i in last.items] == ['"Hello again"']


def test_enumeration_ended_at_once_with_an_empty_context_is_not_pulled() -> None:
    batch = envelope.read_batch(_body(ex.ENDED_AT_ONCE_RESPONSE))
    assert (len(batch.items), batch.context, batch.ended) == (1, None, True)
    assert typed_instance(MYCLASS, batch.items[0]).path == ObjectPath(
        "myclass", (("id", "1"),), "root\\mynamespace")


def test_pull_request_sends_the_latest_context() -> None:
    body = envelope.pull_body("uuid:2504CA0D", 32)
    assert body.findtext(q(WSEN, "EnumerationContext")) == "uuid:2504CA0D"
    assert body.findtext(q(WSEN, "MaxElements")) == "32"


def test_optimized_response_reads_nil_arrays_datetimes_and_intervals() -> None:
    batch = envelope.read_batch(_body(ex.OPTIMIZED_RESPONSE))
    assert batch.ended and batch.context is None
    vm = typed_instance(SYSTEM, batch.items[0])
    assert vm["InstallDate"] is None  # xsi:nil
    assert vm["StatusDescriptions"] is None  # a null array: one nil element
    assert vm["OperationalStatus"] == (2, 32768)  # repeated elements
    assert vm["Dedicated"] is None  # left out entirely: null in a full instance
    assert vm["TimeOfLastStateChange"] == "20250110091502.123000+000"
    assert vm["OnTimeInMilliseconds"] == "00000001020304.500000:000"
    assert vm.path == ObjectPath.for_keys("Msvm_ComputerSystem",
                                          CreationClassName="Msvm_ComputerSystem", Name=GUID)


def test_projected_result_has_no_namespace_and_gets_its_path_only_from_all_keys() -> None:
    batch = envelope.read_batch(_body(ex.PROJECTED_RESPONSE))
    raw = batch.items[0]
    assert raw.class_name is None and raw.path is None
    vm = typed_instance(SYSTEM, raw, complete=False)
    assert vm.integer("EnabledState") == 3 and "Caption" not in vm
    assert vm.path is None  # CreationClassName was not selected: no path, as in WMI
    with_keys = typed_instance(SYSTEM, type(raw)(None, raw.namespace, {
        **raw.values, "CreationClassName": "Msvm_ComputerSystem"}), complete=False)
    assert with_keys.path is not None and with_keys.path.key("Name") == GUID


def test_single_element_of_an_array_property_is_an_array_of_one() -> None:
    raw = read_instance(fromstring(
        f'<p:Msvm_ComputerSystem xmlns:p="{ex.V2}/Msvm_ComputerSystem">'
        "<p:OperationalStatus>2</p:OperationalStatus></p:Msvm_ComputerSystem>"))
    assert typed_instance(SYSTEM, raw)["OperationalStatus"] == (2,)


# --- Invoke --------------------------------------------------------------------------------


def test_invoke_request_is_method_input_in_the_class_namespace() -> None:
    body = envelope.input_body("root\\cimv2", "Win32_Process", CREATE,
                               {"CommandLine": "notepad.exe", "CurrentDirectory": "C:\\"},
                               lambda i: "")
    assert body.tag == q(ex.PROCESS, "Create_INPUT")
    assert [(child.tag, child.text) for child in body] == [
        (q(ex.PROCESS, "CommandLine"), "notepad.exe"), (q(ex.PROCESS, "CurrentDirectory"), "C:\\")]


def test_invoke_request_writes_arrays_paths_instances_and_leaves_nulls_out() -> None:
    method = MethodDecl("M", (ParameterDecl("Ids", "uint16", True, "in"),
                              ParameterDecl("Target", "reference", False, "in"),
                              ParameterDecl("Settings", "string", False, "in"),
                              ParameterDecl("Timeout", "datetime", False, "in"),
                              ParameterDecl("Unused", "string", False, "in")))
    path = ObjectPath.for_keys("Msvm_ComputerSystem", CreationClassName="Msvm_ComputerSystem",
                               Name=GUID)
    item = CimInstance.build("Msvm_X", [CimProperty("A", "string", False, "v")])
    body = envelope.input_body("root\\virtualization\\v2", "Msvm_S", method, {
        "Ids": [1, 2], "Target": path, "Settings": item, "Timeout": "00000000000010.000000:000",
        "Unused": None}, lambda i: "<INSTANCE/>")
    names = [child.tag.rpartition("}")[2] for child in body]
    assert names == ["Ids", "Ids", "Target", "Settings", "Timeout"]
    assert [child.text for child in body][:2] == ["1", "2"]
    text = tostring(body, encoding="unicode")
    assert "Msvm_ComputerSystem</" in text and GUID in text  # the EPR's selectors
    assert "&lt;INSTANCE/&gt;" in text  # the embedded instance as escaped text
    timeout = body[-1].find(q("http://schemas.dmtf.org/wbem/wscim/1/common", "Interval"))
    assert timeout is not None and timeout.text == "P0DT0H0M10S"


def test_invoke_request_writes_an_object_parameter_as_a_nested_instance() -> None:
    method = MethodDecl("Create", (ParameterDecl("ProcessStartupInformation", "object", False,
                                                 "in"),))
    startup = CimInstance.build("Win32_ProcessStartup", [
        CimProperty("ShowWindow", "uint16", False, 0), CimProperty("Title", "string", False, None),
        CimProperty("EnvironmentVariables", "string", True, ("A=1", "B=2"))], None, "root\\cimv2")
    body = envelope.input_body("root\\cimv2", "Win32_Process", method,
                               {"ProcessStartupInformation": startup}, lambda i: "<INSTANCE/>")
    again = fromstring(tostring(body, encoding="unicode"))  # as the host parses the request
    raw = read_instance(again).values["ProcessStartupInformation"]
    assert isinstance(raw, RawInstance)
    assert (raw.class_name, raw.namespace) == ("Win32_ProcessStartup", "root\\cimv2")
    assert raw.values == {"ShowWindow": "0", "EnvironmentVariables": ("A=1", "B=2")}


def test_invoke_request_refuses_an_unknown_in_parameter() -> None:
    with pytest.raises(CimInvalidParameter, match="Nope"):
        envelope.input_body("root\\cimv2", "Win32_Process", CREATE, {"Nope": 1}, lambda i: "")


def test_invoke_response_reads_return_value_and_out_parameters() -> None:
    returned, out = envelope.read_output(_body(ex.INVOKE_RESPONSE), "Create")
    assert (returned, out) == (0, {"ProcessId": "4000"})


# --- faults --------------------------------------------------------------------------------


def test_wsman_fault_detail_resource_not_found_is_not_found_on_one_line() -> None:
    fault = _fault(ex.WSMAN_FAULT)
    assert (fault.subcode, fault.detail) == ("DestinationUnreachable", "ResourceNotFound")
    error = faults.to_error(fault)
    assert isinstance(error, CimNotFound)
    assert "cannot find the resource" in str(error) and "\n" not in str(error)


def test_windows_answer_to_a_get_of_a_missing_instance_is_not_found() -> None:
    """Its fault detail says InvalidResourceURI, yet the class exists: the WSManFault code
    (ERROR_WSMAN_RESOURCE_NOT_FOUND) is what says the instance is missing."""
    fault = _fault(ex.MISSING_INSTANCE_FAULT)
    assert (fault.subcode, fault.detail, fault.hresult) == (
        "DestinationUnreachable", "InvalidResourceURI", 0x80338000)
    error = faults.to_error(fault)
    assert isinstance(error, CimNotFound)
    assert "cannot find the resource identified" in str(error)


def test_msft_wmi_error_gives_cim_status_and_hresult() -> None:
    fault = _fault(ex.WMI_ERROR_FAULT)
    assert (fault.cim_status, fault.hresult, fault.message) == (6, 0x80041002, "Not found")
    error = faults.to_error(fault)
    assert isinstance(error, CimNotFound) and "0x80041002" in str(error)


def test_encoding_limit_fault_is_response_too_large() -> None:
    error = faults.to_error(_fault(ex.ENCODING_LIMIT_FAULT))
    assert isinstance(error, CimResponseTooLarge) and "maximum envelope size" in str(error)


def test_quota_exceeded_as_windows_reports_it_is_unavailable_not_a_failure() -> None:
    fault = _fault(ex.QUOTA_FAULT)
    assert (fault.cim_status, fault.hresult, fault.subcode) == (27, 0x803381A6,
                                                                "InternalError")
    error = faults.to_error(fault)
    assert isinstance(error, CimUnavailable) and "1500 concurrent operations" in str(error)
    # the same quota named only by the WSManFault code (no MSFT_WmiError)
    bare = faults.to_error(faults.CimFault("quota", hresult=0x803381A6,
                                           subcode="InternalError"))
    assert isinstance(bare, CimUnavailable)


def test_cannot_process_filter_is_an_invalid_query() -> None:
    text = ex.ENCODING_LIMIT_FAULT.replace("w:EncodingLimit", "wsen:CannotProcessFilter")
    assert isinstance(faults.to_error(_fault(text)), CimInvalidQuery)


def test_windows_answer_to_a_query_of_an_unknown_class_is_an_invalid_class() -> None:
    """WinRM says so only in the WMI plugin's nested message: the subcode and both codes
    are those of a filter it could not process."""
    fault = _fault(ex.UNKNOWN_CLASS_QUERY_FAULT)
    assert (fault.subcode, fault.hresult) == ("CannotProcessFilter", 0x8033801A)
    error = faults.to_error(fault)
    assert isinstance(error, CimInvalidClass)
    assert "does not exist in the given namespace" in str(error) and "\n" not in str(error)


# --- what the face writes reads back the same -------------------------------------------


def test_written_instance_reads_back_equal_with_awkward_text() -> None:
    vm = CimInstance.build("Msvm_ComputerSystem", [
        CimProperty("Caption", "string", False, "a < b & \"c\"\r\nline\x01"),
        CimProperty("CreationClassName", "string", False, "Msvm_ComputerSystem"),
        CimProperty("ElementName", "string", False, ""),
        CimProperty("EnabledState", "uint16", False, 3),
        CimProperty("InstallDate", "datetime", False, None),
        CimProperty("Name", "string", False, GUID),
        CimProperty("OperationalStatus", "uint16", True, (2, 6)),
        CimProperty("StatusDescriptions", "string", True, None),
        CimProperty("TimeOfLastStateChange", "datetime", False, "20250110091502.123456-300"),
        CimProperty("OnTimeInMilliseconds", "datetime", False, "00000003000000.000001:000"),
    ], namespace="root\\virtualization\\v2")
    path = ObjectPath.for_keys("Msvm_ComputerSystem", CreationClassName="Msvm_ComputerSystem",
                               Name=GUID)
    text = f'<x {writing.COMMON_NS}>{writing.instance(vm, path)}</x>'
    back = typed_instance(SYSTEM, read_instance(fromstring(text)[0]))
    assert back["Caption"] == 'a < b & "c"\r\nline?'  # CR kept, control char as '?'
    for name in ("ElementName", "EnabledState", "InstallDate", "OperationalStatus",
                 "StatusDescriptions", "TimeOfLastStateChange", "OnTimeInMilliseconds"):
        assert back[name] == vm[name], name
    assert back.path == path


# MS-WSMV §4.2 (configuration): the body of a Get on …/wsman/1/config, as a host answers it.
CONFIG_BODY = """<s:Body xmlns:s="http://www.w3.org/2003/05/soap-envelope">
<cfg:Config xmlns:cfg="http://schemas.microsoft.com/wbem/wsman/1/config">
  <cfg:MaxEnvelopeSizekb>150</cfg:MaxEnvelopeSizekb>
  <cfg:MaxTimeoutms>60000</cfg:MaxTimeoutms>
  <cfg:MaxBatchItems>20</cfg:MaxBatchItems>
  <cfg:MaxProviderRequests>25</cfg:MaxProviderRequests>
  <cfg:Client><cfg:NetworkDelayms>5000</cfg:NetworkDelayms>
    <cfg:AllowUnencrypted>true</cfg:AllowUnencrypted></cfg:Client>
  <cfg:Service><cfg:RootSDDL>O:NSG:BAD:P(A;;GA;;;BA)S:P</cfg:RootSDDL>
    <cfg:MaxConcurrentOperationsPerUser>1500</cfg:MaxConcurrentOperationsPerUser>
    <cfg:AllowUnencrypted>false</cfg:AllowUnencrypted></cfg:Service>
</cfg:Config></s:Body>"""


def test_service_configuration_limits_are_read_from_the_config_element() -> None:
    limits = read_config(fromstring(CONFIG_BODY))
    assert limits == WinrmLimits(max_envelope_kb=150, max_timeout_ms=60000,
                                 max_batch_items=20, max_provider_requests=25,
                                 max_concurrent_operations_per_user=1500,
                                 allow_unencrypted=False)
    written = f'<s:Body xmlns:s="{S}">{write_config(limits)}</s:Body>'
    assert read_config(fromstring(written)) == limits
