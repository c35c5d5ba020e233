"""CIM-XML embedded-instance text: writing, reading and refusing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperv_agent.cim.api import (
    CIM_TYPES,
    CIMV2_NAMESPACE,
    INTEGER_TYPES,
    V2_NAMESPACE,
    CimInstance,
    CimProperty,
    CimScalar,
    ObjectPath,
)
from hyperv_agent.cim.cimxml import read_instance, write_instance
from hyperv_agent.errors import CimInvalidParameter

# --- strategies ---------------------------------------------------------------------------

NOT_IN_XML = [chr(code) for code in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]]
XML_CHARS = st.characters(
    exclude_categories=["Cs"], exclude_characters=[*NOT_IN_XML, "\ufffe", "\uffff"]
)
XML_TEXT = st.text(XML_CHARS, max_size=20)
TRICKY_TEXT = st.text(st.sampled_from(" <>&'\"\\\r\n\t]]>é€😀a"), max_size=12)
STRINGS = XML_TEXT | TRICKY_TEXT
IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
PATHS = st.builds(
    ObjectPath,
    IDENTIFIERS,
    st.lists(st.tuples(IDENTIFIERS, STRINGS), max_size=3).map(tuple),
    st.sampled_from([V2_NAMESPACE, CIMV2_NAMESPACE, "root\\interop"]),
    st.sampled_from([".", "HV-HOST01", "hv.example.org"]),
)
INTEGER_RANGES = {
    "uint8": (0, 2**8 - 1), "uint16": (0, 2**16 - 1), "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1), "sint8": (-(2**7), 2**7 - 1), "sint16": (-(2**15), 2**15 - 1),
    "sint32": (-(2**31), 2**31 - 1), "sint64": (-(2**63), 2**63 - 1),
}


def scalars(cim_type: str) -> st.SearchStrategy[CimScalar]:
    if cim_type in INTEGER_TYPES:
        low, high = INTEGER_RANGES[cim_type]
        return st.integers(low, high)
    if cim_type == "boolean":
        return st.booleans()
    if cim_type == "reference":
        return PATHS.map(str)
    if cim_type == "char16":
        return st.text(XML_CHARS, min_size=1, max_size=1)
    if cim_type in ("real32", "real64"):
        return st.floats(allow_nan=False, allow_infinity=False).map(repr)
    if cim_type == "datetime":
        return st.sampled_from(["20240229235959.123456+060", "00000001020304.000000:000"])
    return STRINGS


@st.composite
def properties(draw: st.DrawFn) -> CimProperty:
    cim_type = draw(st.sampled_from(sorted(CIM_TYPES)))
    is_array = draw(st.booleans())
    scalar = scalars(cim_type)
    values = st.lists(scalar, max_size=4).map(tuple) if is_array else scalar
    return CimProperty(draw(IDENTIFIERS), cim_type, is_array, draw(st.none() | values))


INSTANCES = st.builds(
    CimInstance.build,
    IDENTIFIERS,
    st.lists(properties(), max_size=8, unique_by=lambda prop: prop.name.lower()),
)


def instance(*props: CimProperty) -> CimInstance:
    return CimInstance.build("Msvm_Test", list(props))


# --- writing ------------------------------------------------------------------------------


@given(INSTANCES)
def test_instance_survives_round_trip_when_written_and_read(original: CimInstance) -> None:
    assert read_instance(write_instance(original)) == (original.class_name, list(original))


@given(INSTANCES)
def test_text_is_one_line_when_values_hold_line_breaks(original: CimInstance) -> None:
    text = write_instance(original)
    assert "\n" not in text
    assert "\r" not in text


def test_minimal_shape_is_written_when_instance_has_every_kind_of_property() -> None:
    path = ObjectPath.for_keys("Msvm_ComputerSystem", host="HV1", Name="a&b")
    text = write_instance(instance(
        CimProperty("Name", "string", False, "x<y"),
        CimProperty("Ids", "uint16", True, (1, 2)),
        CimProperty("On", "boolean", False, False),
        CimProperty("Missing", "string", False, None),
        CimProperty("Owner", "reference", False, str(path)),
    ))
    assert text == (
        '<INSTANCE CLASSNAME="Msvm_Test">'
        '<PROPERTY NAME="Name" TYPE="string"><VALUE>x&lt;y</VALUE></PROPERTY>'
        '<PROPERTY.ARRAY NAME="Ids" TYPE="uint16"><VALUE.ARRAY><VALUE>1</VALUE><VALUE>2</VALUE>'
        "</VALUE.ARRAY></PROPERTY.ARRAY>"
        '<PROPERTY NAME="On" TYPE="boolean"><VALUE>FALSE</VALUE></PROPERTY>'
        '<PROPERTY NAME="Missing" TYPE="string"></PROPERTY>'
        '<PROPERTY.REFERENCE NAME="Owner"><VALUE.REFERENCE><INSTANCEPATH><NAMESPACEPATH>'
        "<HOST>HV1</HOST><LOCALNAMESPACEPATH><NAMESPACE NAME=\"root\"/>"
        '<NAMESPACE NAME="virtualization"/><NAMESPACE NAME="v2"/></LOCALNAMESPACEPATH>'
        '</NAMESPACEPATH><INSTANCENAME CLASSNAME="Msvm_ComputerSystem">'
        '<KEYBINDING NAME="Name"><KEYVALUE VALUETYPE="string">a&amp;b</KEYVALUE></KEYBINDING>'
        "</INSTANCENAME></INSTANCEPATH></VALUE.REFERENCE></PROPERTY.REFERENCE></INSTANCE>"
    )


def test_boolean_is_written_upper_case_when_true() -> None:
    assert "<VALUE>TRUE</VALUE>" in write_instance(
        instance(CimProperty("On", "boolean", False, True))
    )


def test_null_array_and_empty_array_differ_when_written() -> None:
    null = CimProperty("A", "string", True, None)
    empty = CimProperty("B", "string", True, ())
    _, props = read_instance(write_instance(instance(null, empty)))
    assert props == [null, empty]


@pytest.mark.parametrize(
    "prop",
    [CimProperty("A", "string", False, "nul\x00"), CimProperty("A", "string", False, "\x1b[0m"),
     CimProperty("A", "float", False, "1.0"), CimProperty("A", "uint8", False, "many"),
     CimProperty("A", "boolean", False, "maybe"), CimProperty("A", "string", True, "scalar"),
     CimProperty("A", "reference", False, "not a path!")],
)
def test_write_raises_invalid_parameter_when_value_cannot_be_written(prop: CimProperty) -> None:
    with pytest.raises(CimInvalidParameter):
        write_instance(instance(prop))


# --- reading what Windows writes ----------------------------------------------------------

KVP_SAMPLE = """<?xml version="1.0" encoding="utf-16"?>
<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem">
  <QUALIFIER NAME="dynamic" PROPAGATED="true" TYPE="boolean" TOSUBCLASS="false"
             TOINSTANCE="true"><VALUE>TRUE</VALUE></QUALIFIER>
  <PROPERTY NAME="Caption" CLASSORIGIN="CIM_ManagedElement" PROPAGATED="true" TYPE="string">
    <QUALIFIER NAME="MaxLen" PROPAGATED="true" TYPE="uint32" OVERRIDABLE="false">
      <VALUE>64</VALUE>
    </QUALIFIER>
  </PROPERTY>
  <PROPERTY NAME="Data" CLASSORIGIN="Msvm_KvpExchangeDataItem" TYPE="string">
    <VALUE>  cloud &amp; stack &lt;3  </VALUE>
  </PROPERTY>
  <PROPERTY NAME="Name" CLASSORIGIN="Msvm_KvpExchangeDataItem" TYPE="string">
    <VALUE>VirtualMachineName</VALUE>
  </PROPERTY>
  <PROPERTY NAME="Source" CLASSORIGIN="Msvm_KvpExchangeDataItem" TYPE="uint16">
    <QUALIFIER NAME="ValueMap" PROPAGATED="true" TYPE="string" OVERRIDABLE="false">
      <VALUE.ARRAY><VALUE>0</VALUE><VALUE>1</VALUE></VALUE.ARRAY>
    </QUALIFIER>
    <VALUE> 0 </VALUE>
  </PROPERTY>
</INSTANCE>
"""


def test_kvp_item_is_read_when_text_has_qualifiers_and_propagated_attributes() -> None:
    assert read_instance(KVP_SAMPLE) == (
        "Msvm_KvpExchangeDataItem",
        [
            CimProperty("Caption", "string", False, None),
            CimProperty("Data", "string", False, "  cloud & stack <3  "),
            CimProperty("Name", "string", False, "VirtualMachineName"),
            CimProperty("Source", "uint16", False, 0),
        ],
    )


VHD_SAMPLE = """<INSTANCE CLASSNAME="Msvm_VirtualHardDiskSettingData">
<PROPERTY NAME="BlockSize" TYPE="uint32"><VALUE>33554432</VALUE></PROPERTY>
<PROPERTY NAME="Caption" PROPAGATED="true" TYPE="string">
<VALUE>Virtual Hard Disk Setting Data</VALUE></PROPERTY>
<PROPERTY NAME="Format" TYPE="uint16"><VALUE>3</VALUE></PROPERTY>
<PROPERTY NAME="InstanceID" CLASSORIGIN="CIM_SettingData" PROPAGATED="true" TYPE="string">
<VALUE>Microsoft:C:\\VMs\\disk.vhdx</VALUE></PROPERTY>
<PROPERTY NAME="IsPmemCompatible" TYPE="boolean"><VALUE>false</VALUE></PROPERTY>
<PROPERTY NAME="LogicalSectorSize" TYPE="uint32"><VALUE>512</VALUE></PROPERTY>
<PROPERTY NAME="MaxInternalSize" TYPE="uint64"><VALUE>21474836480</VALUE></PROPERTY>
<PROPERTY NAME="ParentPath" TYPE="string"></PROPERTY>
<PROPERTY NAME="Path" TYPE="string"><VALUE>C:\\VMs\\disk.vhdx</VALUE></PROPERTY>
<PROPERTY NAME="PhysicalSectorSize" TYPE="uint32"><VALUE>4096</VALUE></PROPERTY>
<PROPERTY NAME="Type" TYPE="uint16"><VALUE>3</VALUE></PROPERTY>
</INSTANCE>"""


def test_vhd_setting_data_is_read_when_text_spans_lines() -> None:
    class_name, props = read_instance(VHD_SAMPLE)
    values = {prop.name: prop.value for prop in props}
    assert class_name == "Msvm_VirtualHardDiskSettingData"
    assert values["Path"] == "C:\\VMs\\disk.vhdx"
    assert values["MaxInternalSize"] == 21474836480
    assert values["IsPmemCompatible"] is False
    assert values["ParentPath"] is None
    assert [prop.name for prop in props][:3] == ["BlockSize", "Caption", "Format"]


@pytest.mark.parametrize(("text", "value"), [("TRUE", True), ("true", True), (" False ", False)])
def test_boolean_is_read_when_written_in_any_case(text: str, value: bool) -> None:
    xml = f'<INSTANCE CLASSNAME="C"><PROPERTY NAME="B" TYPE="boolean"><VALUE>{text}</VALUE>' \
        "</PROPERTY></INSTANCE>"
    assert read_instance(xml)[1] == [CimProperty("B", "boolean", False, value)]


def test_instance_is_read_when_wrapped_in_named_instance() -> None:
    text = (
        '<VALUE.NAMEDINSTANCE><INSTANCENAME CLASSNAME="C"/><INSTANCE CLASSNAME="C">'
        '<PROPERTY NAME="A" TYPE="sint8"><VALUE>-5</VALUE></PROPERTY></INSTANCE>'
        "</VALUE.NAMEDINSTANCE>"
    )
    assert read_instance(text) == ("C", [CimProperty("A", "sint8", False, -5)])


def test_array_is_read_when_property_array_holds_values() -> None:
    text = (
        '<INSTANCE CLASSNAME="C"><PROPERTY.ARRAY NAME="HostResource" TYPE="string">'
        "<VALUE.ARRAY>\n <VALUE>a</VALUE>\n <VALUE></VALUE>\n</VALUE.ARRAY>"
        '</PROPERTY.ARRAY><PROPERTY.ARRAY NAME="N" TYPE="uint32"/></INSTANCE>'
    )
    assert read_instance(text)[1] == [
        CimProperty("HostResource", "string", True, ("a", "")),
        CimProperty("N", "uint32", True, None),
    ]


# --- reading references -------------------------------------------------------------------

EXPECTED_PATH = str(ObjectPath.for_keys("Msvm_ComputerSystem", Name="VM-1"))
LOCAL_NAMESPACE = (
    '<LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="virtualization"/>'
    '<NAMESPACE NAME="v2"/></LOCALNAMESPACEPATH>'
)
NAME = (
    '<INSTANCENAME CLASSNAME="Msvm_ComputerSystem"><KEYBINDING NAME="Name">'
    '<KEYVALUE VALUETYPE="string">VM-1</KEYVALUE></KEYBINDING></INSTANCENAME>'
)


def reference_text(content: str) -> str:
    return (
        '<INSTANCE CLASSNAME="Msvm_X"><PROPERTY.REFERENCE NAME="Ref" '
        f'REFERENCECLASS="Msvm_ComputerSystem"><VALUE.REFERENCE>{content}</VALUE.REFERENCE>'
        "</PROPERTY.REFERENCE></INSTANCE>"
    )


@pytest.mark.parametrize(
    "content",
    [
        f"<INSTANCEPATH><NAMESPACEPATH><HOST>.</HOST>{LOCAL_NAMESPACE}</NAMESPACEPATH>"
        f"{NAME}</INSTANCEPATH>",
        f"<LOCALINSTANCEPATH>{LOCAL_NAMESPACE}{NAME}</LOCALINSTANCEPATH>",
        NAME,
        '\\\\.\\root\\virtualization\\v2:Msvm_ComputerSystem.Name="VM-1"',
        ' Msvm_ComputerSystem.Name="VM-1" ',
    ],
)
def test_reference_is_read_as_path_text_when_given_in_any_accepted_form(content: str) -> None:
    assert read_instance(reference_text(content))[1] == [
        CimProperty("Ref", "reference", False, EXPECTED_PATH)
    ]


def test_reference_key_is_read_when_key_binding_holds_a_reference() -> None:
    content = (
        f"<INSTANCEPATH><NAMESPACEPATH><HOST>HV1</HOST>{LOCAL_NAMESPACE}</NAMESPACEPATH>"
        '<INSTANCENAME CLASSNAME="Msvm_SettingsDefineState"><KEYBINDING NAME="ManagedElement">'
        f"<VALUE.REFERENCE>{NAME}</VALUE.REFERENCE></KEYBINDING></INSTANCENAME></INSTANCEPATH>"
    )
    [prop] = read_instance(reference_text(content))[1]
    assert isinstance(prop.value, str)
    assert ObjectPath.parse(prop.value).key("ManagedElement") == EXPECTED_PATH


# --- refusing malformed text --------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<INSTANCE CLASSNAME="C"><PROPERTY NAME="A" TYPE="string"><VALUE>&lol9;</VALUE></PROPERTY>
</INSTANCE>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE i [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<INSTANCE CLASSNAME="C"><PROPERTY NAME="A" TYPE="string"><VALUE>&xxe;</VALUE></PROPERTY>
</INSTANCE>"""


def test_read_refuses_entity_expansion_when_given_billion_laughs() -> None:
    with pytest.raises(CimInvalidParameter, match="malformed CIM-XML"):
        read_instance(BILLION_LAUGHS)


def test_read_refuses_external_entity_when_document_declares_one() -> None:
    with pytest.raises(CimInvalidParameter, match="malformed CIM-XML"):
        read_instance(EXTERNAL_ENTITY)


@pytest.mark.parametrize(
    "text",
    [
        "", "not xml", "<INSTANCE CLASSNAME='C'>", "<INSTANCE CLASSNAME='C'><PROPERTY></INSTANCE>",
        "<INSTANCE/>", "<CLASS NAME='C'/>",
        "<INSTANCE CLASSNAME='C'><PROPERTY NAME='A'/></INSTANCE>",
        "<INSTANCE CLASSNAME='C'><PROPERTY TYPE='string'/></INSTANCE>",
        "<INSTANCE CLASSNAME='C'><PROPERTY NAME='A' TYPE='float'/></INSTANCE>",
        "<INSTANCE CLASSNAME='C'><PROPERTY NAME='A' TYPE='uint8'><VALUE>x</VALUE></PROPERTY>"
        "</INSTANCE>",
        "<INSTANCE CLASSNAME='C'><PROPERTY NAME='A' TYPE='boolean'><VALUE>yes</VALUE>"
        "</PROPERTY></INSTANCE>",
        "<INSTANCE CLASSNAME='C'><PROPERTY NAME='A' TYPE='string'><VALUE>1</VALUE>"
        "<VALUE>2</VALUE></PROPERTY></INSTANCE>",
        "<INSTANCE CLASSNAME='C'><PROPERTY NAME='A' TYPE='string'/>"
        "<PROPERTY NAME='a' TYPE='string'/></INSTANCE>",
        "<INSTANCE CLASSNAME='C'><METHOD NAME='A'/></INSTANCE>",
        "<INSTANCE CLASSNAME='C'><PROPERTY.ARRAY NAME='A' TYPE='string'><VALUE.ARRAY>"
        "<VALUE.NULL/></VALUE.ARRAY></PROPERTY.ARRAY></INSTANCE>",
        "<INSTANCE CLASSNAME='C'><PROPERTY.REFERENCE NAME='A'><VALUE.REFERENCE>"
        "<CLASSPATH/></VALUE.REFERENCE></PROPERTY.REFERENCE></INSTANCE>",
        "<INSTANCE CLASSNAME='C'><PROPERTY.REFERENCE NAME='A'><VALUE.REFERENCE>"
        "</VALUE.REFERENCE></PROPERTY.REFERENCE></INSTANCE>",
        "<INSTANCE CLASSNAME='C'><PROPERTY.REFERENCE NAME='A'><VALUE.REFERENCE>"
        "<INSTANCEPATH><INSTANCENAME CLASSNAME='X'/></INSTANCEPATH>"
        "</VALUE.REFERENCE></PROPERTY.REFERENCE></INSTANCE>",
    ],
)
def test_read_raises_one_line_invalid_parameter_when_text_is_malformed(text: str) -> None:
    with pytest.raises(CimInvalidParameter) as caught:
        read_instance(text)
    assert "\n" not in str(caught.value)
