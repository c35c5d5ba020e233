"""The emulator's WinRM face, driven by an independent client: pypsrp's own WSMan."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import aiohttp
import pytest
from defusedxml.ElementTree import fromstring
from pypsrp.exceptions import AuthenticationError, WSManFaultError
from pypsrp.wsman import NAMESPACES, SelectorSet, WSMan

from hyperv_agent.cim import wql
from hyperv_agent.cim.faults import to_error
from hyperv_agent.cim.wsman.faultxml import find_fault, read_fault
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.errors import CimNotFound
from tests.emulator.kit import define_vm, service
from tests.emulator.winrm_kit import PASSWORD, USER, face

V2 = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/virtualization/v2"
WQL = "http://schemas.microsoft.com/wbem/wsman/1/WQL"
WSEN, WSMAN_NS = NAMESPACES["wsen"], NAMESPACES["wsman"]
WSMANFAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
XML_NS = "http://www.w3.org/XML/1998/namespace"


def _pypsrp(url: str, **kwargs: Any) -> WSMan:
    host_port = url.split("//")[1].split("/")[0]
    host, port = host_port.rsplit(":", 1)
    tls = url.startswith("https")
    options: dict[str, Any] = {"username": USER, "password": PASSWORD, "ssl": tls,
                                  "auth": "basic" if tls else "ntlm", "cert_validation": False}
    options.update(kwargs)
    return WSMan(host, port=int(port), path="wsman", no_proxy=True, **options)


def _enumerate_body(query: str, max_elements: int | None = None) -> ET.Element:
    body = ET.Element(f"{{{WSEN}}}Enumerate")
    if max_elements is not None:
        ET.SubElement(body, f"{{{WSMAN_NS}}}OptimizeEnumeration")
        ET.SubElement(body, f"{{{WSMAN_NS}}}MaxElements").text = str(max_elements)
    ET.SubElement(body, f"{{{WSMAN_NS}}}Filter", Dialect=WQL).text = query
    return body


def _pull_body(context: str, max_elements: int) -> ET.Element:
    body = ET.Element(f"{{{WSEN}}}Pull")
    ET.SubElement(body, f"{{{WSEN}}}EnumerationContext").text = context
    ET.SubElement(body, f"{{{WSEN}}}MaxElements").text = str(max_elements)
    return body


def _enumerate_all(wsman: WSMan, query: str) -> list[ET.Element]:
    """Enumerate (not optimized), then Pull two at a time until EndOfSequence."""
    answer = wsman.enumerate(f"{V2}/*", resource=_enumerate_body(query))
    context = answer.findtext("wsen:EnumerateResponse/wsen:EnumerationContext",
                              namespaces=NAMESPACES)
    items: list[ET.Element] = []
    while context:
        answer = wsman.pull(f"{V2}/*", resource=_pull_body(context, 2))
        pulled = answer.find("wsen:PullResponse", NAMESPACES)
        assert pulled is not None
        items.extend(pulled.find("wsen:Items", NAMESPACES) or [])
        context = pulled.findtext("wsen:EnumerationContext", namespaces=NAMESPACES)
        if pulled.find("wsen:EndOfSequence", NAMESPACES) is not None:
            break
    return items


def _subcode(error: WSManFaultError) -> str | None:
    """The fault's subcode, read from the answer pypsrp kept (it reports WSManFault@Code)."""
    fault = find_fault(fromstring(getattr(error.__context__, "response_text", "")))
    assert fault is not None
    return read_fault(fault).subcode


def _text(item: ET.Element, name: str) -> str | None:
    uri = item.tag[1:].partition("}")[0]
    return item.findtext(f"{{{uri}}}{name}")


@pytest.fixture(params=["http", "https"])
def tls(request: pytest.FixtureRequest) -> bool:
    return str(request.param) == "https"


async def _vms(emulator: EmulatorCim, count: int) -> list[str]:
    for index in range(count):
        await define_vm(emulator, f"i-2-{index}-VM")
    found = await emulator.query(wql.select("Msvm_ComputerSystem",
                                            wql.eq("Caption", "Virtual Machine")))
    return sorted(str(vm["ElementName"]) for vm in found)


async def test_pypsrp_enumerate_and_pull_get_what_the_emulator_holds(
        emulator: EmulatorCim, tmp_path: Path, tls: bool) -> None:
    names = await _vms(emulator, 5)
    async with face(emulator, tmp_path / "face", tls=tls) as served:
        wsman = _pypsrp(served.url)
        items = await asyncio.to_thread(_enumerate_all, wsman, "SELECT * FROM "
                                        "Msvm_ComputerSystem WHERE Caption = 'Virtual Machine'")
        wsman.close()
    assert sorted(_text(item, "ElementName") or "" for item in items) == names
    assert {item.tag for item in items} == {f"{{{V2}/Msvm_ComputerSystem}}Msvm_ComputerSystem"}
    assert all(item.find("{http://schemas.dmtf.org/wbem/wscim/1/common}Location") is not None
               for item in items)


async def test_pypsrp_get_and_invoke_change_the_emulated_host(
        emulator: EmulatorCim, tmp_path: Path, tls: bool) -> None:
    path = await define_vm(emulator, "i-2-7-VM")
    async with face(emulator, tmp_path / "face", tls=tls) as served:
        wsman = _pypsrp(served.url)
        selectors = SelectorSet()
        for name, value in path.keys:
            selectors.add_option(name, value)
        uri = f"{V2}/Msvm_ComputerSystem"
        got = await asyncio.to_thread(wsman.get, uri, selector_set=selectors)
        body = ET.Element(f"{{{uri}}}RequestStateChange_INPUT")
        ET.SubElement(body, f"{{{uri}}}RequestedState").text = "2"
        answer = await asyncio.to_thread(wsman.invoke, f"{uri}/RequestStateChange", uri, body,
                                         selector_set=selectors)
        wsman.close()
    vm = got.find(f"{{{uri}}}Msvm_ComputerSystem")
    assert vm is not None and vm.findtext(f"{{{uri}}}ElementName") == "i-2-7-VM"
    output = answer.find(f"s:Body/{{{uri}}}RequestStateChange_OUTPUT", NAMESPACES)
    assert output is not None
    assert output.findtext(f"{{{uri}}}ReturnValue") in ("0", "4096")
    await asyncio.sleep(0.05)
    assert (await emulator.get(path))["EnabledState"] == 2


async def test_a_method_that_fails_answers_its_return_value_not_a_fault(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """A method that runs and fails is a RequestStateChange_OUTPUT carrying its ReturnValue
    (32775 for the state the VM is already in), as WMI returns it; WinRM faults only when
    the call itself fails."""
    path = await define_vm(emulator, "i-2-8-VM")
    uri = f"{V2}/Msvm_ComputerSystem"
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url)
        selectors = SelectorSet()
        for name, value in path.keys:
            selectors.add_option(name, value)
        body = ET.Element(f"{{{uri}}}RequestStateChange_INPUT")
        ET.SubElement(body, f"{{{uri}}}RequestedState").text = "3"  # off, as it is
        answer = await asyncio.to_thread(wsman.invoke, f"{uri}/RequestStateChange", uri, body,
                                         selector_set=selectors)
        wsman.close()
    assert find_fault(answer) is None
    output = answer.find(f"s:Body/{{{uri}}}RequestStateChange_OUTPUT", NAMESPACES)
    assert output is not None and output.findtext(f"{{{uri}}}ReturnValue") == "32775"


async def test_get_of_a_missing_instance_is_answered_as_windows_answers_it(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """HTTP 500, the addressing fault action, s:Sender / a:DestinationUnreachable, a fault
    detail of InvalidResourceURI and WinRM's ERROR_WSMAN_RESOURCE_NOT_FOUND (2150858752)
    with the WMI plugin's fault nested in f:ProviderFault, and no MSFT_WmiError (as
    Windows Server 2012 R2 answers a Get of a process that does not exist)."""
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url)
        selectors = SelectorSet()
        selectors.add_option("CreationClassName", "Msvm_ComputerSystem")
        selectors.add_option("Name", "00000000-0000-0000-0000-000000000000")
        with pytest.raises(WSManFaultError) as raised:
            await asyncio.to_thread(wsman.get, f"{V2}/Msvm_ComputerSystem",
                                    selector_set=selectors)
        wsman.close()
    context = raised.value.__context__
    assert getattr(context, "code", None) == 500  # the HTTP status
    root = fromstring(getattr(context, "response_text", ""))
    assert root.findtext("s:Header/wsa:Action", namespaces=NAMESPACES) == (
        "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault")
    fault = find_fault(root)
    assert fault is not None
    read = read_fault(fault)
    assert (read.subcode, read.detail, read.hresult, read.cim_status) == (
        "DestinationUnreachable", "InvalidResourceURI", 0x80338000, None)
    assert fault.findtext("s:Code/s:Value", namespaces=NAMESPACES) == "s:Sender"
    reason = fault.find("s:Reason/s:Text", NAMESPACES)
    assert reason is not None and reason.get(f"{{{XML_NS}}}lang") == "en-US"
    assert reason.text == ("The WS-Management service cannot process the request. The "
                           "service cannot find the resource identified by the resource "
                           "URI and selectors.")
    outer = fault.find(f"s:Detail/{{{WSMANFAULT}}}WSManFault", NAMESPACES)
    assert outer is not None and outer.get("Code") == "2150858752"
    provider = outer.find(f"{{{WSMANFAULT}}}Message/{{{WSMANFAULT}}}ProviderFault")
    assert provider is not None and provider.get("provider") == "WMI Provider"
    inner = provider.find(f"{{{WSMANFAULT}}}WSManFault")
    assert inner is not None and inner.get("Code") == "2150858752"
    assert raised.value.code == 2150858752


async def test_get_without_keys_of_a_keyed_class_is_answered_as_windows_answers_it(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """WinRM's ERROR_WSMAN_INVALID_URI_WMI_SINGLETON (2150859002) outside and in the WMI
    plugin's nested fault, with its message (the WSManFault Microsoft's Session.Error
    reference shows for a Get of Win32_QuotaSetting without keys); the seam reads it as not
    found, as the emulator answers a path that names no instance."""
    message = ("The WinRM client cannot process the request. The resource URI is not valid: "
               "it does not contain keys, but the class selected is not a singleton. To "
               "access an instance which is not a singleton, keys must be provided. Use the "
               "following command to get more information in how to construct a resource "
               'URI: "winrm help uris".')
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url)
        with pytest.raises(WSManFaultError) as raised:
            await asyncio.to_thread(wsman.get, f"{V2}/Msvm_ComputerSystem")
        wsman.close()
    fault = find_fault(fromstring(getattr(raised.value.__context__, "response_text", "")))
    assert fault is not None
    assert fault.findtext("s:Reason/s:Text", namespaces=NAMESPACES) == message
    outer = fault.find(f"s:Detail/{{{WSMANFAULT}}}WSManFault", NAMESPACES)
    assert outer is not None and outer.get("Code") == "2150859002"
    provider = outer.find(f"{{{WSMANFAULT}}}Message/{{{WSMANFAULT}}}ProviderFault")
    assert provider is not None
    inner = provider.find(f"{{{WSMANFAULT}}}WSManFault")
    assert inner is not None and inner.get("Code") == "2150859002"
    assert inner.findtext(f"{{{WSMANFAULT}}}Message") == message
    read = read_fault(fault)
    assert read.hresult == 0x803380FA
    assert isinstance(to_error(replace(read, subcode=None, detail=None)), CimNotFound)
    assert raised.value.code == 2150859002


async def test_query_of_an_unknown_class_is_answered_as_windows_answers_it(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """The enumeration fault action, s:Sender / n:CannotProcessFilter, and
    ERROR_WSMAN_ENUMERATE_CANNOT_PROCESS_FILTER (2150858778) outside and in the WMI plugin's
    nested fault, whose message says the class does not exist, beside WMI's ExecQuery
    status; no MSFT_WmiError (as Windows Server 2008 R2 answers a query of a misspelt
    class)."""
    query = "SELECT * FROM Msvm_NoSuchClass"
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url)
        with pytest.raises(WSManFaultError) as raised:
            await asyncio.to_thread(wsman.enumerate, f"{V2}/*",
                                    resource=_enumerate_body(query, 32))
        wsman.close()
    root = fromstring(getattr(raised.value.__context__, "response_text", ""))
    assert root.findtext("s:Header/wsa:Action", namespaces=NAMESPACES) == (
        "http://schemas.xmlsoap.org/ws/2004/09/enumeration/fault")
    fault = find_fault(root)
    assert fault is not None
    assert fault.findtext("s:Code/s:Value", namespaces=NAMESPACES) == "s:Sender"
    assert fault.findtext("s:Reason/s:Text", namespaces=NAMESPACES) == (
        "The data source could not process the filter. The filter might be missing or it "
        "might be invalid. Change the filter and try the request again.")
    read = read_fault(fault)
    assert (read.subcode, read.hresult, read.detail) == (
        "CannotProcessFilter", 0x8033801A, None)
    assert fault.find("s:Detail/{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
                      "MSFT_WmiError}MSFT_WmiError", NAMESPACES) is None
    provider = fault.find(f"s:Detail/{{{WSMANFAULT}}}WSManFault/{{{WSMANFAULT}}}Message/"
                          f"{{{WSMANFAULT}}}ProviderFault", NAMESPACES)
    assert provider is not None
    inner = provider.find(f"{{{WSMANFAULT}}}WSManFault")
    assert inner is not None and inner.get("Code") == "2150858778"
    assert inner.findtext(f"{{{WSMANFAULT}}}Message") == (
        "The specified class does not exist in the given namespace.")
    status = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/__ExtendedStatus}"
    extended = provider.find(f"{{{WSMANFAULT}}}ExtendedError/{status}__ExtendedStatus")
    assert extended is not None
    assert [extended.findtext(f"{status}{name}") for name in (
        "Operation", "ParameterInfo", "ProviderName")] == ["ExecQuery", query, "WinMgmt"]
    assert raised.value.code == 2150858778


async def test_an_operation_over_its_timeout_is_answered_as_windows_answers_it(
        make_config: Callable[..., EmulatorConfig], tmp_path: Path) -> None:
    """s:Receiver / w:TimedOut with ERROR_WSMAN_OPERATION_TIMEDOUT (2150858793) and WinRM's
    own reason, as Windows answers a request its OperationTimeout ran out on."""
    slow = EmulatorCim.open(make_config(latency=LatencyModel(call_s=3.0)))
    try:
        async with face(slow, tmp_path / "face") as served:
            wsman = _pypsrp(served.url, operation_timeout=1, read_timeout=10)
            with pytest.raises(WSManFaultError) as raised:
                await asyncio.to_thread(wsman.enumerate, f"{V2}/*", resource=_enumerate_body(
                    "SELECT * FROM Msvm_ComputerSystem"))
            wsman.close()
    finally:
        await slow.close()
    fault = find_fault(fromstring(getattr(raised.value.__context__, "response_text", "")))
    assert fault is not None
    assert fault.findtext("s:Code/s:Value", namespaces=NAMESPACES) == "s:Receiver"
    assert read_fault(fault).subcode == "TimedOut"
    assert fault.findtext("s:Reason/s:Text", namespaces=NAMESPACES) == (
        "The WS-Management service cannot complete the operation within the time specified "
        "in OperationTimeout.")
    assert raised.value.code == 2150858793


async def test_a_cimnamespace_selector_must_name_the_resource_uris_namespace(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """Windows takes a __cimnamespace selector that repeats the WMI URI's namespace and
    answers w:InternalError (s:Receiver) to one naming another namespace."""
    path = await define_vm(emulator, "i-2-8-VM")
    uri = f"{V2}/Msvm_ComputerSystem"

    def selectors(namespace: str) -> SelectorSet:
        chosen = SelectorSet()
        for name, value in path.keys:
            chosen.add_option(name, value)
        chosen.add_option("__cimnamespace", namespace)
        return chosen

    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url)
        got = await asyncio.to_thread(wsman.get, uri,
                                      selector_set=selectors("root/virtualization/v2"))
        with pytest.raises(WSManFaultError) as raised:
            await asyncio.to_thread(wsman.get, uri, selector_set=selectors("root/cimv2"))
        with pytest.raises(WSManFaultError) as listed:
            await asyncio.to_thread(
                wsman.enumerate, f"{V2}/*", resource=_enumerate_body(
                    "SELECT * FROM Msvm_ComputerSystem"), selector_set=selectors("root/cimv2"))
        wsman.close()
    assert got.find(f"{{{uri}}}Msvm_ComputerSystem") is not None
    for error in (raised.value, listed.value):
        fault = find_fault(fromstring(getattr(error.__context__, "response_text", "")))
        assert fault is not None
        assert fault.findtext("s:Code/s:Value", namespaces=NAMESPACES) == "s:Receiver"
        assert read_fault(fault).subcode == "InternalError"
        assert "__cimnamespace selector attempted to use different namespaces" in str(
            error.reason)


async def test_pypsrp_invoke_of_summaries_matches_the_emulator_answer(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    names = await _vms(emulator, 3)
    vsms = await service(emulator)
    uri = f"{V2}/Msvm_VirtualSystemManagementService"
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url)
        selectors = SelectorSet()
        for name, value in vsms.keys:
            selectors.add_option(name, value)
        body = ET.Element(f"{{{uri}}}GetSummaryInformation_INPUT")
        for information in ("0", "1", "100"):
            ET.SubElement(body, f"{{{uri}}}RequestedInformation").text = information
        answer = await asyncio.to_thread(wsman.invoke, f"{uri}/GetSummaryInformation", uri,
                                         body, selector_set=selectors)
        wsman.close()
    summary_ns = f"{V2}/Msvm_SummaryInformation"
    output = answer.find(f"s:Body/{{{uri}}}GetSummaryInformation_OUTPUT", NAMESPACES)
    assert output is not None
    summaries = output.findall(f"{{{uri}}}SummaryInformation")
    assert sorted(s.findtext(f"{{{summary_ns}}}ElementName") or "" for s in summaries) == names
    assert all(s.findtext(f"{{{summary_ns}}}EnabledState") == "3" for s in summaries)


async def test_projected_query_answers_unqualified_properties_in_alphabetical_order(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    await _vms(emulator, 1)
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url)
        items = await asyncio.to_thread(
            _enumerate_all, wsman, "SELECT Name, ElementName, EnabledState FROM "
            "Msvm_ComputerSystem WHERE Caption = 'Virtual Machine'")
        wsman.close()
    assert [item.tag for item in items] == [f"{{{WSMAN_NS}}}XmlFragment"]
    assert [child.tag for child in items[0]] == ["ElementName", "EnabledState", "Name"]


async def test_release_ends_an_enumeration_and_a_bad_context_is_a_fault(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url)
        answer = await asyncio.to_thread(wsman.enumerate, f"{V2}/*", resource=_enumerate_body(
            "SELECT * FROM Msvm_VirtualEthernetSwitch"))
        context = answer.findtext("wsen:EnumerateResponse/wsen:EnumerationContext",
                                  namespaces=NAMESPACES)
        assert context
        release = ET.Element(f"{{{WSEN}}}Release")
        ET.SubElement(release, f"{{{WSEN}}}EnumerationContext").text = context
        await asyncio.to_thread(wsman.invoke, "http://schemas.xmlsoap.org/ws/2004/09/"
                                "enumeration/Release", f"{V2}/*", release)
        with pytest.raises(WSManFaultError) as raised:
            await asyncio.to_thread(wsman.pull, f"{V2}/*", resource=_pull_body(context, 5))
        wsman.close()
    assert _subcode(raised.value) == "InvalidEnumerationContext"
    fault = find_fault(fromstring(getattr(raised.value.__context__, "response_text", "")))
    assert fault is not None  # a Receiver fault, as Windows sends it
    assert fault.findtext("s:Code/s:Value", namespaces=NAMESPACES) == "s:Receiver"


async def test_past_the_concurrent_operations_quota_an_operation_is_refused_as_windows_does(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """Each open enumeration is one of the account's concurrent operations: at
    MaxConcurrentOperationsPerUser a new Enumerate, Get or method call is refused with
    the fault Windows sends (s:Receiver, w:InternalError, ERROR_WSMAN_QUOTA_MAX_OPERATIONS
    naming the quota's value); a Pull of an open one goes on, and once it ended a new
    operation is served again."""
    async with face(emulator, tmp_path / "face") as served:
        served.service.max_concurrent_operations_per_user = 2
        wsman = _pypsrp(served.url)
        contexts = []
        for _ in range(2):
            answer = await asyncio.to_thread(wsman.enumerate, f"{V2}/*", resource=(
                _enumerate_body("SELECT * FROM Msvm_VirtualEthernetSwitch")))
            contexts.append(answer.findtext("wsen:EnumerateResponse/wsen:EnumerationContext",
                                            namespaces=NAMESPACES))
        refused = []
        for attempt in (lambda: wsman.enumerate(f"{V2}/*", resource=_enumerate_body(
                            "SELECT * FROM Msvm_VirtualEthernetSwitch")),
                        lambda: wsman.get(f"{V2}/Msvm_VirtualSystemManagementService")):
            with pytest.raises(WSManFaultError) as raised:
                await asyncio.to_thread(attempt)
            refused.append(raised.value)
        pulled = await asyncio.to_thread(wsman.pull, f"{V2}/*",
                                         resource=_pull_body(str(contexts[0]), 32000))
        assert pulled.find("wsen:PullResponse/wsen:EndOfSequence", NAMESPACES) is not None
        again = await asyncio.to_thread(wsman.enumerate, f"{V2}/*", resource=_enumerate_body(
            "SELECT * FROM Msvm_VirtualEthernetSwitch", 32000))
        wsman.close()
    assert again.find("wsen:EnumerateResponse/wsman:EndOfSequence", NAMESPACES) is not None
    for error in refused:
        assert error.code == 2150859174  # ERROR_WSMAN_QUOTA_MAX_OPERATIONS
        fault = find_fault(fromstring(getattr(error.__context__, "response_text", "")))
        assert fault is not None
        assert fault.findtext("s:Code/s:Value", namespaces=NAMESPACES) == "s:Receiver"
        assert _subcode(error) == "InternalError"
        assert "maximum number of concurrent operations for this user" in (
            fault.findtext("s:Reason/s:Text", namespaces=NAMESPACES) or "")
        message = fault.findtext(f"s:Detail/{{{WSMANFAULT}}}WSManFault/{{{WSMANFAULT}}}Message",
                                 namespaces=NAMESPACES)
        assert "allowed a maximum number of 2 concurrent operations" in (message or "")


async def test_optimized_enumeration_ended_at_once_has_an_empty_context(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    """As Windows answers one whose items all fit: the EnumerationContext element is
    there but empty (it names no enumeration left to pull or release), then
    EndOfSequence."""
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url)
        answer = await asyncio.to_thread(wsman.enumerate, f"{V2}/*", resource=_enumerate_body(
            "SELECT * FROM Msvm_VirtualSystemManagementService", 32000))
        wsman.close()
    response = answer.find("wsen:EnumerateResponse", NAMESPACES)
    assert response is not None
    assert [child.tag.rpartition("}")[2] for child in response] == [
        "EnumerationContext", "Items", "EndOfSequence"]
    assert not response.findtext("wsen:EnumerationContext", namespaces=NAMESPACES)
    assert len(response.find("wsman:Items", NAMESPACES) or []) == 1
    assert served.service.enumerations.open_count == 0


async def test_envelope_size_below_8192_is_an_encoding_limit_fault(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url, max_envelope_size=4096)
        with pytest.raises(WSManFaultError) as raised:
            await asyncio.to_thread(wsman.enumerate, f"{V2}/*", resource=_enumerate_body(
                "SELECT * FROM Msvm_VirtualEthernetSwitch", 10))
        wsman.close()
    assert _subcode(raised.value) == "EncodingLimit"
    assert "8192" in str(raised.value.reason)


async def test_answer_larger_than_the_client_accepts_is_an_encoding_limit_fault(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    await _vms(emulator, 12)  # a dozen VMs' settings: more than 8 KiB in one answer
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url, max_envelope_size=8192)
        answer = await asyncio.to_thread(wsman.enumerate, f"{V2}/*", resource=_enumerate_body(
            "SELECT * FROM Msvm_VirtualSystemSettingData", 1000))
        response = answer.find("wsen:EnumerateResponse", NAMESPACES)
        wsman.close()
    assert response is not None
    items = response.find("wsman:Items", NAMESPACES)
    assert items is not None and 0 < len(items) < 12  # as many as fit, the rest to pull
    assert response.find("wsman:EndOfSequence", NAMESPACES) is None


async def test_request_larger_than_max_envelope_size_is_http_413(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    # MaxEnvelopeSizekb is 500 by default: a request of 500 KiB (512000 bytes) is read
    # (and, not being SOAP, answered with a fault), one byte more is HTTP 413.
    async with face(emulator, tmp_path / "face", tls=True) as served:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        statuses = []
        async with aiohttp.ClientSession() as session:
            for size in (512_000, 512_001, 600_000):
                async with session.post(
                        served.url, data=b"<x>" + b"a" * (size - 7) + b"</x>", ssl=context,
                        headers={"Authorization": f"Basic {credentials}",
                                 "Content-Type": "application/soap+xml;charset=UTF-8"}) as reply:
                    statuses.append(reply.status)
    assert statuses[0] != 413 and statuses[1:] == [413, 413]


async def test_http_offers_only_negotiate_and_refuses_basic(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    async with face(emulator, tmp_path / "face") as served, aiohttp.ClientSession(
            ) as session, session.post(served.url, data=b"<x/>", headers={
                "Authorization": f"Basic {credentials}"}) as reply:
        status, offers = reply.status, reply.headers.getall("WWW-Authenticate")
    assert (status, offers) == (401, ["Negotiate"])


async def test_unencrypted_messages_are_refused_over_http(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url, encryption="never")
        with pytest.raises(AuthenticationError):
            await asyncio.to_thread(wsman.enumerate, f"{V2}/*", resource=_enumerate_body(
                "SELECT * FROM Msvm_VirtualEthernetSwitch", 10))
        wsman.close()


@pytest.fixture
def face_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


async def test_wrong_password_is_refused_and_no_log_line_holds_a_password(
        emulator: EmulatorCim, tmp_path: Path, tls: bool,
        face_log: pytest.LogCaptureFixture) -> None:
    async with face(emulator, tmp_path / "face", tls=tls) as served:
        wsman = _pypsrp(served.url, password="Wrong-Guess-42")
        with pytest.raises(AuthenticationError):
            await asyncio.to_thread(wsman.enumerate, f"{V2}/*", resource=_enumerate_body(
                "SELECT * FROM Msvm_VirtualEthernetSwitch", 10))
        wsman.close()
    text = "\n".join(record.getMessage() for record in face_log.records)
    assert "failed" in text
    assert PASSWORD not in text and "Wrong-Guess-42" not in text


async def test_pypsrp_reads_the_service_configuration_and_its_envelope_limit(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    async with face(emulator, tmp_path / "face") as served:
        wsman = _pypsrp(served.url)
        try:
            config = await asyncio.to_thread(wsman.get_server_config)
            await asyncio.to_thread(wsman.update_max_payload_size)
        finally:
            wsman.close()
    assert config.findtext("cfg:Config/cfg:MaxTimeoutms", namespaces=NAMESPACES) == "60000"
    assert wsman.max_envelope_size == 500 * 1024
