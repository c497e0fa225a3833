"""Google ADK's LlmAgent, driven by a scripted model, runs its code in a pod through the real kubectl."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest

pytest.importorskip("google.adk", reason="the adk extra is not installed")

from google.adk.agents import LlmAgent
from google.adk.code_executors.code_execution_utils import CodeExecutionInput, File
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import InMemoryRunner
from google.genai import types
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor.frameworks.adk import KubectlCodeExecutor

pytestmark = pytest.mark.integration

Reply = str | Callable[[list[types.Content]], str]


class ScriptedLlm(BaseLlm):
    """Answers each turn with the next canned text, or a function of the conversation so far."""

    replies: list[Any]

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        reply = self.replies.pop(0)
        text = reply(list(llm_request.contents)) if callable(reply) else reply
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))


def last_execution_output(contents: list[types.Content]) -> str:
    for content in reversed(contents):
        for part in content.parts or []:
            if part.code_execution_result is not None:
                return str(part.code_execution_result.output)
            # ADK hands a result to a model as text in its result delimiters.
            if part.text and part.text.startswith("```tool_output\n") and part.text.endswith("\n```"):
                return part.text[len("```tool_output\n") : -len("\n```")]
    raise AssertionError(f"the agent sent no code execution result: {contents}")


def run_agent(agent: LlmAgent, prompt: str) -> tuple[list[Any], InMemoryRunner, str]:
    runner = InMemoryRunner(agent=agent, app_name="kx")

    async def go() -> tuple[list[Any], str]:
        session = await runner.session_service.create_session(app_name="kx", user_id="u")
        events = [
            event
            async for event in runner.run_async(
                user_id="u",
                session_id=session.id,
                new_message=types.Content(role="user", parts=[types.Part(text=prompt)]),
            )
        ]
        return events, session.id

    events, session_id = asyncio.run(go())
    return events, runner, session_id


def test_llm_agent_code_runs_in_the_pod_and_its_files_become_artifacts(
    executor_factory: ExecutorFactory,
) -> None:
    pod = executor_factory()
    host = pod.run("hostname", "bash").stdout.strip()
    code = "```python\nimport socket\nopen('report.txt', 'w').write('made in the pod')\nprint(socket.gethostname())\n```"
    model = ScriptedLlm(
        model="scripted",
        replies=[code, lambda contents: f"Answer: {last_execution_output(contents).strip()}"],
    )
    executor = KubectlCodeExecutor(executor=pod)
    agent = LlmAgent(name="coder", model=model, code_executor=executor)
    events, runner, session_id = run_agent(agent, "Where do you run?")
    final = events[-1].content.parts[0].text
    # ADK's own result text: the pod's stdout, then the file it saved as an artifact.
    assert final.startswith(f"Answer: Code execution result:\n{host}\n")
    assert final.endswith("\nSaved artifacts:\n`report.txt`")
    artifact = asyncio.run(
        runner.artifact_service.load_artifact(
            app_name="kx", user_id="u", session_id=session_id, filename="report.txt"
        )
    )
    assert artifact is not None and artifact.inline_data.data == b"made in the pod"
    assert model.replies == []


def test_stateful_inputs_outputs_errors_and_timeout(cluster: Cluster) -> None:
    before = {p["metadata"]["name"] for p in cluster.pods()}
    executor = KubectlCodeExecutor(
        stateful=True, timeout_seconds=3, executor_options=cluster.executor_kwargs()
    )
    table = File(name="in.csv", content=base64.b64encode(b"a,b\n1,2\n").decode(), mime_type="text/csv")

    def run(code: str, execution_id: str = "s1") -> Any:
        given = CodeExecutionInput(code=code, input_files=[table], execution_id=execution_id)
        return executor.execute_code(None, given)  # type: ignore[arg-type]

    try:
        first = run("rows = open('in.csv').read().splitlines()\nprint(len(rows))")
        assert (first.stdout, first.stderr, first.output_files) == ("2\n", "", [])  # the input is no output
        second = run(
            "import os\nos.makedirs('out', exist_ok=True)\n"
            "open('out/sum.json', 'w').write(str(sum(map(int, rows[1].split(',')))))"
        )
        assert [(f.name, f.content, f.mime_type) for f in second.output_files] == [
            ("out/sum.json", b"3", "application/json")
        ]
        assert run("print(len(rows))").output_files == []  # nothing changed: nothing sent again
        # The executor's own list of the block's changes: a changed input and a subdirectory's
        # new file (by content, not by clock), each once.
        changed = run("open('in.csv', 'a').write('3,4\\n')\nopen('out/sum.json', 'w').write('7')")
        assert [(f.name, f.content) for f in changed.output_files] == [
            ("in.csv", b"a,b\n1,2\n3,4\n"),
            ("out/sum.json", b"7"),
        ]
        during = {p["metadata"]["name"] for p in cluster.pods()} - before
        other = run("print('rows' in globals())", execution_id="s2")  # another ADK session, another pod
        assert other.stdout == "False\n"
        assert len({p["metadata"]["name"] for p in cluster.pods()} - before - during) == 1
        failed = run("raise ValueError('bad')")
        assert failed.exit_code == 1 and "ValueError: bad" in failed.stderr
        slow = run("import time\nprint('started', flush=True)\ntime.sleep(30)")
        assert "started" in slow.stdout and slow.stderr.endswith("Code execution timed out after 3 seconds.")
    finally:
        executor.close()
    assert {p["metadata"]["name"] for p in cluster.pods()} == before
