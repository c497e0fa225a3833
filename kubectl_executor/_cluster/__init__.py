"""The cluster layer (private): every kubectl process, and the Kubernetes objects this library makes.

It knows pods, claims, labels and kubectl; it knows nothing of code blocks, languages or sessions.
Imports only :mod:`kubectl_executor.errors` and :mod:`kubectl_executor.boundary` from outside itself
(checked by ``tests/unit/test_layers.py``)."""
