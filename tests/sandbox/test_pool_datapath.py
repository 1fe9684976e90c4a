"""The Python data path: the input file is overwritten in place and cut to each task's blob,
and the guest reads it whole (fades.sandbox.base.write_input, guest app._read_input)."""

from __future__ import annotations

import os
import textwrap

import numpy as np

from fades.broker.base import CATEGORICAL, Dataset
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.sandbox import Limits, PythonSandbox
from fades.sandbox.base import write_input
from fades.sandbox.wire import encode

SIZE = """
import os
def main(data, params):
    return {"file": os.stat("/input/data.fds").st_size, "n": len(data["d"]),
            "last": data["d"].values[-1]}
"""


def _blob(n: int) -> bytearray:
    ds = Dataset(
        ts=np.arange(n, dtype=np.float64),
        value=np.arange(n, dtype=np.float64) * 2,
        codes={c: np.zeros(n, np.uint16) for c in CATEGORICAL},
        labels={c: ["x"] for c in CATEGORICAL},
        units={"x": "C"},
    )
    return encode({"d": ds})


def test_write_input_overwrites_in_place_and_cuts_the_tail(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "data.fds")
    write_input(path, b"x" * 10_000)
    inode = os.stat(path).st_ino
    write_input(path, b"abc")
    with open(path, "rb") as f:
        assert f.read() == b"abc"
    assert os.stat(path).st_ino == inode  # the same file: its pages are reused


def test_a_small_input_after_a_large_one_is_read_exactly(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    sb = PythonSandbox(runtime_artifact)
    art = create("python", "size", textwrap.dedent(SIZE).lstrip().encode(), key=signing_key)
    big, small = _blob(200_000), _blob(10)
    assert sb.run(art, big, Limits(64)).value == {
        "file": len(big), "n": 200_000, "last": 399_998.0,
    }  # fmt: skip
    assert sb._dirs  # the input directory is kept for the next instance
    # the next instance gets the kept directory: the old, larger input is gone (a small
    # input travels inside the call, and the file is cut to nothing)
    assert sb.run(art, small, Limits(64)).value == {"file": 0, "n": 10, "last": 18.0}
    assert sb.run(art, big, Limits(64)).value["file"] == len(big)


def test_a_worker_hands_small_inputs_inline_and_never_shows_an_earlier_input(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    """A small input travels inside the worker's request and the guest's call; the file an
    earlier, larger input was written to (the worker's scratch) is cut to nothing first."""
    from fades.sandbox import HostLimits
    from fades.sandbox.procs import INLINE_MAX_BYTES, WorkerPool

    art = create("python", "size", textwrap.dedent(SIZE).lstrip().encode(), key=signing_key)
    big, small = _blob(200_000), _blob(10)
    assert len(big) > INLINE_MAX_BYTES >= len(small)
    pool = WorkerPool(1, HostLimits())
    try:
        assert pool.run(art, runtime_artifact, big, Limits(64)).value["file"] == len(big)
        assert pool.run(art, runtime_artifact, small, Limits(64)).value == {
            "file": 0, "n": 10, "last": 18.0,
        }  # fmt: skip
    finally:
        pool.close()
