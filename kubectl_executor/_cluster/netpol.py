"""Pure: the default-deny egress NetworkPolicy that can go with an executor's pod.

Model-written code should not reach the network unless the user says so: with
``network_policy=True`` the executor creates this policy *before* its pod (so the pod never runs
without it) and deletes it with the pod. It selects the pod by its owner-id label and allows no
egress at all, DNS included. Ingress is left alone (nothing listens in the pod).

How to relax it:

* ``network_policy=False`` (the default): no policy, e.g. when the code must ``pip install``.
* Keep the deny and open exactly what is needed with a policy of your own that selects the same
  pod label (``kubectl-executor.io/session=<executor.owner_id>``, or a label you add with
  ``labels=``): NetworkPolicies are additive, so an allow rule in any policy opens that path.

A policy only takes effect where the cluster's network plugin enforces NetworkPolicy (Calico,
Cilium, ...); elsewhere it is stored and ignored, which this library cannot detect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError
from .labels import MANAGED_BY, MANAGED_BY_LABEL, OWNER_ID_LABEL
from .manifest import validate_dns_label, validate_label_value

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
RESOURCE = "networkpolicy.networking.k8s.io"
"""What kubectl calls it (``kubectl delete networkpolicy.networking.k8s.io/<name>``)."""


def build_egress_deny_policy(
    name: str,
    owner_id: str,
    *,
    owner_pod: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The policy for the pod of owner ``owner_id``, named like the pod.

    ``owner_pod`` (``{"name", "uid"}`` of that pod) adds an ownerReference so that the cluster's
    garbage collector deletes the policy with the pod even when nobody calls ``stop()``.
    """
    validate_dns_label(name, "network policy name")
    validate_label_value(owner_id)
    if not owner_id:
        raise InvalidInputError("a network policy needs the owner-id label value of its pod")
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, OWNER_ID_LABEL: owner_id},
    }
    if owner_pod is not None:
        if not owner_pod.get("name") or not owner_pod.get("uid"):
            raise InvalidInputError("owner_pod needs the pod's name and uid")
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": owner_pod["name"],
                "uid": owner_pod["uid"],
                "controller": False,
                "blockOwnerDeletion": False,
            }
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": {OWNER_ID_LABEL: owner_id}},
            "policyTypes": ["Egress"],
            "egress": [],
        },
    }
