"""The OpenAI Agents SDK's SandboxAgent, driven by a scripted model, works in a pod through the real kubectl."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents.sandbox", reason="the openai-agents extra is not installed")

from agents import RunConfig, Runner
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.run_config import SandboxRunConfig
from agents.sandbox import SandboxAgent
from agents.sandbox.errors import ExecTimeoutError, WorkspaceReadNotFoundError
from agents.usage import Usage
from kx_cluster import Cluster
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from kubectl_executor.frameworks.openai_agents import (
    KubectlSandboxClient,
    KubectlSandboxClientOptions,
    KubectlSandboxState,
)

pytestmark = pytest.mark.integration

Reply = Callable[[Any], list[Any]]


def tool_call(name: str, **args: Any) -> Reply:
    return lambda _: [
        ResponseFunctionToolCall(
            type="function_call", name=name, arguments=json.dumps(args), call_id=f"c-{name}", id=f"fc-{name}"
        )
    ]


def message(text: Callable[[Any], str]) -> Reply:
    return lambda given: [
        ResponseOutputMessage(
            id="m1",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text(given), annotations=[])],
        )
    ]


class ScriptedModel(Model):
    """Answers each turn with the next scripted output, built from what the agent sent so far."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        return ModelResponse(output=self.replies.pop(0)(input), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


def last_tool_output(given: Any) -> str:
    outputs = [
        item for item in given if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]
    return str(outputs[-1]["output"])


def options(cluster: Cluster) -> KubectlSandboxClientOptions:
    kwargs = cluster.executor_kwargs()
    return KubectlSandboxClientOptions(
        image=kwargs["image"],
        namespace=kwargs["namespace"],
        context=kwargs["context"],
        kubeconfig=kwargs["kubeconfig"],
        kubectl=kwargs["kubectl"],
    )


def pods(cluster: Cluster) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods()}


def test_sandbox_agent_runs_its_shell_in_a_pod(cluster: Cluster) -> None:
    before = pods(cluster)
    model = ScriptedModel(
        [
            tool_call("exec_command", cmd="hostname; pwd; echo from-the-pod > made.txt; cat made.txt"),
            message(lambda given: f"The pod said: {last_tool_output(given)}"),
        ]
    )
    client = KubectlSandboxClient()

    async def go() -> tuple[str, str]:
        session = await client.create(options=options(cluster))
        try:
            agent = SandboxAgent(name="k", model=model, instructions="Use the shell.")
            config = RunConfig(sandbox=SandboxRunConfig(session=session))
            result = await Runner.run(agent, "Where do you run?", run_config=config)
            host = (await session.exec("hostname", shell=False)).stdout.decode().strip()
            return str(result.final_output), host
        finally:
            await client.delete(session)

    answer, host = asyncio.run(go())
    assert answer.startswith("The pod said: ") and f"{host}\n/workspace\nfrom-the-pod" in answer
    assert model.replies == [] and pods(cluster) == before


def test_client_files_timeout_resume_and_delete(cluster: Cluster, tmp_path: Path) -> None:
    before = pods(cluster)
    client = KubectlSandboxClient()

    async def go() -> None:
        session = await client.create(options=options(cluster))
        state = session.state
        assert isinstance(state, KubectlSandboxState) and state.pod_name in pods(cluster)
        await session.write(Path("/workspace/dir/a.bin"), io.BytesIO(b"\x00\x01"))
        assert (await session.read(Path("/workspace/dir/a.bin"))).read() == b"\x00\x01"
        with pytest.raises(WorkspaceReadNotFoundError):
            await session.read(Path("/workspace/missing"))
        with pytest.raises(ExecTimeoutError):
            await session.exec("sleep 30", timeout=2)
        failed = await session.exec("echo out; echo err >&2; exit 4")
        assert (failed.stdout, failed.stderr, failed.exit_code) == (b"out\n", b"err\n", 4)
        archive = await session.persist_workspace()
        # Resume by the serialised state (as a later process would): the same pod, its files.
        restored = client.deserialize_session_state(json.loads(state.model_dump_json()))
        again = await client.resume(restored)
        assert (await again.read(Path("dir/a.bin"))).read() == b"\x00\x01"
        await again.hydrate_workspace(io.BytesIO(archive.read()))
        assert (await again.exec("cat dir/a.bin | od -An -tx1")).stdout.split() == [b"00", b"01"]
        await client.delete(again)
        assert state.pod_name not in pods(cluster)

    asyncio.run(go())
    assert pods(cluster) == before
