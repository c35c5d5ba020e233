"""Malformed bodies fail in the codec, with the path of the offending field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from hyperv_agent.cloudstack import codec, names
from tests.cloudstack.fixtures import body, sample_json

VOLUME = names.VOLUME_OBJECT_TO
TEMPLATE = names.TEMPLATE_OBJECT_TO


def _start(change: Callable[[Any], None]) -> bytes:
    document = sample_json("0005_StartCommand.json")
    change(document)
    return body(document)


def _error(fqcn: str, raw: bytes) -> codec.CodecError:
    with pytest.raises(codec.CodecError) as caught:
        codec.decode_command(fqcn, raw)
    return caught.value


def _start_error(change: Callable[[Any], None]) -> codec.CodecError:
    return _error(names.START_COMMAND, _start(change))


@pytest.mark.parametrize("raw", [b"", b"{not json", b'{"vmName": NaN}', b'{"a": 1e999}',
                                 b'{"vmName": "\\ud800"}', b"[" * 300 + b"]" * 300,
                                 b'{"vmName": ' + b"9" * 5000 + b"}"])
def test_body_is_rejected_as_a_whole_when_it_is_not_json(raw: bytes) -> None:
    error = _error(names.STOP_COMMAND, raw)
    assert error.field_path == ""
    assert error.message.startswith("not JSON")


def test_path_names_the_field_when_a_nested_value_has_the_wrong_type() -> None:
    error = _start_error(lambda doc: doc["vm"].update(cpus="many"))
    assert error.field_path == "vm.cpus"
    assert "integer" in error.message and "got a string" in error.message
    assert str(error).startswith("vm.cpus: ")


def test_path_goes_through_the_wrapper_when_a_wrapped_field_is_wrong() -> None:
    error = _start_error(lambda doc: doc["vm"]["disks"][0]["data"][VOLUME].update(size=[1]))
    assert error.field_path == f'vm.disks[0].data["{VOLUME}"].size'


def test_path_names_the_missing_field_when_a_required_field_is_absent() -> None:
    assert _start_error(lambda doc: doc.pop("vm")).field_path == "vm"
    assert _start_error(lambda doc: doc["vm"].pop("name")).field_path == "vm.name"
    error = _start_error(lambda doc: doc["vm"]["disks"][1].pop("type"))
    assert (error.field_path, error.message) == ("vm.disks[1].type", "required field is missing")
    assert _error(names.STOP_COMMAND, b"{}").field_path == "vmName"


def test_null_counts_as_missing_when_the_field_is_required() -> None:
    error = _error(names.STOP_COMMAND, b'{"vmName": null}')
    assert (error.field_path, error.message) == ("vmName", "required field is missing")


def test_allowed_classes_are_named_when_a_data_class_is_unknown() -> None:
    snapshot = "org.apache.cloudstack.storage.to.SnapshotObjectTO"
    error = _start_error(lambda doc: doc["vm"]["disks"][0].update(data={snapshot: {}}))
    assert error.field_path == "vm.disks[0].data"
    assert snapshot in error.message
    assert VOLUME in error.message and TEMPLATE in error.message


def test_wrapper_is_asked_for_when_a_data_object_is_not_wrapped() -> None:
    error = _start_error(lambda doc: doc["vm"]["disks"][0].update(data={"uuid": "u", "id": 1}))
    assert error.field_path == "vm.disks[0].data"
    assert "one-key object" in error.message and VOLUME in error.message


def test_path_names_the_store_when_a_data_store_class_is_unknown() -> None:
    document = sample_json("0016_CopyCommand_template_cifs_to_primary.json")
    document["srcTO"][TEMPLATE]["imageDataStore"] = {"com.example.FtpTO": {"url": "ftp://x"}}
    error = _error(names.COPY_COMMAND, body(document))
    assert error.field_path == f'srcTO["{TEMPLATE}"].imageDataStore'
    assert names.NFS_TO in error.message and names.PRIMARY_DATA_STORE_TO in error.message


def test_path_names_the_field_when_an_array_stands_for_an_object() -> None:
    error = _start_error(lambda doc: doc.update(vm=[doc["vm"]]))
    assert (error.field_path, error.message) == ("vm", "expected a JSON object, got an array")


def test_path_names_the_field_when_an_object_stands_for_an_array() -> None:
    error = _start_error(lambda doc: doc["vm"].update(disks={"type": "ROOT"}))
    assert (error.field_path, error.message) == ("vm.disks", "expected a JSON array, got an object")


def test_path_names_the_enum_when_it_is_not_a_name() -> None:
    error = _start_error(lambda doc: doc["vm"]["disks"][0].update(type=3))
    assert error.field_path == "vm.disks[0].type"
    assert "VolumeType" in error.message


@pytest.mark.parametrize(("raw", "path"), [
    (b"[]", ""), (b"[1, 2]", ""), (b'"i-2-17-VM"', ""), (b"17", ""), (b"null", ""),
    (b"[[]]", "[0]"), (b'[{"vmName": "v"}]', "[0]"),
    (b'[{"com.cloud.agent.api.StartCommand": {"vmName": "v"}}]', "[0]"),
])
def test_top_level_is_rejected_when_it_is_not_a_command_object(raw: bytes, path: str) -> None:
    assert _error(names.STOP_COMMAND, raw).field_path == path


def test_envelope_payload_path_is_reported_when_the_enveloped_command_is_wrong() -> None:
    raw = body([{names.STOP_COMMAND: {"vmName": {"a": 1}}}])
    assert _error(names.STOP_COMMAND, raw).field_path == f'[0]["{names.STOP_COMMAND}"].vmName'


def test_startup_needs_its_envelope_when_the_body_is_a_bare_object() -> None:
    document = sample_json("0001_StartupCommand_request.json")[0]
    error = _error(names.STARTUP_COMMAND, body(document))
    assert error.field_path == "" and names.STARTUP_ROUTING_COMMAND in error.message
    wrong_class: list[dict[str, object]] = [{names.STARTUP_STORAGE_COMMAND: {}}]
    assert _error(names.STARTUP_COMMAND, body(wrong_class)).field_path == "[0]"


def test_unknown_action_is_its_own_error_when_no_model_exists() -> None:
    with pytest.raises(codec.UnknownCommand) as caught:
        codec.decode_command("com.cloud.agent.api.NoSuchCommand", b"{}")
    assert caught.value.fqcn == "com.cloud.agent.api.NoSuchCommand"
    assert isinstance(caught.value, codec.CodecError)


def test_message_does_not_quote_the_value_when_it_may_be_a_secret() -> None:
    secret = "cifs://10.1.1.1/secondary?user=administrator&password=hunter2"
    document = sample_json("0016_CopyCommand_template_cifs_to_primary.json")
    document["srcTO"][TEMPLATE]["imageDataStore"] = {names.NFS_TO: {"_url": {"u": secret}}}
    error = _error(names.COPY_COMMAND, body(document))
    assert error.field_path.endswith(f'["{names.NFS_TO}"]._url')
    assert "hunter2" not in str(error)


def test_other_problems_are_counted_when_several_fields_are_wrong() -> None:
    raw = json.dumps({"vmName": "v", "index": "x", "enable": "maybe", "vlan": []}).encode()
    error = _error(names.MODIFY_VM_NIC_CONFIG_COMMAND, raw)
    assert error.message.endswith("(and 2 more problems)")


def test_answers_are_rejected_with_a_path_when_a_reply_is_malformed() -> None:
    with pytest.raises(codec.CodecError) as caught:
        codec.decode_answers(b'[{"com.cloud.agent.api.StopAnswer": {"result": "perhaps"}}]')
    assert caught.value.field_path == '[0]["com.cloud.agent.api.StopAnswer"].result'
    for raw, path in ((b"{}", ""), (b"[1]", "[0]"), (b'[{"x.NoAnswer": {}}]', "[0]")):
        with pytest.raises(codec.CodecError) as caught:
            codec.decode_answers(raw)
        assert caught.value.field_path == path
