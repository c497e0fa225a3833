"""The seed's forms of Kubernetes objects (``pod_spec``, ``volume``), shared by its executors.

The seed takes a pod spec or a volume as a dict, YAML text, a YAML file path or a
kubernetes-client model; these turn each into the JSON the API takes, without the client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

__all__ = ["SEED_CONTAINER", "add_workspace_volume", "plain", "spec_from", "workspace_volume"]

SEED_CONTAINER = "autogen-executor"  # the container the seed's pod_spec must name


def spec_from(value: Any, what: str) -> dict[str, Any] | None:
    """The seed's forms of a Kubernetes object: a dict, a YAML file path (str or Path), YAML
    text, or a kubernetes-client model (read by duck typing: the client is never imported)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            if Path(value).exists():
                value = Path(value)
        except OSError:
            pass
    if isinstance(value, (str, Path)):
        try:
            import yaml
        except ImportError as exc:
            raise ImportError(f"a YAML {what} needs PyYAML: pip install 'kubectl-executor[autogen]'") from exc
        if isinstance(value, Path):
            kind = "Volume" if what == "volume" else "Pod"
            documents = [d for d in yaml.safe_load_all(value.read_text(encoding="utf-8")) if d]
            # A file may hold several objects (the seed's holds the Pod, a Service and a Secret).
            loaded = next((d for d in documents if isinstance(d, dict) and d.get("kind") == kind), None)
            if loaded is None and len(documents) == 1:
                loaded = documents[0]
            if loaded is None:
                raise InvalidInputError(f"spec file {value} has no manifest for kind {kind}")
        else:
            loaded = yaml.safe_load(value)
    else:
        loaded = plain(value)
    if not isinstance(loaded, dict):
        raise InvalidInputError(
            f"{what} must describe a mapping (a Kubernetes object), got {type(loaded).__name__}"
        )
    return loaded


def plain(obj: Any) -> Any:
    """A kubernetes-client model (V1Pod, V1Volume, ...) as the JSON the API takes, by duck typing
    on its ``openapi_types``/``attribute_map`` (what the client's sanitize_for_serialization does),
    so the library never imports the client."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [plain(item) for item in obj]
    if isinstance(obj, dict):
        return {key: plain(value) for key, value in obj.items()}
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    types, names = getattr(obj, "openapi_types", None), getattr(obj, "attribute_map", None)
    if isinstance(types, dict) and isinstance(names, dict):
        return {names[attr]: plain(getattr(obj, attr)) for attr in types if getattr(obj, attr) is not None}
    raise InvalidInputError(f"cannot use a {type(obj).__name__} as a Kubernetes object")


def workspace_volume(volume: dict[str, Any]) -> dict[str, Any]:
    """The seed's ``volume`` as our workspace volume (mounted at the work dir): its source
    replaces our emptyDir (whose sizeLimit goes unless the given source sets one)."""
    source = {k: v for k, v in volume.items() if k != "name"}
    if isinstance(source.get("emptyDir"), dict):
        source["emptyDir"] = {"sizeLimit": None, **source["emptyDir"]}
    return {"name": "workspace", "emptyDir": None, **source}


def add_workspace_volume(overrides: dict[str, Any], volume: dict[str, Any] | None) -> None:
    """Put the seed's ``volume`` (if given) into a pod's overrides, after any volumes they have."""
    if volume is not None:
        spec = overrides.setdefault("spec", {})
        spec["volumes"] = [*spec.get("volumes", []), workspace_volume(volume)]
