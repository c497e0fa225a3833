"""kubectl.py: locating kubectl, global flags, bearer-token mode, redaction, failure classification."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from kx_fakes import ExecReply, FakeRunner, RunCall

from kubectl_executor._cluster.kubectl import (
    Kubectl,
    base_flags,
    classify_failure,
    locate_kubectl,
    redact,
    token_kubeconfig,
)
from kubectl_executor._cluster.runner import Completed
from kubectl_executor.boundary import ClusterAccess
from kubectl_executor.errors import (
    ConflictError,
    ExecNotStartedError,
    ForbiddenError,
    InvalidInputError,
    KubectlError,
    KubectlNotFoundError,
    NotFoundError,
    TransientError,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.s3cr3t-t0ken-value"
SERVER = "https://api.example.test:6443"
PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUFAKE\n-----END CERTIFICATE-----\n"


def _exe(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 99\n")
    path.chmod(0o755)
    return str(path)


# -- locate_kubectl ------------------------------------------------------------------------------


@pytest.fixture
def three_kubectls(tmp_path: Path) -> tuple[str, str, str, str]:
    explicit = _exe(tmp_path / "explicit" / "kubectl-explicit")
    from_env = _exe(tmp_path / "env" / "kubectl-env")
    on_path = _exe(tmp_path / "path" / "kubectl")
    return explicit, from_env, on_path, str(tmp_path / "path")


def test_locate_prefers_explicit_over_env_and_path(three_kubectls: tuple[str, str, str, str]) -> None:
    explicit, from_env, _, path_dir = three_kubectls
    assert locate_kubectl(explicit, {"KUBECTL": from_env, "PATH": path_dir}) == explicit


def test_locate_uses_kubectl_env_before_path(three_kubectls: tuple[str, str, str, str]) -> None:
    _, from_env, _, path_dir = three_kubectls
    assert locate_kubectl(None, {"KUBECTL": from_env, "PATH": path_dir}) == from_env


def test_locate_falls_back_to_path(three_kubectls: tuple[str, str, str, str]) -> None:
    _, _, on_path, path_dir = three_kubectls
    assert locate_kubectl(None, {"PATH": path_dir}) == on_path
    assert locate_kubectl(None, {"KUBECTL": "", "PATH": path_dir}) == on_path


def test_locate_resolves_an_explicit_bare_name_on_path(tmp_path: Path) -> None:
    found = _exe(tmp_path / "bin" / "kubectl-1.32")
    assert locate_kubectl("kubectl-1.32", {"PATH": str(tmp_path / "bin")}) == found


def test_locate_does_not_fall_back_when_the_explicit_one_is_missing(
    three_kubectls: tuple[str, str, str, str], tmp_path: Path
) -> None:
    _, from_env, _, path_dir = three_kubectls
    with pytest.raises(KubectlNotFoundError) as info:
        locate_kubectl(str(tmp_path / "nope" / "kubectl"), {"KUBECTL": from_env, "PATH": path_dir})
    assert "nope" in str(info.value)


def test_locate_missing_everywhere_gives_install_hint(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KubectlNotFoundError) as info:
        locate_kubectl(None, {"PATH": str(empty)})
    text = str(info.value)
    assert "kubernetes.io/docs/tasks/tools" in text
    assert "KUBECTL" in text and "kubectl=" in text and "kubectl-executor[kubectl]" in text
    assert isinstance(info.value, FileNotFoundError)


def test_locate_ignores_a_non_executable_file(tmp_path: Path) -> None:
    (tmp_path / "kubectl").write_text("not executable")
    with pytest.raises(KubectlNotFoundError):
        locate_kubectl(None, {"PATH": str(tmp_path)})


def test_kubectl_reports_missing_binary_at_run_time(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner
) -> None:
    k = make_kubectl()

    def gone(call: RunCall) -> Completed:
        raise FileNotFoundError(k.path)

    fake_runner.on_run = gone
    with pytest.raises(KubectlNotFoundError, match="Install it"):
        k.run(["get", "pods"])


# -- base_flags ------------------------------------------------------------------------------------


def test_base_flags_empty_when_nothing_is_set() -> None:
    assert base_flags(ClusterAccess(), None) == []


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        (ClusterAccess(kubeconfig="/k/config"), ["--kubeconfig=/k/config"]),
        (ClusterAccess(context="prod"), ["--context=prod"]),
        (ClusterAccess(namespace="team-a"), ["--namespace=team-a"]),
        (
            ClusterAccess(kubeconfig="/k/config", context="prod", namespace="team-a"),
            ["--kubeconfig=/k/config", "--context=prod", "--namespace=team-a"],
        ),
    ],
)
def test_base_flags_only_what_was_set(access: ClusterAccess, expected: list[str]) -> None:
    assert base_flags(access, None) == expected


def test_base_flags_token_kubeconfig_replaces_user_kubeconfig_and_context() -> None:
    access = ClusterAccess(kubeconfig="/k/config", context="prod", namespace="ns")
    assert base_flags(access, "/tmp/x/kubeconfig") == ["--kubeconfig=/tmp/x/kubeconfig", "--namespace=ns"]


def test_kubectl_argv_puts_global_flags_before_the_command(make_kubectl: Callable[..., Kubectl]) -> None:
    k = make_kubectl(context="c1", namespace="ns1")
    assert k.argv(["get", "pods"]) == [k.path, "--context=c1", "--namespace=ns1", "get", "pods"]


# -- bearer-token mode -------------------------------------------------------------------------------


def _all_text(fake: FakeRunner) -> list[str]:
    return [arg for argv in fake.all_argvs() for arg in argv]


def test_token_never_on_argv_in_logs_or_errors(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    k = make_kubectl(remote_control_plane=SERVER, kube_token=TOKEN, certificate_authority=PEM)
    fake_runner.pods["p"] = {"kind": "Pod", "metadata": {"name": "p"}}
    k.run(["get", "pod", "p", "-o", "json"])
    k.spawn(["get", "pod", "p", "-o", "json", "--watch"]).kill()
    with pytest.raises(NotFoundError) as info:
        k.run(["get", "pod", "missing"])
    assert len(fake_runner.all_argvs()) == 3
    for arg in _all_text(fake_runner):
        assert TOKEN not in arg
        assert "s3cr3t" not in arg
    assert any(arg.startswith("--kubeconfig=") for arg in fake_runner.runs[0].argv)
    assert "s3cr3t" not in str(info.value)
    assert "s3cr3t" not in caplog.text
    assert "s3cr3t" not in repr(k.access)


def test_token_kubeconfig_file_is_private_and_complete(make_kubectl: Callable[..., Kubectl]) -> None:
    k = make_kubectl(remote_control_plane=SERVER, kube_token=TOKEN, namespace="team-a")
    path = k.kubeconfig_path
    assert path is not None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) & 0o077 == 0
    config = json.loads(Path(path).read_text())
    assert config["users"][0]["user"]["token"] == TOKEN
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == SERVER
    # TLS is verified unless asked otherwise: no skip flag, and nothing replaces the system CAs.
    assert "insecure-skip-tls-verify" not in cluster
    assert config["current-context"] == config["contexts"][0]["name"]
    assert config["contexts"][0]["context"]["namespace"] == "team-a"
    assert k.flags[0] == f"--kubeconfig={path}"


def test_token_kubeconfig_with_ca_file(make_kubectl: Callable[..., Kubectl], tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text(PEM)
    k = make_kubectl(remote_control_plane=SERVER, kube_token=TOKEN, certificate_authority=str(ca))
    assert k.kubeconfig_path is not None
    cluster = json.loads(Path(k.kubeconfig_path).read_text())["clusters"][0]["cluster"]
    assert cluster["certificate-authority"] == str(ca.resolve())
    assert "insecure-skip-tls-verify" not in cluster
    assert "certificate-authority-data" not in cluster


def test_token_kubeconfig_with_pem_data() -> None:
    access = ClusterAccess(remote_control_plane=SERVER, certificate_authority=PEM)
    cluster = token_kubeconfig(access, TOKEN)["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]).decode() == PEM
    assert "certificate-authority" not in cluster
    assert "insecure-skip-tls-verify" not in cluster


def test_insecure_only_when_explicitly_asked() -> None:
    default = token_kubeconfig(ClusterAccess(remote_control_plane=SERVER), TOKEN)["clusters"][0]["cluster"]
    assert "insecure-skip-tls-verify" not in default
    insecure = token_kubeconfig(
        ClusterAccess(remote_control_plane=SERVER, insecure_skip_tls_verify=True), TOKEN
    )["clusters"][0]["cluster"]
    assert insecure["insecure-skip-tls-verify"] is True
    # kubectl refuses a CA together with the skip flag; only one may be written.
    both = token_kubeconfig(
        ClusterAccess(remote_control_plane=SERVER, insecure_skip_tls_verify=True, certificate_authority=PEM),
        TOKEN,
    )["clusters"][0]["cluster"]
    assert "certificate-authority-data" not in both and "certificate-authority" not in both


def test_ca_that_is_neither_pem_nor_file_is_refused(tmp_path: Path) -> None:
    access = ClusterAccess(remote_control_plane=SERVER, certificate_authority=str(tmp_path / "missing.crt"))
    with pytest.raises(InvalidInputError, match="certificate_authority"):
        token_kubeconfig(access, TOKEN)


def test_close_removes_the_token_kubeconfig(make_kubectl: Callable[..., Kubectl]) -> None:
    k = make_kubectl(remote_control_plane=SERVER, kube_token=TOKEN)
    path = k.kubeconfig_path
    assert path is not None and os.path.exists(path)
    k.close()
    assert not os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))
    assert k.kubeconfig_path is None
    k.close()  # idempotent


def test_kube_token_env_fallback(
    make_kubectl: Callable[..., Kubectl], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBE_TOKEN", "token-from-env")
    k = make_kubectl(remote_control_plane=SERVER)
    assert k.kubeconfig_path is not None
    config = json.loads(Path(k.kubeconfig_path).read_text())
    assert config["users"][0]["user"]["token"] == "token-from-env"


def test_explicit_token_wins_over_env(
    make_kubectl: Callable[..., Kubectl], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBE_TOKEN", "token-from-env")
    k = make_kubectl(remote_control_plane=SERVER, kube_token=TOKEN)
    assert k.kubeconfig_path is not None
    assert json.loads(Path(k.kubeconfig_path).read_text())["users"][0]["user"]["token"] == TOKEN


def test_missing_token_is_invalid_input(
    make_kubectl: Callable[..., Kubectl], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBE_TOKEN", raising=False)
    with pytest.raises(InvalidInputError, match="KUBE_TOKEN"):
        make_kubectl(remote_control_plane=SERVER)


def test_no_temp_kubeconfig_without_remote_control_plane(make_kubectl: Callable[..., Kubectl]) -> None:
    k = make_kubectl(kube_token=TOKEN)
    assert k.kubeconfig_path is None
    assert k.flags == []


# -- redact --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["get", "--token=abc", "pods"], ["get", "--token=<redacted>", "pods"]),
        (["get", "--token", "abc", "pods"], ["get", "--token", "<redacted>", "pods"]),
        (["--password=pw", "--username=u"], ["--password=<redacted>", "--username=<redacted>"]),
        (["--client-key", "/k.pem"], ["--client-key", "<redacted>"]),
        (["get", "pods", "--namespace=ns"], ["get", "pods", "--namespace=ns"]),
    ],
)
def test_redact(argv: list[str], expected: list[str]) -> None:
    assert redact(argv) == expected


def test_classified_error_shows_redacted_command() -> None:
    err = classify_failure(["kubectl", "--token=abc123", "get", "pods"], 1, "error: You must be logged in")
    assert "abc123" not in str(err)
    assert "--token=<redacted>" in err.argv


# -- classify_failure ------------------------------------------------------------------------------------

ARGV = ["kubectl", "--namespace=ns", "get", "pod", "kx-1"]


def test_not_found() -> None:
    err = classify_failure(ARGV, 1, 'Error from server (NotFound): pods "kx-1" not found\n')
    assert type(err) is NotFoundError
    assert err.returncode == 1
    assert 'pods "kx-1" not found' in err.stderr
    assert err.message == 'Error from server (NotFound): pods "kx-1" not found'


def test_forbidden_names_verb_and_resource() -> None:
    stderr = (
        'Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:ns:sa" '
        'cannot create resource "pods" in API group "" in the namespace "ns"\n'
    )
    err = classify_failure(["kubectl", "apply", "-f", "-"], 1, stderr)
    assert isinstance(err, ForbiddenError)
    assert (err.verb, err.resource) == ("create", "pods")
    assert "grant verb 'create' on 'pods'" in str(err)


def test_forbidden_subresource_on_exec() -> None:
    stderr = (
        'Error from server (Forbidden): pods "kx-1" is forbidden: User "system:serviceaccount:ns:sa" '
        'cannot create resource "pods/exec" in API group "" in the namespace "ns"\n'
    )
    err = classify_failure(["kubectl", "exec", "-i", "kx-1"], 1, stderr, exec_call=True)
    assert isinstance(err, ForbiddenError)
    assert (err.verb, err.resource) == ("create", "pods/exec")


def test_forbidden_in_an_api_group() -> None:
    stderr = (
        'Error from server (Forbidden): pods.metrics.k8s.io "kx-1" is forbidden: User "alice" '
        'cannot get resource "pods" in API group "metrics.k8s.io" in the namespace "ns"\n'
    )
    err = classify_failure(ARGV, 1, stderr)
    assert isinstance(err, ForbiddenError)
    assert (err.verb, err.resource) == ("get", "pods.metrics.k8s.io")


def test_forbidden_without_rbac_sentence() -> None:
    err = classify_failure(ARGV, 1, "Error from server (Forbidden): admission webhook denied the request\n")
    assert isinstance(err, ForbiddenError)
    assert err.verb is None and err.resource is None


@pytest.mark.parametrize(
    "stderr",
    [
        'Error from server (AlreadyExists): pods "kx-1" already exists\n',
        'Error from server (Conflict): Operation cannot be fulfilled on pods "kx-1": the object has been '
        "modified; please apply your changes to the latest version and try again\n",
    ],
)
def test_conflicts(stderr: str) -> None:
    assert type(classify_failure(ARGV, 1, stderr)) is ConflictError


@pytest.mark.parametrize(
    "stderr",
    [
        "Error from server (TooManyRequests): the server has received too many requests and has asked us "
        "to try again later (get pods kx-1)\n",
        'Error from server (InternalError): an error on the server ("") has prevented the request from '
        "succeeding (get pods kx-1)\n",
        "Error from server (ServiceUnavailable): the server is currently unable to handle the request "
        "(get pods kx-1)\n",
        "Error from server (Timeout): the server was unable to return a response in the time allotted, "
        "but may still be processing the request (get pods kx-1)\n",
        # kubectl 1.32 against a stopped API server (measured): discovery errors, then the summary.
        'E1127 00:23:47.895226    7451 memcache.go:265] "Unhandled Error" err="couldn\'t get current server '
        'API group list: Get \\"http://127.0.0.1:6443/api?timeout=32s\\": dial tcp 127.0.0.1:6443: connect: '
        'connection refused"\n'
        "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?\n",
        "Unable to connect to the server: dial tcp 10.0.0.1:443: i/o timeout\n",
        "Unable to connect to the server: net/http: TLS handshake timeout\n",
        "error: unexpected EOF; http2: client connection lost\n",
    ],
)
def test_transient(stderr: str) -> None:
    err = classify_failure(ARGV, 1, stderr)
    assert type(err) is TransientError


def test_refused_connection_summary_alone_is_transient() -> None:
    stderr = (
        "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?\n"
    )
    assert isinstance(classify_failure(["kubectl", "get", "--raw", "/x"], 1, stderr), TransientError)


def test_retry_after_is_read_from_stderr() -> None:
    stderr = "Error from server (TooManyRequests): too many requests, please retry after 7 seconds\n"
    err = classify_failure(ARGV, 1, stderr)
    assert isinstance(err, TransientError)
    assert err.retry_after == 7.0
    no_hint = classify_failure(
        ARGV, 1, "Error from server (ServiceUnavailable): the server is currently unable\n"
    )
    assert isinstance(no_hint, TransientError) and no_hint.retry_after is None


@pytest.mark.parametrize(
    "stderr",
    [
        'error: unable to upgrade connection: container not found ("executor")\n',
        "Error from server: error dialing backend: dial tcp 10.0.0.5:10250: connect: connection refused\n",
        "error: unable to upgrade connection: pod does not exist\n",
        'error: unable to upgrade connection: container "executor" in pod "kx-1" is waiting to start: '
        "ContainerCreating\n",
    ],
)
def test_exec_not_started(stderr: str) -> None:
    err = classify_failure(["kubectl", "exec", "-i", "kx-1"], 1, stderr, exec_call=True)
    assert type(err) is ExecNotStartedError
    assert isinstance(err, TransientError)


def test_exec_phrases_are_not_exec_errors_outside_exec() -> None:
    stderr = "Error from server: error dialing backend: dial tcp 10.0.0.5:10250: i/o timeout\n"
    err = classify_failure(ARGV, 1, stderr)
    assert type(err) is TransientError


def test_exec_not_found_pod_is_not_found() -> None:
    err = classify_failure(
        ["kubectl", "exec", "-i", "kx-1"],
        1,
        'Error from server (NotFound): pods "kx-1" not found\n',
        exec_call=True,
    )
    assert type(err) is NotFoundError


@pytest.mark.parametrize(
    "stderr",
    [
        'error: error validating "STDIN": error validating data: unknown field "foo"\n',
        "error: You must be logged in to the server (Unauthorized)\n",
        "",
    ],
)
def test_other_failures_are_plain_kubectl_errors(stderr: str) -> None:
    err = classify_failure(ARGV, 2, stderr)
    assert type(err) is KubectlError
    assert err.returncode == 2
    if not stderr:
        assert err.message == "kubectl exited with 2"


# -- Kubectl.json / stream ---------------------------------------------------------------------------------


def test_json_parses_and_reports_invalid_json(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner
) -> None:
    k = make_kubectl()
    fake_runner.on_run = lambda call: Completed(tuple(call.argv), 0, b'{"kind": "PodList", "items": []}')
    assert k.json(["get", "pods"]) == {"kind": "PodList", "items": []}
    assert fake_runner.runs[-1].args == ["get", "pods", "-o", "json"]
    fake_runner.on_run = lambda call: Completed(tuple(call.argv), 0, b"Warning: not json")
    with pytest.raises(KubectlError, match="invalid JSON"):
        k.json(["get", "pods"])


def test_stream_feeds_stdin_then_eof(make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner) -> None:
    k = make_kubectl()
    out: list[bytes] = []
    payload = b"x" * (3 << 20) + b"end"  # more than one write chunk
    done = k.stream(
        ["exec", "-i", "p", "--", "cat"],
        stdin=io.BytesIO(payload),
        timeout=30,
        on_stdout=out.append,
        on_stderr=out.append,
    )
    proc = fake_runner.spawns[-1]
    assert bytes(proc.stdin) == payload
    assert proc.stdin_closed.is_set()
    assert done.returncode == 0 and not done.timed_out


def test_stream_kills_kubectl_at_the_deadline(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner
) -> None:
    fake_runner.other_exec = lambda proc: ExecReply(b"partial", hang=True)
    k = make_kubectl()
    out: list[bytes] = []
    done = k.stream(
        ["exec", "-i", "p", "--", "cat"],
        stdin=b"data",
        timeout=3.5,
        on_stdout=out.append,
        on_stderr=out.append,
    )
    proc = fake_runner.spawns[-1]
    assert done.timed_out and done.returncode == -9
    assert proc.killed
    assert proc.wait_timeouts == [3.5]
    assert out == [b"partial"]
