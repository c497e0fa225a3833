"""The public pydantic types, in one module loaded on first use.

Importing pydantic costs about as much as all the rest of ``import kubectl_executor``; these
types are only needed once an executor is built or a result is made, so the modules that own
their logic (kubectl.py, manifest.py, results.py, dispatcher.py) re-export them lazily.
"""

from __future__ import annotations

import base64
import math
import sys
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from typing_extensions import Self

from .defaults import (
    ACTIVE_DEADLINE_SECONDS,
    IMAGE,
    MAX_OUTPUT_BYTES,
    MAX_RICH_BYTES,
    MAX_RICH_OUTPUT_BYTES,
    RUN_AS_USER,
    RUN_TIMEOUT,
    STARTUP_TIMEOUT,
    WORK_DIR,
    WORKSPACE_SIZE_LIMIT,
)
from .errors import InvalidInputError


class Options(BaseModel):
    """The frame of the option models (:class:`ClusterAccess`, :class:`PodShape`, :class:`RunOptions`).

    Each is defined once and taken whole by every facade (``access=``, ``pod=``, ``run_options=``);
    a facade's separate keywords (the seed's among them) map onto it with :meth:`of`, and the
    integrations build it from their settings with :meth:`pick`."""

    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    keyword: ClassVar[str]
    """The facades' keyword for the whole model (``access``, ``pod``, ``run_options``)."""

    def __init__(self, /, **data: Any) -> None:
        """As pydantic's, but a field's own check that refused a value raises its
        :class:`InvalidInputError` (the library's one error tree), not a ``ValidationError``."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            for error in exc.errors():
                cause = (error.get("ctx") or {}).get("error")
                if isinstance(cause, InvalidInputError):
                    raise cause from None
            raise

    @classmethod
    def pick(cls, values: Mapping[str, Any]) -> Self:
        """The fields of a keyword mapping (settings, an executor's keywords); other keys and
        unset (None) values are ignored."""
        return cls._build({k: v for k, v in values.items() if k in cls.model_fields and v is not None})

    @classmethod
    def of(cls, given: Self | None, **fields: Any) -> Self:
        """``given`` as it is, else one made of a facade's separate keywords; both is an error.

        A keyword counts as set when it differs from the field's default (None is "unset" for a
        field that cannot be None, and a value for one that can: ``active_deadline_seconds=None``)."""
        chosen = {k: v for k, v in fields.items() if cls._is_set(k, v)}
        if given is None:
            return cls._build(chosen)
        if chosen:
            raise InvalidInputError(f"pass {cls.keyword}= or {', '.join(sorted(chosen))}, not both")
        return given

    @classmethod
    def _is_set(cls, name: str, value: Any) -> bool:
        field = cls.model_fields[name]
        default = field.get_default(call_default_factory=True)
        if value is None:
            return default is not None and type(None) in get_args(field.annotation)
        return bool(value != default)

    @classmethod
    def _build(cls, values: Mapping[str, Any]) -> Self:
        """The model, or an :class:`InvalidInputError` saying which option is wrong."""
        try:
            return cls(**values)
        except ValidationError as exc:  # a type or an unknown field: a field's own check raised already
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InvalidInputError(f"invalid {cls.keyword} option {problems}") from exc


class ClusterAccess(Options):
    """How to reach the cluster. Every field is optional: unset means "as kubectl would".

    The one definition of cluster access: every facade takes it as ``access=`` (their separate
    keywords, the seed's among them, map onto it with :meth:`of`), and the integrations build it
    from their settings with :meth:`pick`."""

    model_config = ConfigDict(extra="ignore")
    keyword: ClassVar[str] = "access"

    kubectl: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    remote_control_plane: str | None = None
    kube_token: SecretStr | None = None
    certificate_authority: str | None = None
    insecure_skip_tls_verify: bool = False

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


def _pod_dir(value: Any) -> Any:
    """An absolute path in the pod, normalised (``/workspace/`` is ``/workspace``), so that an
    executor, a pool and the manifest compare and build the same directory."""
    if not isinstance(value, str):
        return value  # pydantic says it is not a string
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts or "\n" in value:
        raise InvalidInputError(f"work_dir must be an absolute path in the pod, got {value!r}")
    return str(path)


class PodShape(Options):
    """Everything that shapes the pod, defined once: every facade takes it as ``pod=`` (the
    executor's and pool's separate keywords map onto it), the integrations build it once.

    ``env`` is the container's environment (the seed's ``env_vars`` list maps onto it);
    ``run_as_group`` None means the same as ``run_as_user``; ``node`` pins the pod to a node
    (nodeSelector ``kubernetes.io/hostname``); ``shared_pvc_name`` mounts that claim at
    ``work_dir`` instead of an emptyDir of ``workspace_size_limit``; ``pod_overrides`` is
    deep-merged into the manifest last."""

    keyword: ClassVar[str] = "pod"

    image: str = IMAGE
    work_dir: Annotated[str, BeforeValidator(_pod_dir)] = WORK_DIR
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    # Restricted Pod Security profile unless hardened=False.
    hardened: bool = True
    run_as_user: int = RUN_AS_USER
    run_as_group: int | None = None
    read_only_root_filesystem: bool = False
    runtime_class_name: str | None = None
    service_account_name: str | None = None
    active_deadline_seconds: int | None = ACTIVE_DEADLINE_SECONDS
    workspace_size_limit: str | None = WORKSPACE_SIZE_LIMIT
    shared_pvc_name: str | None = None
    node: str | None = None
    pod_overrides: dict[str, Any] = Field(default_factory=dict)

    @property
    def group(self) -> int:
        """The gid the code runs as (``run_as_group``, else ``run_as_user``)."""
        return self.run_as_user if self.run_as_group is None else self.run_as_group


class PodOptions(PodShape):
    """The manifest's input (internal): a :class:`PodShape` plus what the facade adds, the pod's
    name and its ownerReferences."""

    name: str
    owner_references: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def of_shape(cls, shape: PodShape, name: str, **extra: Any) -> PodOptions:
        return cls(**{**dict(shape), "name": name, **extra})


def _at_least(minimum: float, message: str) -> BeforeValidator:
    """A real number (not a string) of at least ``minimum``, checked before any conversion."""

    def check(value: Any) -> Any:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
            raise InvalidInputError(message.format(value=value))
        return value

    return BeforeValidator(check)


_RICH = "max_rich_output_bytes and max_rich_bytes must be >= 0"


class RunOptions(Options):
    """How runs go, defined once: every facade takes it as ``run_options=`` (the executor's
    separate keywords, the seed's ``timeout`` among them, map onto it).

    ``timeout`` is the seconds one block may run (enforced in the pod; 124 = timed out);
    ``startup_timeout`` the seconds to wait for a pod; ``max_output_bytes`` what each stream keeps
    in a result (head and tail; the full log stays in the pod); ``max_rich_output_bytes`` /
    ``max_rich_bytes`` what one rich output / all of a result's send back (0: every one stays in
    the pod, named by ``kept_path``); ``list_files`` reports the files a block changed."""

    keyword: ClassVar[str] = "run_options"

    timeout: Annotated[
        int | float,
        _at_least(1, "Timeout must be greater than or equal to 1. (timeout is in seconds; got {value!r})"),
    ] = RUN_TIMEOUT
    startup_timeout: Annotated[float, _at_least(sys.float_info.min, "startup_timeout must be > 0")] = (
        STARTUP_TIMEOUT
    )
    max_output_bytes: Annotated[int, _at_least(1024, "max_output_bytes must be at least 1024")] = (
        MAX_OUTPUT_BYTES
    )
    max_rich_output_bytes: Annotated[int, _at_least(0, _RICH)] = MAX_RICH_OUTPUT_BYTES
    max_rich_bytes: Annotated[int, _at_least(0, _RICH)] = MAX_RICH_BYTES
    list_files: bool = True


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
