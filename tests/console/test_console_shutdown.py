"""An open console page does not hold the controller up when it stops: its live feed ends,
and the controller exits by itself (the HTTP server waits for open responses)."""

from __future__ import annotations

from pathlib import Path

from tests.stopping import assert_stops_with_stream_open


def test_the_controller_stops_promptly_with_a_console_feed_open(tmp_path: Path) -> None:
    assert_stops_with_stream_open(
        tmp_path, "/console/events", b"event: fleet", cookie="fades_console", what="a console feed"
    )
