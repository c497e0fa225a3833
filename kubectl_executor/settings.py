"""Settings from the environment, one model for the CLI and the library.

Every field is read from ``KUBECTL_EXECUTOR_<FIELD>`` (``KUBECTL_EXECUTOR_NAMESPACE``,
``KUBECTL_EXECUTOR_TIMEOUT``...); explicit values (constructor keywords, CLI flags) win over the
environment. Unset fields mean "as kubectl would" and are not passed on, so the executor's own
defaults stay the single source of truth for them.

The bearer token is deliberately not a field: it is read from ``KUBE_TOKEN`` by the library and
never travels on a command line.

Library use::

    from kubectl_executor.settings import Settings
    settings = Settings()
    executor = KubernetesCommandLineCodeExecutor(
        access=settings.cluster_access(), pod=settings.pod_shape(), run_options=settings.run_options()
    )
    # or, as separate keywords: KubernetesCommandLineCodeExecutor(**settings.executor_kwargs())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._cluster.manifest import validate_dns_label
from .defaults import IMAGE, RUN_TIMEOUT, STARTUP_TIMEOUT, WORK_DIR

if TYPE_CHECKING:
    from .boundary import ClusterAccess, PodShape, RunOptions

ENV_PREFIX = "KUBECTL_EXECUTOR_"


class Settings(BaseSettings):
    """What can be configured from the environment. ``None`` = not set, use the default."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
    )

    kubectl: str | None = Field(None, description="kubectl binary (else $KUBECTL, else PATH)")
    kubeconfig: str | None = Field(None, description="kubeconfig file (else kubectl's default)")
    context: str | None = Field(None, description="kubeconfig context (else the current one)")
    namespace: str | None = Field(None, description="namespace (else the context's)")
    image: str | None = Field(None, description=f"container image (default {IMAGE})")
    timeout: int | None = Field(None, ge=1, description=f"seconds per code block (default {RUN_TIMEOUT})")
    work_dir: str | None = Field(None, description=f"workspace path in the pod (default {WORK_DIR})")
    startup_timeout: float | None = Field(
        None, gt=0, description=f"seconds to wait for the pod (default {STARTUP_TIMEOUT:g})"
    )
    max_output_bytes: int | None = Field(None, ge=1024, description="per stream kept in the result")
    remote_control_plane: str | None = Field(None, description="API server URL for bearer-token mode")
    certificate_authority: str | None = Field(None, description="CA file or PEM for bearer-token mode")
    insecure_skip_tls_verify: bool | None = Field(None, description="skip TLS verification (explicit opt-in)")
    run_as_user: int | None = Field(None, ge=0, description="uid of the code in the pod (default 1000)")

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_label(cls, value: str | None) -> str | None:
        return validate_dns_label(value, "namespace") if value is not None else None

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of ``field`` (for help texts)."""
        if field not in cls.model_fields:
            raise KeyError(field)
        return f"{ENV_PREFIX}{field.upper()}"

    def cluster_access(self) -> ClusterAccess:
        """The cluster access these settings give (the token, from ``KUBE_TOKEN``, is read later)."""
        from .boundary import ClusterAccess

        return ClusterAccess.pick(self.model_dump())

    def pod_shape(self, **fields: Any) -> PodShape:
        """The pod these settings shape, with ``fields`` (of :class:`PodShape`) over them; a
        field given as None counts where None is a value (``active_deadline_seconds=None``)."""
        from .boundary import PodShape

        return PodShape.of(None, **{**self._set(PodShape.model_fields), **fields})

    def run_options(self, **fields: Any) -> RunOptions:
        """The run options these settings give, with ``fields`` (of :class:`RunOptions`) over them."""
        from .boundary import RunOptions

        return RunOptions.of(None, **{**self._set(RunOptions.model_fields), **fields})

    def _set(self, names: Any) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k in names and v is not None}

    def executor_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keywords for ``KubernetesCommandLineCodeExecutor``: only what is set, plus ``overrides``."""
        values = {k: v for k, v in self.model_dump().items() if v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return values


def load_settings(**explicit: Any) -> Settings:
    """The environment, overridden by the explicit values that are not None."""
    return Settings(**{k: v for k, v in explicit.items() if v is not None})
