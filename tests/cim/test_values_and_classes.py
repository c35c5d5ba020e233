"""Backend-neutral helpers: CIM datetimes as XML Schema values, class declarations and their
CIM-XML metadata, and faults as the seam's typed errors."""

from __future__ import annotations

import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import given
from hypothesis import strategies as st

from hyperv_agent.cim import faults, values
from hyperv_agent.cim.classdecl import (
    OBJECT,
    CimClass,
    MethodDecl,
    ParameterDecl,
    PropertyDecl,
)
from hyperv_agent.cim.wsman.classxml import read_classes, write_classes
from hyperv_agent.errors import (
    CimError,
    CimInvalidMethod,
    CimInvalidParameter,
    CimInvalidQuery,
    CimNotFound,
)

# --- datetimes -----------------------------------------------------------------------------


@pytest.mark.parametrize(("dmtf", "iso"), [
    ("20250110091502.123456+000", "2025-01-10T09:15:02.123456Z"),
    ("20250110091502.000000+060", "2025-01-10T09:15:02.000000+01:00"),
    ("19991231235959.999999-330", "1999-12-31T23:59:59.999999-05:30"),
])
def test_datetime_converts_both_ways_exactly(dmtf: str, iso: str) -> None:
    assert values.dmtf_to_iso(dmtf) == iso
    assert values.iso_to_dmtf(iso) == dmtf


def test_iso_time_without_zone_or_fraction_is_utc_to_the_microsecond() -> None:
    assert values.iso_to_dmtf("2025-01-10T09:15:02") == "20250110091502.000000+000"
    assert values.iso_to_dmtf("2025-01-10T09:15:02.1234567Z") == "20250110091502.123456+000"


@given(st.integers(0, 99_999_999), st.integers(0, 23), st.integers(0, 59),
       st.integers(0, 59), st.integers(0, 999_999))
def test_interval_converts_both_ways_exactly(days: int, hours: int, minutes: int,
                                             seconds: int, micros: int) -> None:
    dmtf = f"{days:08d}{hours:02d}{minutes:02d}{seconds:02d}.{micros:06d}:000"
    assert values.is_interval(dmtf)
    assert values.duration_to_dmtf_interval(values.dmtf_interval_to_duration(dmtf)) == dmtf


def test_duration_carries_over_into_larger_units() -> None:
    assert values.duration_to_dmtf_interval("PT90061.5S") == "00000001010101.500000:000"


@pytest.mark.parametrize("bad", ["-2025-01-10T09:15:02Z", "2025-01-10", "yesterday", ""])
def test_malformed_times_are_refused(bad: str) -> None:
    with pytest.raises(CimError):
        values.iso_to_dmtf(bad)


@pytest.mark.parametrize("bad", ["P1Y", "P", "PT", "1D"])
def test_durations_of_no_fixed_length_are_refused(bad: str) -> None:
    with pytest.raises(CimError):
        values.duration_to_dmtf_interval(bad)


def test_scalars_read_as_their_cim_type() -> None:
    assert values.parse_scalar("uint64", " 18446744073709551615 ") == 2**64 - 1
    assert values.parse_scalar("sint32", "-7") == -7
    assert values.parse_scalar("boolean", "true") is True
    assert values.parse_scalar("string", " x ") == " x "
    with pytest.raises(CimError, match="Size"):
        values.parse_scalar("uint32", "12x", "Size")


# --- class declarations --------------------------------------------------------------------

JOB = CimClass.build("Msvm_ConcreteJob", "root\\virtualization\\v2",
                     ["CIM_ConcreteJob", "CIM_Job", "CIM_ManagedElement"], [
    PropertyDecl("InstanceID", "string", key=True),
    PropertyDecl("JobState", "uint16", default=2),
    PropertyDecl("Notes", "string", is_array=True, default=("a", "b <c>")),
    PropertyDecl("Cancellable", "boolean", default=True),
    PropertyDecl("StartTime", "datetime"),
    PropertyDecl("Owner", "reference"),
], [MethodDecl("GetSummary", (ParameterDecl("Ids", "uint32", True, "in"),
                              ParameterDecl("Target", "reference", False, "in"),
                              ParameterDecl("Targets", "reference", True, "out"),
                              ParameterDecl("Summary", OBJECT, True, "out"),
                              ParameterDecl("Text", "string", False, "out")))])


def test_class_metadata_round_trips_through_cim_xml_with_its_hierarchy() -> None:
    text = write_classes(JOB, hierarchy=True)
    back = read_classes(list(fromstring(f"<Body>{text}</Body>")), JOB.namespace)
    assert back == JOB


def test_class_metadata_without_hierarchy_still_names_the_superclass() -> None:
    text = write_classes(JOB, hierarchy=False)
    back = read_classes(list(fromstring(f"<Body>{text}</Body>")), JOB.namespace)
    assert back.superclasses == ("CIM_ConcreteJob",) and back.properties == JOB.properties


def test_new_instance_carries_the_declared_defaults() -> None:
    job = JOB.new_instance()
    assert (job["JobState"], job["Notes"], job["Cancellable"], job["InstanceID"]) == (
        2, ("a", "b <c>"), True, None)
    assert job.path is None and job.is_a("CIM_Job")


def test_unknown_method_is_an_invalid_method() -> None:
    with pytest.raises(CimInvalidMethod, match="Nope"):
        JOB.method("Nope")


# --- faults --------------------------------------------------------------------------------


def test_cim_status_wins_over_hresult_and_subcode() -> None:
    fault = faults.CimFault("no such thing", cim_status=6, hresult=faults.WBEM_E_INVALID_QUERY,
                            subcode="InternalError")
    assert isinstance(faults.to_error(fault), CimNotFound)


def test_hresult_then_subcode_then_detail_decide_when_status_is_absent() -> None:
    assert isinstance(faults.to_error(faults.CimFault(
        "x", hresult=faults.WBEM_E_INVALID_METHOD_PARAMETERS)), CimInvalidParameter)
    assert isinstance(faults.to_error(faults.CimFault(
        "x", subcode="CannotProcessFilter")), CimInvalidQuery)
    assert isinstance(faults.to_error(faults.CimFault(
        "x", detail="ResourceNotFound")), CimNotFound)
    plain = faults.to_error(faults.CimFault("x", subcode="SomethingNew"))
    assert type(plain) is CimError


def test_server_side_codes_read_back_as_the_same_error() -> None:
    for error in (CimNotFound("a"), CimInvalidQuery("b"), CimInvalidParameter("c"),
                  CimInvalidMethod("d")):
        status, hresult = faults.describe(error)
        back = faults.to_error(faults.CimFault("m", cim_status=status, hresult=hresult))
        assert type(back) is type(error)


def test_fault_message_is_one_line() -> None:
    error = faults.to_error(faults.CimFault("line one\n  line two\r\n", hresult=0x80041002))
    assert str(error) == "line one line two (0x80041002)"
