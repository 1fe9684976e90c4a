"""Ports picked by the embedded server are picked again if another process takes one between
picking and binding (a busy shared machine): a hub server's leafnode and monitoring ports
included, while a port the caller named is never changed."""

from __future__ import annotations

import socket
from pathlib import Path

from fades.fabric.server import AUTO_PORT, EmbeddedNats, port_open


def test_a_taken_leafnode_port_is_picked_again(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "n", mqtt=False, leaf_port=AUTO_PORT, monitor_port=AUTO_PORT)
    taken = server.leaf_port
    assert taken
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        server.start(timeout=60)
        try:
            assert server.leaf_port != taken
            assert port_open("127.0.0.1", server.leaf_port or 0)
            assert server.leaf_url == f"nats-leaf://127.0.0.1:{server.leaf_port}"
        finally:
            server.stop()
