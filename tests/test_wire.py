"""What crosses into a worker (ipy_parallel._wire): the wire formats, defined once, and every engine held to them."""

import marshal
import pickle
import subprocess
import sys

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


def test_the_cpp_engine_writes_the_protocols_records():
    engine = _engine.Pool(1, marshalled())
    try:
        engine.start("print('o')\n[worker_id, 'v']", "<wire>", [])
        assert engine.wait(10)
        [record] = engine.collect()
        reference = protocol.result_record(0, protocol.reply(b"", None, protocol.MARSHAL), "", "", 0.0, 0.0)
        assert len(record) == len(reference)
        assert [type(field) for field in record] == [int, bytes, str, str, type(None), float, float, int]
        assert rebuild(record).value == [0, "v"] and rebuild(record).stdout == "o\n"
        engine.start("1 / 0", "<wire>", [])
        assert engine.wait(10)
        [record] = engine.collect()
        error = record[4]
        assert len(error) == 4 and all(isinstance(text, str) for text in error[:3]) and isinstance(error[3], bytes)
    finally:
        engine.close(5.0)


def test_the_cpp_engine_and_the_protocol_agree_on_raw_values():
    assert _engine.RAW_FORMAT == protocol.RAW
    engine = _engine.Pool(1, marshalled())
    try:
        engine.start(f"b'x' * {protocol.LEND_MIN}", "<wire>", [])
        assert engine.wait(10)
        [record] = engine.collect()
        assert record[-1] == protocol.RAW and record[1] == b"x" * protocol.LEND_MIN  # copied as it is
    finally:
        engine.close(5.0)


def test_shipped_modules_install_in_order_in_a_fresh_process():
    # What a worker process does: install the shipped modules, then run a task through setup().
    names = [name for name, _, _ in shipped_sources()]
    assert names == ["_ipy_parallel_protocol", "_ipy_parallel_runtime"]
    code = """
import sys
from ipy_parallel._wire import install, shipped_sources
runtime = install(shipped_sources())
out = []
run = runtime.setup(0, 1, lambda stream, text: out.append((stream, text)), None)
value, error, fmt = run("print('hi')\\nworker_id + 41", "<fresh>", None)
import marshal
print(marshal.loads(value), error, out, sorted(m for m in sys.modules if m.startswith("_ipy_parallel")))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "41 None [(1, 'hi'), (1, '\\n')] ['_ipy_parallel_protocol', "
        "'_ipy_parallel_runtime', '_ipy_parallel_worker_context']"
    )
