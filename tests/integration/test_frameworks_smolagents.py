"""smolagents' CodeAgent, driven by a scripted model, runs its steps in a pod through the real kubectl."""

from __future__ import annotations

import os
from typing import Any

import PIL.Image
import pytest

pytest.importorskip("smolagents", reason="the smolagents extra is not installed")

from kx_cluster import Cluster, ExecutorFactory
from smolagents import CodeAgent, tool
from smolagents.models import ChatMessage, MessageRole, Model
from smolagents.monitoring import AgentLogger, LogLevel
from smolagents.utils import AgentError

from kubectl_executor.frameworks.smolagents import KubectlExecutor

pytestmark = pytest.mark.integration


class ScriptedModel(Model):  # type: ignore[misc]
    """Answers each agent step with the next canned reply; records what the agent showed it."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(model_id="scripted")
        self.replies = list(replies)
        self.seen: list[str] = []

    def generate(self, messages: list[Any], **kwargs: Any) -> ChatMessage:
        content = messages[-1].content
        self.seen.append(content if isinstance(content, str) else "".join(c.get("text", "") for c in content))
        return ChatMessage(role=MessageRole.ASSISTANT, content=self.replies.pop(0))


@tool
def pod_file(name: str) -> str:
    """Read a file of the pod's work_dir.

    Args:
        name: the file's name, relative to the work_dir.
    """
    import pathlib

    return pathlib.Path(name).read_text()


@pytest.mark.skipif(
    os.environ.get("KX_TEST_NO_EGRESS") == "1",
    reason="the agent's final_answer tool needs numpy and pillow pip-installed in the pod, and the "
    "cluster's pods have no route out (KX_TEST_NO_EGRESS=1, as for fixtures/cluster)",
)
def test_code_agent_steps_run_in_one_stateful_pod(
    executor_factory: ExecutorFactory, cluster: Cluster
) -> None:
    pod = executor_factory(stateful=True)
    pod.upload_file_content("secret.txt", "only-in-the-pod")
    host = pod.run("import socket; print(socket.gethostname())", "python").stdout.strip()
    model = ScriptedModel(
        [
            "Thought: read it.\n<code>\nimport os, socket\nfound = pod_file('secret.txt')\n"
            "print('cwd', os.getcwd())\nlen(found)\n</code>",
            "Thought: answer.\n<code>\nfinal_answer({'secret': found, 'host': socket.gethostname()})\n</code>",
        ]
    )
    agent = CodeAgent(
        tools=[pod_file],
        model=model,
        executor=KubectlExecutor(executor=pod, logger=AgentLogger(LogLevel.OFF)),
        max_steps=4,
        verbosity_level=LogLevel.OFF,
    )
    answer = agent.run("What does the pod hold?")
    assert answer == {"secret": "only-in-the-pod", "host": host}
    # The first step's print and its last expression came back as smolagents' observation.
    assert "cwd /workspace" in model.seen[1] and "Last output from code snippet:\n15" in model.seen[1]
    assert model.replies == []
    agent.cleanup()  # the pod was passed in: it stays until its owner stops it
    assert pod.pod_name in {p["metadata"]["name"] for p in cluster.pods()}


def test_errors_reach_the_agent_and_an_owned_pod_is_deleted(cluster: Cluster) -> None:
    executor = KubectlExecutor(logger=AgentLogger(LogLevel.OFF), **cluster.executor_kwargs())
    try:
        name = executor.executor.pod_name
        with pytest.raises(AgentError, match=r"(?s)before\n.*ZeroDivisionError"):
            executor("print('before')\n1 / 0")
        executor.send_variables({"given": [1, 2, 3]})
        out = executor("total = sum(given)\nprint('partial')\ntotal * 2")
        assert (out.output, out.logs, out.is_final_answer) == ("12", "partial\n", False)
    finally:
        executor.cleanup()
    assert name not in {p["metadata"]["name"] for p in cluster.pods()}


@pytest.mark.skipif(
    os.environ.get("KX_TEST_NO_EGRESS") == "1",
    reason="the agent's final_answer tool needs numpy and pillow pip-installed in the pod, and the "
    "cluster's pods have no route out (KX_TEST_NO_EGRESS=1, as for fixtures/cluster)",
)
def test_a_steps_chart_comes_back_as_a_pil_image_as_from_e2b(cluster: Cluster) -> None:
    """As smolagents' E2B executor: a step's value that has a PNG (a matplotlib figure) is a
    PIL image, an HTML one its HTML, others their text; figures merely left open are not."""
    image = os.environ.get("KX_TEST_PLOT_IMAGE") or cluster.image  # needs matplotlib (see test_rich.py)
    model = ScriptedModel(
        [
            "Thought: draw.\n<code>\nimport matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots(figsize=(2, 1), dpi=50)\nax.plot([1, 3, 2])\nfig\n</code>",
            "Thought: answer.\n<code>\nfinal_answer('drawn')\n</code>",
        ]
    )
    executor = KubectlExecutor(
        logger=AgentLogger(LogLevel.OFF), **{**cluster.executor_kwargs(), "image": image}
    )
    try:
        agent = CodeAgent(tools=[], model=model, executor=executor, max_steps=3, verbosity_level=LogLevel.OFF)
        assert agent.run("Draw a chart") == "drawn"
        chart = agent.memory.steps[1].action_output
        assert isinstance(chart, PIL.Image.Image) and chart.format == "PNG" and chart.size[0] > 50
        assert "Last output from code snippet:\n<PIL.PngImagePlugin.PngImageFile" in model.seen[1]
        html = executor("class T:\n    def _repr_html_(self):\n        return '<b>t</b>'\nT()")
        assert html.output == "<b>t</b>"
        left_open = executor("fig2 = plt.figure(); plt.plot([1, 2])\n7")
        assert left_open.output == "7"
    finally:
        executor.cleanup()
