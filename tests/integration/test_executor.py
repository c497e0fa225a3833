"""The seed-compatible executor through the real kubectl (emulator or a real cluster)."""

from __future__ import annotations

import hashlib
import json

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import (
    CodeBlock,
    InvalidInputError,
    KubernetesCommandLineCodeExecutor,
    PodStartError,
)

pytestmark = pytest.mark.integration

LIST_PROCESSES = """
import os
mine = {os.getpid(), os.getppid()}
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) not in mine:
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode().strip()
        except OSError:
            continue
        if cmd:
            print(cmd)
"""


def other_processes(executor: KubernetesCommandLineCodeExecutor) -> list[str]:
    """Command lines running in the pod, besides the listing itself and its runner."""
    result = executor.execute_code_blocks([CodeBlock(LIST_PROCESSES, "python")])
    assert result.exit_code == 0, result.output
    return [
        line
        for line in result.stdout.splitlines()
        if "kx-logs" not in line and "sleep 3600" not in line and "__KX_" not in line
    ]


def test_exit_codes_are_exact(executor: KubernetesCommandLineCodeExecutor) -> None:
    for code in (0, 1, 3, 42, 255):
        result = executor.execute_code_blocks([CodeBlock(f"import sys; sys.exit({code})", "python")])
        assert result.exit_code == code
    killed = executor.execute_code_blocks([CodeBlock("kill -9 $$", "sh")])
    assert killed.exit_code == 137


def test_stdout_and_stderr_are_kept_apart(executor: KubernetesCommandLineCodeExecutor) -> None:
    code = "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nsys.exit(2)"
    result = executor.execute_code_blocks([CodeBlock(code, "python")])
    assert result.exit_code == 2
    assert result.stdout == "to out\n"
    assert result.stderr == "to err\n"
    assert result.output == "to out\nto err\n"


def test_kubectl_like_text_in_user_output_does_not_change_the_exit_code(
    executor: KubernetesCommandLineCodeExecutor,
) -> None:
    code = (
        "import sys\n"
        "print('Error from server (NotFound): pods \"x\" not found', file=sys.stderr)\n"
        "print('command terminated with exit code 7', file=sys.stderr)\n"
        "sys.exit(1)"
    )
    result = executor.execute_code_blocks([CodeBlock(code, "python")])
    assert result.exit_code == 1
    assert "command terminated with exit code 7" in result.stderr


def test_code_travels_intact(executor: KubernetesCommandLineCodeExecutor) -> None:
    tricky = 'echo "$HOME" `id -u` $(whoami)\nEOF\n\'"\\\n'
    code = f"# filename: tricky.py\ndata = {tricky!r}\nprint(len(data.encode()))"
    result = executor.execute_code_blocks([CodeBlock(code, "python")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(len(tricky.encode()))
    check = executor.execute_code_blocks(
        [
            CodeBlock(
                "import hashlib;print(hashlib.sha256(open('tricky.py','rb').read()).hexdigest())", "python"
            )
        ]
    )
    assert check.stdout.strip() == hashlib.sha256(code.encode()).hexdigest()


def test_ten_megabytes_of_code(executor: KubernetesCommandLineCodeExecutor) -> None:
    # Comment lines: 10 MB through the exec's stdin without 2 GB of AST (a real pod's 2Gi memory
    # limit OOM-kills the compile of 1.7 million statements; the emulator enforced no limit).
    filler = ("#" + "x" * 98 + "\n") * (10 * 1024 * 1024 // 100)
    result = executor.execute_code_blocks([CodeBlock(filler + "x = 1\nprint('end', x)", "python")])
    assert result.exit_code == 0, result.output[-500:]
    assert result.stdout == "end 1\n"


def test_timeout_returns_124_and_kills_the_process_group(executor_factory: ExecutorFactory) -> None:
    executor = executor_factory(timeout=2)
    code = "sleep 300 &\necho started\nwhile :; do :; done"
    result = executor.execute_code_blocks([CodeBlock(code, "sh")])
    assert result.exit_code == 124
    assert result.timed_out
    assert "Timeout" in result.output
    assert result.stdout.startswith("started")
    leftovers = [p for p in other_processes(executor) if "sleep 300" in p or ".sh" in p]
    assert leftovers == []


def test_program_exiting_124_by_itself_is_not_a_timeout(executor: KubernetesCommandLineCodeExecutor) -> None:
    result = executor.execute_code_blocks([CodeBlock("exit 124", "sh")])
    assert result.exit_code == 124
    assert not result.timed_out


def test_stdin_is_closed(executor: KubernetesCommandLineCodeExecutor) -> None:
    result = executor.execute_code_blocks([CodeBlock("import sys; print(repr(sys.stdin.read()))", "python")])
    assert result.exit_code == 0
    assert result.stdout.strip() == "''"


def test_blocks_run_in_order_and_stop_at_first_failure(executor: KubernetesCommandLineCodeExecutor) -> None:
    blocks = [
        CodeBlock("echo one > order.txt", "sh"),
        CodeBlock("open('order.txt','a').write('two\\n'); raise SystemExit(5)", "Python"),
        CodeBlock("echo three >> order.txt", "bash"),
    ]
    result = executor.execute_code_blocks(blocks)
    assert result.exit_code == 5
    check = executor.execute_code_blocks([CodeBlock("cat order.txt", "shell")])
    assert check.stdout == "one\ntwo\n"
    assert result.code_file == str(
        executor.work_dir / f"tmp_code_{hashlib.md5(b'echo one > order.txt').hexdigest()}.sh"
    )


def test_file_name_hint_and_confinement(executor: KubernetesCommandLineCodeExecutor) -> None:
    named = executor.execute_code_blocks([CodeBlock("# filename: pkg/mod.py\nprint(__file__)", "python")])
    assert named.exit_code == 0
    assert named.stdout.strip() == str(executor.work_dir / "pkg/mod.py")
    assert named.code_file == str(executor.work_dir / "pkg/mod.py")
    escaped = executor.execute_code_blocks([CodeBlock("# filename: ../../etc/evil.py\nprint(1)", "python")])
    assert escaped.exit_code == 1
    assert "escapes" in escaped.output
    probe = executor.execute_code_blocks([CodeBlock("ls /etc/evil.py", "sh")])
    assert probe.exit_code != 0


def test_languages_and_policies(executor_factory: ExecutorFactory) -> None:
    executor = executor_factory(execution_policies={"sh": False})
    saved = executor.execute_code_blocks([CodeBlock("<h1>hi</h1>", "html"), CodeBlock("echo no", "sh")])
    assert saved.exit_code == 0
    assert saved.output.count("Code saved to") == 2
    assert "no" not in saved.output.replace("Code saved to", "")
    unknown = executor.execute_code_blocks([CodeBlock("puts 1", "ruby")])
    assert unknown.exit_code == 1
    assert "ruby" in unknown.output


def test_output_budget_keeps_head_and_tail_and_the_full_log(executor_factory: ExecutorFactory) -> None:
    executor = executor_factory(max_output_bytes=64 * 1024)
    code = "import sys\nsys.stdout.write('HEAD' + 'x' * 5_000_000 + 'TAIL')"
    result = executor.execute_code_blocks([CodeBlock(code, "python")])
    assert result.exit_code == 0
    assert result.truncated
    assert result.stdout.startswith("HEAD") and result.stdout.endswith("TAIL")
    assert len(result.stdout) < 70 * 1024
    assert "bytes omitted" in result.stdout
    log = next(p for p in result.log_files if p.endswith(".out"))
    size = executor.execute_code_blocks([CodeBlock(f"wc -c < {log}", "sh")])
    assert size.stdout.strip() == str(5_000_008)


def test_binary_and_non_utf8_output(executor: KubernetesCommandLineCodeExecutor) -> None:
    result = executor.execute_code_blocks(
        [CodeBlock("import sys; sys.stdout.buffer.write(bytes(range(256)))", "python")]
    )
    assert result.exit_code == 0
    assert len(result.stdout) == 256  # undecodable bytes become replacement characters, none lost


def test_streaming_callback_sees_output_and_result_is_unchanged(
    executor: KubernetesCommandLineCodeExecutor,
) -> None:
    chunks: list[tuple[str, bytes]] = []
    code = "import sys\nfor i in range(3): print(i)\nprint('e', file=sys.stderr)"
    result = executor.execute_code_blocks(
        [CodeBlock(code, "python")], on_output=lambda s, c: chunks.append((s, c))
    )
    assert b"".join(c for s, c in chunks if s == "stdout") == b"0\n1\n2\n"
    assert b"".join(c for s, c in chunks if s == "stderr") == b"e\n"
    assert result.stdout == "0\n1\n2\n"


def test_env_vars_and_bashrc(executor_factory: ExecutorFactory) -> None:
    executor = executor_factory(env_vars=[{"key": "GREETING", "value": "hi $USER `x`"}])
    result = executor.execute_code_blocks([CodeBlock("import os; print(os.environ['GREETING'])", "python")])
    assert result.stdout == "hi $USER `x`\n"
    executor.add_env_vars_to_bashrc([{"key": "TOOL_MODE", "value": "a'b; $(touch /tmp/pwned)"}])
    executor.add_env_vars_to_bashrc([{"key": "TOOL_MODE", "value": "second"}])
    check = executor.execute_code_blocks(
        [CodeBlock('echo "$TOOL_MODE"; grep -c TOOL_MODE ~/.bashrc; ls /tmp/pwned 2>&1 || true', "bash")]
    )
    lines = check.stdout.splitlines()
    assert lines[0] == "second"
    assert lines[1] == "1"  # replaced, not appended again
    assert "No such file" in lines[2]
    interactive = executor.execute_code_blocks([CodeBlock("bash -ic 'echo $TOOL_MODE' 2>/dev/null", "sh")])
    assert interactive.stdout.strip() == "second"


def test_pod_is_hardened_and_labelled(cluster: Cluster, executor: KubernetesCommandLineCodeExecutor) -> None:
    pod = json.loads(
        cluster.run("get", "pod", executor.pod_name, "-n", cluster.namespace, "-o", "json").stdout
    )
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "kubectl-executor"
    assert labels["kubectl-executor.io/session"] == executor.owner_id
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    uid = executor.execute_code_blocks([CodeBlock("id -u", "sh")])
    assert uid.stdout.strip() == "1000"
    home = executor.execute_code_blocks([CodeBlock("touch ~/probe && echo ok", "sh")])
    assert home.stdout.strip() == "ok"


def test_stop_deletes_the_pod_and_is_idempotent(cluster: Cluster, executor_factory: ExecutorFactory) -> None:
    executor = executor_factory()
    name = executor.pod_name
    assert name in [p["metadata"]["name"] for p in cluster.pods()]
    assert executor.is_pod_running_with_image() == name
    executor.stop()
    executor.stop()
    assert name not in [p["metadata"]["name"] for p in cluster.pods()]


def test_context_manager_deletes_the_pod_even_on_error(cluster: Cluster) -> None:
    name = None
    with (
        pytest.raises(RuntimeError, match="boom"),
        KubernetesCommandLineCodeExecutor(**cluster.executor_kwargs()) as executor,
    ):
        name = executor.pod_name
        raise RuntimeError("boom")
    assert name and name not in [p["metadata"]["name"] for p in cluster.pods()]


def test_restart_gives_a_fresh_pod(executor_factory: ExecutorFactory) -> None:
    executor = executor_factory()
    executor.execute_code_blocks([CodeBlock("touch marker", "sh")])
    first = executor.pod_name
    executor.restart()
    assert executor.pod_name != first
    result = executor.execute_code_blocks([CodeBlock("ls marker", "sh")])
    assert result.exit_code != 0


def test_shared_resources_reuses_only_our_pods(cluster: Cluster, executor_factory: ExecutorFactory) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "foreign-pod", "namespace": cluster.namespace},
        "spec": {"containers": [{"name": "c", "image": cluster.image, "command": ["sleep", "3600"]}]},
    }
    cluster.run("apply", "-f", "-", input=json.dumps(foreign).encode())
    try:
        cluster.run(
            "wait", "--for=condition=Ready", "pod/foreign-pod", "-n", cluster.namespace, "--timeout=60s"
        )
        owner = executor_factory()
        sharer = executor_factory(shared_resources=True)
        assert sharer.pod_name == owner.pod_name
        other_dir = executor_factory(shared_resources=True, work_dir="/other")
        assert other_dir.pod_name not in (owner.pod_name, "foreign-pod")
        sharer.stop()  # a reused pod is not ours to delete
        assert owner.is_pod_running_with_image() == owner.pod_name
    finally:
        cluster.run("delete", "pod", "foreign-pod", "-n", cluster.namespace, "--wait=false", check=False)


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("fail/errimagepull", "ErrImagePull"),
        ("fail/unschedulable", "Unschedulable"),
        ("fail/createcontainerconfigerror", "CreateContainerConfigError"),
    ],
)
def test_pods_that_cannot_start_fail_fast_and_leave_nothing(
    cluster: Cluster, image: str, reason: str
) -> None:
    if cluster.emulator is None:
        pytest.skip("failure images exist only on the emulator")
    with pytest.raises(PodStartError) as info:
        KubernetesCommandLineCodeExecutor(**{**cluster.executor_kwargs(), "image": image}, startup_timeout=60)
    assert info.value.reason in (reason, "ImagePullBackOff")
    assert info.value.message
    assert cluster.pods() == []


DISTROLESS = "gcr.io/distroless/python3-debian12:latest"  # fixtures/cluster imports it; no /bin/sh


def test_an_image_without_a_shell_fails_fast_and_says_why(cluster: Cluster) -> None:
    # The pod's idle command is sh, so runc cannot start it: the kubelet's StartError, with the
    # runtime's own words, becomes a reason users can act on, instead of a bare "exit code 128".
    with pytest.raises(PodStartError) as info:
        KubernetesCommandLineCodeExecutor(
            **{**cluster.executor_kwargs(), "image": DISTROLESS}, startup_timeout=120
        )
    assert info.value.reason == "NoShell", info.value
    assert "the image has no /bin/sh" in info.value.message and "distroless" in info.value.message
    assert 'exec: "/bin/sh"' in info.value.message  # what runc said
    cluster.wait_gone("pod", info.value.pod, timeout=60)


def test_bad_input_is_refused_before_touching_the_cluster(cluster: Cluster) -> None:
    kwargs = cluster.executor_kwargs()
    with pytest.raises(InvalidInputError):
        KubernetesCommandLineCodeExecutor(**kwargs, timeout=0)
    with pytest.raises(InvalidInputError):
        KubernetesCommandLineCodeExecutor(**{**kwargs, "pod_name": "Bad_Name"})
    with pytest.raises(InvalidInputError):
        KubernetesCommandLineCodeExecutor(**{**kwargs, "namespace": "a" * 64})
    with pytest.raises(InvalidInputError):
        KubernetesCommandLineCodeExecutor(**kwargs, env_vars=[{"name": "x"}])
    assert cluster.pods() == []


def test_resource_usage_is_none_or_this_pods(executor: KubernetesCommandLineCodeExecutor) -> None:
    usage = executor.get_pod_resource_usage()
    assert usage is None or set(usage["executor"]) >= {"cpu", "memory"}  # the seed's shape: per container


def test_markdown_extraction_then_execution(executor: KubernetesCommandLineCodeExecutor) -> None:
    message = "Run this:\n~~~python title=x\nprint(6*7)\n~~~\nand\n````sh\necho '```'\n````\n"
    blocks = executor.code_extractor.extract_code_blocks(message)
    result = executor.execute_code_blocks(blocks)
    assert result.exit_code == 0
    assert result.stdout == "42\n```\n"


def test_deferred_start_create_resources_cleanup_and_properties(cluster: Cluster) -> None:
    executor = KubernetesCommandLineCodeExecutor(
        **cluster.executor_kwargs(), start=False, timeout=7, work_dir="/data", pod_name="kx-deferred"
    )
    try:
        assert executor.pod_name == "kx-deferred"
        assert "kx-deferred" not in [p["metadata"]["name"] for p in cluster.pods()]
        executor.create_resources()
        assert executor.is_pod_running_with_image() == "kx-deferred"
        assert (executor.timeout, str(executor.work_dir), executor.image) == (7, "/data", cluster.image)
        assert executor.namespace == cluster.namespace
        assert executor.execution_policies["html"] is False
        pwd = executor.execute_code_blocks([CodeBlock("pwd", "sh")])
        assert pwd.stdout == "/data\n"
    finally:
        executor.cleanup()
    assert "kx-deferred" not in [p["metadata"]["name"] for p in cluster.pods()]


def test_handle_sigint_stops_the_pod_then_interrupts(cluster: Cluster) -> None:
    import signal

    executor = KubernetesCommandLineCodeExecutor(**cluster.executor_kwargs())
    name = executor.pod_name
    with pytest.raises(KeyboardInterrupt):
        executor.handle_sigint(signal.SIGINT, None)
    assert name not in [p["metadata"]["name"] for p in cluster.pods()]


def test_attach_uses_a_running_pod_and_never_deletes_it(
    cluster: Cluster, executor_factory: ExecutorFactory
) -> None:
    owner = executor_factory()
    owner.execute_code_blocks([CodeBlock("echo kept > note.txt", "sh")])
    attached = executor_factory(pod_name=owner.pod_name, attach=True)
    assert attached.execute_code_blocks([CodeBlock("cat note.txt", "sh")]).stdout == "kept\n"
    attached.stop()
    assert owner.is_pod_running_with_image() == owner.pod_name


def test_policy_mutation_saves_with_the_seeds_name(executor: KubernetesCommandLineCodeExecutor) -> None:
    """The seed README's example 2 through the real kubectl: the file is written, never run."""
    code = "open('ran.txt', 'w').write('ran')\nprint('should_not_run')\n"
    executor.execution_policies["py"] = False  # an alias: the most restrictive entry wins
    saved = executor.execute_code_blocks([CodeBlock(code, "python")])
    path = f"{executor.work_dir}/tmp_code_{hashlib.md5(code.encode()).hexdigest()}.python"
    assert (saved.exit_code, saved.output, saved.code_file) == (0, f"Code saved to {path}\n", path)
    check = executor.execute_code_blocks([CodeBlock(f"cat {path}; ls ran.txt", "sh")])
    assert check.stdout.startswith(code) and check.exit_code != 0  # saved intact, never ran
    executor.execution_policies["py"] = True
    ran = executor.execute_code_blocks([CodeBlock(code, "python")])
    assert (ran.exit_code, ran.stdout) == (0, "should_not_run\n")
