"""A man in the middle between kubectl and the emulator, for faults the emulator cannot make itself.

* TLS termination with a throw-away self-signed certificate (``make_certificate``): kubectl talks
  https to 127.0.0.1 and the proxy forwards plain http to the emulator. Shows TLS verification
  on by default, a CA bundle accepted, and the explicit opt-out.
* ``truncate_exec_stdout``: on the next exec, stdout is cut where the completion marker starts while
  the exit status still says Success, so kubectl exits 0 with truncated output (what
  kubernetes/kubernetes#124571 describes). The exec WebSocket is parsed frame by frame; frames
  from the server are unmasked, so they can be rewritten in place.

Test infrastructure only, bound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import subprocess
import threading
from pathlib import Path


def make_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for ``host``; returns (cert.pem, key.pem)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={host}",
            "-addext", f"subjectAltName=IP:{host}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class Proxy:
    """TCP proxy on 127.0.0.1 to ``upstream`` (host, port), optionally terminating TLS."""

    def __init__(self, upstream: tuple[str, int], *, certificate: tuple[Path, Path] | None = None) -> None:
        self.upstream = upstream
        self._tls: ssl.SSLContext | None = None
        if certificate is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(str(certificate[0]), str(certificate[1]))
            self._tls.set_alpn_protocols(["http/1.1"])  # the emulator speaks HTTP/1.1 only
        self.port = 0
        self.connections = 0  # accepted connections (after a successful TLS handshake)
        self.forwarded = 0  # connections that got as far as an HTTP request
        self.truncated = 0  # execs whose stdout was cut
        self._truncate_next = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()  # every open socket, closed before the loop

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def truncate_exec_stdout(self, count: int = 1) -> None:
        """Cut stdout at the completion marker for the next ``count`` execs."""
        with self._lock:
            self._truncate_next += count

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Proxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._tls)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            loop.run_until_complete(serve())
            loop.run_forever()
            # A connection accepted after stop() took its snapshot of the tasks is still pending:
            # finish it and close every socket here, or the garbage collector meets an open
            # transport on a closed loop and warns in some later test.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            for writer in list(self._writers):
                writer.transport.abort()
            loop.run_until_complete(asyncio.sleep(0))  # let the abort callbacks run
            loop.close()

        self._thread = threading.Thread(target=run, name="kx-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None or self._thread is None:
            return

        async def close() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # their finally closes the sockets
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the pipe -----------------------------------------------------------------------------

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        writers = [client_w]
        self._writers.add(client_w)
        try:
            await self._serve(client_r, client_w, writers)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ssl.SSLError,
            OSError,
        ):
            pass
        finally:
            for w in writers:
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
                self._writers.discard(w)

    async def _serve(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        writers: list[asyncio.StreamWriter],
    ) -> None:
        head = await client_r.readuntil(b"\r\n\r\n")
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        writers.append(up_w)
        self._writers.add(up_w)
        with self._lock:
            self.forwarded += 1
            truncate = b"/exec?" in head.split(b"\r\n", 1)[0] and self._truncate_next > 0
            if truncate:
                self._truncate_next -= 1
        up_w.write(head)
        downstream = self._exec_frames(up_r, client_w) if truncate else _pipe(up_r, client_w)
        await asyncio.gather(_pipe(client_r, up_w), downstream, return_exceptions=True)

    async def _exec_frames(self, up_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        """Forward the 101 response, then WebSocket frames with stdout cut at the marker."""
        head = await up_r.readuntil(b"\r\n\r\n")
        client_w.write(head)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            await _pipe(up_r, client_w)
            return
        cutting = False
        while True:
            try:
                b0, b1 = await up_r.readexactly(2)
                length = b1 & 0x7F
                if length == 126:
                    length = struct.unpack(">H", await up_r.readexactly(2))[0]
                elif length == 127:
                    length = struct.unpack(">Q", await up_r.readexactly(8))[0]
                payload = await up_r.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            opcode = b0 & 0x0F
            if opcode == 2 and payload[:1] == b"\x01":  # binary frame on the stdout channel
                if cutting:
                    continue
                at = payload.find(b"\n__KX_EXIT_")
                if at != -1:
                    cutting = True
                    with self._lock:
                        self.truncated += 1
                    payload = payload[:at]
            client_w.write(_frame(b0, payload))
            await client_w.drain()


def _frame(b0: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes([b0, n])
    elif n < 1 << 16:
        header = bytes([b0, 126]) + struct.pack(">H", n)
    else:
        header = bytes([b0, 127]) + struct.pack(">Q", n)
    return header + payload


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
