"""An open result stream (``GET /v1/results/stream``) does not hold the controller up when
it stops: the stream ends and the controller exits by itself."""

from __future__ import annotations

from pathlib import Path

from tests.stopping import assert_stops_with_stream_open


def test_the_controller_stops_promptly_with_a_result_stream_open(tmp_path: Path) -> None:
    assert_stops_with_stream_open(
        tmp_path, "/v1/results/stream", b"event: open", what="a result stream"
    )
