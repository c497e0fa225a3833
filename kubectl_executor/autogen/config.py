"""The serialisable configurations (``dump_component``) of the AutoGen executors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..boundary import Resources
from ..defaults import ACTIVE_DEADLINE_SECONDS, IMAGE, MAX_OUTPUT_BYTES, STARTUP_TIMEOUT, WORK_DIR


class KubectlCodeExecutorConfig(BaseModel):
    """The serialisable configuration (``dump_component``). No secrets: the bearer token of
    ``remote_control_plane`` mode is read from ``KUBE_TOKEN`` when the executor starts. Functions
    are not serialised (as for autogen-ext's executors)."""

    model_config = ConfigDict(extra="forbid")

    image: str = IMAGE
    pod_name: str | None = None
    namespace: str | None = None
    timeout: int = Field(60, ge=1)
    work_dir: str | None = None
    pod_work_dir: str = WORK_DIR
    mirror: bool = True
    functions_module: str = "functions"
    delete_tmp_files: bool = False
    init_command: str | None = None
    auto_remove: bool = True
    execution_policies: dict[str, bool] | None = None
    env_vars: dict[str, str] = Field(default_factory=dict)
    kubectl: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    remote_control_plane: str | None = None
    certificate_authority: str | None = None
    insecure_skip_tls_verify: bool = False
    startup_timeout: float = Field(STARTUP_TIMEOUT, gt=0)
    max_output_bytes: int = Field(MAX_OUTPUT_BYTES, ge=1024)
    attach: bool = False
    hardened: bool = True
    run_as_user: int = 1000
    read_only_root_filesystem: bool = False
    runtime_class_name: str | None = None
    active_deadline_seconds: int | None = ACTIVE_DEADLINE_SECONDS
    labels: dict[str, str] = Field(default_factory=dict)
    resources: Resources | None = None
    pod_overrides: dict[str, Any] = Field(default_factory=dict)


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
