"""The serialisable configurations (``dump_component``) of the AutoGen executors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..boundary import PodShape, RunOptions
from ..defaults import IMAGE, WORK_DIR

# KubectlCodeExecutor's separate keywords for the pod and the runs -> their PodShape / RunOptions
# fields (configurations dumped before those models had them flat, with env as env_vars).
FLAT_POD = {
    "image": "image",
    "pod_work_dir": "work_dir",
    "env": "env",
    "env_vars": "env",
    "hardened": "hardened",
    "run_as_user": "run_as_user",
    "read_only_root_filesystem": "read_only_root_filesystem",
    "runtime_class_name": "runtime_class_name",
    "active_deadline_seconds": "active_deadline_seconds",
    "labels": "labels",
    "resources": "resources",
    "pod_overrides": "pod_overrides",
}
FLAT_RUN = ("timeout", "startup_timeout", "max_output_bytes")


def split_flat(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the other keys, the PodShape fields, the RunOptions fields) of flat keywords."""
    rest = dict(values)
    pod = {FLAT_POD[key]: rest.pop(key) for key in list(rest) if key in FLAT_POD}
    run = {key: rest.pop(key) for key in list(rest) if key in FLAT_RUN}
    return rest, pod, run


class KubectlCodeExecutorConfig(BaseModel):
    """The serialisable configuration (``dump_component``). No secrets: the bearer token of
    ``remote_control_plane`` mode is read from ``KUBE_TOKEN`` when the executor starts. Functions
    are not serialised (as for autogen-ext's executors). The pod and the runs are the library's
    :class:`PodShape` and :class:`RunOptions`; ``work_dir`` is the host side of the mirror."""

    model_config = ConfigDict(extra="forbid")

    pod_name: str | None = None
    namespace: str | None = None
    work_dir: str | None = None
    mirror: bool = True
    functions_module: str = "functions"
    delete_tmp_files: bool = False
    init_command: str | None = None
    auto_remove: bool = True
    execution_policies: dict[str, bool] | None = None
    kubectl: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    remote_control_plane: str | None = None
    certificate_authority: str | None = None
    insecure_skip_tls_verify: bool = False
    attach: bool = False
    pod: PodShape = Field(default_factory=PodShape)
    run_options: RunOptions = Field(default_factory=RunOptions)

    @model_validator(mode="before")
    @classmethod
    def _from_flat_fields(cls, data: Any) -> Any:
        """A configuration with the pod's and the runs' fields flat (as dumped before 0.2) loads."""
        if not isinstance(data, dict) or not (set(data) & {*FLAT_POD, *FLAT_RUN}):
            return data
        data, pod, run = split_flat(data)
        data["pod"] = PodShape.of(None, **{**dict(data.get("pod") or {}), **pod})
        data["run_options"] = RunOptions.of(None, **{**dict(data.get("run_options") or {}), **run})
        return data


class PodCommandLineCodeExecutorConfig(BaseModel):
    """The seed's configuration fields (``autogen_kubernetes.code_executors``)."""

    image: str = IMAGE
    pod_name: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    timeout: int = 60
    workspace_path: str = WORK_DIR
    namespace: str = "default"
    volume: dict[str, Any] | None = None
    pod_spec: dict[str, Any] | None = None
    kube_config_file: str | None = None
    auto_remove: bool = True
    functions_module: str = "functions"


DEFAULT_PORT = 8888  # the seed's kernel-gateway port (unused here: nothing listens)
KERNEL = "python3"


class PodJupyterConnectionInfo(BaseModel):
    """Where an executor's kernel runs: a pod, reached through kubectl (not a server URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pod_name: str
    namespace: str | None = None
    work_dir: str = "/workspace"
    kubectl: str | None = None
    kubeconfig: str | None = None
    context: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_server(cls, data: Any) -> Any:
        if isinstance(data, dict) and ({"host", "port", "token"} & set(data)):
            raise ValueError(
                "no Jupyter server is reached here: name the pod (pod_name=, namespace=) "
                "that a PodJupyterServer started, not a host, port or token"
            )
        return data


class PodJupyterServerConfig(BaseModel):
    """The seed's configuration fields (``autogen_kubernetes.code_executors``), plus ours."""

    image: str | None = None
    pod_name: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    timeout: int = 60
    workspace_path: str = "/workspace"
    namespace: str = "default"
    volume: dict[str, Any] | None = None
    pod_spec: dict[str, Any] | None = None
    auto_remove: bool = True
    port: int = DEFAULT_PORT
    kube_config_file: str | None = None
    hardened: bool = True
    kubectl: str | None = None
    context: str | None = None


class PodJupyterCodeExecutorConfig(BaseModel):
    """The seed's configuration: the pod to reach (not a server), kernel, timeout, output dir."""

    jupyter_server: PodJupyterConnectionInfo
    kernel_name: str = KERNEL
    timeout: int = Field(60, ge=1)
    output_dir: str | None = None
