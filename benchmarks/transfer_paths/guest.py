"""Guest of the transfer-path experiment (componentize-py; runs inside the sandbox only).

Each mode reads ``n`` bytes of the host's data one way and times itself; see
``benchmarks/transfer_paths.py``.
"""

import json
import time

import wit_world
from wit_world.imports import preopens, stdin, types

_clock = time.perf_counter


def _input_file() -> "types.Descriptor":
    root = next(d for d, name in preopens.get_directories() if name == "/input")
    flags = types.DescriptorFlags.READ
    return root.open_at(types.PathFlags(0), "data.fds", types.OpenFlags(0), flags)


def _drain(read, n):
    """Call ``read(remaining, pos)`` until ``n`` bytes came; (seconds, calls, first chunk)."""
    t0 = _clock()
    parts, pos = [], 0
    while pos < n:
        chunk = read(n - pos, pos)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
    data = b"".join(parts) if len(parts) > 1 else parts[0]
    seconds = _clock() - t0
    return seconds, len(parts), len(parts[0]), len(data)


def _file(n):
    t0 = _clock()
    with open("/input/data.fds", "rb", buffering=65536) as f:  # the runtime's ColumnReader
        data = f.read(n)
    return _clock() - t0, -1, -1, len(data)


def _descriptor_read(n):
    f = _input_file()
    return _drain(lambda want, pos: f.read(want, pos)[0], n)


def _stream_read(n):
    s = _input_file().read_via_stream(0)
    return _drain(lambda want, pos: s.blocking_read(want), n)


def _stdin_stream(n):
    s = stdin.get_stdin()
    return _drain(lambda want, pos: s.blocking_read(want), n)


def _stdin_fd(n, chunk=0):
    t0 = _clock()
    buf = bytearray(n)
    view, pos, calls = memoryview(buf), 0, 0
    with open(0, "rb", buffering=0, closefd=False) as f:
        while pos < n:
            k = f.readinto(view[pos : pos + chunk] if chunk else view[pos:])
            if not k:
                break
            pos, calls = pos + k, calls + 1
    return _clock() - t0, calls, -1, pos


def _stdin_fd_1mib(n):
    return _stdin_fd(n, 1 << 20)


def _host_string(n):
    t0 = _clock()
    s = wit_world.host_string(n)
    return _clock() - t0, 1, len(s), len(s)


def _host_bytes(n):
    t0 = _clock()
    b = wit_world.host_bytes(n)
    return _clock() - t0, 1, len(b), len(b)


def _call_cost(n):
    f = _input_file()
    t0 = _clock()
    for i in range(n):
        f.read(1, i)
    return _clock() - t0, n, 1, n


MODES = {
    "file": _file,
    "descriptor_read": _descriptor_read,
    "stream_read": _stream_read,
    "stdin_stream": _stdin_stream,
    "stdin_fd": _stdin_fd,
    "stdin_fd_1mib": _stdin_fd_1mib,
    "host_string": _host_string,
    "host_bytes": _host_bytes,
    "call_cost": _call_cost,
}


class WitWorld(wit_world.WitWorld):
    def run(self, n: int, mode: str) -> str:
        seconds, calls, first, got = MODES[mode](n)
        return json.dumps({"seconds": seconds, "calls": calls, "first": first, "bytes": got})
