"""Pydantic models at the boundaries: what kubectl prints (``-o json``) and what we return."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _K8s(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)


class ObjectMeta(_K8s):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = Field("", alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: str | None = Field(None, alias="creationTimestamp")
    deletion_timestamp: str | None = Field(None, alias="deletionTimestamp")


class Condition(_K8s):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None


class ContainerState(_K8s):
    waiting: dict[str, Any] | None = None
    running: dict[str, Any] | None = None
    terminated: dict[str, Any] | None = None


class ContainerStatus(_K8s):
    name: str
    ready: bool = False
    state: ContainerState = Field(default_factory=lambda: ContainerState())
    image: str | None = None


class PodStatus(_K8s):
    phase: str = "Unknown"
    reason: str | None = None
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    container_statuses: list[ContainerStatus] = Field(default_factory=list, alias="containerStatuses")


class ContainerSpec(_K8s):
    name: str
    image: str = ""


class PodSpec(_K8s):
    containers: list[ContainerSpec] = Field(default_factory=list)


class Pod(_K8s):
    metadata: ObjectMeta = Field(default_factory=lambda: ObjectMeta())
    spec: PodSpec = Field(default_factory=lambda: PodSpec())
    status: PodStatus = Field(default_factory=lambda: PodStatus())

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.status.conditions if c.type == kind), None)

    @property
    def ready(self) -> bool:
        cond = self.condition("Ready")
        return self.status.phase == "Running" and cond is not None and cond.status == "True"


class PodList(_K8s):
    items: list[Pod] = Field(default_factory=list)
