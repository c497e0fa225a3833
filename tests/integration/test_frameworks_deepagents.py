"""LangChain DeepAgents, driven by a scripted chat model, works in a pod through the real kubectl."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from pydantic import Field

pytest.importorskip("deepagents", reason="the deepagents extra is not installed")

from deepagents import create_deep_agent
from kx_cluster import Cluster, ExecutorFactory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from kubectl_executor.frameworks.deepagents import KubectlSandbox

pytestmark = pytest.mark.integration

Reply = AIMessage | Callable[[list[BaseMessage]], AIMessage]


class ScriptedChatModel(GenericFakeChatModel):
    """Each turn: the next reply, or a function of what the agent sent (so the answer can use it)."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def scripted(replies: list[Reply]) -> ScriptedChatModel:
    model = ScriptedChatModel(messages=iter([]), seen=[])

    def turns() -> Iterator[AIMessage]:
        for reply in replies:
            yield reply(model.seen[-1]) if callable(reply) else reply

    model.messages = turns()
    return model


def call(name: str, **args: Any) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": f"call-{name}", "type": "tool_call"}]
    )


def last_tool_output(messages: list[BaseMessage]) -> str:
    return str(next(m.content for m in reversed(messages) if isinstance(m, ToolMessage)))


def test_deep_agent_writes_runs_and_reads_in_the_pod(executor_factory: ExecutorFactory) -> None:
    pod = executor_factory(session=True)
    pod.upload_file_content("data/input.txt", "seven\n")
    host = pod.run("hostname", "bash").stdout.strip()
    model = scripted(
        [
            call("write_file", file_path="/workspace/note.txt", content="from-the-agent\n"),
            call("execute", command="cat note.txt data/input.txt; hostname; echo oops >&2; exit 3"),
            lambda seen: AIMessage(content=f"The pod said: {last_tool_output(seen)}"),
        ]
    )
    agent = create_deep_agent(model=model, backend=KubectlSandbox(executor=pod))
    state = agent.invoke({"messages": [{"role": "user", "content": "What is in the pod?"}]})
    answer = state["messages"][-1].content
    # deepagents' execute tool reports the exit status; the answer quotes the pod's own output.
    assert answer == f"The pod said: from-the-agent\nseven\n{host}\noops\n\n[Command failed with exit code 3]"
    assert pod.run("cat note.txt", "bash").stdout == "from-the-agent\n"


def test_files_timeout_and_per_file_errors(cluster: Cluster) -> None:
    with KubectlSandbox(**cluster.executor_kwargs()) as sandbox:
        name = sandbox.id
        assert name in {p["metadata"]["name"] for p in cluster.pods()}
        up = sandbox.upload_files([("/workspace/a/b.bin", b"\x00\xff"), ("rel.txt", b"r"), ("/etc/x", b"no")])
        assert [u.error for u in up] == [None, None, "permission_denied"]
        down = sandbox.download_files(
            ["/workspace/a/b.bin", "rel.txt", "/workspace/missing", "/workspace/a", "/etc/passwd"]
        )
        assert [(d.content, d.error) for d in down] == [
            (b"\x00\xff", None),
            (b"r", None),
            (None, "file_not_found"),
            (None, "is_directory"),
            (None, "permission_denied"),
        ]
        slow = sandbox.execute("echo started; sleep 30", timeout=2)
        assert slow.exit_code == 124 and "started" in slow.output and "timed out after 2 s" in slow.output
        listed = sandbox.ls("/workspace/a")
        assert [entry["path"] for entry in listed.entries or []] == ["/workspace/a/b.bin"]
    assert name not in {p["metadata"]["name"] for p in cluster.pods()}
