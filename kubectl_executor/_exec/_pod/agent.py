"""kubectl-executor session agent: runs in the pod, Python 3.6+ standard library only.

One file, longer than the ~600 lines other modules keep to, for one reason: it is what the pod
runs, sent as it is over the exec's stdin (no package of ours exists in the pod to import from).

The client keeps ONE ``kubectl exec -i`` open to this process, so a block costs no kubectl
start-up. Frames on stdin/stdout: 1 type byte, 4-byte big-endian payload length, payload.

    client -> agent   R  run request (the stateless runner's KX1 header, then the code)
                      C  cancel (nonce): kill the block in flight
                      Q  quit
    agent -> client   H  hello (JSON)          S  started (nonce)
                      O  stdout chunk          E  stderr chunk
                      D  rich results (JSON: outputs, files, files_truncated), before X
                      X  exit (JSON: exit_code, timed_out, truncated, log_kept, state_lost)

A block runs as _pod/run.sh runs it: the file is written in work_dir, the program gets its own
session (setsid) and stdin /dev/null, a deadline TERMs then KILLs the whole process group (124,
or 137 when KILL was needed), signals give 128+N, the full log stays in the pod when the output
is over budget. Runner ``kernel`` feeds Python blocks to one persistent interpreter (stateful
sessions); a block that overruns is interrupted with SIGINT, and only if that fails is the
interpreter killed and restarted, which the exit frame reports as ``state_lost``.

The pids this agent is responsible for are listed in /tmp/kx-logs/session-<id>.pids, so that
the agent of the next connection of the same session can kill what a broken one left running.
Rich results (rich.py, which the client appends to this text): with KX_RICH in the request's
environment, every block's new or changed files under work_dir are listed, and a Python block's
display() calls and open matplotlib figures (a kernel block's last expression value too) become
outputs (D frame); a non-kernel Python block then starts as `python3 -c RICH_MAIN rich.py FILE`.
Fixed text: nothing from the user is ever spliced into it.
"""

# ruff: noqa: F821 -- rich.py's names: the client sends this text with rich.py's after it
import array
import ast
import fcntl
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

PROTOCOL = 1
LOG_DIR = "/tmp/kx-logs"
FRAME = struct.Struct(">cI")
CHUNK = 1 << 20
PIPE_SIZE = 1 << 20  # the unprivileged maximum: a big output moves in few, large writes
F_SETPIPE_SZ = 1031  # Linux
DRAIN_GRACE = 1.0  # after the block ended: how long its output pipes may stay open
STATE_LOST = "state_lost"
RICH_START = '"' * 3 + "kubectl-executor rich results"  # where rich.py's text begins in ours
SESSION_ENV = "KX_SESSION"  # in the environment of every process a block starts


# -- frames --------------------------------------------------------------------------------


class Out:
    """Frames to the client (our stdout). Several threads send; a frame is never split."""

    def __init__(self):
        self.lock = threading.Lock()
        self.broken = False

    def send(self, kind, payload=b""):
        data = FRAME.pack(kind, len(payload)) + payload
        with self.lock:
            if self.broken:
                return
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(1, view) :]
            except OSError:
                self.broken = True

    def json(self, kind, obj):
        self.send(kind, json.dumps(obj, separators=(",", ":")).encode())


def read_exact(n):
    """Exactly n bytes of stdin (never more: the next frame stays in the pipe), None at EOF."""
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = os.read(0, min(n - len(buf), 1 << 20))
        except InterruptedError:
            continue
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# -- processes -----------------------------------------------------------------------------


def start_time(pid):
    """The kernel's start time of pid (clock ticks since boot), None if there is no such process."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def group_members(pgid):
    """Pids in process group pgid (from /proc)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as fh:
                stat = fh.read()
            if int(stat[stat.rindex(b")") + 2 :].split()[2]) == pgid:
                found.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def kill_group(pgid, sig=signal.SIGKILL, wait=0.0):
    """Signal a process group; with ``wait``, give it that long to be gone (zombies aside)."""
    try:
        os.killpg(pgid, sig)
    except OSError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(not zombie(pid) for pid in group_members(pgid)):
        time.sleep(0.005)


def zombie(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2 :].split()[0] == b"Z"


def exit_status(returncode):
    """Popen's returncode -> a shell's exit status (128+N for a signal)."""
    return returncode if returncode >= 0 else 128 - returncode


def writable_dir(candidates):
    """The first directory of candidates that exists or can be made, and is writable."""
    for directory in candidates:
        if not directory:
            continue
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return directory
    return None


def home_logs(env):
    home = env.get("HOME")
    return os.path.join(home, ".kx-logs") if home else None


def which(name, env):
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


class Registry:
    """This session's pid file: the agent, the running block's group, the kernel's group."""

    def __init__(self, session_id):
        self.marker = ("%s=%s" % (SESSION_ENV, session_id)).encode()
        directory = writable_dir([LOG_DIR, home_logs(os.environ)])
        self.path = os.path.join(directory, "session-%s.pids" % session_id) if directory else None
        self.groups = {}  # role -> pgid
        self.me = None
        self.lock = threading.Lock()

    def reap_previous(self):
        """Kill what an earlier agent of this session left behind (checked by start time)."""
        if self.path is None:
            return
        try:
            with open(self.path) as fh:
                lines = fh.read().splitlines()
        except OSError:
            return
        # Every process a block started carries the session in its environment: that finds
        # what escaped its group, and a block killed before its group was written down.
        leftovers = [pid for pid in self.marked() if pid != os.getpid()]
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for line in lines:
            parts = line.split()
            if len(parts) != 3 or not parts[1].isdigit():
                continue
            kind, pid = parts[0], int(parts[1])
            if pid == os.getpid() or start_time(pid) != parts[2]:
                continue
            if kind == "group":
                kill_group(pid, wait=2.0)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(not zombie(pid) for pid in leftovers):
            time.sleep(0.005)

    def marked(self):
        """Pids whose environment carries this session's marker."""
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/environ" % name, "rb") as fh:
                    env = fh.read()
            except OSError:
                continue
            if self.marker in env.split(b"\0"):
                found.append(int(name))
        return found

    def set(self, role, pgid):
        with self.lock:
            if pgid is None:
                self.groups.pop(role, None)
            else:
                self.groups[role] = pgid
            self.write()

    def write(self):
        if self.path is None:
            return
        if self.me is None:
            self.me = "agent %d %s" % (os.getpid(), start_time(os.getpid()))
        lines = [self.me]
        for pgid in self.groups.values():
            lines.append("group %d %s" % (pgid, start_time(pgid)))
        tmp = "%s.%d" % (self.path, os.getpid())
        try:
            with open(tmp, "w") as fh:
                fh.write("\n".join(lines) + "\n")
            os.replace(tmp, self.path)
        except OSError:
            pass

    def remove(self):
        if self.path is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass


# -- requests ------------------------------------------------------------------------------


class BadRequest(Exception):
    pass


class Request:
    """The stateless runner's header: KX1 nonce timeout kill_after runner budget nenv."""

    def __init__(self, payload):
        pos = 0

        def line():
            nonlocal pos
            end = payload.find(b"\n", pos)
            if end < 0:
                raise BadRequest("truncated request header")
            text = payload[pos:end].decode("utf-8", "surrogateescape")
            pos = end + 1
            return text

        head = line().split(" ")
        if len(head) != 7 or head[0] != "KX1" or not re.match(r"^[0-9a-f]+$", head[1]):
            raise BadRequest("bad request header")
        self.nonce = head[1]
        self.timeout = float(head[2])
        self.kill_after = float(head[3])
        self.runner = head[4]
        self.budget = int(head[5])
        nenv = int(head[6])
        self.work_dir = line()
        self.path = line()
        self.env = {}
        for _ in range(nenv):
            key, _, value = line().partition("=")
            self.env[key] = value
        self.code = payload[pos:]
        parts = self.path.split("/")
        if not self.work_dir.startswith("/") or self.path.startswith("/") or ".." in parts:
            raise BadRequest("path escapes the workspace")


# -- the agent -----------------------------------------------------------------------------


class Agent:
    def __init__(self, session_id, source):
        self.out = Out()
        self.registry = Registry(session_id)
        self.source = source
        self.base_env = dict(os.environ)
        self.base_env[SESSION_ENV] = session_id
        self.running = False  # cleared just before the X frame, so the next R is never refused
        self.received = time.monotonic()
        self.nonce = None
        self.cancelled = False
        self.cancel_for = None  # the nonce of the last C frame, kept until its block registers
        self.lock = threading.Lock()  # orders a C frame against the block registering
        self.active_group = None
        self.kernel = Kernel(self)

    def serve(self):
        self.registry.reap_previous()
        self.registry.write()
        self.out.json(
            b"H",
            {
                "agent": "python",
                "protocol": PROTOCOL,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
            },
        )
        while True:
            head = read_exact(FRAME.size)
            if head is None:
                break
            kind, size = FRAME.unpack(head)
            payload = read_exact(size) if size else b""
            if payload is None:
                break
            if kind == b"Q":
                break
            if kind == b"C":
                self.cancel(payload.decode("ascii", "replace"))
            if kind == b"R":
                if self.running:  # the client waits for X before it sends the next block
                    self.out.send(b"E", b"kubectl-executor: a block is already running\n")
                    continue
                self.running = True
                worker = threading.Thread(target=self.run, args=(payload,))
                worker.daemon = True
                worker.start()
        self.shutdown()

    def cancel(self, nonce):
        """Kill the block ``nonce`` (its X frame follows as usual). A C frame can overtake the
        block's own start (the worker thread not yet at its process or kernel): it is kept, and
        the block is stopped the moment it registers (see :meth:`registered`)."""
        with self.lock:
            self.cancel_for = nonce
            self.stop_if_cancelled()

    def registered(self):
        """The block's process group (or the kernel's busy flag) is now set."""
        with self.lock:
            self.stop_if_cancelled()

    def stop_if_cancelled(self):
        if not self.running or self.nonce is None or self.cancel_for != self.nonce:
            return
        self.cancelled = True
        if self.active_group is not None:
            kill_group(self.active_group)
        elif self.kernel.busy:
            self.kernel.interrupt()

    def shutdown(self):
        """Client gone or asked us to quit: nothing we started outlives the session."""
        if self.active_group is not None:
            kill_group(self.active_group)
        self.kernel.kill()
        self.registry.remove()
        os._exit(0)

    # -- one block ---------------------------------------------------------------------------

    def run(self, payload):
        self.received = time.monotonic()
        with self.lock:
            self.cancelled = False
            self.nonce = None
        try:
            req = Request(payload)
            with self.lock:
                self.nonce = req.nonce
                self.cancelled = self.cancel_for == req.nonce
            if self.cancelled:  # its C frame overtook it: it never starts (the kernel keeps its state)
                self.out.send(b"S", req.nonce.encode())
                self.out.send(b"E", b"kubectl-executor: cancelled before it started\n")
                return self.finish(req.nonce, 130)
        except (BadRequest, ValueError) as exc:
            self.out.send(b"S", b"")
            self.out.send(b"E", ("kubectl-executor: %s\n" % exc).encode())
            self.finish("", 1)
            return
        try:
            self.run_request(req)
        except Exception:
            self.out.send(b"E", ("kubectl-executor: agent error\n%s" % traceback.format_exc()).encode())
            self.finish(req.nonce, 1)

    def finish(self, nonce, code, timed_out=False, logs=None, budget=0, state_lost=False):
        out_bytes, err_bytes = logs.sizes if logs is not None else (0, 0)
        log_kept = logs.close(budget) if logs is not None else False
        self.running = False
        self.out.json(
            b"X",
            {
                "nonce": nonce,
                "log_dir": (logs.dir if logs is not None else None) or LOG_DIR,
                "agent_ms": round((time.monotonic() - self.received) * 1000, 3),
                "cancelled": self.cancelled,
                "exit_code": code,
                "timed_out": timed_out,
                "truncated": out_bytes > budget or err_bytes > budget,
                "log_kept": log_kept,
                "out_bytes": out_bytes,
                "err_bytes": err_bytes,
                STATE_LOST: state_lost,
            },
        )

    def fail(self, req, message):
        self.out.send(b"S", req.nonce.encode())
        self.out.send(b"E", ("kubectl-executor: %s\n" % message).encode())
        self.finish(req.nonce, 1)

    def run_request(self, req):
        path = os.path.join(req.work_dir, req.path)
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            return self.fail(req, "cannot create directory %s" % directory)
        tmp = os.path.join(directory, ".kx-%s.part" % req.nonce)
        try:
            with open(tmp, "wb") as fh:
                fh.write(req.code)
            os.replace(tmp, path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return self.fail(req, "cannot write %s" % path)
        env = dict(self.base_env)
        env.update(req.env)
        env["PYTHONUNBUFFERED"] = "1"
        if req.runner == "none":
            self.out.send(b"S", req.nonce.encode())
            return self.finish(req.nonce, 0)
        rich = Rich(req, env, path)
        if req.runner == "kernel":
            return self.kernel.run(req, path, env, rich)
        if req.runner == "python":
            argv = [which("python3", env) or which("python", env) or "python3", path]
            if rich.file is not None:  # the same interpreter start, with display() and figures
                env[RICH_FILE_ENV] = rich.file
                env.setdefault("MPLBACKEND", "Agg")
                argv[1:] = ["-c", RICH_MAIN, self.source[self.source.index(RICH_START) :], path]
        elif req.runner in ("sh", "bash"):
            argv = [req.runner, path]
        elif req.runner == "pwsh":
            argv = ["pwsh", "-NoLogo", "-NonInteractive", "-File", path]
        else:
            return self.fail(req, "unknown runner %s" % req.runner)
        logs = Logs(req, env)
        self.out.send(b"S", req.nonce.encode())
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            self.out.send(b"E", ("kubectl-executor: cannot run %s: %s\n" % (argv[0], exc.strerror)).encode())
            return self.finish(req.nonce, code, logs=logs, budget=req.budget)
        self.active_group = proc.pid
        self.registry.set("block", proc.pid)
        self.registered()
        grow_pipes(proc.stdout.fileno(), proc.stderr.fileno())
        pump = Pump(self.out, logs, proc.stdout.fileno(), proc.stderr.fileno())
        exited = Exited(proc)
        timed_out = False
        if exited.wait(req.timeout):
            code = exit_status(proc.returncode)
        else:
            # As `timeout -k`: TERM the group, KILL it if it is still there kill_after later.
            timed_out = True
            kill_group(proc.pid, signal.SIGTERM)
            code = 124
            if not exited.wait(req.kill_after):
                kill_group(proc.pid)
                exited.wait(None)
                code = 137
        kill_group(proc.pid, wait=1.0)  # what the block left running in the background
        pump.finish(time.monotonic() + DRAIN_GRACE)
        proc.stdout.close()
        proc.stderr.close()
        self.active_group = None  # its line in the registry stays: start times make it harmless
        rich.send(self.out)
        self.finish(req.nonce, code, timed_out, logs, req.budget)


class Rich:
    """A block's rich results: the work_dir scan taken before it, its outputs file, the report."""

    def __init__(self, req, env, path):
        self.req = req
        self.limits = rich_limits(req.env)
        self.scan = None
        self.file = None
        self.log_dir = None
        if self.limits is None:
            return
        self.log_dir = writable_dir([LOG_DIR, home_logs(env), os.path.join(req.work_dir, ".kx-logs")])
        if self.log_dir is not None:
            self.file = os.path.join(self.log_dir, req.nonce + ".rich")
        if self.limits["files"] >= 0:
            self.scan = FileScan(req.work_dir, [req.path])

    def send(self, out):
        if self.limits is None:
            return
        try:
            report = rich_report(self.limits, self.req.nonce, self.log_dir, self.file, self.scan)
        except Exception as exc:  # never lose the block's outcome to its report
            out.send(b"E", ("kubectl-executor: rich results lost: %s\n" % exc).encode())
            return
        if report:
            out.send(b"D", report.encode("utf-8", "surrogateescape"))


class Exited:
    """Wakes the moment the process exits. Popen.wait(timeout) polls with growing sleeps, which
    would add up to half the run time to every block; a blocking waitpid in a thread does not."""

    def __init__(self, proc):
        self.event = threading.Event()
        self.proc = proc
        thread = threading.Thread(target=self._wait)
        thread.daemon = True
        thread.start()

    def _wait(self):
        self.proc.wait()
        self.event.set()

    def wait(self, timeout):
        return self.event.wait(timeout)


class Logs:
    """The block's full output, kept in the pod as <log dir>/<nonce>.out|.err once a stream goes
    over budget (the client gets head and tail; the files keep everything). Output within the
    budget never touches the disk. Log dir: /tmp/kx-logs, else $HOME/.kx-logs, else
    <work_dir>/.kx-logs."""

    def __init__(self, req, env):
        self.candidates = [LOG_DIR, home_logs(env), os.path.join(req.work_dir, ".kx-logs")]
        self.nonce = req.nonce
        self.budget = req.budget
        self.dir = None
        self.files = None  # opened when a stream goes over budget
        self.buffers = [bytearray(), bytearray()]
        self.sizes = [0, 0]
        self.failed = False

    def write(self, index, chunk):
        self.sizes[index] += len(chunk)
        if self.failed:
            return
        if self.files is None:
            self.buffers[index] += chunk
            if self.sizes[index] > self.budget:
                self._spill()
            return
        try:
            self.files[index].write(chunk)
        except OSError:
            self.failed = True

    def _spill(self):
        self.dir = writable_dir(self.candidates)
        try:
            if self.dir is None:
                raise OSError("no writable log directory")
            base = os.path.join(self.dir, self.nonce)
            self.files = [open(base + ".out", "wb"), open(base + ".err", "wb")]
            for index in (0, 1):
                self.files[index].write(self.buffers[index])
        except OSError:
            self.failed = True
        self.buffers = [bytearray(), bytearray()]

    def close(self, budget):
        """True when the logs are kept (a stream was over budget and both files were written)."""
        for fh in self.files or ():
            try:
                fh.close()
            except OSError:
                self.failed = True
        return self.files is not None and not self.failed


class Pump:
    """Forwards the block's stdout and stderr as frames the moment they are read."""

    KINDS = (b"O", b"E")

    def __init__(self, out, logs, out_fd, err_fd):
        self.out = out
        self.logs = logs
        self.fds = {out_fd: 0, err_fd: 1}
        self.stop_at = None
        self.thread = threading.Thread(target=self.loop)
        self.thread.daemon = True
        self.thread.start()

    def loop(self):
        while self.fds:
            wait = 0.25
            if self.stop_at is not None:
                wait = self.stop_at - time.monotonic()
                if wait <= 0:
                    break
            try:
                ready, _, _ = select.select(list(self.fds), [], [], wait)
            except InterruptedError:
                continue
            for fd in ready:
                try:
                    chunk = os.read(fd, CHUNK)
                except OSError:
                    chunk = b""
                index = self.fds[fd]
                if not chunk:
                    del self.fds[fd]
                    continue
                self.logs.write(index, chunk)
                self.out.send(self.KINDS[index], chunk)

    def finish(self, stop_at):
        """Drain until EOF on both pipes, or until stop_at if something escaped the group."""
        self.stop_at = stop_at
        self.thread.join()


# -- stateful Python -----------------------------------------------------------------------


class Kernel:
    """One persistent interpreter; blocks are exec'd in its __main__ namespace.

    Talks to the interpreter over a SOCK_SEQPACKET pair: a request carries the block's file and
    env, and with it (SCM_RIGHTS) the write ends of two fresh pipes that become its fd 1 and 2
    for that block only. The reply is the exit code.
    """

    def __init__(self, agent):
        self.agent = agent
        self.proc = None
        self.sock = None
        self.lost = False  # the previous interpreter died: report it on the next block
        self.busy = False
        self.blocks = 0  # counts blocks, so that a late escalation never hits the next one

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill_children(self):
        """The interpreter survived an interrupted block; the processes the block started do not."""
        pgid = self.proc.pid
        for pid in group_members(pgid):
            if pid != pgid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def interrupt(self, kill_after=2.0):
        """SIGINT the block (a cancel); KILL the interpreter if it is still busy kill_after later."""
        proc = self.proc
        if proc is None:
            return
        kill_group(proc.pid, signal.SIGINT)
        block = self.blocks

        def escalate():
            if self.busy and self.proc is proc and self.blocks == block:
                kill_group(proc.pid)

        timer = threading.Timer(kill_after, escalate)
        timer.daemon = True
        timer.start()

    def kill(self):
        if self.proc is not None:
            kill_group(self.proc.pid)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.sock is not None:
            self.sock.close()
        self.proc = None
        self.sock = None
        self.agent.registry.set("kernel", None)

    def start(self, env):
        if self.proc is not None:
            self.lost = True
            self.kill()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        loader = (
            "import sys\n"
            "g = {'__name__': 'kx_kernel'}\n"
            "exec(compile(sys.argv[1], 'kx_agent.py', 'exec'), g)\n"
            "g['kernel_main'](int(sys.argv[2]))\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", loader, self.agent.source, str(theirs.fileno())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            pass_fds=(theirs.fileno(),),
            start_new_session=True,
        )
        theirs.close()
        self.sock = ours
        self.agent.registry.set("kernel", self.proc.pid)

    def run(self, req, path, env, rich):
        agent = self.agent
        if not self.alive():
            self.start(dict(agent.base_env))
        state_lost, self.lost = self.lost, False
        logs = Logs(req, env)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        agent.out.send(b"S", req.nonce.encode())
        message = json.dumps({"path": path, "env": req.env, "rich_file": rich.file}).encode()
        try:
            self.sock.sendmsg(
                [message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [out_w, err_w]))]
            )
        except OSError:
            state_lost = True
        # The block's first output can reach the client, and its cancel come back, before this
        # thread gets here: that cancel was kept, registered() carries it out.
        self.blocks += 1
        self.busy = True
        agent.registered()
        os.close(out_w)
        os.close(err_w)
        pump = Pump(agent.out, logs, out_r, err_r)
        timed_out = False
        reply = self.reply(req.timeout)
        if reply == "timeout":
            # Interrupt, as a notebook does; kill (and lose the state) only if that fails.
            timed_out = True
            pgid = self.proc.pid
            kill_group(pgid, signal.SIGINT)
            reply = self.reply(req.kill_after)
            code = 124
            if reply == "timeout":
                reply = None
                code = 137
                kill_group(pgid)
            elif reply is not None:
                self.kill_children()
        if reply is None:  # the interpreter died under the block (os._exit, a crash, KILL)
            state_lost = True
            try:
                returncode = self.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:  # alive but deaf (its socket was closed)
                kill_group(self.proc.pid)
                returncode = self.proc.wait()
            if not timed_out:
                code = exit_status(returncode)
            self.kill()
        elif not timed_out:
            code = int(reply.get("exit_code", 1))
            if agent.cancelled:
                self.kill_children()
        self.busy = False
        pump.finish(time.monotonic() + DRAIN_GRACE)
        os.close(out_r)
        os.close(err_r)
        rich.send(agent.out)
        agent.finish(req.nonce, code, timed_out, logs, req.budget, state_lost)

    def reply(self, timeout):
        """The interpreter's answer, "timeout", or None when it died."""
        if self.sock is None:
            return None
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return "timeout"
        except OSError:
            return None
        if not data:
            return None
        return json.loads(data.decode())


def kernel_main(fd):
    """The persistent interpreter (a process of its own, started by Kernel.start)."""
    import builtins

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    busy = [False]
    early = [None]  # None while waiting for a block; True once an interrupt came before its exec

    def on_sigint(signum, frame):
        if busy[0]:
            raise KeyboardInterrupt
        if early[0] is not None:  # the block is here but not yet running: it starts interrupted
            early[0] = True
        # between blocks: nothing to interrupt

    signal.signal(signal.SIGINT, on_sigint)
    main = sys.modules["__main__"]
    namespace = main.__dict__
    namespace.clear()
    namespace.update({"__name__": "__main__", "__builtins__": builtins, "__doc__": None})
    base_env = dict(os.environ)
    base_env.setdefault("MPLBACKEND", "Agg")  # figures are drawn headless, then become outputs
    sink = RichSink(None)
    builtins.display = sink.display
    sys.meta_path.insert(0, PyplotHook(sink))
    fd_size = array.array("i").itemsize
    while True:
        early[0] = None
        try:
            data, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(2 * fd_size))
            early[0] = False
        except KeyboardInterrupt:
            continue
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fd_size])
        if len(fds) != 2:
            sock.send(json.dumps({"exit_code": 1}).encode())
            continue
        request = json.loads(data.decode())
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        os.close(fds[0])
        os.close(fds[1])
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        sink.path = request.get("rich_file")
        code = _kernel_exec(request, namespace, base_env, busy, early, sink)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        try:
            sock.send(json.dumps({"exit_code": code}).encode())
        except KeyboardInterrupt:
            sock.send(json.dumps({"exit_code": code}).encode())


def _kernel_exec(request, namespace, base_env, busy, early, sink):
    path = request["path"]
    os.environ.clear()
    os.environ.update(base_env)
    os.environ.update(request.get("env") or {})
    os.environ["PYTHONUNBUFFERED"] = "1"
    sys.argv = [path]
    directory = os.path.dirname(path)
    if sys.path and sys.path[0] != directory:
        sys.path[0] = directory
    namespace["__file__"] = path
    code = 0
    busy[0] = True
    try:
        if early[0]:
            raise KeyboardInterrupt
        with open(path, "rb") as fh:
            source = fh.read()
        # As a notebook cell: the value of a last expression is displayed (unless None).
        tree = compile(source, path, "exec", ast.PyCF_ONLY_AST)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, path, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, path, "eval"), namespace)
            if value is not None:
                sink.display(value)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:
        kind, value, tb = sys.exc_info()
        code = 1
        try:
            # The user's frames only: not the kernel's exec, nor its SIGINT handler.
            report = traceback.TracebackException(kind, value, tb.tb_next if tb is not None else None)
            report.stack = traceback.StackSummary.from_list(
                [f for f in report.stack if f.filename != "kx_agent.py"]
            )
            sys.stderr.write("".join(report.format()))
        except BaseException:
            pass
    finally:
        busy[0] = False
    try:
        sink.flush()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    return code


def _exit_code(value):
    """sys.exit's argument -> the exit status the process would have had."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value & 0xFF
    try:
        sys.stderr.write("%s\n" % (value,))
    except BaseException:
        pass
    return 1


def grow_pipes(*fds):
    for fd in fds:
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # not a pipe, or over the user's pipe quota: the default size works too


def main(session_id, source):
    grow_pipes(1)
    Agent(session_id, source).serve()
