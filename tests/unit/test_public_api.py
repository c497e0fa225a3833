"""The public API: what `kubectl_executor` exports, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubectl_executor
from kubectl_executor import errors

INTENDED = {
    "KubernetesCommandLineCodeExecutor",
    "CodeBlock",
    "CodeResult",
    "CommandLineCodeResult",
    "MarkdownCodeExtractor",
    "ClusterAccess",
    "Kubectl",
    "PodShape",
    "Resources",
    "RunOptions",
    "RetryPolicy",
    "RichOutput",
    "ChangedFile",
    "KubectlExecutorError",
    "InvalidInputError",
    "UnsafePathError",
    "KubectlNotFoundError",
    "KubectlError",
    "NotFoundError",
    "ForbiddenError",
    "ConflictError",
    "TransientError",
    "ExecNotStartedError",
    "PodStartError",
    "StartupTimeoutError",
    "OutcomeUnknownError",
    "TransferError",
    "RemoteNotFoundError",
    "TransferLimits",
    "ToolCallResult",
    "ToolCommandLineCodeResult",
    "ToolError",
    "WorkspaceVolume",
    "PVCValidationResult",
    "ClaimNotBoundError",
    "__version__",
}


def test_all_is_the_intended_api() -> None:
    assert set(kubectl_executor.__all__) == INTENDED
    assert len(kubectl_executor.__all__) == len(set(kubectl_executor.__all__))


def test_every_name_in_all_exists() -> None:
    for name in kubectl_executor.__all__:
        assert hasattr(kubectl_executor, name), name


def test_every_exception_derives_from_the_base() -> None:
    for name in kubectl_executor.__all__:
        obj = getattr(kubectl_executor, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, errors.KubectlExecutorError), name
            assert obj.__module__ == "kubectl_executor.errors", name


def test_exception_tree_shape() -> None:
    e = kubectl_executor
    assert issubclass(e.InvalidInputError, ValueError)
    assert issubclass(e.UnsafePathError, e.InvalidInputError)
    assert issubclass(e.KubectlNotFoundError, FileNotFoundError)
    for sub in (e.NotFoundError, e.ForbiddenError, e.ConflictError, e.TransientError):
        assert issubclass(sub, e.KubectlError)
    assert issubclass(e.ExecNotStartedError, e.TransientError)
    assert issubclass(e.StartupTimeoutError, TimeoutError)
    assert not issubclass(e.OutcomeUnknownError, e.KubectlError)


def test_every_error_class_is_exported() -> None:
    defined = {
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    }
    assert defined <= set(kubectl_executor.__all__)


def test_version() -> None:
    assert isinstance(kubectl_executor.__version__, str) and kubectl_executor.__version__.count(".") == 2


def test_seed_import_line_works() -> None:
    from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor

    assert callable(KubernetesCommandLineCodeExecutor) and callable(CodeBlock)


LAZY = ("sh", "tenacity", "markdown_it", "kubernetes", "pydantic", "kubectl_executor.workspace")


def test_import_is_light() -> None:
    """sh, tenacity, markdown-it, pydantic (the public types) and the workspace module are imported
    on first use, not by the seed's import line."""
    code = (
        "import sys\n"
        "from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor\n"
        f"print(','.join(m for m in {LAZY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_each_public_type_has_one_home() -> None:
    """A public type is importable from ``kubectl_executor`` and from the module that defines it,
    nowhere else: the private modules that use the pydantic types do not re-export them."""
    from kubectl_executor import boundary
    from kubectl_executor._cluster import kubectl, manifest
    from kubectl_executor._exec import dispatcher, results

    assert kubectl_executor.CommandLineCodeResult is boundary.CommandLineCodeResult
    assert kubectl_executor.ClusterAccess is boundary.ClusterAccess
    assert (
        kubectl_executor.PodShape is boundary.PodShape and kubectl_executor.RunOptions is boundary.RunOptions
    )
    assert not hasattr(kubectl_executor, "PodOptions")  # the manifest's input (a PodShape + name), internal
    for module, name in [
        (results, "CommandLineCodeResult"),
        (kubectl, "ClusterAccess"),
        (manifest, "PodOptions"),
        (manifest, "PodShape"),
        (dispatcher, "ToolCallResult"),
    ]:
        assert not hasattr(module, name), f"{module.__name__} re-exports {name}"
    assert issubclass(kubectl_executor.ToolCommandLineCodeResult, kubectl_executor.CommandLineCodeResult)


def test_only_the_package_has_a_lazy_attribute_hook() -> None:
    """``__init__`` loads the pydantic types on first use (import time); no other module has a hook."""
    root = Path(kubectl_executor.__file__).parent
    hooks = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "\ndef __getattr__(" in p.read_text() and p.name != "__init__.py"
    )
    assert hooks == []


def test_code_block_refuses_what_is_not_text() -> None:
    from kubectl_executor import CodeBlock

    assert CodeBlock("print(1)", "python").code == "print(1)"
    for bad in ({"code": 1, "language": "python"}, {"code": "x", "language": None}):
        try:
            CodeBlock(**bad)  # type: ignore[arg-type]
        except kubectl_executor.InvalidInputError as exc:
            assert "CodeBlock." in str(exc)
        else:
            raise AssertionError(f"CodeBlock accepted {bad}")
