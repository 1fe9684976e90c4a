"""Node limits: defaults, the node folder's limits file, FADES_LIMIT_* variables, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fades.errors import OrchestratorError
from fades.node.limits import NodeLimits


def test_defaults_hold_without_a_file_or_variables(tmp_path: Path) -> None:
    lim = NodeLimits.load(tmp_path, env={})
    assert lim == NodeLimits()
    assert (lim.max_data_ops, lim.max_rows, lim.max_input_bytes, lim.retrieval_seconds) == (
        32,
        5_000_000,
        256 * 2**20,
        30.0,
    )


def test_the_limits_file_sets_and_the_environment_overrides(tmp_path: Path) -> None:
    (tmp_path / "limits.yaml").write_text("max_rows: 1000\nretrieval_seconds: 2.5\n")
    lim = NodeLimits.load(tmp_path, env={})
    assert lim.max_rows == 1000 and lim.retrieval_seconds == 2.5 and lim.max_data_ops == 32
    lim = NodeLimits.load(tmp_path, env={"FADES_LIMIT_MAX_ROWS": "50", "OTHER": "x"})
    assert lim.max_rows == 50 and lim.retrieval_seconds == 2.5


def test_a_json_limits_file_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "limits.json").write_text('{"max_data_ops": 3}')
    assert NodeLimits.load(tmp_path, env={}).max_data_ops == 3


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("max_rowz: 5\n", {}, "unknown limit(s) max_rowz"),
        ("max_rows: -1\n", {}, "max_rows must be an integer from 1"),
        ("max_rows: 1.5\n", {}, "max_rows must be an integer"),
        ("max_rows: [1]\n", {}, "max_rows must be an integer"),
        ("retrieval_seconds: .inf\n", {}, "retrieval_seconds must be a finite number"),
        ("retrieval_seconds: 0\n", {}, "retrieval_seconds must be in (0, 86400]"),
        ("- 1\n", {}, "expected a mapping"),
        ("a: [\n", {}, "not valid YAML/JSON"),
        ("", {"FADES_LIMIT_MAX_DATA_OPS": "many"}, "max_data_ops must be an integer"),
        ("", {"FADES_LIMIT_RETRIEVAL_SECONDS": "nan"}, "finite number"),
    ],
)
def test_a_bad_limit_is_a_clear_error(
    tmp_path: Path, content: str, env: dict[str, str], message: str
) -> None:
    (tmp_path / "limits.yaml").write_text(content)
    with pytest.raises(OrchestratorError) as err:
        NodeLimits.load(tmp_path, env=env)
    assert message in str(err.value)


def test_a_task_input_is_capped_by_its_function_memory() -> None:
    lim = NodeLimits(max_input_bytes=100 * 2**20)
    small = lim.fetch_limits(memory_mib=64)
    assert small.max_bytes == 64 * 2**20 and small.bytes_limit == "memory_mib"
    big = lim.fetch_limits(memory_mib=1024)
    assert big.max_bytes == 100 * 2**20 and big.bytes_limit == "max_input_bytes"
    assert lim.fetch_limits().max_ops == 32
