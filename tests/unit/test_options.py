"""The option models (PodShape, RunOptions; ClusterAccess shares their frame): each defined once,
the facades' separate keywords map onto them, both forms at once are refused, and every facade and
integration hands the same model on. On the fake runner: no kubectl, no cluster."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kx_fakes import FakeRunner
from pytest_mock import MockerFixture

from kubectl_executor import (
    ClusterAccess,
    InvalidInputError,
    KubernetesCommandLineCodeExecutor,
    PodShape,
    Resources,
    RunOptions,
)
from kubectl_executor._cluster.kubectl import Kubectl
from kubectl_executor._cluster.labels import POOL_LABEL
from kubectl_executor._cluster.retry import RetryPolicy
from kubectl_executor.defaults import ACTIVE_DEADLINE_SECONDS, IMAGE, RUN_TIMEOUT, WORK_DIR
from kubectl_executor.pool import WarmPool
from kubectl_executor.settings import Settings

Make = Callable[..., KubernetesCommandLineCodeExecutor]

SHAPE = PodShape(
    image="python:3.12-slim",
    work_dir="/data",
    env={"MODE": "test"},
    labels={"team": "ml"},
    resources=Resources(cpu_limit="1"),
    hardened=False,
    run_as_user=2000,
    runtime_class_name="gvisor",
    active_deadline_seconds=None,
    pod_overrides={"metadata": {"annotations": {"a": "b"}}},
)
RUN = RunOptions(timeout=7, startup_timeout=30, max_output_bytes=2048, max_rich_bytes=0, list_files=False)


# -- the models ----------------------------------------------------------------------------------


def test_defaults_come_from_defaults_py() -> None:
    shape, run = PodShape(), RunOptions()
    assert (shape.image, shape.work_dir, shape.active_deadline_seconds) == (
        IMAGE,
        WORK_DIR,
        ACTIVE_DEADLINE_SECONDS,
    )
    assert run.timeout == RUN_TIMEOUT and shape.group == shape.run_as_user == 1000
    assert PodShape(run_as_user=5).group == 5 and PodShape(run_as_user=5, run_as_group=7).group == 7


def test_of_takes_only_the_keywords_that_differ_from_the_defaults() -> None:
    shape = PodShape.of(None, image=IMAGE, hardened=True, labels=None, resources=None, env={}, node=None)
    assert shape == PodShape()
    assert PodShape.of(None, image="busybox", hardened=False) == PodShape(image="busybox", hardened=False)
    # None is a value where the field can be None and is not by default: no deadline at all.
    assert PodShape.of(None, active_deadline_seconds=None).active_deadline_seconds is None
    assert RunOptions.of(None, timeout=RUN_TIMEOUT, max_output_bytes=2048) == RunOptions(
        max_output_bytes=2048
    )


def test_of_returns_the_model_given_and_refuses_keywords_beside_it() -> None:
    assert PodShape.of(SHAPE, image=IMAGE, hardened=True) is SHAPE  # keywords left at their defaults
    with pytest.raises(InvalidInputError, match=r"^pass pod= or hardened, image, not both$"):
        PodShape.of(SHAPE, image="other", hardened=False)
    with pytest.raises(InvalidInputError, match="pass pod= or active_deadline_seconds, not both"):
        PodShape.of(SHAPE, active_deadline_seconds=None)
    with pytest.raises(InvalidInputError, match="pass run_options= or timeout, not both"):
        RunOptions.of(RUN, timeout=5)
    with pytest.raises(InvalidInputError, match="pass access= or namespace, not both"):
        ClusterAccess.of(ClusterAccess(), namespace="team")


def test_pick_reads_a_settings_mapping() -> None:
    values = {"image": "busybox", "timeout": 9, "namespace": "team", "work_dir": None, "surprise": 1}
    assert PodShape.pick(values) == PodShape(image="busybox")
    assert RunOptions.pick(values) == RunOptions(timeout=9)
    assert ClusterAccess.pick(values) == ClusterAccess(namespace="team")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"timeout": 0}, r"^Timeout must be greater than or equal to 1\. \(timeout is in seconds; got 0\)$"),
        ({"timeout": "10"}, "Timeout must be greater than or equal to 1"),
        ({"timeout": float("nan")}, "Timeout must be greater than or equal to 1"),
        ({"startup_timeout": 0}, "startup_timeout must be > 0"),
        ({"max_output_bytes": 10}, "max_output_bytes must be at least 1024"),
        ({"max_rich_bytes": -1}, "max_rich_output_bytes and max_rich_bytes must be >= 0"),
    ],
)
def test_run_options_are_checked_in_one_place(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        RunOptions.of(None, **fields)
    with pytest.raises(ValueError, match=words.lstrip("^").split(r"\.")[0]):
        RunOptions(**fields)  # pydantic's error, carrying the same words


def test_a_wrong_type_is_an_invalid_input_naming_the_option() -> None:
    with pytest.raises(
        InvalidInputError, match=r"^invalid pod option labels\.team: Input should be a valid string$"
    ):
        PodShape.of(None, labels={"team": 42})
    with pytest.raises(ValueError):
        PodShape(surprise=1)  # type: ignore[call-arg]  # a typo is refused, not ignored


def test_the_models_are_frozen() -> None:
    with pytest.raises(ValueError):
        SHAPE.image = "other"  # type: ignore[misc]
    with pytest.raises(ValueError):
        RUN.timeout = 1  # type: ignore[misc]


# -- the executor --------------------------------------------------------------------------------------


def seed_keywords() -> dict[str, Any]:
    """The executor's separate keywords (the seed's among them) for SHAPE and RUN."""
    return {
        "image": "python:3.12-slim",
        "work_dir": "/data",
        "env_vars": [{"key": "MODE", "value": "test"}],  # the seed's list, onto PodShape.env
        "labels": {"team": "ml"},
        "resources": Resources(cpu_limit="1"),
        "hardened": False,
        "run_as_user": 2000,
        "runtime_class_name": "gvisor",
        "active_deadline_seconds": None,
        "pod_overrides": {"metadata": {"annotations": {"a": "b"}}},
        "timeout": 7,
        "startup_timeout": 30,
        "max_output_bytes": 2048,
        "max_rich_bytes": 0,
        "list_files": False,
    }


def test_the_executors_keywords_map_onto_the_models(make_executor: Make, fake_runner: FakeRunner) -> None:
    separate = make_executor(pod_name="kx-one", start=False, **seed_keywords())
    whole = make_executor(pod_name="kx-one", start=False, pod=SHAPE, run_options=RUN)
    assert separate.pod_shape == whole.pod_shape == SHAPE
    assert separate.run_options == whole.run_options == RUN
    assert separate.timeout == 7 and str(separate.work_dir) == "/data" and separate.image == SHAPE.image
    strip = ("metadata", "labels")  # ownership labels carry each executor's own session id

    def shape_of(ex: KubernetesCommandLineCodeExecutor) -> dict[str, Any]:
        manifest = ex.manifest()
        manifest[strip[0]].pop(strip[1])
        return manifest

    assert shape_of(separate) == shape_of(whole)
    assert fake_runner.runs == [] and fake_runner.spawns == []


def test_the_seeds_node_and_claim_keywords_map_onto_the_shape(make_executor: Make) -> None:
    ex = make_executor(start=False, node="", shared_pvc_name="")  # the seed's "none"
    assert ex.pod_shape == PodShape()
    ex = make_executor(start=False, node="node-1", shared_pvc_name="data")
    assert (ex.pod_shape.node, ex.pod_shape.shared_pvc_name) == ("node-1", "data")
    spec = ex.manifest()["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "node-1"}
    assert spec["volumes"][0] == {"name": "workspace", "persistentVolumeClaim": {"claimName": "data"}}


def test_the_executor_refuses_a_model_and_its_keywords_together(
    make_executor: Make, fake_runner: FakeRunner
) -> None:
    with pytest.raises(InvalidInputError, match="pass pod= or image, not both"):
        make_executor(start=False, pod=SHAPE, image="busybox")
    with pytest.raises(InvalidInputError, match="pass pod= or env, not both"):
        make_executor(start=False, pod=SHAPE, env_vars=[{"key": "A", "value": "1"}])
    with pytest.raises(InvalidInputError, match="pass run_options= or timeout, not both"):
        make_executor(start=False, run_options=RUN, timeout=5)
    assert fake_runner.runs == []


@pytest.mark.parametrize("work_dir", ["relative", "/a/../etc", "/a\nb"])
def test_the_shape_refuses_a_work_dir_outside_an_absolute_path(work_dir: str) -> None:
    with pytest.raises(InvalidInputError, match="work_dir must be an absolute path"):
        PodShape(work_dir=work_dir)
    with pytest.raises(InvalidInputError, match="work_dir must be an absolute path"):
        PodShape.of(None, work_dir=work_dir)


def test_a_given_shape_is_still_checked(make_executor: Make) -> None:
    with pytest.raises(InvalidInputError, match="environment variable"):
        make_executor(start=False, pod=PodShape(env={"A-B": "1"}))
    ex = make_executor(start=False, pod=PodShape(work_dir="/data/"))
    assert ex.pod_shape.work_dir == "/data" == str(ex.work_dir)


# -- the other facades ----------------------------------------------------------------------------


def test_the_pool_takes_the_same_shape(
    fake_kubectl: str, fake_runner: FakeRunner, retry_policy: RetryPolicy, make_executor: Make
) -> None:
    common = {"kubectl": fake_kubectl, "runner": fake_runner, "retry": retry_policy, "start": False}
    whole = WarmPool(0, pod=SHAPE, run_options=RUN, **common)
    separate = WarmPool(
        0,
        "python:3.12-slim",
        work_dir="/data",
        env={"MODE": "test"},
        labels={"team": "ml"},
        resources=Resources(cpu_limit="1"),
        hardened=False,
        run_as_user=2000,
        runtime_class_name="gvisor",
        active_deadline_seconds=None,
        pod_overrides={"metadata": {"annotations": {"a": "b"}}},
        startup_timeout=30,
        **common,
    )
    assert whole.pod_shape == separate.pod_shape == SHAPE
    assert (whole.image, whole.work_dir, whole.startup_timeout) == ("python:3.12-slim", "/data", 30)
    with pytest.raises(InvalidInputError, match="pass pod= or image, not both"):
        WarmPool(0, "busybox", pod=SHAPE, **common)
    # An executor on the pool has the same shape; the pool's pods carry its label besides.
    ex = make_executor(start=False, pod=SHAPE, pool=whole)
    assert ex.pod_shape == whole.pod_shape
    for pool in (whole, separate):
        pool.stop()
    assert POOL_LABEL not in ex.manifest()["metadata"]["labels"]


def test_the_pool_shares_a_kubectl_as_client_and_kubectl_is_a_binary_as_everywhere(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner
) -> None:
    client = make_kubectl(namespace="team")
    pool = WarmPool(0, client=client, start=False)
    assert pool.kubectl is client and pool.namespace == "team"
    with pytest.raises(InvalidInputError, match="not both"):
        WarmPool(0, client=client, access=ClusterAccess(), start=False)
    with pytest.raises(InvalidInputError, match="not both"):
        WarmPool(0, client=client, namespace="other", start=False)
    with pytest.warns(DeprecationWarning, match="client="):
        old = WarmPool(0, kubectl=client, start=False)  # type: ignore[arg-type]  # the old spelling
    assert old.kubectl is client
    for each in (pool, old):
        each.stop()
    assert not [r for r in fake_runner.runs if r.args[:1] == ["apply"]]  # no pod made


def test_settings_build_the_models_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "IMAGE": "busybox",
        "WORK_DIR": "/data",
        "TIMEOUT": "9",
        "RUN_AS_USER": "2000",
    }.items():
        monkeypatch.setenv(f"KUBECTL_EXECUTOR_{name}", value)
    monkeypatch.setenv("KUBECTL_EXECUTOR_MAX_OUTPUT_BYTES", "4096")
    settings = Settings()
    assert settings.pod_shape() == PodShape(image="busybox", work_dir="/data", run_as_user=2000)
    assert settings.pod_shape(image="alpine", active_deadline_seconds=None) == PodShape(
        image="alpine", work_dir="/data", run_as_user=2000, active_deadline_seconds=None
    )
    assert settings.run_options() == RunOptions(timeout=9, max_output_bytes=4096)
    assert settings.run_options(timeout=3).timeout == 3


def test_the_mcp_servers_executors_and_pool_get_the_same_models(
    mocker: MockerFixture, fake_kubectl: str, fake_runner: FakeRunner
) -> None:
    pytest.importorskip("mcp")
    from kubectl_executor.mcp import KubectlExecutorMcp, McpConfig

    mocker.patch.object(WarmPool, "start")  # no refill thread: nothing runs
    pools = mocker.spy(WarmPool, "__init__")
    executors = mocker.spy(KubernetesCommandLineCodeExecutor, "__init__")
    access = ClusterAccess(kubectl=fake_kubectl, kubeconfig="/k/config", namespace="team")
    config = McpConfig(
        access=access, pod=SHAPE, run_options=RUN, pool_size=1, executor_kwargs={"runner": fake_runner}
    )
    server = KubectlExecutorMcp(config, environ={})
    try:
        server.open()
        server.check_options()
    finally:
        server.close()
    pool: WarmPool = pools.call_args.args[0]
    executor: KubernetesCommandLineCodeExecutor = executors.call_args.args[0]
    assert pool.pod_shape == executor.pod_shape == SHAPE
    assert executor.run_options == RUN and pool.startup_timeout == RUN.startup_timeout
    assert executor.kubectl.access == pool.kubectl.access == access


def test_mcp_config_moves_model_fields_out_of_executor_kwargs() -> None:
    pytest.importorskip("mcp")
    from kubectl_executor.mcp import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_RUN_TIMEOUT, McpConfig

    default = McpConfig()
    assert (default.run_timeout, default.max_output_bytes) == (DEFAULT_RUN_TIMEOUT, DEFAULT_MAX_OUTPUT_BYTES)
    config = McpConfig(
        executor_kwargs={
            "timeout": 90,
            "image": "busybox",
            "env_vars": [{"key": "A", "value": "1"}],
            "namespace": "team",
            "network_policy": True,
        }
    )
    assert config.run_options == RunOptions(timeout=90, max_output_bytes=DEFAULT_MAX_OUTPUT_BYTES)
    assert config.pod == PodShape(image="busybox", env={"A": "1"}) and config.access.namespace == "team"
    assert dict(config.executor_kwargs) == {"network_policy": True}


def test_the_cli_builds_the_models_from_its_settings(fake_kubectl: str) -> None:
    from click.testing import CliRunner

    from kubectl_executor import cli as cli_module

    result = CliRunner().invoke(
        cli_module.cli,
        [
            "up",
            "kx-long",
            "--kubectl",
            fake_kubectl,
            "--image",
            "busybox",
            "--env",
            "A=1",
            "--print-manifest",
        ],
        env={"KUBECTL_EXECUTOR_WORK_DIR": "/data", "KUBECTL_EXECUTOR_RUN_AS_USER": "2000"},
    )
    assert result.exit_code == 0, result.output
    pod = json.loads(result.output)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "busybox" and container["workingDir"] == "/data"
    assert {"name": "A", "value": "1"} in container["env"]
    assert pod["spec"]["securityContext"]["runAsUser"] == pod["spec"]["securityContext"]["runAsGroup"] == 2000


def test_openai_agents_options_map_onto_the_one_access_and_pod_shape() -> None:
    from kubectl_executor.frameworks.openai_agents import KubectlSandboxClientOptions

    options = KubectlSandboxClientOptions(image="python:3.12-slim", namespace="sandbox", context="ctx")
    kwargs = options.executor_kwargs("/workspace/")

    assert kwargs["access"] == ClusterAccess(namespace="sandbox", context="ctx")
    assert kwargs["pod"] == PodShape(image="python:3.12-slim", work_dir="/workspace")
    assert set(kwargs) == {"access", "pod"}
