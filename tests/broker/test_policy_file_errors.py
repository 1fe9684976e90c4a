"""A policy.yaml that does not parse is one line naming the file (found in the fresh-clone
trial: PyYAML's message came out over four lines, and a binary file as 'unexpected
UnicodeDecodeError ... a bug in fades')."""

from __future__ import annotations

from pathlib import Path

import pytest

from fades.broker import AccessPolicy
from fades.errors import BrokerError


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"tenants: [\n", "is not valid YAML: while parsing a flow node expected the node"),
        (b"\xff\xfe\x00bad", "is not valid YAML: 'utf-8' codec can't decode byte 0xff"),
    ],
)
def test_a_policy_that_does_not_parse_is_one_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(content)
    with pytest.raises(BrokerError) as err:
        AccessPolicy.from_file(path)
    msg = str(err.value)
    assert msg.startswith(f"access policy {path} ") and expected in msg
    assert "\n" not in msg
    path.write_text("tenants: {me: {locations: [room1], sensor_types: '*'}}\n")
    assert AccessPolicy.from_file(path) is not None  # fixed, it loads
