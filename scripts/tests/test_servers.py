"""The loopback ports the test servers and the drill listen on."""

from __future__ import annotations

import socket
from pathlib import Path

from iot_tools.servers import free_port


def _ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_free_ports_never_come_from_the_range_outgoing_connections_use():
    """A port from the ephemeral range can become the source port of some connection
    between being chosen and being listened on (CI saw route_delivery's health port taken
    that way: exit 3 on every restart)."""
    ephemeral = _ephemeral_range()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        target = listener.getsockname()
        clients = [socket.create_connection(target) for _ in range(50)]
        try:
            source_ports = {client.getsockname()[1] for client in clients}
            handed_out = [free_port() for _ in range(200)]
        finally:
            for client in clients:
                client.close()
    assert all(port not in ephemeral for port in handed_out)
    assert source_ports.isdisjoint(handed_out)


def test_free_port_never_hands_out_the_same_port_twice():
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_a_free_port_can_be_listened_on():
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        pass
