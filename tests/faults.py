"""Faults tests inject for real: a stalled S3 endpoint, a Redis server that can be killed, a
database connection severed."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from urllib.parse import urlsplit

import psycopg
import redis as redis_lib
from django.db import connection

from tests.live import free_port, wait_for


class HangingEndpoint:
    """Accepts connections and never answers: what a stalled S3 looks like."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.held.append(client)

    def close(self) -> None:
        self.server.close()
        for held in self.held:
            held.close()


class SwitchableProxy:
    """A TCP proxy in front of an S3 endpoint that a test switches between forwarding and
    stalling: while stalled, requests (also on kept-alive connections) are swallowed and never
    answered, which is what an S3 outage looks like to a client with timeouts."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self._forwarding = threading.Event()
        self._forwarding.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self._forwarding.clear()

    def forward(self) -> None:
        self._forwarding.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if data and not self._forwarding.is_set():
                return  # stalled: the request is held unanswered; close() releases it
            if not data:
                break
            if upstream is None:
                upstream = socket.create_connection(self.upstream)
                self.sockets.append(upstream)
                threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
            upstream.sendall(data)
        for sock in (client, upstream):
            if sock is not None:
                sock.close()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
            except OSError:
                break
        target.close()

    def close(self) -> None:
        self.server.close()
        for sock in self.sockets:
            sock.close()


class PrivateRedis:
    """A Redis server of this test's own, so that it can be killed and restarted."""

    def __init__(self, tmp_path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_lib.Redis.from_url(self.url)

        def pings() -> bool:
            try:
                return bool(client.ping())
            except redis_lib.RedisError:
                return False

        wait_for(pings, timeout_s=20, what="the private Redis")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=20)


def sever(backend_pid: int) -> None:
    """What a PostgreSQL restart or a dropped network does to one connection."""
    conf = connection.settings_dict
    with psycopg.connect(
        host=conf["HOST"] or None,
        port=conf["PORT"] or None,
        user=conf["USER"] or None,
        dbname=conf["NAME"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [backend_pid])
