# Uploaded by KubernetesCommandLineCodeExecutor.install_pod_dispatcher() (kubectl-executor).
# Stdlib only; runs in the pod (Python >= 3.6). It may also be baked into an image.
#
#   python3 executor.py [PARAMS]      PARAMS: a JSON file, or "-" / "/dev/stdin" (the default)
#
# PARAMS holds {"function": name, "arguments": {...}, "module": dotted.name (optional)}. The module
# is imported with the workspace on sys.path, function(**arguments) is called (a coroutine is
# awaited), and a non-None result is printed -- the seed's contract. An exception propagates as in
# plain Python: traceback on stderr, exit code 1.
#
# In addition, when $KX_TOOL_RESULT names a file, a structured result is written there as JSON:
#   {"kx": 1, "module", "function", "status": "returned" | "raised",
#    "value" (the return value when JSON-serialisable), "value_is_json", "value_repr",
#    "value_truncated", "error": {"type", "message", "traceback"},
#    "runner_stdout_bytes", "runner_stderr_bytes"}
# The last two count the bytes this runner itself appended to stdout (the printed result) and
# stderr (the traceback), so the caller can tell them from the function's own output.
import asyncio
import importlib
import inspect
import json
import os
import sys
import traceback

DEFAULT_MODULE = "robin_user"
DEFAULT_BUDGET = 4 * 1024 * 1024


def _read_payload(source):
    if source in ("-", "/dev/stdin"):
        data = sys.stdin.buffer.read()
    else:
        with open(source, "rb") as fh:
            data = fh.read()
    payload = json.loads(data.decode("utf-8"))
    if not isinstance(payload, dict) or not isinstance(payload.get("function"), str):
        raise ValueError('the payload must be a JSON object with a "function" name')
    arguments = payload.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise TypeError("arguments must be a JSON object")
    return payload.get("module") or DEFAULT_MODULE, payload["function"], arguments


async def _await(awaitable):
    return await awaitable


def _run_awaitable(awaitable):
    if hasattr(asyncio, "run"):
        return asyncio.run(_await(awaitable))
    loop = asyncio.new_event_loop()  # Python 3.6
    try:
        return loop.run_until_complete(_await(awaitable))
    finally:
        loop.close()


def _qualified_name(cls):
    module = getattr(cls, "__module__", "")
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in ("builtins", "__main__", None, "") else module + "." + name


def _user_traceback(exc):
    """The traceback without this runner's own frames (what the user's code did)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _safe_repr(value, budget):
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the call's result
        text = "<unrepresentable %s: %s>" % (type(value).__name__, exc)
    return text if len(text) <= budget else text[:budget] + "...", len(text) > budget


def _emit(stream, text):
    """Write text after whatever the function left buffered; return the bytes written."""
    stream.flush()
    data = text.encode("utf-8", "backslashreplace")
    stream.buffer.write(data)
    stream.buffer.flush()
    return len(data)


def main(argv):
    result_path = os.environ.pop("KX_TOOL_RESULT", "")
    work_dir = os.environ.pop("KX_TOOL_WORK_DIR", "") or os.path.dirname(os.path.abspath(__file__))
    try:
        budget = int(os.environ.pop("KX_TOOL_BUDGET", "") or DEFAULT_BUDGET)
    except ValueError:
        budget = DEFAULT_BUDGET
    if work_dir not in sys.path:
        sys.path.insert(0, work_dir)
    frame = {"kx": 1, "module": None, "function": None, "runner_stdout_bytes": 0, "runner_stderr_bytes": 0}
    stdout, stderr = sys.__stdout__, sys.__stderr__
    exit_code = 0
    try:
        module_name, function_name, arguments = _read_payload(argv[1] if len(argv) > 1 else "-")
        frame["module"], frame["function"] = module_name, function_name
        function = getattr(importlib.import_module(module_name), function_name)
        value = function(**arguments)
        if inspect.isawaitable(value):
            value = _run_awaitable(value)
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            exit_code = 0
        elif isinstance(exc, SystemExit) and isinstance(exc.code, int):
            exit_code = exc.code
        else:
            exit_code = 1
        text = _user_traceback(exc)
        message = str(exc)
        frame["status"] = "raised"
        frame["error"] = {"type": _qualified_name(type(exc)), "message": message, "traceback": text}
        if not isinstance(exc, SystemExit):
            frame["runner_stderr_bytes"] = _emit(stderr, text)
        elif exit_code != 0 and not isinstance(exc.code, int):
            frame["runner_stderr_bytes"] = _emit(stderr, message + "\n")
    else:
        frame["status"] = "returned"
        frame["value_repr"], frame["value_truncated"] = _safe_repr(value, budget)
        try:
            encoded = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            encoded = None
        frame["value_is_json"] = encoded is not None
        if encoded is not None and len(encoded) <= budget:
            frame["value"] = value
        elif encoded is not None:
            frame["value_truncated"] = True
        if value is not None:
            try:
                printed = "%s\n" % (value,)
            except Exception:
                printed = frame["value_repr"] + "\n"
            frame["runner_stdout_bytes"] = _emit(stdout, printed)
    if result_path:
        try:
            with open(result_path, "w", encoding="ascii") as fh:
                json.dump(frame, fh, ensure_ascii=True, allow_nan=False)
        except (OSError, TypeError, ValueError) as exc:
            stderr.write("kubectl-executor: could not write the structured result: %s\n" % exc)
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
