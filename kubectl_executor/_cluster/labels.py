"""Every label and annotation this library puts on the objects it makes, in one place.

gc, ``kubectl-executor ls``, the warm pool and workspace deletion select on these; changing one
strands the objects made by an older version, so they are part of the on-cluster contract."""

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubectl-executor"
# The owner id: which executor (or workspace) made the object; its ``owner_id``. The key keeps the
# word "session" (the first name of the owner id): pods made by earlier versions carry it, and
# renaming the key would hide them from gc, ``ls`` and netpol selection. In this code base
# "session" means the persistent exec channel to a pod (``session=True``), never this id.
OWNER_ID_LABEL = "kubectl-executor.io/session"
OWNER_HOST_LABEL = "kubectl-executor.io/owner-host"
OWNER_PID_LABEL = "kubectl-executor.io/owner-pid"
CREATED_AT_LABEL = "kubectl-executor.io/created-at"
SPEC_LABEL = "kubectl-executor.io/spec"
IMAGE_ANNOTATION = "kubectl-executor.io/image"
WORK_DIR_ANNOTATION = "kubectl-executor.io/work-dir"

# Pods made by `kubectl-executor up` carry lifetime=long-lived: gc keeps them unless asked.
LIFETIME_LABEL = "kubectl-executor.io/lifetime"
LONG_LIVED = "long-lived"

# Warm pool: which pool a pod belongs to, and whether an executor has claimed it.
POOL_LABEL = "kubectl-executor.io/pool"
CLAIMED_LABEL = "kubectl-executor.io/claimed"

# On a static volume we made: which claim it is for (gc and `workspace delete` select on these).
CLAIM_LABEL = "kubectl-executor.io/claim"
CLAIM_NAMESPACE_LABEL = "kubectl-executor.io/claim-namespace"
# On a claim whose static volume we made: that volume's name.
VOLUME_ANNOTATION = "kubectl-executor.io/volume"
