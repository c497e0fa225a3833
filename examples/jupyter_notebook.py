"""The seed's Jupyter executor, on a stateful pod session: no kernel gateway, no Service.

    pip install 'kubectl-executor[autogen]'
    python examples/jupyter_notebook.py    # kubectl's current context, else the local emulator

Variables persist between calls, as in a notebook; what a block displays as HTML or PNG is saved
into output_dir and listed in output_files; restart() gives a fresh interpreter on the same pod.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from _cluster import cluster
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock

from kubectl_executor.autogen import PodJupyterCodeExecutor, PodJupyterServer

TABLE = """
class Table:
    def __init__(self, rows):
        self.rows = rows
    def _repr_html_(self):
        cells = "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in self.rows)
        return f"<table>{cells}</table>"

display(Table([(n, n * n) for n in numbers]))
sum(numbers)
"""


async def run(options: dict[str, Any], output_dir: Path) -> bool:
    server = PodJupyterServer(
        image=options.get("image"),
        namespace=options.get("namespace", "default"),
        kube_config_file=options.get("kubeconfig"),
        context=options.get("context"),
        kubectl=options.get("kubectl"),
    )
    token = CancellationToken()
    async with server, PodJupyterCodeExecutor(server, timeout=30, output_dir=output_dir) as executor:
        print("pod:", server.pod_name)
        first = await executor.execute_code_blocks([CodeBlock("numbers = [1, 2, 3]", "python")], token)
        second = await executor.execute_code_blocks([CodeBlock(TABLE, "python")], token)
        print("second call's output:\n" + second.output)
        print("saved:", [p.name for p in second.output_files])
        await executor.restart()
        third = await executor.execute_code_blocks([CodeBlock("print(numbers)", "python")], token)
        print("after restart:", third.output.splitlines()[-1])
        (html,) = second.output_files
        return (
            first.exit_code == 0
            and second.output.endswith(f"6\n{html}")
            and "<td>3</td><td>9</td>" in html.read_text()
            and third.exit_code == 1
            and "NameError" in third.output
        )


def main() -> int:
    with cluster() as options, tempfile.TemporaryDirectory() as out:
        ok = asyncio.run(run(options, Path(out)))
    print("pod deleted." if ok else "unexpected results!")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
