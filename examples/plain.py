"""Run model-written code in a pod: blocks from a chat message, exact exit codes, streaming, timeouts.

python examples/plain.py            # kubectl's current context, else the local emulator
KX_USE_EMULATOR=1 python examples/plain.py
"""

from __future__ import annotations

import sys

from _cluster import cluster

from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor

MESSAGE = """Let me check the environment first.

```python
import platform, sys
print("python", sys.version.split()[0], "on", platform.machine())
```

Then a shell step that fails on purpose:

```sh
echo "working in $(pwd) as uid $(id -u)"
echo "something went wrong" >&2
exit 3
```
"""


def main() -> int:
    with cluster() as options, KubernetesCommandLineCodeExecutor(timeout=5, **options) as executor:
        print(f"pod {executor.pod_name} is ready in namespace {executor.namespace}")

        # 1. Blocks extracted from a model's markdown reply run in order, stopping at the first failure.
        blocks = executor.code_extractor.extract_code_blocks(MESSAGE)
        result = executor.execute_code_blocks(blocks)
        print(f"exit code {result.exit_code} (the shell block's own `exit 3`)")
        print("stdout:", result.stdout.strip().replace("\n", " | "))
        print("stderr:", result.stderr.strip())

        # 2. Output can be streamed while the code runs.
        def show(stream: str, chunk: bytes) -> None:
            target = sys.stdout if stream == "stdout" else sys.stderr
            target.write(chunk.decode(errors="replace"))
            target.flush()

        counting = CodeBlock(
            "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.2)", "python"
        )
        executor.execute_code_blocks([counting], on_output=show)

        # 3. A block that runs too long is stopped inside the pod: exit code 124.
        slow = executor.execute_code_blocks([CodeBlock("import time\nwhile True: time.sleep(1)", "python")])
        print(f"endless loop with timeout=5s: exit code {slow.exit_code}, timed out: {slow.timed_out}")

        ok = result.exit_code == 3 and "something went wrong" in result.stderr and slow.exit_code == 124
    print("pod deleted." if ok else "unexpected results!")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
