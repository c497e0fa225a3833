"""AutoGen 0.4+: a CodeExecutorAgent whose code runs in a Kubernetes pod.

    pip install 'kubectl-executor[autogen]'
    python examples/autogen_agent.py    # kubectl's current context, else the local emulator

No model is needed here: the message the agent receives stands in for a model's reply.
"""

from __future__ import annotations

import asyncio
from typing import Any

from _cluster import cluster
from autogen_agentchat.agents import ApprovalRequest, ApprovalResponse, CodeExecutorAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock

from kubectl_executor.autogen import KubectlCodeExecutor

REPLY = """I will compute it in Python and check the pod from the shell.

```Python
primes = [n for n in range(2, 60) if all(n % d for d in range(2, n))]
print("primes:", primes)
```

```SH
echo "hostname: $(hostname)"
```
"""


def approve(request: ApprovalRequest) -> ApprovalResponse:
    """Review before running: here every block is approved and shown."""
    print("--- approving ---\n" + request.code + "\n-----------------")
    return ApprovalResponse(approved=True, reason="reviewed by the example")


async def run(options: dict[str, Any]) -> bool:
    executor = KubectlCodeExecutor(timeout=10, **options)
    print("component config:", executor.dump_component().model_dump_json()[:120], "...")
    async with executor:
        agent = CodeExecutorAgent("pod_runner", code_executor=executor, approval_func=approve)
        response = await agent.on_messages(
            [TextMessage(content=REPLY, source="assistant")], CancellationToken()
        )
        print("agent replied:\n" + str(response.chat_message.content))

        # Cancelling stops the block inside the pod, not just the wait for it.
        token = CancellationToken()
        task = asyncio.create_task(executor.execute_code_blocks([CodeBlock("sleep 600", "sh")], token))
        await asyncio.sleep(2)  # let it start: the demo shows a running block being stopped
        token.cancel()
        result = await task  # as the Docker executor: a result, exit code 1
        cancelled = (result.exit_code, result.output) == (1, "Code execution was cancelled.")
        print("long block cancelled:", cancelled)
        return "primes: [2, 3, 5" in str(response.chat_message.content) and cancelled


def main() -> int:
    with cluster() as options:
        ok = asyncio.run(run(options))
    print("pod deleted." if ok else "unexpected results!")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
