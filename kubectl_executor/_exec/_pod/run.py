"""kubectl-executor in-pod runner, Python 3.6+ standard library only: run.sh's twin, and faster.

Same request on stdin and the same output as _pod/run.sh (read its header for the protocol); the
client cannot tell them apart. It is chosen whenever the image has python3, because it starts no
helper processes: no tee, no timeout, no watchdog sleep. A Python block runs in a forked copy of
this interpreter (so it costs no second interpreter start), set up as `python3 FILE -u` would be:
__main__ module, sys.argv, sys.path[0], unbuffered stdio, tracebacks without our frames. A
request that sets PYTHON* variables (which only an interpreter start honours) gets a real
`python3 FILE` instead, as do the other runners (sh, bash, pwsh).

As run.sh: the program gets its own session (setsid) and stdin /dev/null (a tool call: its
payload); the deadline TERMs, then kill_after later KILLs the whole group (124, or 137 when KILL
was needed); what the block leaves behind, and what escaped the group but carries KX_RUN=<nonce>
in its environment, is killed when it ends. The full output stays in the log directory when a
stream goes over budget; output within budget never touches the disk.

Rich results (rich.py, put in front of this text by the client): when the request's environment
carries KX_RICH, the files the block created or changed under work_dir are listed, and a Python
block run here leaves its open matplotlib figures (and what it passed to display()) as outputs;
they come as a frame ``__KX_RICH_<nonce>__ <n>\n`` + JSON before the tool frame and the marker.
Fixed text: nothing from the user is ever spliced into it.
"""

# ruff: noqa: F821 -- rich.py's names: the client sends this text with rich.py's in front of it
import fcntl
import os
import select
import sys
import time

CHUNK = 1 << 20
PIPE_SIZE = 1 << 20  # the unprivileged maximum: a big output moves in few, large writes
F_SETPIPE_SZ = 1031  # Linux
DRAIN_GRACE = 1.0  # after the block ended and its group was killed: how long its pipes may stay open
LOG_DIRS = ("/tmp/kx-logs", os.path.join(os.environ.get("HOME") or "/nonexistent", ".kx-logs"))
SIGINT, SIGKILL, SIGTERM = 2, 9, 15  # Linux; importing signal would cost 5 ms (enum)
FORK_UNSAFE_ENV = "PYTHON"  # PYTHONPATH, PYTHONHASHSEED, ...: read at interpreter start only


class Request(object):
    """KX1 nonce timeout kill_after runner budget nenv / work_dir / path / nenv KEY=VALUE / code."""

    def __init__(self, data):
        lines = data.split(b"\n", 3)
        if len(lines) < 3:
            raise ValueError("truncated request header")
        head = lines[0].decode("ascii").split(" ")
        if len(head) != 7 or head[0] != "KX1" or not head[1].isalnum():
            raise ValueError("bad request header")
        self.nonce = head[1]
        self.timeout = float(head[2])
        self.kill_after = float(head[3])
        self.runner = head[4]
        self.budget = int(head[5])
        nenv = int(head[6])
        self.work_dir = lines[1].decode("utf-8", "surrogateescape")
        self.path = os.path.join(self.work_dir, lines[2].decode("utf-8", "surrogateescape"))
        rest = lines[3] if len(lines) > 3 else b""
        self.env = {}
        for _ in range(nenv):
            line, sep, rest = rest.partition(b"\n")
            if not sep:
                raise ValueError("truncated request header")
            key, _, value = line.decode("utf-8", "surrogateescape").partition("=")
            self.env[key] = value
        self.code = rest


def read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def write_all(fd, data):
    """False once the reader is gone (kubectl hung up): the block is still supervised to its end."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError:
            return False
    return True


def writable_dir(candidates):
    for directory in candidates:
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return directory
    return None


class Output(object):
    """Our stdout and stderr: the markers, the program's output as it comes, the log files."""

    def __init__(self, req, log_dir):
        self.req = req
        self.log_dir = log_dir
        self.open = [True, True]  # fd 1 and 2 still have a reader
        self.buffers = [[], []]  # kept until a stream goes over budget, then spilled to files
        self.sizes = [0, 0]
        self.files = None
        self.failed = False

    def marker(self, text):
        if self.open[0]:
            self.open[0] = write_all(1, text.encode())

    def message(self, text):
        if self.open[1]:
            self.open[1] = write_all(2, ("kubectl-executor: %s\n" % text).encode())

    def write(self, index, chunk):
        if self.open[index]:
            self.open[index] = write_all(index + 1, chunk)
        self.sizes[index] += len(chunk)
        if self.failed:
            return
        if self.files is None:
            self.buffers[index].append(chunk)
            if self.sizes[index] > self.req.budget:
                self.spill()
            return
        try:
            self.files[index].write(chunk)
        except OSError:
            self.failed = True

    def spill(self):
        try:
            if self.log_dir is None:
                raise OSError("no writable log directory")
            base = os.path.join(self.log_dir, self.req.nonce)
            self.files = [open(base + ".out", "wb"), open(base + ".err", "wb")]
            for index in (0, 1):
                self.files[index].write(b"".join(self.buffers[index]))
        except OSError:
            self.failed = True
        self.buffers = [[], []]

    def finish(self, code, timed_out):
        kept = self.files is not None and not self.failed
        for fh in self.files or ():
            try:
                fh.close()
            except OSError:
                kept = False
        self.marker(
            "\n__KX_EXIT_%s__ %d %d %d %s\n"
            % (self.req.nonce, code, int(timed_out), int(kept), self.log_dir or LOG_DIRS[0])
        )


# -- processes -----------------------------------------------------------------------------


def kill_marked(nonce):
    """Kill what carries KX_RUN=<nonce> in its environment (escaped the group with setsid)."""
    mark = ("KX_RUN=%s\0" % nonce).encode()
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as fh:
                environ = fh.read() + b"\0"
        except OSError:
            continue
        if b"\0" + mark in b"\0" + environ:
            try:
                os.kill(int(name), SIGKILL)
            except OSError:
                pass


def killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def exit_status(status):
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Child(object):
    """The block's process: wakes the poll loop the moment it exits (a pidfd), or is polled."""

    def __init__(self, pid):
        self.pid = pid
        self.status = None
        self.pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(pid)
            except OSError:
                pass

    def reap(self):
        if self.status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 255 << 8
            if pid:
                self.status = status
        return self.status


def supervise(req, out, child, pipes):
    """Forward output until the block ends; enforce the deadline. Returns (exit code, timed out)."""
    poller = select.poll()
    fds = {}
    for index, fd in enumerate(pipes):
        fds[fd] = index
        poller.register(fd, select.POLLIN)
    if child.pidfd is not None:
        poller.register(child.pidfd, select.POLLIN)
    # Our stdout is the client: once its reader is gone (kubectl killed, connection dropped), nobody
    # will ever learn the block's outcome, so the block is stopped now rather than at its deadline.
    client = {1}
    poller.register(1, 0)  # errors only: POLLERR/POLLHUP when the reading end is closed
    now = time.monotonic()
    term_at = now + req.timeout
    kill_at = term_at + req.kill_after
    drain_until = None
    timed_out = killed = False
    while True:
        if child.status is None and child.reap() is not None:
            if child.pidfd is not None:
                poller.unregister(child.pidfd)
                os.close(child.pidfd)
                child.pidfd = None
            killpg(child.pid, SIGKILL)  # what the block left running in its group
            kill_marked(req.nonce)
            drain_until = time.monotonic() + DRAIN_GRACE
        if child.status is not None and (not fds or time.monotonic() >= drain_until):
            break
        now = time.monotonic()
        if child.status is None and now >= term_at and not timed_out:
            timed_out = True
            killpg(child.pid, SIGTERM)
        if child.status is None and now >= kill_at and not killed:
            killed = True
            killpg(child.pid, SIGKILL)
        if child.status is not None:
            wait = drain_until - now
        else:
            wait = (kill_at if timed_out else term_at) - now
            if child.pidfd is None:  # no pidfd (Python < 3.9, old kernel): poll for the exit
                wait = min(wait, 0.05 if fds else 0.002)
        try:
            events = poller.poll(max(0, wait) * 1000)
        except InterruptedError:
            continue
        for fd, _ in events:
            if fd in client:  # the client is gone
                poller.unregister(fd)
                client.discard(fd)
                out.open = [False, False]
                if child.status is None:
                    killpg(child.pid, SIGKILL)
                    kill_marked(req.nonce)
                continue
            if fd not in fds:
                continue  # the pidfd: the loop's reap sees it
            try:
                chunk = os.read(fd, CHUNK)
            except OSError:
                chunk = b""
            if chunk:
                out.write(fds[fd], chunk)
            else:
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
    for fd in fds:
        os.close(fd)
    code = exit_status(child.status)
    if timed_out:
        code = 137 if killed else 124
    return code, timed_out


# -- the block, in the child ----------------------------------------------------------------


def child_setup(stdin_fd, pipes, env):
    """In the fork: own session, stdin, the pipes' write ends as stdout/stderr, the environment."""
    os.setsid()
    os.dup2(stdin_fd, 0)
    os.dup2(pipes[0][1], 1)
    os.dup2(pipes[1][1], 2)
    for fd in (stdin_fd, pipes[0][0], pipes[0][1], pipes[1][0], pipes[1][1]):
        if fd > 2:
            os.close(fd)
    for key, value in env.items():  # ours plus the request's: set only what differs
        if os.environ.get(key) != value:
            os.environ[key] = value


def run_python_here(path, code, argv):
    """Be `python3 -u FILE ARGS`: this interpreter is already started, so run the file in it."""
    import io

    # sys.stdin stays (nothing read through it, fd 0 is now the block's); stdout and stderr
    # become unbuffered, as PYTHONUNBUFFERED makes them in a new interpreter.
    for fd, name in ((1, "stdout"), (2, "stderr")):
        old = getattr(sys, name)
        raw = io.FileIO(fd, "wb", closefd=False)
        stream = io.TextIOWrapper(raw, encoding=old.encoding, errors=old.errors, write_through=True)
        setattr(sys, name, stream)
        setattr(sys, "__%s__" % name, stream)
    main = type(sys)("__main__")
    main.__file__ = path
    main.__cached__ = None
    main.__builtins__ = sys.modules["builtins"]
    rich_file = os.environ.get(RICH_FILE_ENV)
    sink = RichSink(rich_file)  # display() and the figures left open: outputs, written at the end
    if rich_file:
        sys.meta_path.insert(0, PyplotHook(sink))
        main.__builtins__.display = sink.display
    sys.modules["__main__"] = main
    sys.argv = argv
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    try:
        exec(compile(code, path, "exec"), main.__dict__)
    except SystemExit:
        sink.flush()  # before matplotlib's own exit handler closes the figures
        raise  # the interpreter's own exit: code, message, atexit, flushing, threads
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next  # our frames are not the program's
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        sink.flush()
        if isinstance(exc, KeyboardInterrupt):  # as the interpreter does: die of SIGINT
            sys.stdout.flush()
            import signal

            signal.signal(SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), SIGINT)
        sys.exit(1)
    sink.flush()
    sys.exit(0)


def exec_program(argv, env):
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        os.write(2, ("kubectl-executor: cannot run %s: %s\n" % (argv[0], exc.strerror)).encode())
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


# -- one request ----------------------------------------------------------------------------


def prepare(req, out):
    """Write the file (whole or not at all); the program's argv and environment. None: failed."""
    if req.runner != "call":
        directory = os.path.dirname(req.path)
        tmp = os.path.join(directory, ".kx-%s.part" % req.nonce)
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory)
        except OSError:
            return fail(out, 1, "cannot create directory %s" % directory)
        try:
            with open(tmp, "wb") as fh:
                fh.write(req.code)
            if os.path.lexists(req.path):  # a rename over a file makes ext4 flush it: milliseconds
                os.unlink(req.path)
            os.rename(tmp, req.path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return fail(out, 1, "cannot write %s" % req.path)
    elif not os.path.isfile(req.path):
        return fail(out, 2, "no tool runner at %s: call install_pod_dispatcher() first" % req.path)
    env = dict(os.environ)
    env.update(req.env)
    if req.runner == "python" and out.log_dir and rich_limits(req.env) is not None:
        env[RICH_FILE_ENV] = os.path.join(out.log_dir, req.nonce + ".rich")
        env.setdefault("MPLBACKEND", "Agg")  # figures are drawn headless, then captured
    env.update(
        PYTHONUNBUFFERED="1",
        KX_RUN=req.nonce,
        KX_TOOL_RESULT=os.path.join(out.log_dir or LOG_DIRS[0], req.nonce + ".result"),
        KX_TOOL_WORK_DIR=req.work_dir,
        KX_TOOL_BUDGET=str(req.budget),
    )
    if req.runner == "python":
        argv = [sys.executable or "python3", req.path]
    elif req.runner == "call":
        argv = [sys.executable or "python3", req.path, "/dev/stdin"]
    elif req.runner in ("sh", "bash"):
        argv = [req.runner, req.path]
    elif req.runner == "pwsh":
        argv = ["pwsh", "-NoLogo", "-NonInteractive", "-File", req.path]
    elif req.runner == "none":
        out.marker("__KX_START_%s__\n" % req.nonce)
        out.finish(0, False)
        return None
    else:
        return fail(out, 1, "unknown runner %s" % req.runner)
    return argv, env


def fail(out, code, message):
    out.message(message)
    out.marker("__KX_START_%s__\n" % out.req.nonce)
    out.finish(code, False)
    return None


def stdin_for(req, log_dir):
    """/dev/null for code; a tool call's payload from an unlinked file of our own (a non-root
    program that reopens /dev/stdin could not open the exec's stdin, which belongs to root)."""
    if req.runner != "call":
        return os.open(os.devnull, os.O_RDONLY)
    name = os.path.join(log_dir or LOG_DIRS[0], req.nonce + ".in")
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(name)
    write_all(fd, req.code)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def emit_result(out, path):
    """A tool call's structured result, written by the tool runner to $KX_TOOL_RESULT."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        os.unlink(path)
    except OSError:
        return
    if data:
        out.marker("\n__KX_FRAME_%s__ %d\n" % (out.req.nonce, len(data)))
        if out.open[0]:
            out.open[0] = write_all(1, data)


def emit_rich(out, limits, scan, rich_file):
    """The block's rich results (outputs, changed files) as a frame, if it has any."""
    try:
        report = rich_report(limits, out.req.nonce, out.log_dir, rich_file, scan)
    except Exception as exc:  # never lose the block's outcome to its report
        out.message("rich results lost: %s" % exc)
        return
    if report:
        data = report.encode("utf-8", "surrogateescape")
        out.marker("__KX_RICH_%s__ %d\n" % (out.req.nonce, len(data)))
        if out.open[0]:
            out.open[0] = write_all(1, data)


def main():
    try:  # our own session: a kill of the exec's process group (a runtime cleaning up after a
        os.setsid()  # dropped client) must not take the deadline keeper and leave the block
    except OSError:
        pass  # already a group leader
    try:
        req = Request(globals().get("STDIN") or read_all(0))  # the launcher has read stdin
    except (ValueError, UnicodeDecodeError):
        os.write(2, b"kubectl-executor: bad request header\n")
        return 97
    out = Output(req, writable_dir(LOG_DIRS + (os.path.join(req.work_dir, ".kx-logs"),)))
    prepared = prepare(req, out)
    if prepared is None:
        return 0
    argv, env = prepared
    limits = rich_limits(req.env) if req.runner != "call" else None
    scan = None
    if limits is not None and limits["files"] >= 0:
        scan = FileScan(req.work_dir, [os.path.relpath(req.path, req.work_dir)])
    here = req.runner in ("python", "call") and not any(
        key.startswith(FORK_UNSAFE_ENV) and key != "PYTHONUNBUFFERED" for key in req.env
    )
    try:
        stdin_fd = stdin_for(req, out.log_dir)
    except OSError:
        return fail(out, 1, "cannot pass the payload to the tool runner") or 0
    pipes = []
    for _ in (0, 1):
        pipes.append(os.pipe())
    for fd in (pipes[0][1], pipes[1][1], 1, 2):
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # not a pipe, or over the user's pipe quota: the default size works too
    pid_file = os.path.join(out.log_dir, req.nonce + ".pid") if out.log_dir else None
    out.marker("__KX_START_%s__\n" % req.nonce)
    pid = os.fork()
    if pid == 0:
        return ("child", argv, env, stdin_fd, pipes, here, req)
    os.close(stdin_fd)
    for _, w in pipes:
        os.close(w)
    if pid_file is not None:  # for the client's kill (deadline passed on its side, cancel)
        try:
            with open(pid_file, "w") as fh:
                fh.write("%d %d\n" % (pid, os.getpid()))
        except OSError:
            pid_file = None
    code, timed_out = supervise(req, out, Child(pid), [r for r, _ in pipes])
    if pid_file is not None:
        try:
            os.unlink(pid_file)
        except OSError:
            pass
    if limits is not None:
        emit_rich(out, limits, scan, env.get(RICH_FILE_ENV))
    emit_result(out, env["KX_TOOL_RESULT"])
    out.finish(code, timed_out)
    return 0


outcome = main()
if isinstance(outcome, tuple):  # the fork: become the block (no frame of main() stays below it)
    _, _argv, _env, _stdin, _pipes, _here, _req = outcome
    child_setup(_stdin, _pipes, _env)
    if not _here:
        exec_program(_argv, _env)
    del outcome, _env, _stdin, _pipes
    if _req.runner == "call":
        with open(_req.path, "rb") as _fh:
            _req.code = _fh.read()
    run_python_here(_req.path, _req.code, _argv[1:])
os._exit(outcome)  # all our output went out with os.write: nothing to flush, no teardown to wait for
