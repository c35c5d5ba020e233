"""The base of every wire model, and of every command.

Python names are snake_case, with units where the Java field has one implicitly
(``max_ram_bytes`` for ``maxRam``); the Java field name is the alias. Plain camelCase
names come from the alias generator; any other wire name (``_url``, ``srcTO``,
``enableHA``, a unit suffix) is spelt out with :func:`wire`.

A JSON null counts as an absent member, as for Gson. Fields the models do not declare
are kept (``extra="allow"``) and written back, so an object the agent echoes
(StartAnswer.vm, the StartupRoutingCommand) loses nothing. Models are frozen: build a
changed copy with ``model.model_copy(update={...})``.

The model modules evaluate their annotations as their classes are made (they do not use
``from __future__ import annotations``): pydantic then reads types instead of evaluating
strings, a third of what making the models costs when the agent starts.
"""

from typing import Annotated, Any, ClassVar, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo


class WireModel(BaseModel):
    """A Java object as Gson writes it: Java field names, unknown fields kept."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        alias_generator=to_camel,
        serialize_by_alias=True,
        coerce_numbers_to_str=True,  # Gson reads a JSON number into a String field
        frozen=True,
        defer_build=True,  # validators are built when a class is first used, not at import
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """A JSON null is an absent field, as for Gson: the field keeps its default."""
        if isinstance(data, dict) and None in data.values():
            return {key: value for key, value in data.items() if value is not None}
        return data


def wire(name: str, *, secret: bool = False) -> FieldInfo:
    """The field's Java name, when it is not the camelCase of the Python name.

    ``secret=True`` keeps the value out of ``repr()`` (keys, passwords).
    """
    info: FieldInfo = Field(alias=name, repr=not secret)
    return info


def _number(value: Any) -> Any:
    """Gson reads no boolean into a Java number (pydantic alone would take it as 0 or 1)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


def _boolean(value: Any) -> Any:
    """Gson reads no number into a Java boolean (pydantic alone would take 0 and 1)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("expected a boolean, got a number")
    return value


def _name(value: Any) -> Any:
    """A Java enum constant travels as its name: a string, nothing else."""
    if not isinstance(value, str):
        raise ValueError("expected an enum constant name (a string)")
    return value


def _within(bits: int, java: str) -> AfterValidator:
    """Gson reads into a Java ``int`` or ``long`` only a whole number it holds: a larger one
    (``2147483648`` for an int, ``1e18``, ``2**63`` for a long) fails the whole body
    (JsonReader.nextInt/nextLong), as it fails the request here; a value past a long would
    otherwise also fail where it is turned into a float (OverflowError)."""
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def check(value: int) -> int:
        if not low <= value <= high:
            shown = value if value.bit_length() <= 128 else f"a {value.bit_length()}-bit number"
            raise ValueError(f"{shown} does not fit a Java {java} ({low} to {high})")
        return value

    return AfterValidator(check)


#: Java ``int`` (and ``Integer``): a whole JSON number, or a string holding one, as Gson
#: reads, from -2**31 to 2**31 - 1.
JInt: TypeAlias = Annotated[int, BeforeValidator(_number), _within(32, "int")]
#: Java ``long`` (and ``Long``): the same, from -2**63 to 2**63 - 1.
JLong: TypeAlias = Annotated[int, BeforeValidator(_number), _within(64, "long")]
#: Java ``double``/``float`` (and boxed).
JFloat: TypeAlias = Annotated[float, BeforeValidator(_number)]
#: Java ``boolean`` (and boxed): true/false, or a string holding one.
JBool: TypeAlias = Annotated[bool, BeforeValidator(_boolean)]
#: A Java enum this agent does not act on, kept by its constant name.
JEnumName: TypeAlias = Annotated[str, BeforeValidator(_name)]
#: A Java object this agent does not act on (a GPU device, DPDK port, OVF data, ...):
#: checked to be a JSON object, kept as it came.
JObject: TypeAlias = dict[str, JsonValue]


#: How long the management server waits for a command whose ``wait`` is 0: its ``wait``
#: setting, 1800 s by default (AgentManager.Wait, AgentManagerImpl.getTimeout).
MS_DEFAULT_WAIT_S = 1800


def ms_wait_s(wait_s: int, default_s: float = MS_DEFAULT_WAIT_S) -> float:
    """How long the management server waits for the answer to a command whose ``wait`` is
    ``wait_s``: that many seconds, or ``default_s`` (its own default) for 0 or less."""
    return float(wait_s) if wait_s > 0 else float(default_s)


class Command(WireModel):
    """com.cloud.agent.api.Command: the fields every command carries."""

    FQCN: ClassVar[str]

    context_map: dict[str, str] = Field(default_factory=dict)
    wait_s: Annotated[JInt, wire("wait")] = 0
    bypass_host_maintenance: JBool = False
    external_details: dict[str, dict[str, str]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_wait_is_zero(cls, data: Any) -> Any:
        """Gson leaves a null ``wait`` (a Java int) at 0, the MS's default wait: the body
        has a ``wait``, unlike one the MS does not send. Runs before ``_null_is_absent``
        (pydantic runs a subclass's before-validators first)."""
        if isinstance(data, dict) and "wait" in data and data["wait"] is None:
            return {**data, "wait": 0}
        return data

    @property
    def answer_wait_s(self) -> float | None:
        """How long the management server waits for this command's answer before it fails
        the command: its ``wait``, ``MS_DEFAULT_WAIT_S`` for 0; None for a body without a
        ``wait`` (one the MS does not send, such as a report the agent asks for itself)."""
        if "wait_s" not in self.model_fields_set:
            return None
        return ms_wait_s(self.wait_s)
