"""kubectl_executor.autogen.jupyter without a cluster: the seed's options mapped or refused, the pod it
applies (fake runner), the result's shape (text, ERROR lines, saved images), configurations."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from kx_fakes import FakeRunner, RunCall
from pytest_mock import MockerFixture

from kubectl_executor._cluster.retry import RetryPolicy
from kubectl_executor._cluster.runner import Completed
from kubectl_executor.autogen import (
    PodJupyterCodeExecutor,
    PodJupyterCodeResult,
    PodJupyterConnectionInfo,
    PodJupyterServer,
)
from kubectl_executor.autogen.jupyter import DEFAULT_COMMAND, pod_overrides_from, shell_escapes
from kubectl_executor.autogen.specs import spec_from, workspace_volume
from kubectl_executor.boundary import RichOutput
from kubectl_executor.errors import InvalidInputError
from kubectl_executor.executor import BlockResult

SEED_POD_NAME = (
    r"^autogen-jupyter-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
)


@pytest.fixture
def make_server(fake_kubectl: str, fake_runner: FakeRunner, retry_policy: RetryPolicy) -> Any:
    def answer_wait(call: RunCall) -> Completed | None:
        if call.args[:1] == ["wait"]:  # `kubectl wait --for=delete`: the fake deletes at once
            assert call.args[2].removeprefix("pod/") not in fake_runner.pods
            return Completed(tuple(call.argv), 0)
        return None

    fake_runner.on_run = answer_wait

    def make(**kwargs: Any) -> PodJupyterServer:
        return PodJupyterServer(kubectl=fake_kubectl, runner=fake_runner, retry=retry_policy, **kwargs)

    return make


def test_import_without_autogen_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "kubectl_executor.autogen.jupyter")
    monkeypatch.setitem(sys.modules, "autogen_core", None)
    with pytest.raises(ImportError, match=r"pip install 'kubectl-executor\[autogen\]'"):
        importlib.import_module("kubectl_executor.autogen.jupyter")


def test_the_seeds_defaults_and_refusals() -> None:
    server = PodJupyterServer()
    assert re.fullmatch(SEED_POD_NAME, server.pod_name) and server.namespace == "default"
    assert PodJupyterServer(command=None).pod_name != server.pod_name
    PodJupyterServer(command=list(DEFAULT_COMMAND), token="unused", port=9999)  # accepted, unused
    for kwargs, words in [
        ({"service_spec": {}}, "no Service is made"),
        ({"secret_spec": {}}, "no token Secret is made"),
        ({"command": ["jupyter", "lab"]}, "none runs here"),
        ({"args": ["--port=1"]}, "none runs here"),
        ({"timeout": 0}, "Timeout must be greater than or equal to 1."),
        ({"workspace_path": "work"}, "Not supports workspace path as relative path"),
        ({"pod_name": "Bad_Name"}, "Pod name validation failed"),
        (
            {"pod_spec": {"spec": {"containers": [{"name": "other"}]}}},
            "No container which name is autogen-executor",
        ),
    ]:
        with pytest.raises(InvalidInputError, match=re.escape(words)):
            PodJupyterServer(**kwargs)
    info = PodJupyterConnectionInfo(pod_name="p")
    with pytest.raises(InvalidInputError, match="Kernel ir is not installed"):
        PodJupyterCodeExecutor(info, kernel_name="ir")
    with pytest.raises(InvalidInputError, match="Timeout must be"):
        PodJupyterCodeExecutor(info, timeout=0)
    with pytest.raises(InvalidInputError, match="must be a PodJupyterServer or PodJupyterConnectionInfo"):
        PodJupyterCodeExecutor("http://jupyter:8888")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a host, port or token"):
        PodJupyterConnectionInfo.model_validate({"host": "jupyter.default.svc", "port": 8888})


def test_pod_spec_gives_image_env_and_fields_but_not_the_servers_command(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nb\n  labels: {run: nb}\n  annotations: {a: b}\n"
        "spec:\n  serviceAccountName: default\n  containers:\n  - name: autogen-executor\n"
        "    image: quay.io/jupyter/base:1\n    command: [jupyter, kernelgateway]\n"
        "    ports: [{containerPort: 8888}]\n    env: [{name: A, value: '1'}]\n"
        "  - {name: sidecar, image: busybox}\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: nb}\n"
    )
    given = spec_from(spec, "pod_spec")
    assert given is not None and given["kind"] == "Pod"  # the Pod of a file that also holds a Service
    image, labels, overrides = pod_overrides_from(given, "python:3-slim")
    assert (image, labels) == ("quay.io/jupyter/base:1", {"run": "nb"})
    assert overrides == {
        "spec": {
            "serviceAccountName": "default",
            "containers": [
                {"name": "executor", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "busybox"},
            ],
        },
        "metadata": {"annotations": {"a": "b"}},
    }
    assert workspace_volume({"name": "v", "emptyDir": {"medium": "Memory"}}) == {
        "name": "workspace",
        "emptyDir": {"sizeLimit": None, "medium": "Memory"},
    }
    assert spec_from("name: v\npersistentVolumeClaim: {claimName: c}", "volume") == {
        "name": "v",
        "persistentVolumeClaim": {"claimName": "c"},
    }
    with pytest.raises(InvalidInputError, match="no manifest for kind Pod"):
        only_service = tmp_path / "svc.yaml"
        only_service.write_text("kind: Service\n---\nkind: Secret\n")
        spec_from(only_service, "pod_spec")


def test_start_applies_the_pod_and_stop_deletes_it(make_server: Any, fake_runner: FakeRunner) -> None:
    server = make_server(
        pod_name="nb-1",
        namespace="team",
        image="python:3.12-slim",
        workspace_path="/work",
        volume={"name": "v", "persistentVolumeClaim": {"claimName": "data"}},
    )

    async def go() -> tuple[bool, bool]:
        async with server:
            running = server.running
            await server.start()  # idempotent: no second pod
        return running, server.running

    assert asyncio.run(go()) == (True, False)
    applies = fake_runner.runs_of("apply")
    assert len(applies) == 1
    manifest = json.loads(applies[0].stdin or b"")
    assert (manifest["metadata"]["name"], manifest["spec"]["containers"][0]["image"]) == (
        "nb-1",
        "python:3.12-slim",
    )
    workspace = next(v for v in manifest["spec"]["volumes"] if v["name"] == "workspace")
    # null: absent to the API server, so the claim replaces our emptyDir
    assert workspace["persistentVolumeClaim"] == {"claimName": "data"} and workspace["emptyDir"] is None
    assert server._pod["metadata"]["name"] == "nb-1"  # the pod as the cluster returned it
    assert "nb-1" not in fake_runner.pods and fake_runner.runs_of("wait")
    assert server.connection_info == PodJupyterConnectionInfo(
        pod_name="nb-1", namespace="team", work_dir="/work", kubectl=server.connection_info.kubectl
    )


def test_auto_remove_false_keeps_the_pod_until_stop(make_server: Any, fake_runner: FakeRunner) -> None:
    server = make_server(pod_name="nb-2", auto_remove=False)

    async def go() -> bool:
        async with server:
            pass
        kept = "nb-2" in fake_runner.pods
        await server.stop()
        return kept

    assert asyncio.run(go()) is True
    assert "nb-2" not in fake_runner.pods


def test_configurations_round_trip() -> None:
    server = PodJupyterServer(
        pod_name="nb-3", namespace="ns", auto_remove=False, kube_config_file="/k/config"
    )
    loaded = PodJupyterServer.load_component(server.dump_component())
    assert (loaded.pod_name, loaded.namespace, loaded._auto_remove) == ("nb-3", "ns", False)
    assert loaded.connection_info == server.connection_info
    executor = PodJupyterCodeExecutor(server, timeout=7, output_dir="/tmp/out")
    model = executor.dump_component()
    assert model.provider == "kubectl_executor.autogen.PodJupyterCodeExecutor"
    again = PodJupyterCodeExecutor.load_component(model)
    assert (again._connection_info, again.timeout, again._output_dir) == (
        server.connection_info,
        7,
        Path("/tmp/out"),
    )


# -- the result's shape: a fake block result behind execute_code_blocks ----------------------------


def executor_with(
    mocker: MockerFixture, results: list[Any], tmp_path: Path
) -> tuple[PodJupyterCodeExecutor, Any]:
    executor = PodJupyterCodeExecutor(PodJupyterConnectionInfo(pod_name="p"), timeout=5, output_dir=tmp_path)
    inner = mocker.Mock()
    inner.run.side_effect = results
    executor._executor = inner
    return executor, inner


def run(executor: PodJupyterCodeExecutor, *blocks: CodeBlock) -> PodJupyterCodeResult:
    return asyncio.run(executor.execute_code_blocks(list(blocks), CancellationToken()))


def test_text_of_blocks_is_joined_as_the_seed_joins_it(mocker: MockerFixture, tmp_path: Path) -> None:
    executor, inner = executor_with(
        mocker, [BlockResult(0, "a\n", ""), BlockResult(0, "", "warn\n"), BlockResult(0, "", "")], tmp_path
    )
    result = run(
        executor,
        CodeBlock(code="!pip install x\nprint('!a')", language="python"),
        CodeBlock(code="echo warn >&2", language="sh"),
        CodeBlock(code="x = 1", language="Python"),
    )
    # As the seed: each block's text is one entry (an empty one too), joined by newlines.
    assert (result.exit_code, result.output, result.output_files) == (0, "a\n\nwarn\n\n", [])
    # The seed's pip quietening, IPython's shell escape, each block in its language, the timeout.
    assert [c.args for c in inner.run.call_args_list] == [
        ("__import__('subprocess').run('pip install -qqq x', shell=True)\nprint('!a')", "python"),
        ("echo warn >&2", "sh"),
        ("x = 1", "Python"),
    ]
    assert all(c.kwargs == {"timeout": 5} for c in inner.run.call_args_list)


def test_the_first_error_stops_the_blocks_with_the_seeds_error_line(
    mocker: MockerFixture, tmp_path: Path
) -> None:
    traceback = (
        'Traceback (most recent call last):\n  File "<cell>", line 1\nZeroDivisionError: division by zero\n'
    )
    executor, inner = executor_with(
        mocker, [BlockResult(0, "ok\n", ""), BlockResult(1, "half\n", traceback)], tmp_path
    )
    result = run(executor, *[CodeBlock(code=c, language="python") for c in ("1", "1/0", "never")])
    assert result.exit_code == 1
    assert result.output == (
        "ok\n\nhalf\n\nERROR: ZeroDivisionError: division by zero\n" + traceback.rstrip("\n")
    )
    assert inner.run.call_count == 2


def test_timeouts_exits_and_lost_state_are_errors(mocker: MockerFixture, tmp_path: Path) -> None:
    executor, _ = executor_with(
        mocker,
        [
            BlockResult(124, "tick\n", "KeyboardInterrupt\n", timed_out=True),
            BlockResult(3, "", ""),
            BlockResult(137, "", "", state_lost=True),
            BlockResult(0, "", ""),
        ],
        tmp_path,
    )
    slow = run(executor, CodeBlock(code="while 1: pass", language="python"))
    assert slow.output == (
        "tick\n\nERROR: Timeout waiting for output from code block. (interrupted in the pod after 5 s)\n"
        "KeyboardInterrupt"
    )
    assert run(executor, CodeBlock(code="exit 3", language="sh")).output == "\nERROR: exit code 3"
    lost = run(executor, CodeBlock(code="import os; os._exit(9)", language="python"))
    assert lost.output == "\nERROR: exit code 137 The interpreter was restarted: earlier variables are gone."
    unsupported = run(executor, CodeBlock(code="x", language="cobol"))
    assert (unsupported.exit_code, unsupported.output) == (1, "\nERROR: Unsupported language cobol")


def test_images_and_html_are_saved_other_types_become_json(mocker: MockerFixture, tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    block = BlockResult(
        0,
        "drawn\n",
        "",
        outputs=(
            RichOutput(mime_type="text/plain", data="<Figure>"),
            RichOutput(mime_type="image/png", data=png, metadata={"width": 2}),
            RichOutput(mime_type="text/html", data="<b>t</b>"),
            RichOutput(mime_type="image/svg+xml", data="<svg/>"),
            RichOutput(mime_type="application/json", data=b'{"a": 1}'),
        ),
    )
    executor, _ = executor_with(mocker, [block], tmp_path)
    result = run(executor, CodeBlock(code="plot()", language="python"))
    image, page = result.output_files
    assert (image.parent, image.suffix, image.read_bytes()) == (tmp_path, ".png", png)
    assert (page.suffix, page.read_text()) == (".html", "<b>t</b>")
    # The seed's order: the block's text (streams, text/plain, other text types as JSON), then
    # one entry per image or HTML output.
    assert result.output.split("\n") == [
        "drawn",
        "",
        "<Figure>",
        json.dumps(base64.b64encode(b'{"a": 1}').decode()),
        str(image),
        str(page),
        json.dumps("<svg/>"),
    ]


def test_without_output_dir_a_kept_temporary_directory_is_made(mocker: MockerFixture) -> None:
    executor = PodJupyterCodeExecutor(PodJupyterConnectionInfo(pod_name="p"))
    inner = mocker.Mock()
    inner.run.return_value = BlockResult(0, "", "", outputs=(RichOutput(mime_type="image/png", data=b"png"),))
    executor._executor = inner
    (saved,) = run(executor, CodeBlock(code="img", language="python")).output_files
    assert saved.read_bytes() == b"png" and saved.parent == executor.output_dir
    saved.unlink()
    saved.parent.rmdir()


def test_ipython_shell_escapes_become_subprocess_calls_only_where_python_is_not() -> None:
    code = "for i in range(2):\n    !echo $i\n%pip install 'a b' c"
    assert shell_escapes(code) == (
        "for i in range(2):\n    __import__('subprocess').run('echo $i', shell=True)\n"
        "__import__('subprocess').run([__import__('sys').executable, '-m', 'pip', "
        "*__import__('shlex').split(\"install 'a b' c\")])"
    )
    for unchanged in ['s = """\n!not a command\n"""', "x = !", "!echo ok\ndef broken(:"]:
        assert shell_escapes(unchanged) == unchanged


def test_an_output_over_budget_is_named_not_saved(mocker: MockerFixture, tmp_path: Path) -> None:
    kept = BlockResult(
        0, "", "", outputs=(RichOutput(mime_type="image/png", data=b"", kept_path="/tmp/kx/out-1.png"),)
    )
    executor, _ = executor_with(mocker, [kept], tmp_path)
    result = run(executor, CodeBlock(code="big()", language="python"))
    assert result.output == "(image/png over the output budget, kept in the pod: /tmp/kx/out-1.png)"
    assert result.output_files == [] and list(tmp_path.iterdir()) == []


def test_a_cancelled_token_interrupts_the_block_in_the_pod_and_raises(
    mocker: MockerFixture, tmp_path: Path
) -> None:
    interrupted = threading.Event()

    def run_until_interrupted(code: str, language: str, timeout: float) -> BlockResult:
        interrupted.wait(30)  # the in-pod interrupt ends the block (here: the fake's cancel)
        return BlockResult(1, "", "KeyboardInterrupt\n")

    executor, inner = executor_with(mocker, [], tmp_path)
    inner.run.side_effect = run_until_interrupted
    inner.cancel.side_effect = lambda: interrupted.set() or True
    token = CancellationToken()

    async def go() -> None:
        call = asyncio.ensure_future(
            executor.execute_code_blocks([CodeBlock(code="loop()", language="python")], token)
        )
        while inner.run.call_count == 0:  # the block is in the worker thread
            await asyncio.sleep(0)
        token.cancel()
        await call

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(go())
    assert inner.cancel.called and interrupted.is_set()
    # A token cancelled before a block starts: nothing runs.
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(executor.execute_code_blocks([CodeBlock(code="never()", language="python")], token))
    assert inner.run.call_count == 1
