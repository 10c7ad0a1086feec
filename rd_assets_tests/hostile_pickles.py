"""A corpus of hostile pickles: each one would create a canary file if any unpickler obeyed it.

Why: the restricted unpickler's promise ("no byte of a session file can make this process act") is only as
good as the attacks it has been shown. Payloads are hand-assembled opcode streams (protocols 0-5, GLOBAL,
STACK_GLOBAL, INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1) or ``pickle.dumps`` of objects whose ``__reduce__`` returns
a dangerous callable, alone or buried inside a legitimate-looking RD-Agent loop (built with the shared
fixture builder). Every payload names the first global a safe unpickler must refuse (``refused``).

:func:`hostile_corpus` builds the corpus for one canary path; :data:`MEMORY_GADGETS` are payloads made only
of allow-listed globals that would corrupt memory in numpy if passed through unchecked.
"""

from __future__ import annotations

import copyreg
import functools
import importlib
import io
import marshal
import operator
import os
import pickle
import shutil
import socket
import struct
import subprocess
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rd_assets_tests.rdagent_fixtures import (
    MAIN_FACTOR_LOOP,
    ExperimentSpec,
    FactorSpec,
    build_loop,
    snapshot_bytes,
)

EXTENSION_CODE = 0xF1
"""Code a test registers with ``copyreg.add_extension`` (to ``os.system``) for the EXT1 payload."""


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    refused: str
    """The global the unpickler must name when it refuses (the first dangerous one in the stream)."""
    extension: tuple[str, str, int] | None = None
    """``(module, name, code)`` to register in ``copyreg``'s extension registry while loading."""


class Call:
    """Pickles as ``fn(*args)``: the classic ``__reduce__`` gadget. Callable so calls can be chained."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn = fn
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args

    def __call__(self) -> None:
        raise AssertionError("only pickled, never called")


# ------------------------------------------------------------------------------------------ opcode helpers


def _p0_str(text: str) -> bytes:
    """Protocol-0 ``UNICODE`` opcode (raw-unicode-escape, one line)."""
    return b"V" + text.encode("raw_unicode_escape") + b"\n"


def _bin_str(text: str) -> bytes:
    """``BINUNICODE`` opcode (protocols 1+)."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _bin_bytes(raw: bytes) -> bytes:
    """``BINBYTES`` opcode (protocols 3+)."""
    return pickle.BINBYTES + struct.pack("<I", len(raw)) + raw


def _global0(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _stack_global(module: str, name: str) -> bytes:
    return _bin_str(module) + _bin_str(name) + pickle.STACK_GLOBAL


def _args(*args: str, proto: int) -> bytes:
    return pickle.MARK + b"".join(_p0_str(a) if proto == 0 else _bin_str(a) for a in args) + pickle.TUPLE


def p0_call(module: str, name: str, *args: str) -> bytes:
    """Protocol 0: ``GLOBAL`` + ``REDUCE``."""
    return _global0(module, name) + _args(*args, proto=0) + pickle.REDUCE + pickle.STOP


def p2_call(module: str, name: str, *args: str) -> bytes:
    return pickle.PROTO + b"\x02" + _global0(module, name) + _args(*args, proto=2) + pickle.REDUCE + pickle.STOP


def p4_call(module: str, name: str, *args: str) -> bytes:
    """Protocol 4: ``STACK_GLOBAL`` (dotted names allowed) + ``REDUCE``, inside a ``FRAME``."""
    body = _stack_global(module, name) + _args(*args, proto=4) + pickle.REDUCE + pickle.STOP
    return pickle.PROTO + b"\x04" + pickle.FRAME + struct.pack("<Q", len(body)) + body


def inst_call(module: str, name: str, *args: str) -> bytes:
    """Protocol 0 ``INST``: the class (any callable) is called with the marked arguments."""
    return pickle.MARK + b"".join(_p0_str(a) for a in args) + b"i" + f"{module}\n{name}\n".encode() + pickle.STOP


def obj_call(module: str, name: str, *args: str) -> bytes:
    """Protocol 1 ``OBJ``: ``MARK callable args... OBJ``."""
    return pickle.MARK + _global0(module, name) + b"".join(_bin_str(a) for a in args) + pickle.OBJ + pickle.STOP


def ext1_call(code: int, *args: str) -> bytes:
    """``EXT1``: the global comes from ``copyreg``'s extension registry of the *loading* process."""
    return pickle.PROTO + b"\x02" + pickle.EXT1 + bytes([code]) + _args(*args, proto=2) + pickle.REDUCE + pickle.STOP


def chain4(*steps: bytes) -> bytes:
    """Concatenate protocol-4 opcode fragments into one framed pickle."""
    body = b"".join(steps) + pickle.STOP
    return pickle.PROTO + b"\x04" + pickle.FRAME + struct.pack("<Q", len(body)) + body


def _call4(callable_ops: bytes, *arg_ops: bytes) -> bytes:
    """``callable(*args)`` where callable and args are opcode fragments themselves."""
    return callable_ops + pickle.MARK + b"".join(arg_ops) + pickle.TUPLE + pickle.REDUCE


# ------------------------------------------------------------------------------------------ the corpus


def _legit_loop_with(hostile: Any, *, loop_path: str | None = None) -> Any:
    """A realistic factor loop (genuine class paths) with ``hostile`` buried in an accepted experiment's weights."""
    hist = [
        ExperimentSpec(factors=[FactorSpec("Mom_10D")], decision=True, weights={"model.pkl": b"\x80\x04N."}),
        ExperimentSpec(
            factors=[FactorSpec("Vol_5D"), FactorSpec("Mom_20D")],
            decision=True,
            weights={"model.pkl": b"\x80\x04N.", "params.pkl": hostile},
        ),
    ]
    return build_loop(hist, **({"loop_path": loop_path} if loop_path else {}))


def _nested(value: Any, depth: int) -> Any:
    for level in range(depth):
        value = {"level": level, "items": [value]} if level % 2 else [None, (value,)]
    return value


def _then(first: bytes, rest: bytes) -> bytes:
    """``first`` is evaluated (and memoised as index 0) before anything of ``rest``, which refers to it as ``REF0``."""
    return chain4(first + pickle.MEMOIZE + pickle.POP + rest)


REF0 = pickle.BINGET + b"\x00"


def _getattr_call(obj_ops: bytes, attr: str, *arg_ops: bytes) -> bytes:
    """``getattr(obj, attr)(*args)``."""
    return _call4(_call4(_stack_global("builtins", "getattr"), obj_ops, _bin_str(attr)), *arg_ops)


def _data_ops(value: Any) -> bytes:
    """Opcodes that push ``value`` (plain data) without touching the memo, for splicing into a chain."""
    buffer = io.BytesIO()
    pickler = pickle._Pickler(buffer, 4)  # type: ignore[attr-defined]
    pickler.fast = True  # no MEMOIZE: memo index 0 stays free for ``_then``
    pickler.dump(value)
    data = buffer.getvalue()[2:-1]
    return data[9:] if data[:1] == pickle.FRAME else data


def _code_args(code: types.CodeType) -> tuple[Any, ...]:
    """The positional arguments of ``types.CodeType(...)`` that rebuild ``code`` (CPython 3.11+)."""
    return (
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_nlocals,
        code.co_stacksize,
        code.co_flags,
        code.co_code,
        code.co_consts,
        code.co_names,
        code.co_varnames,
        code.co_filename,
        code.co_name,
        code.co_qualname,
        code.co_firstlineno,
        code.co_linetable,
        code.co_exceptiontable,
    )


def _list4(*item_ops: bytes) -> bytes:
    return pickle.EMPTY_LIST + pickle.MARK + b"".join(item_ops) + pickle.APPENDS


def hostile_corpus(canary: Path) -> list[Hostile]:
    """Every payload writes ``canary`` (a shell ``touch``, a Python ``open(..., 'w')`` or a copy) if obeyed."""
    target = str(canary)
    shell = f"touch {target}"
    py_write = f"open({target!r}, 'w').write('pwned')"
    argv = ["touch", target]
    code = compile(py_write, "<hostile>", "exec")
    corpus: list[Hostile] = []

    def add(name: str, data: bytes, refused: str, extension: tuple[str, str, int] | None = None) -> None:
        corpus.append(Hostile(name, data, refused, extension))

    posix_system = f"{os.system.__module__}.system"
    shell_ops, target_ops, write_ops = _bin_str(shell), _bin_str(target), _bin_str(py_write)
    os_system_ref0 = _getattr_call(REF0, "system", shell_ops)  # the object made first, as the os module
    for proto in range(6):
        add(f"reduce-os.system-proto{proto}", pickle.dumps(Call(os.system, shell), protocol=proto), posix_system)
    add("hand-GLOBAL-os.system-proto0", p0_call("os", "system", shell), "os.system")
    add("hand-GLOBAL-posix.system-proto2", p2_call("posix", "system", shell), "posix.system")
    add("hand-STACK_GLOBAL-os.system-proto4", p4_call("os", "system", shell), "os.system")
    add("INST-os.system", inst_call("os", "system", shell), "os.system")
    add("OBJ-os.system", obj_call("os", "system", shell), "os.system")
    add("os.popen", p2_call("os", "popen", shell), "os.popen")
    add(
        "posix.posix_spawn",
        chain4(
            _call4(
                _stack_global("posix", "posix_spawn"),
                _bin_str("/usr/bin/touch"),
                _list4(_bin_str("touch"), target_ops),
                pickle.EMPTY_DICT,
            )
        ),
        "posix.posix_spawn",
    )
    add("subprocess.Popen", pickle.dumps(Call(subprocess.Popen, argv), protocol=4), "subprocess.Popen")
    add(
        "subprocess.check_output",
        pickle.dumps(Call(subprocess.check_output, argv), protocol=2),
        "subprocess.check_output",
    )
    add(
        "NEWOBJ-functools.partial(posix.system)",
        pickle.PROTO
        + b"\x02"
        + _global0("functools", "partial")
        + pickle.MARK
        + _global0("posix", "system")
        + _p0_str(shell)
        + pickle.TUPLE
        + pickle.NEWOBJ
        + pickle.EMPTY_TUPLE
        + pickle.REDUCE
        + pickle.STOP,
        "functools.partial",
    )
    add(
        "NEWOBJ_EX-functools.partial(os.system)",
        chain4(
            _stack_global("functools", "partial")
            + pickle.MARK
            + _stack_global("os", "system")
            + shell_ops
            + pickle.TUPLE
            + pickle.EMPTY_DICT
            + pickle.NEWOBJ_EX
            + pickle.EMPTY_TUPLE
            + pickle.REDUCE
        ),
        "functools.partial",
    )
    add("builtins.eval", pickle.dumps(Call(eval, f"__import__('os').system({shell!r})"), protocol=4), "builtins.eval")
    add("builtins.exec", pickle.dumps(Call(exec, py_write), protocol=3), "builtins.exec")
    add(
        "builtins.compile+exec",
        _then(
            _call4(_stack_global("builtins", "compile"), write_ops, _bin_str("<x>"), _bin_str("exec")),
            _call4(_stack_global("builtins", "exec"), REF0),
        ),
        "builtins.compile",
    )
    add("__builtin__.eval-proto0-compat-name", p0_call("__builtin__", "eval", py_write), "builtins.eval")
    add(
        "getattr(__import__('os'), 'system')",
        chain4(_getattr_call(_call4(_stack_global("builtins", "__import__"), _bin_str("os")), "system", shell_ops)),
        "builtins.getattr",
    )
    add(
        "__builtin__.__import__-compat-then-getattr",
        pickle.PROTO
        + b"\x02"  # names are mapped from Python 2 only below protocol 3
        + _call4(_global0("__builtin__", "__import__"), _bin_str("os"))
        + pickle.MEMOIZE
        + pickle.POP
        + os_system_ref0
        + pickle.STOP,
        "builtins.__import__",
    )
    add(
        "importlib.import_module-then-getattr",
        _then(
            _call4(_stack_global("importlib", "import_module"), _bin_str("os")),
            _getattr_call(REF0, "system", shell_ops),
        ),
        "importlib.import_module",
    )
    add(
        "importlib.import_module-via-reduce-chain",
        pickle.dumps(Call(Call(getattr, Call(importlib.import_module, "os"), "system"), shell), protocol=4),
        "builtins.getattr",
    )
    add("builtins.open-for-write", p2_call("builtins", "open", target, "w"), "builtins.open")
    add("io.open-for-write", pickle.dumps(Call(io.open, target, "w"), protocol=4), f"{io.open.__module__}.open")
    add("_io.FileIO-for-write", p4_call("_io", "FileIO", target, "w"), "_io.FileIO")
    path_ops = _call4(_stack_global("pathlib", "PosixPath"), target_ops)
    add(
        "pathlib.Path.write_text",
        chain4(_call4(_stack_global("pathlib", "Path.write_text"), path_ops, _bin_str("pwned"))),
        "pathlib.Path.write_text",
    )
    add("pathlib.Path.touch", chain4(_call4(_stack_global("pathlib", "Path.touch"), path_ops)), "pathlib.Path.touch")
    add(
        "pathlib._local.Path.write_bytes",
        chain4(_call4(_stack_global("pathlib._local", "Path.write_bytes"), path_ops, _bin_bytes(b"pwned"))),
        "pathlib._local.Path.write_bytes",
    )
    add("functools.partial(os.system)", pickle.dumps(Call(functools.partial(os.system, shell)), 4), "functools.partial")
    add(
        "operator.methodcaller('system')",
        pickle.dumps(Call(operator.methodcaller("system", shell), Call(importlib.import_module, "os")), 4),
        "operator.methodcaller",
    )
    add(
        "operator.attrgetter('system')",
        pickle.dumps(Call(Call(operator.attrgetter("system"), Call(importlib.import_module, "os")), shell), 4),
        "operator.attrgetter",
    )
    add(
        "copyreg._reconstructor-with-Popen-base",
        _global0("copy_reg", "_reconstructor")
        + pickle.MARK
        + _global0("subprocess", "Popen")
        + _global0("subprocess", "Popen")
        + pickle.MARK
        + _p0_str("touch")
        + _p0_str(target)
        + pickle.LIST
        + pickle.TUPLE
        + pickle.REDUCE
        + pickle.STOP,
        "subprocess.Popen",
    )
    add(
        "copyreg.add_extension-then-EXT1",
        chain4(
            _call4(_stack_global("copyreg", "add_extension"), _bin_str("os"), _bin_str("system"), b"K\xf2"),
            pickle.POP,
            b"\x82\xf2",
            pickle.MARK + shell_ops + pickle.TUPLE + pickle.REDUCE,
        ),
        "copyreg.add_extension",
    )
    add("EXT1-registered-os.system", ext1_call(EXTENSION_CODE, shell), "os.system", ("os", "system", EXTENSION_CODE))
    add(
        "types.FunctionType(marshal code)",
        chain4(
            _call4(
                _call4(
                    _stack_global("types", "FunctionType"),
                    _call4(_stack_global("marshal", "loads"), _bin_bytes(marshal.dumps(code))),
                    pickle.EMPTY_DICT,
                )
            )
        ),
        "types.FunctionType",
    )
    add(
        "types.CodeType-then-exec",
        _then(
            _stack_global("types", "CodeType") + _data_ops(_code_args(code)) + pickle.REDUCE,
            _call4(_stack_global("builtins", "exec"), REF0, pickle.EMPTY_DICT),
        ),
        "types.CodeType",
    )
    add(
        "marshal.loads-then-exec",
        _then(
            _call4(_stack_global("marshal", "loads"), _bin_bytes(marshal.dumps(code))),
            _call4(_stack_global("builtins", "exec"), REF0),
        ),
        "marshal.loads",
    )
    add(
        "sys.modules['os'].system",
        _then(
            _call4(_stack_global("_operator", "getitem"), _stack_global("sys", "modules"), _bin_str("os")),
            os_system_ref0,
        ),
        "sys.modules",
    )
    inner = pickle.dumps(Call(os.system, shell), protocol=2)
    add("nested pickle.loads", pickle.dumps(Call(pickle.loads, inner), protocol=4), "_pickle.loads")
    add("nested pickle._loads", chain4(_call4(_stack_global("pickle", "_loads"), _bin_bytes(inner))), "pickle._loads")
    add("shutil.copyfile", pickle.dumps(Call(shutil.copyfile, __file__, target), protocol=4), "shutil.copyfile")
    add(
        "socket.socket-AF_UNIX-bind",
        _then(
            _call4(_stack_global("socket", "socket"), b"K" + bytes([socket.AF_UNIX])),
            _getattr_call(REF0, "bind", target_ops),
        ),
        "socket.socket",
    )
    add(
        "ctypes.CDLL-libc-system",
        _then(
            _call4(_stack_global("ctypes", "CDLL"), _bin_str("libc.so.6")),
            _getattr_call(REF0, "system", _bin_bytes(shell.encode())),
        ),
        "ctypes.CDLL",
    )
    add(
        "timeit.main(code)",
        chain4(_call4(_stack_global("timeit", "main"), _list4(_bin_str("-n"), _bin_str("1"), write_ops))),
        "timeit.main",
    )
    add("cProfile.run(code)", p0_call("cProfile", "run", py_write), "cProfile.run")
    add(
        "runpy._run_code",
        chain4(_call4(_stack_global("runpy", "_run_code"), write_ops, pickle.EMPTY_DICT)),
        "runpy._run_code",
    )
    add("__main__.FactorRDLoop-root-with-os.system", _main_loop_with(Call(os.system, shell)), posix_system)
    add(
        "legit-loop-with-buried-Popen",
        snapshot_bytes(_legit_loop_with(Call(subprocess.Popen, argv))),
        "subprocess.Popen",
    )
    add(
        "legit-signed-loop-with-buried-exec",
        snapshot_bytes(_legit_loop_with(Call(exec, py_write)), signing_key="k")[57:],
        "builtins.exec",
    )
    add("deeply-nested-os.system", pickle.dumps(_nested(Call(os.system, shell), 150), protocol=4), posix_system)
    add(
        "numpy.savetxt",
        chain4(_call4(_stack_global("numpy", "savetxt"), target_ops, _list4(b"K\x01"))),
        "numpy.savetxt",
    )
    add(
        "numpy.testing.runstring",
        chain4(_call4(_stack_global("numpy.testing._private.utils", "runstring"), write_ops, pickle.EMPTY_DICT)),
        "numpy.testing._private.utils.runstring",
    )
    add(
        "numpy.ndarray.tofile-dotted",
        chain4(
            _call4(
                _stack_global("numpy", "ndarray.tofile"),
                _call4(
                    _stack_global("numpy._core.numeric", "_frombuffer"),
                    _bin_bytes(b"x"),
                    _call4(_stack_global("numpy", "dtype"), _bin_str("u1"), pickle.NEWFALSE, pickle.NEWTRUE),
                    pickle.MARK + b"K\x01" + pickle.TUPLE,
                    _bin_str("C"),
                ),
                target_ops,
            )
        ),
        "numpy.ndarray.tofile",
    )
    add(
        "third-party-module-attribute-os.system",
        p4_call("pandas.io.common", "os.system", shell),
        "pandas.io.common.os.system",
    )
    getitem = _stack_global("_operator", "getitem")
    add(
        "dunder-walk-DataFrame.__init__.__globals__",
        chain4(
            _call4(
                _call4(
                    getitem,
                    _call4(
                        getitem,
                        _stack_global("pandas.core.frame", "DataFrame.__init__.__globals__"),
                        _bin_str("__builtins__"),
                    ),
                    _bin_str("exec"),
                ),
                write_ops,
            )
        ),
        "pandas.core.frame.DataFrame.__init__.__globals__",
    )
    add(
        "dunder-walk-into-rd-assets-own-globals",
        _then(
            _call4(
                getitem,
                _stack_global("rd_assets.core.session.file_format", "open_regular.__globals__"),
                _bin_str("os"),
            ),
            os_system_ref0,
        ),
        "rd_assets.core.session.file_format.open_regular.__globals__",
    )
    add("__main__.__builtins__.exec", p4_call("__main__", "__builtins__.exec", py_write), "__main__.__builtins__.exec")
    add("dotted-os.path-module", p4_call("os.path", "os.system", shell), "os.path.os.system")
    add("joblib.dump", p4_call("joblib", "dump", "pwned", target), "joblib.dump")
    add(
        "BUILD-plants-setstate-then-calls",
        chain4(
            _call4(_stack_global("types", "SimpleNamespace")),
            pickle.EMPTY_DICT,
            _bin_str("__setstate__"),
            _stack_global("os", "system"),
            pickle.SETITEM,
            pickle.BUILD,
            shell_ops,
            pickle.BUILD,
        ),
        "os.system",
    )
    return corpus


def _main_loop_with(hostile: Any) -> bytes:
    """A ``__main__.FactorRDLoop`` root (a script-launched rdagent) whose plan hides a real stdlib call."""
    loop = build_loop([ExperimentSpec(factors=[FactorSpec("Mom_10D")])], loop_path=MAIN_FACTOR_LOOP)
    loop.__dict__["plan"] = {"features": hostile}
    return snapshot_bytes(loop, protocol=2)


# ------------------------------------------------------------------------------------------ memory gadgets
# Made only of allow-listed numpy globals; unchecked, numpy would read or write outside its buffers.


def _dtype_ops(typecode: str, state: bytes | None = None) -> bytes:
    """``numpy.dtype(typecode, False, True)``, then ``BUILD(state ops)`` when a state is given."""
    made = _call4(_stack_global("numpy", "dtype"), _bin_str(typecode), pickle.NEWFALSE, pickle.NEWTRUE)
    return made if state is None else made + state + pickle.BUILD


def _forged_flags_dtype() -> bytes:
    """A structured dtype with an object field whose state claims ``flags=0`` (no objects inside)."""
    fields = (
        pickle.EMPTY_DICT
        + _bin_str("a")
        + pickle.MARK
        + _dtype_ops(
            "O", pickle.MARK + b"K\x03" + _bin_str("|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + b"K?" + pickle.TUPLE
        )
        + b"K\x00"
        + pickle.TUPLE
        + pickle.SETITEM
    )
    state = (
        pickle.MARK
        + b"K\x03"
        + _bin_str("|")
        + b"N"
        + pickle.MARK
        + _bin_str("a")
        + pickle.TUPLE
        + fields
        + b"K\x08K\x01K\x00"
        + pickle.TUPLE
    )
    return _dtype_ops("V8", state)


def _frombuffer(dtype_ops: bytes, data: bytes, shape: int) -> bytes:
    return _call4(
        _stack_global("numpy._core.numeric", "_frombuffer"),
        pickle.SHORT_BINBYTES + bytes([len(data)]) + data,
        dtype_ops,
        pickle.MARK + b"K" + bytes([shape]) + pickle.TUPLE,
        _bin_str("C"),
    )


def _short_object_list() -> bytes:
    """``_reconstruct`` + ``BUILD((1, (1000,), dtype('O'), False, [None]))``: numpy reads 999 pointers past the list."""
    return _call4(
        _stack_global("numpy._core.multiarray", "_reconstruct"),
        _stack_global("numpy", "ndarray"),
        pickle.MARK + b"K\x00" + pickle.TUPLE,
        pickle.SHORT_BINBYTES + b"\x01b",
    ) + (
        pickle.MARK
        + b"K\x01"
        + pickle.MARK
        + b"M\xe8\x03"
        + pickle.TUPLE
        + _dtype_ops("O")
        + pickle.NEWFALSE
        + pickle.EMPTY_LIST
        + b"N"
        + pickle.APPEND
        + pickle.TUPLE
        + pickle.BUILD
    )


def _oob_field_offset() -> bytes:
    """A dtype field at offset 100000 of an 8-byte item, then a view of an 8-byte buffer."""
    fields = (
        pickle.EMPTY_DICT
        + _bin_str("a")
        + pickle.MARK
        + _dtype_ops("i8")
        + b"J\xa0\x86\x01\x00"
        + pickle.TUPLE
        + pickle.SETITEM
    )
    state = (
        pickle.MARK
        + b"K\x03"
        + _bin_str("|")
        + b"N"
        + pickle.MARK
        + _bin_str("a")
        + pickle.TUPLE
        + fields
        + b"K\x08K\x01K\x10"
        + pickle.TUPLE
    )
    return _frombuffer(_dtype_ops("V8", state), b"\x41" * 8, 1)


def _strided_ndarray() -> bytes:
    """``numpy.ndarray((10**9,), uint8, b'a', 0, (0,))``: a gigabyte-long view of one byte."""
    return _call4(
        _stack_global("numpy", "ndarray"),
        pickle.MARK + b"J\x00\xca\x9a\x3b" + pickle.TUPLE,
        _dtype_ops("u1"),
        pickle.SHORT_BINBYTES + b"\x01a",
        b"K\x00",
        pickle.MARK + b"K\x00" + pickle.TUPLE,
    )


def _reconstructed(memo: int) -> bytes:
    """An empty plain array from ``_reconstruct``, kept in memo slot ``memo``."""
    made = _call4(
        _stack_global("numpy._core.multiarray", "_reconstruct"),
        _stack_global("numpy", "ndarray"),
        pickle.MARK + b"K\x00" + pickle.TUPLE,
        pickle.SHORT_BINBYTES + b"\x01b",
    )
    return made + pickle.BINPUT + bytes([memo])


def _array_state(count: int, items: bytes | None = None) -> bytes:
    """``(1, (count,), dtype, False, data)``: ``count`` bytes, or an object array of the ``items`` ops."""
    data = pickle.MARK + items + pickle.LIST if items is not None else _bin_bytes(b"A" * count)
    return (
        pickle.MARK
        + b"K\x01"
        + pickle.MARK
        + b"M"
        + struct.pack("<H", count)
        + pickle.TUPLE
        + _dtype_ops("O" if items is not None else "u1")
        + pickle.NEWFALSE
        + data
        + pickle.TUPLE
    )


def _view_of_array(memo: int, typecode: str, count: int) -> bytes:
    """``_frombuffer(READONLY_BUFFER(memo[memo]), dtype(typecode), (count,), 'C')``: a view of an array's block."""
    return _call4(
        _stack_global("numpy._core.numeric", "_frombuffer"),
        pickle.BINGET + bytes([memo]) + pickle.READONLY_BUFFER,
        _dtype_ops(typecode),
        pickle.MARK + b"M" + struct.pack("<H", count) + pickle.TUPLE,
        _bin_str("C"),
    )


def _view_then_rebuild() -> bytes:
    """Use after free: B views A's block, a second ``BUILD`` of A frees that block, B is returned."""
    return (
        _reconstructed(200)
        + _array_state(64)
        + pickle.BUILD
        + _view_of_array(200, "u1", 64)
        + pickle.BINPUT
        + b"\xc9"
        + pickle.POP
        + pickle.BINGET
        + b"\xc8"
        + _array_state(4096)
        + pickle.BUILD
        + pickle.POP
        + pickle.BINGET
        + b"\xc9"
    )


def _object_addresses() -> bytes:
    """``READONLY_BUFFER`` on an object array re-read as ``<u8``: the raw addresses of its items."""
    filled = _reconstructed(200) + _array_state(2, items=b"NN") + pickle.BUILD + pickle.POP
    return filled + _view_of_array(200, "<u8", 2)


def nested_calls(callable_ops: bytes, leaf: bytes, args: bytes, depth: int) -> bytes:
    """``f(...f(leaf)...)`` ``depth`` deep in linear bytes (about 10 per level), built without recursion.

    ``args`` are the argument ops of one call, fetching the value built so far with ``BINGET 1``.
    """
    level = pickle.BINPUT + b"\x01" + pickle.POP + pickle.BINGET + b"\x00" + args + pickle.REDUCE
    return chain4(callable_ops + pickle.BINPUT + b"\x00" + pickle.POP + leaf + level * depth)


_INNER = pickle.BINGET + b"\x01"
NESTING_DEPTH = 200_000
"""Levels of the nesting gadgets: ~2 MB of pickle; freeing them recursively overflows the C stack."""

NESTING_GADGETS: dict[str, bytes] = {
    "nested-deque": nested_calls(
        _stack_global("collections", "deque"),
        pickle.EMPTY_TUPLE,
        pickle.MARK + pickle.MARK + _INNER + pickle.TUPLE + pickle.TUPLE,
        NESTING_DEPTH,
    ),
    "nested-slice": nested_calls(
        _stack_global("builtins", "slice"), b"K\x01", pickle.MARK + _INNER + pickle.TUPLE, NESTING_DEPTH
    ),
    "nested-generic-alias": nested_calls(
        _stack_global("types", "GenericAlias"),
        _stack_global("builtins", "int"),
        pickle.MARK + _stack_global("builtins", "list") + _INNER + pickle.TUPLE,
        NESTING_DEPTH,
    ),
    "nested-subscript": nested_calls(
        _stack_global("_operator", "getitem"),
        _stack_global("builtins", "int"),
        pickle.MARK + _stack_global("builtins", "dict") + _INNER + pickle.TUPLE,
        NESTING_DEPTH,
    ),
}
"""Made only of allow-listed globals; each is either refused or freed without crashing (run in a subprocess)."""


def many_globals(count: int) -> bytes:
    """A list of ``count`` distinct stand-in classes: each distinct global costs a class object."""
    names = b"".join(_stack_global("rdagent.flood", f"C{i}") for i in range(count))
    return chain4(pickle.MARK + names + pickle.LIST)


MEMORY_GADGETS: dict[str, tuple[bytes, str]] = {
    "dtype-forged-object-flags+frombuffer": (
        chain4(_frombuffer(_forged_flags_dtype(), b"\x41" * 8, 1)),
        "numpy._core.numeric._frombuffer",
    ),
    "object-array-with-short-list": (chain4(_short_object_list()), "numpy.ndarray.__setstate__"),
    "dtype-field-offset-out-of-bounds": (chain4(_oob_field_offset()), "numpy.dtype"),
    "ndarray-called-with-zero-strides": (chain4(_strided_ndarray()), "numpy.ndarray"),
    "view-of-array-then-rebuild-frees-it": (chain4(_view_then_rebuild()), "numpy._core.numeric._frombuffer"),
    "object-array-read-as-addresses": (chain4(_object_addresses()), "numpy._core.numeric._frombuffer"),
}
"""name -> (payload, refused global). Only allow-listed globals; run each in a subprocess in case of a crash."""


AMPLIFIERS: dict[str, tuple[bytes, str]] = {
    "list(range(10**10))": (
        chain4(
            _call4(
                _stack_global("builtins", "list"),
                _call4(_stack_global("builtins", "range"), b"\x8a\x05\x00\xe4\x0bT\x02"),
            )
        ),
        "builtins.range",
    ),
    "_reconstruct(ndarray, (1,), '(40000,40000)u1')": (
        chain4(
            _call4(
                _stack_global("numpy._core.multiarray", "_reconstruct"),
                _stack_global("numpy", "ndarray"),
                pickle.MARK + b"K\x01" + pickle.TUPLE,
                _dtype_ops("(40000,40000)u1"),
            )
        ),
        "numpy._core.multiarray._reconstruct",
    ),
    "bytearray(10**10)": (
        chain4(_call4(_stack_global("builtins", "bytearray"), b"\x8a\x05\x00\xe4\x0bT\x02")),
        "builtins.bytearray",
    ),
    "list(bytes(10**10))": (
        chain4(
            _call4(
                _stack_global("builtins", "list"),
                _call4(_stack_global("builtins", "bytes"), b"\x8a\x05\x00\xe4\x0bT\x02"),
            )
        ),
        "builtins.bytes",
    ),
    "_reconstruct(ndarray, (10**9,), 'O')": (
        chain4(
            _call4(
                _stack_global("numpy._core.multiarray", "_reconstruct"),
                _stack_global("numpy", "ndarray"),
                pickle.MARK + b"J\x00\xca\x9a\x3b" + pickle.TUPLE,
                pickle.SHORT_BINBYTES + b"\x01O",
            )
        ),
        "numpy._core.multiarray._reconstruct",
    ),
}
"""A few bytes that would allocate gigabytes through allow-listed constructors; refused before allocating."""


def register_extension(extension: tuple[str, str, int] | None) -> Callable[[], None]:
    """Register ``extension`` in copyreg (as another library in the process might); returns the undo."""
    if extension is None:
        return lambda: None
    copyreg.add_extension(*extension)
    return lambda: copyreg.remove_extension(*extension)
