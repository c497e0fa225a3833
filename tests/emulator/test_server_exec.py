"""pods/exec through the real kubectl (WebSocket v5) and a raw client (v4/v5 framing)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import signal
import subprocess
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from emu_helpers import Kubectl, pod_manifest, start_pod, wait_for
from kube_emulator import Emulator


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_codes(kubectl: Kubectl, running_pod: str, code: int) -> None:
    res = kubectl.run("exec", running_pod, "--", "sh", "-c", f"echo out; exit {code}")
    assert res.returncode == code
    assert res.stdout == b"out\n"
    if code:
        assert f"command terminated with exit code {code}".encode() in res.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_signal_gives_128_plus_n(kubectl: Kubectl, running_pod: str, sig: int) -> None:
    res = kubectl.run("exec", running_pod, "--", "sh", "-c", f"kill -{int(sig)} $$")
    assert res.returncode == 128 + sig


def test_stdin_until_eof_and_stderr_apart(kubectl: Kubectl, running_pod: str) -> None:
    data = os.urandom(300_000)
    res = kubectl.run("exec", "-i", running_pod, "--", "cat", input=data)
    assert res.returncode == 0
    assert res.stdout == data
    res = kubectl.run("exec", running_pod, "--", "sh", "-c", "echo to-out; echo to-err >&2")
    assert (res.stdout, res.stderr) == (b"to-out\n", b"to-err\n")


def test_missing_command_and_unknown_targets(kubectl: Kubectl, running_pod: str) -> None:
    res = kubectl.run("exec", running_pod, "--", "no-such-binary")
    assert res.returncode in (126, 127)
    res = kubectl.run("exec", running_pod, "-c", "nope", "--", "true")
    assert res.returncode == 1
    if kubectl.version == "1.32":  # from the server (1.37 checks the pod's containers itself)
        assert b'Error from server (NotFound): container not found ("nope")' in res.stderr
    else:
        assert b"container nope is not valid for pod box" in res.stderr
    res = kubectl.run("exec", "ghost", "--", "true")
    assert res.returncode == 1 and b'pods "ghost" not found' in res.stderr


def test_exec_into_pod_that_never_started(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    emulator.create(pod_manifest("stuck", "fail/errimagepull"), namespace=ns)
    wait_for(lambda: _waiting_reason(emulator, ns, "stuck") == "ErrImagePull")
    res = kubectl132.run("exec", "stuck", "--", "true")
    assert res.returncode == 1
    assert b'Error from server (NotFound): container not found ("main")' in res.stderr


def _waiting_reason(emu: Emulator, ns: str, name: str) -> str | None:
    pod = emu.get("pods", name, ns) or {}
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        return (cs["state"].get("waiting") or {}).get("reason")
    return None


def test_cp_both_ways_binary(kubectl: Kubectl, running_pod: str, tmp_path: Path) -> None:
    payload = os.urandom(1_000_000) + bytes(range(256))
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    kubectl.ok("cp", str(src), f"{running_pod}:/workspace/blob.bin")
    remote = kubectl.ok("exec", running_pod, "--", "sha256sum", "/workspace/blob.bin")
    assert remote.split()[0] == hashlib.sha256(payload).hexdigest()
    back = tmp_path / "back.bin"
    kubectl.ok("cp", f"{running_pod}:/workspace/blob.bin", str(back))
    assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_state_persists_between_execs(kubectl132: Kubectl, running_pod: str, emulator: Emulator) -> None:
    kubectl132.ok("exec", running_pod, "--", "sh", "-c", "echo kept > /tmp/f; echo w > /workspace/w")
    assert kubectl132.ok("exec", running_pod, "--", "cat", "/tmp/f", "/workspace/w") == "kept\nw\n"
    # a background process outlives its exec, as in a container
    kubectl132.ok("exec", running_pod, "--", "sh", "-c", "nohup sleep 123 >/dev/null 2>&1 </dev/null &")
    assert "sleep 123" in kubectl132.ok("exec", running_pod, "--", "ps", "-eo", "args")
    assert kubectl132.ok("exec", running_pod, "--", "hostname").strip() == running_pod


def _cmdlines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode().strip())
        except OSError:
            continue
    return out


def test_client_disconnect_kills_the_exec(kubectl: Kubectl, running_pod: str, emulator: Emulator) -> None:
    ns = kubectl.namespace
    proc = kubectl.popen(
        "exec", running_pod, "--", "sleep", "271", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: "sleep 271" in _cmdlines(emulator.pod_pids(ns, running_pod)),
            what="the exec'd sleep to run",
        )
    finally:
        proc.kill()
        proc.wait()
    wait_for(
        lambda: "sleep 271" not in _cmdlines(emulator.pod_pids(ns, running_pod)),
        timeout=5,
        what="the abandoned exec to be killed",
    )


def test_twenty_concurrent_execs(kubectl: Kubectl, running_pod: str) -> None:
    def one(i: int) -> tuple[int, bytes]:
        res = kubectl.run("exec", running_pod, "--", "sh", "-c", f"echo {i}; exit {i % 4}")
        return res.returncode, res.stdout

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert results == [(i % 4, f"{i}\n".encode()) for i in range(20)]


def test_delete_pod_kills_everything(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    start_pod(emulator, ns, "doomed")
    kubectl132.ok("exec", "doomed", "--", "sh", "-c", "nohup sleep 300 >/dev/null 2>&1 &")
    assert any("sleep 300" in c for c in _cmdlines(emulator.pod_pids(ns, "doomed")))
    kubectl132.ok("delete", "pod", "doomed")
    assert emulator.pod_pids(ns, "doomed") == []
    assert kubectl132.run("get", "pod", "doomed").returncode != 0


# -- raw WebSocket client -----------------------------------------------------------------------


async def _raw_exec(
    emu: Emulator,
    ns: str,
    pod: str,
    argv: list[str],
    protocol: str,
    stdin: bytes | None = None,
    close_stdin: bool = True,
) -> tuple[bytes, bytes, dict[str, Any] | None, str]:
    query = [("command", a) for a in argv] + [("stdout", "true"), ("stderr", "true")]
    if stdin is not None:
        query.append(("stdin", "true"))
    url = f"{emu.url}/api/v1/namespaces/{ns}/pods/{pod}/exec"
    out, err, status = b"", b"", None
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, params=query, protocols=(protocol,)) as ws,
    ):
        chosen = ws.protocol or ""
        if stdin is not None:
            await ws.send_bytes(b"\x00" + stdin)
            if close_stdin:
                await ws.send_bytes(b"\xff\x00")
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            ch, data = msg.data[0], msg.data[1:]
            if ch == 1:
                out += data
            elif ch == 2:
                err += data
            elif ch == 3:
                status = json.loads(data)
    return out, err, status, chosen


@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.channel.k8s.io"])
def test_raw_protocol_frames(emulator: Emulator, ns: str, running_pod: str, protocol: str) -> None:
    out, err, status, chosen = asyncio.run(
        _raw_exec(emulator, ns, running_pod, ["sh", "-c", "echo o; echo e >&2; exit 7"], protocol)
    )
    assert chosen == protocol
    assert (out, err) == (b"o\n", b"e\n")
    assert status is not None and status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "7"}
    _, _, ok, _ = asyncio.run(_raw_exec(emulator, ns, running_pod, ["true"], protocol))
    assert ok == {"metadata": {}, "status": "Success"}


def test_v5_stdin_close_signal(emulator: Emulator, ns: str, running_pod: str) -> None:
    out, _, status, _ = asyncio.run(
        _raw_exec(emulator, ns, running_pod, ["wc", "-c"], "v5.channel.k8s.io", stdin=b"x" * 1000)
    )
    assert out.strip() == b"1000" and status == {"metadata": {}, "status": "Success"}


def test_server_side_exec_cost(emulator: Emulator, ns: str, running_pod: str) -> None:
    """The server's part of an exec (upgrade, nsenter, pumps, status, close) stays a few ms, so
    a `kubectl exec` is dominated by kubectl's own start-up."""

    async def many(n: int) -> float:
        await _raw_exec(emulator, ns, running_pod, ["true"], "v5.channel.k8s.io")  # warm-up
        t0 = time.perf_counter()
        for _ in range(n):
            await _raw_exec(emulator, ns, running_pod, ["true"], "v5.channel.k8s.io")
        return (time.perf_counter() - t0) / n

    per_exec = asyncio.run(many(20))
    print(f"server-side exec round trip: {per_exec * 1000:.1f} ms")
    assert per_exec < 0.1


def test_pod_start_latency(emulator: Emulator, ns: str) -> None:
    t0 = time.perf_counter()
    start_pod(emulator, ns, "quick")
    elapsed = time.perf_counter() - t0
    print(f"pod create -> Running: {elapsed * 1000:.1f} ms")
    assert elapsed < 0.2 + emulator.start_delay


def test_python_kubernetes_client_exec(emulator: Emulator, ns: str, running_pod: str, tmp_path: Path) -> None:
    k8s = pytest.importorskip("kubernetes")
    from kubernetes.stream import stream

    cfg = emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns)
    api = k8s.client.CoreV1Api(k8s.config.new_client_from_config(str(cfg)))
    resp = stream(
        api.connect_get_namespaced_pod_exec,
        running_pod,
        ns,
        command=["sh", "-c", "echo hi; exit 5"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _preload_content=False,
    )
    try:
        resp.run_forever(timeout=10)
        assert resp.read_stdout() == "hi\n"
        assert resp.returncode == 5  # read from the status frame's first cause
    finally:
        resp.close()
        api.api_client.close()
        with warnings.catch_warnings():  # the client library leaves a socket to the gc
            warnings.simplefilter("ignore", ResourceWarning)
            del resp, api
            gc.collect()
