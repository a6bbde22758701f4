"""A minimal MQTT 3.1.1 client (CONNECT, PUBLISH QoS 1, DISCONNECT) over a plain socket: what
EMQX's bridge does against NATS's MQTT listener, enough to test its NATS user there without an
MQTT library. Standard library only: the cluster tests run this file's source in a pod."""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH_QOS1, PUBACK, DISCONNECT = 0x10, 0x20, 0x32, 0x40, 0xE0
ACCEPTED = 0


class MqttError(RuntimeError):
    pass


def _length(size: int) -> bytes:
    out = bytearray()
    while True:
        byte, size = size % 128, size // 128
        out.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(out)


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


@dataclass
class MqttClient:
    sock: socket.socket
    return_code: int

    @classmethod
    def connect(cls, port: int, client_id: str, user: str | None = None,
                password: str | None = None, timeout: float = 5.0, *,
                host: str = "127.0.0.1") -> MqttClient:
        """Connect with a clean session; the CONNACK's return code (0: accepted, 4: bad
        user name or password, 5: not authorized) is kept, whatever it is."""
        sock = socket.create_connection((host, port), timeout)
        sock.settimeout(timeout)
        flags = 0x02 | (0x80 if user is not None else 0) | (0x40 if password is not None else 0)
        body = (_text("MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + _text(client_id)
                + (_text(user) if user is not None else b"")
                + (_text(password) if password is not None else b""))
        client = cls(sock, -1)
        client._send(CONNECT, body)
        kind, payload = client._read()
        if kind != CONNACK:
            raise MqttError(f"expected CONNACK, got packet type {kind:#x}")
        client.return_code = payload[1]
        return client

    def publish(self, topic: str, payload: bytes, packet_id: int = 1) -> None:
        """QoS 1: returns once the server acknowledged it (PUBACK). A server may acknowledge a
        publish it then drops (NATS does, for a subject the user may not publish to)."""
        self._send(PUBLISH_QOS1, _text(topic) + struct.pack("!H", packet_id) + payload)
        kind, body = self._read()
        if kind != PUBACK or struct.unpack("!H", body[:2])[0] != packet_id:
            raise MqttError(f"expected PUBACK {packet_id}, got packet type {kind:#x}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(DISCONNECT, b"")
        self.sock.close()

    def _send(self, kind: int, body: bytes) -> None:
        self.sock.sendall(bytes([kind]) + _length(len(body)) + body)

    def _read(self) -> tuple[int, bytes]:
        header = self._exactly(1)
        size, shift = 0, 0
        while True:
            byte = self._exactly(1)[0]
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return header[0] & 0xF0, self._exactly(size)

    def _exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise MqttError("connection closed by the server")
            data += chunk
        return data
