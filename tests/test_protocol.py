"""The wire formats (ipy_parallel/_wire/protocol.py), and every writer and reader of them held to that file."""

import ast
import marshal
import pickle

import pytest

from ipy_parallel import _engine
from ipy_parallel._wire import marshalled, protocol, shipped_sources
from ipy_parallel.results import rebuild


def test_operations_can_never_be_user_source():
    for op in (protocol.RESET, protocol.PULL):
        assert op.startswith("\0")
        with pytest.raises((SyntaxError, ValueError)):  # no Python source holds a NUL
            compile(op, "<op>", "exec")


def test_payload_round_trip():
    payload = protocol.pack_payload(["/a", "/b"], [(b"one", ["x"]), (None, ("y", "z"))])
    assert protocol.unpack_payload(payload) == (["/a", "/b"], [(b"one", ("x",)), (None, ("y", "z"))], None)
    assert protocol.unpack_payload(protocol.pack_payload(None, [])) == (None, [], None)
    assert protocol.unpack_payload(protocol.pack_payload(["/p"], [], [0, 2])) == (["/p"], [], (0, 2))


def test_error_records_hold_only_valid_utf8():
    record = protocol.error_record("ValueError", "bad \udc80", "Traceback\nValueError: bad \udc80\n")
    assert all(text.encode("utf-8") for text in record[:3])
    assert record[1] == "bad \\udc80" and record[3] is None


def test_records_have_the_fields_the_protocol_names():
    reply = protocol.reply(b"v", None, protocol.MARSHAL)
    assert dict(zip(protocol.REPLY_FIELDS, reply, strict=True)) == {
        "value": b"v",
        "error": None,
        "value_format": protocol.MARSHAL,
    }
    record = protocol.result_record(3, protocol.reply(b"v", None, protocol.MARSHAL), "out", "err", 0.5, 0.25)
    assert dict(zip(protocol.RESULT_FIELDS, record, strict=True)) == {
        "worker_id": 3,
        "value": b"v",
        "stdout": "out",
        "stderr": "err",
        "error": None,
        "wall_time": 0.5,
        "cpu_time": 0.25,
        "value_format": protocol.MARSHAL,
    }
    error = protocol.error_record("KeyError", "'k'", "KeyError: 'k'\n", b"pickled")
    assert dict(zip(protocol.ERROR_FIELDS, error, strict=True)) == {
        "type_name": "KeyError",
        "message": "'k'",
        "traceback": "KeyError: 'k'\n",
        "exception": b"pickled",
    }


def test_a_result_record_rebuilds_into_a_result():
    reply = protocol.reply(marshal.dumps([1, "two"]), None, protocol.MARSHAL)
    result = rebuild(protocol.result_record(3, reply, "out", "err", 0.5, 0.25))
    assert (result.worker_id, result.value, result.stdout, result.stderr, result.wall_time, result.cpu_time) == (
        3,
        [1, "two"],
        "out",
        "err",
        0.5,
        0.25,
    )
    failed = rebuild(
        protocol.result_record(
            0,
            protocol.reply(
                None, protocol.error_record("KeyError", "'k'", "KeyError: 'k'\n", pickle.dumps(KeyError("k")))
            ),
            "",
            "",
            0.0,
            0.0,
        )
    )
    assert failed.error.type_name == "KeyError" and isinstance(failed.error.exception, KeyError)


def test_an_interrupted_reply_is_a_bare_keyboard_interrupt():
    value, error, value_format = protocol.interrupted_reply()
    assert value is None and value_format == protocol.PICKLE
    assert error == protocol.interrupted_error()
    assert len(error) == len(protocol.ERROR_FIELDS)
    assert error[:3] == ("KeyboardInterrupt", "", "KeyboardInterrupt\n")
    assert type(pickle.loads(error[3])) is KeyboardInterrupt
    assert protocol.interrupted_error("from %px")[1] == "from %px"
    result = rebuild(protocol.result_record(1, protocol.interrupted_reply(), "", "", 0.0, 0.0))
    assert result.error.type_name == "KeyboardInterrupt" and isinstance(result.error.exception, KeyboardInterrupt)


@pytest.mark.parametrize(
    "message",
    [
        (0, 1, ["/p"], "/cwd"),
        (protocol.READY, 1234),
        (protocol.OUTPUT, [(1, b"out"), (2, "\u00e9".encode())]),
        (protocol.DONE, protocol.interrupted_reply(), 0.5, 0.25),
        (("1 / 0", "<cell>", b"\0" * 100_000), "/cwd"),
        (),
    ],
)
def test_a_frame_is_its_length_then_its_message(message):
    frame = protocol.frame(message)
    header, blob = frame[: protocol.FRAME_HEADER], frame[protocol.FRAME_HEADER :]
    assert protocol.frame_size(header) == len(blob) == int.from_bytes(header, "little")
    assert protocol.unframe(blob) == message
    assert protocol.unframe(bytearray(frame)[protocol.FRAME_HEADER :]) == message  # as the parent reads it


def test_frame_kinds_are_distinct():
    assert len({protocol.READY, protocol.OUTPUT, protocol.DONE}) == 3


def test_executor_messages_round_trip():
    call = protocol.executor_call(7, 2, pickle.dumps(((1,), {})), False)
    assert protocol.read_executor_message(call) == (7, 2, pickle.dumps(((1,), {})), False)
    answer = protocol.executor_answer(7, 1, True, b"value", "")
    assert protocol.read_executor_message(answer) == (7, 1, True, b"value", "")
    assert protocol.read_executor_message(protocol.EXECUTOR_END) is None
    assert protocol.EXECUTOR_FUNCTIONS_KEPT > 0 and 0 < protocol.EXECUTOR_SPIN < 0.01


def test_the_protocol_imports_only_marshal_as_it_loads():
    # Every worker loads it: anything else it imported would be every worker's start-up cost.
    with open(protocol.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {"marshal"}


def test_the_shipped_copy_builds_what_the_package_does():
    # What remote.py and the process worker call: the protocol as shipped, without the package.
    [(name, filename, source)] = [m for m in shipped_sources() if m[0] == "_ipy_parallel_protocol"]
    shipped = {"__name__": name}
    exec(compile(source, filename, "exec"), shipped)
    assert shipped["interrupted_reply"]() == protocol.interrupted_reply()
    assert shipped["frame"]((protocol.DONE, None)) == protocol.frame((protocol.DONE, None))
    assert shipped["executor_answer"](1, 0, False, b"", "t") == protocol.executor_answer(1, 0, False, b"", "t")


def test_the_cpp_engine_writes_the_protocols_records():
    engine = _engine.Engine(1, marshalled())
    try:
        engine.start("print('o')\n[worker_id, 'v']", "<wire>", [])
        assert engine.wait(10)
        [record] = engine.collect()
        reference = protocol.result_record(0, protocol.reply(b"", None, protocol.MARSHAL), "", "", 0.0, 0.0)
        assert len(record) == len(reference) == len(protocol.RESULT_FIELDS)
        assert [type(field) for field in record] == [int, bytes, str, str, type(None), float, float, int]
        fields = dict(zip(protocol.RESULT_FIELDS, record, strict=True))
        assert fields["worker_id"] == 0 and fields["stdout"] == "o\n" and fields["stderr"] == ""
        assert fields["value_format"] == protocol.MARSHAL and marshal.loads(fields["value"]) == [0, "v"]
        assert fields["wall_time"] >= 0 and fields["cpu_time"] >= 0
        assert rebuild(record).value == [0, "v"] and rebuild(record).stdout == "o\n"
        engine.start("1 / 0", "<wire>", [])
        assert engine.wait(10)
        [record] = engine.collect()
        error = record[protocol.RESULT_FIELDS.index("error")]
        assert len(error) == len(protocol.ERROR_FIELDS)
        assert len(error) == 4 and all(isinstance(text, str) for text in error[:3]) and isinstance(error[3], bytes)
        assert dict(zip(protocol.ERROR_FIELDS, error, strict=True))["type_name"] == "ZeroDivisionError"
    finally:
        engine.close(5.0)


def test_the_cpp_engine_and_the_protocol_agree_on_raw_values():
    assert _engine.RAW_FORMAT == protocol.RAW
    engine = _engine.Engine(1, marshalled())
    try:
        engine.start(f"b'x' * {protocol.LEND_MIN}", "<wire>", [])
        assert engine.wait(10)
        [record] = engine.collect()
        assert record[-1] == protocol.RAW and record[1] == b"x" * protocol.LEND_MIN  # copied as it is
    finally:
        engine.close(5.0)
