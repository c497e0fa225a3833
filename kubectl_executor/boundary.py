"""The public pydantic types, in one module loaded on first use.

Importing pydantic costs about as much as all the rest of ``import kubectl_executor``; these
types are only needed once an executor is built or a result is made, so the modules that own
their logic (kubectl.py, manifest.py, results.py, dispatcher.py) re-export them lazily.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from .defaults import ACTIVE_DEADLINE_SECONDS, IMAGE, WORK_DIR
from .errors import InvalidInputError


class ClusterAccess(BaseModel):
    """How to reach the cluster. Every field is optional: unset means "as kubectl would".

    The one definition of cluster access: every facade takes it as ``access=`` (their separate
    keywords, the seed's among them, map onto it with :meth:`of`), and the integrations build it
    from their settings with :meth:`pick`."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    kubectl: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    remote_control_plane: str | None = None
    kube_token: SecretStr | None = None
    certificate_authority: str | None = None
    insecure_skip_tls_verify: bool = False

    @classmethod
    def pick(cls, values: Mapping[str, Any]) -> ClusterAccess:
        """The access fields of a keyword mapping (settings, an executor's keywords); others and
        unset (None) values are ignored."""
        return cls(**{k: v for k, v in values.items() if k in cls.model_fields and v is not None})

    @classmethod
    def of(cls, access: ClusterAccess | None, **fields: Any) -> ClusterAccess:
        """``access`` as given, else one made of a facade's separate keywords; both is an error."""
        if access is None:
            return cls.pick(fields)
        given = sorted(k for k, v in fields.items() if v is not None and v is not False)
        if given:
            raise InvalidInputError(f"pass access= or {', '.join(given)}, not both")
        return access

    def with_namespace(self, namespace: str | None) -> ClusterAccess:
        """The same access in ``namespace`` (None: unchanged)."""
        return self if namespace is None else self.model_copy(update={"namespace": namespace})


class Resources(BaseModel):
    """Requests and limits; sane defaults for a code sandbox, all configurable."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    cpu_request: str = "100m"
    memory_request: str = "256Mi"
    cpu_limit: str | None = "2"
    memory_limit: str | None = "2Gi"
    ephemeral_storage_limit: str | None = "4Gi"


class PodOptions(BaseModel):
    """Everything that shapes the pod. Built by the executor from its constructor arguments."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    name: str
    image: str = IMAGE
    work_dir: str = WORK_DIR
    shared_pvc_name: str | None = None
    node: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    workspace_size_limit: str | None = "2Gi"
    active_deadline_seconds: int | None = ACTIVE_DEADLINE_SECONDS
    # Restricted Pod Security profile unless hardened=False.
    hardened: bool = True
    run_as_user: int = 1000
    run_as_group: int = 1000
    read_only_root_filesystem: bool = False
    runtime_class_name: str | None = None
    service_account_name: str | None = None
    owner_references: list[dict[str, Any]] = Field(default_factory=list)
    pod_overrides: dict[str, Any] = Field(default_factory=dict)


class RichOutput(BaseModel):
    """One rich output of a block (a chart, a table's HTML...), in the order the block made them.

    ``data`` is bytes for binary types (image/png, image/jpeg), str for text types. An output
    over its budget has empty ``data`` and ``kept_path``: the full output is kept in the pod at
    that path. ``metadata`` holds e.g. an image's ``width``/``height``, and ``bundle``: outputs of
    one displayed object (its PNG and its text/plain) share it. In JSON (``mode="json"``) binary
    data is standard base64 and ``encoding`` says which ("base64" or "utf-8"); validation reads it back.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    mime_type: str
    data: bytes | str
    metadata: dict[str, Any] = Field(default_factory=dict)
    kept_path: str | None = None

    @model_serializer(mode="wrap")
    def _json_form(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        if not info.mode_is_json():
            out: dict[str, Any] = handler(self)
            return out
        binary = isinstance(self.data, bytes)
        out = handler(self.model_copy(update={"data": ""}))
        out["data"] = base64.b64encode(self.data).decode() if isinstance(self.data, bytes) else self.data
        out["encoding"] = "base64" if binary else "utf-8"
        return out

    @model_validator(mode="before")
    @classmethod
    def _from_json_form(cls, value: Any) -> Any:
        if isinstance(value, dict) and "encoding" in value:
            value = dict(value)
            if value.pop("encoding") == "base64" and isinstance(value.get("data"), str):
                value["data"] = base64.b64decode(value["data"])
        return value


class ChangedFile(BaseModel):
    """A file the block created or changed under work_dir (``path`` is relative to it)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    path: str
    size: int
    sha256: str


class CodeResult(BaseModel):
    """``exit_code`` is the program's own (0-255, 128+N for a signal, 124 for a timeout)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    exit_code: int
    output: str


class CommandLineCodeResult(CodeResult):
    """The seed's result, plus the streams kept apart and what the output budget cut."""

    code_file: str | None = None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    truncated: bool = False
    log_files: list[str] = []
    state_lost: bool = False  # a stateful session had to restart its interpreter
    # Rich results of all blocks run (the seed has none of these: extra fields, never in output).
    outputs: tuple[RichOutput, ...] = ()
    files: tuple[ChangedFile, ...] = ()
    files_truncated: bool = False  # the scan of work_dir was cut: more files may have changed


class ToolError(BaseModel):
    """What the function raised: qualified type name, ``str(exc)``, the formatted traceback."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    type: str
    message: str
    traceback: str


class ToolCallResult(BaseModel):
    """The structured side of a tool call, as the in-pod runner reported it.

    ``value`` is the return value when it is JSON-serialisable (``value_is_json``), else None and
    ``value_repr`` says what it was. ``stdout``/``stderr`` are the function's own output, without
    the result the runner prints (seed compatibility) or the traceback it writes.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    module: str | None = None
    function: str | None = None
    status: Literal["returned", "raised"]
    value: Any = None
    value_is_json: bool = False
    value_repr: str | None = None
    value_truncated: bool = False
    error: ToolError | None = None
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "returned"


class ToolCommandLineCodeResult(CommandLineCodeResult):
    """The seed's result for a tool call (``output`` = what it printed) plus ``tool_result``."""

    tool_result: ToolCallResult | None = None
