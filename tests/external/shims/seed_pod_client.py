"""The seed's private helper that its test_pod_auto_remove_false imports
(autogen_kubernetes.code_executors._utils.get_namespaced_corev1_resource), with the kubernetes
client: test-only (the library never uses the client). As the seed's: the pod as the API server's
JSON, {} if absent."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException


async def get_namespaced_corev1_resource(config: Any, spec: dict[str, Any]) -> dict[str, Any]:
    api = client.CoreV1Api(client.ApiClient(config))
    meta = spec["metadata"]
    try:
        response = api.read_namespaced_pod(meta["name"], meta["namespace"], _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    result: dict[str, Any] = json.loads(response.data)
    return result
