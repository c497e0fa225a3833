"""Call Python functions in a pod: upload a module, install the dispatcher, call with JSON arguments.

python examples/tool_functions.py   # kubectl's current context, else the local emulator
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from _cluster import cluster

from kubectl_executor import KubernetesCommandLineCodeExecutor

TOOLS = '''
import statistics

def describe(values):
    """A tool an agent may call: summary statistics of a list of numbers."""
    print(f"describing {len(values)} values")
    return {"mean": statistics.mean(values), "stdev": statistics.stdev(values), "max": max(values)}

def divide(a, b):
    return a / b
'''


def main() -> int:
    with cluster() as options, tempfile.TemporaryDirectory() as tmp:
        module = Path(tmp) / "agent_tools.py"
        module.write_text(TOOLS)
        with KubernetesCommandLineCodeExecutor(timeout=30, **options) as executor:
            print("uploaded:", executor.upload_from_disk(module))
            executor.install_pod_dispatcher(default_module="agent_tools")

            # Arguments as a dict, or as the JSON string a model produced.
            stats = executor.execute_tool_function({"values": [2, 4, 4, 4, 5, 5, 7, 9]}, "describe")
            print(f"describe -> exit {stats.exit_code}, printed: {stats.output.strip()!r}")
            value = stats.tool_result.value if stats.tool_result else None
            print("structured value:", json.dumps(value))

            failed = executor.execute_tool_function('{"a": 1, "b": 0}', "divide")
            error = failed.tool_result.error if failed.tool_result else None
            print(
                f"divide by zero -> exit {failed.exit_code}: {error.type if error else '?'}: {error.message if error else ''}"
            )

            ok = stats.exit_code == 0 and value == {"mean": 5, "stdev": 2.138089935299395, "max": 9}
            ok = ok and failed.exit_code == 1 and error is not None and error.type == "ZeroDivisionError"
    print("pod deleted." if ok else "unexpected results!")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
