"""The execution layer (private): how one block, one file transfer or one function call runs in a pod.

The exec protocol with the in-pod scripts (``_pod/``, package data run by the image's Python), the
persistent session channel, tar transfer and the language table. Imports downward only: the cluster
layer, :mod:`kubectl_executor.errors` and :mod:`kubectl_executor.boundary` (checked by
``tests/unit/test_layers.py``)."""
