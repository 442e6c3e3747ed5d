"""Run ``nestkit`` commands in processes forked from one that has already imported torch.

On the 2-core CI machine a ``nestkit`` process spends about 20 s importing torch before it does
anything, and the suite starts well over a hundred of them. Each test worker therefore starts one
*zygote* (this file run as a script): it imports torch and the nestkit CLI once, then forks a fresh
child per command. The child is a real, separate process with its own pid, environment, working
directory, stdin/stdout/stderr and exit status; it runs the console script's ``main()`` with the
requested argv and exits the way the interpreter would (non-daemon threads joined, atexit handlers
run; only the teardown handlers torch registered at import are skipped, _drop_preloaded_exit_work).
The zygote's own objects are frozen out of garbage collection, and a child's exit reaches the zygote
at once (SIGCHLD), so a fork costs a few tens of milliseconds. Nothing of nestkit's state is set up
before the fork: the zygote only imports modules, so plugins are discovered in the child from the
child's ``PYTHONPATH``.

What the zygote cannot reproduce is interpreter start-up itself (import-time side effects of the
environment). Tests about that pass ``fresh=True`` to ``conftest.run_nestkit``, and
``NESTKIT_TEST_FRESH=1`` runs every command as a new interpreter.

The same holds for ``python SCRIPT``, ``python -m MODULE`` and ``python -c CODE`` (argv starting with
"python"): the benchmark scripts the tests run pay torch's import once too.

Protocol (JSON lines): the client writes ``{"argv", "env", "cwd", "stdin", "stdout", "stderr"}``
(the last three are paths: files or FIFOs); the zygote answers ``{"pid"}`` at once and
``{"pid", "status"}`` when the child has exited (``status``: as ``subprocess`` reports it, a
negative number for a signal).

DDP ranks come from the zygote too. torchrun starts each rank as ``$PYTHON_EXEC -u -m
nestkit.cli.main ...`` (its documented override of ``sys.executable``), and children get
``PYTHON_EXEC`` pointing to a *stand-in*: a tiny script run by ``python -SE`` (no site-packages,
no torch) that hands its argv, environment, folder and its own stdin/stdout/stderr to the zygote
over a Unix socket, forwards the signals it gets to the forked rank, and exits with the rank's
status (dying of the same signal when the rank did). When the stand-in itself is killed, the
zygote kills its rank. A test about how ranks die passes ``PYTHON_EXEC=sys.executable``.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------- client


class Zygote:
    """The client side: one zygote process per test worker, started on first use."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._statuses: dict[int, int] = {}
        self._python_exec = ""  # the zygote's stand-in for the interpreter of torchrun's ranks

    def _started(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, bufsize=1, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
            )
            atexit.register(self.close, self._proc)
            ready = json.loads(self._proc.stdout.readline() or "{}")  # type: ignore[union-attr]
            if ready.get("ready") is not True:
                raise RuntimeError(f"the test zygote did not start: {ready!r}")
            self._python_exec = ready["python_exec"]
        return self._proc

    @staticmethod
    def close(proc: subprocess.Popen[str]) -> None:
        """At the worker's exit: end the zygote (it stops at the end of its input) and reap it, so no
        process outlives the test run and nothing is left for the garbage collector to warn about."""
        if proc.poll() is None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def python_exec(self) -> str:
        """The stand-in for ``python`` whose processes the zygote forks (torchrun's PYTHON_EXEC)."""
        with self._lock:
            self._started()
            return self._python_exec

    @property
    def pid(self) -> int:
        """The zygote's own process: the parent of every process it forks, DDP ranks included."""
        with self._lock:
            return self._started().pid

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path, stdin: str, stdout: str, stderr: str) -> Child:
        """Fork a child that runs ``argv`` (``["nestkit", ...]`` or ``["python", ...]``); its
        streams are the given paths. Unless ``env`` sets ``PYTHON_EXEC``, the DDP ranks the child
        starts through torchrun are forked from the zygote as well."""
        with self._lock:
            proc = self._started()
            env = {"PYTHON_EXEC": self._python_exec, **env}
            request = {"argv": argv, "env": env, "cwd": str(cwd), "stdin": stdin, "stdout": stdout, "stderr": stderr}
            proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            while True:
                message = self._next_message(None)
                if "status" not in message:
                    return Child(self, int(message["pid"]))

    def popen(self, argv: list[str], env: dict[str, str], cwd: Path, *, stdin: bool = False, stdout: bool = False,
              stderr: bool = False) -> Child:
        """``spawn`` with pipes, like ``subprocess.Popen(..., stdin=PIPE, ...)``: each stream asked for is
        a FIFO whose text end is ``child.stdin`` / ``.stdout`` / ``.stderr``; the others are /dev/null."""
        folder = Path(tempfile.mkdtemp(prefix="nestkit-pipes-"))
        wanted = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
        paths = {name: str(folder / name) if pipe else os.devnull for name, pipe in wanted.items()}
        try:
            for name, pipe in wanted.items():
                if pipe:
                    os.mkfifo(paths[name])
            child = self.spawn(argv, env, cwd, paths["stdin"], paths["stdout"], paths["stderr"])
            for name, mode in (("stdin", "w"), ("stdout", "r"), ("stderr", "r")):  # the order the child opens them
                if wanted[name]:
                    setattr(child, name, open(paths[name], mode))  # noqa: SIM115 - the caller's to close
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return child

    def _next_message(self, timeout: float | None) -> dict[str, Any]:
        """The zygote's next message ({} if ``timeout`` passes first); exit statuses are kept."""
        assert self._proc is not None and self._proc.stdout is not None
        readable, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not readable:
            return {}
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the test zygote died")
        message = json.loads(line)
        if "status" in message:
            self._statuses[int(message["pid"])] = int(message["status"])
        return message

    def status(self, pid: int, timeout: float | None) -> int | None:
        """The exit status of ``pid`` once it has exited; None if ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while pid not in self._statuses:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self._next_message(left) and left == 0:  # nothing more has come: not yet
                    return None
            return self._statuses.pop(pid)


class Child:
    """A forked ``nestkit`` process, with the parts of ``subprocess.Popen`` the tests use."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self._zygote = zygote
        self.pid = pid
        self.returncode: int | None = None
        self.stdin: Any = None  # the caller's ends of the pipes Zygote.popen made
        self.stdout: Any = None
        self.stderr: Any = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            status = self._zygote.status(self.pid, timeout)
            if status is None:
                raise subprocess.TimeoutExpired(f"nestkit (pid {self.pid})", timeout or 0)
            self.returncode = status
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.status(self.pid, 0)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------------------- zygote


def _exit_code(code: Any) -> int:
    """What the interpreter makes of ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _run_argv(argv: list[str]) -> Any:
    """``nestkit ARGS`` as the console script runs it, or ``python [-c CODE | -m MODULE | SCRIPT] ARGS``
    as the interpreter runs it (``__main__`` is the code, module or script)."""
    # sys.path[0] is the zygote's own folder (tests/); the interpreter would put this there instead.
    if argv[0] != "python":
        from nestkit.cli.main import main

        sys.argv = argv
        sys.path[0] = os.path.dirname(shutil.which("nestkit") or sys.executable)
        return main()
    while argv[1] == "-u":  # torchrun starts its ranks unbuffered
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
        argv = [argv[0], *argv[2:]]
    if argv[1] == "-c":
        sys.argv = ["-c", *argv[3:]]
        sys.path[0] = ""
        exec(compile(argv[2], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        return None
    if argv[1] == "-m":
        sys.modules.pop(argv[2], None)  # preloaded by the zygote; `python -m` runs a first import of it
        sys.argv = [argv[2], *argv[3:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        return None
    script = os.path.abspath(argv[1])
    sys.argv = [argv[1], *argv[2:]]
    sys.path[0] = os.path.dirname(script)
    runpy.run_path(script, run_name="__main__")
    return None


def _run_child(request: dict[str, Any], fds: list[int] | None = None) -> None:
    """In the forked child: become the requested process, then exit. Its stdin, stdout and
    stderr are ``fds`` (a stand-in's own) or else the request's paths."""
    code = 1
    try:
        os.setpgid(0, 0)  # like a shell job: a kill of the test's child never reaches the zygote
        if fds is None:
            fds = [os.open(request["stdin"], os.O_RDONLY), os.open(request["stdout"], os.O_WRONLY),
                   os.open(request["stderr"], os.O_WRONLY)]
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in set(fds) - {0, 1, 2}:
            os.close(fd)
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1 if os.isatty(1) else -1)
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[1:1] = [os.path.abspath(p) for p in extra]
        importlib.invalidate_caches()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            code = _exit_code(_run_argv(list(request["argv"])))
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
            sys.excepthook(*sys.exc_info())
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # the interpreter joins non-daemon threads
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


_STAND_IN = """
import json, os, signal, socket, sys

conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
conn.connect({address!r})
request = {{"argv": ["python", *sys.argv[1:]], "env": dict(os.environ), "cwd": os.getcwd()}}
socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
pid = json.loads(conn.recv(4096))["pid"]


def forward(sig, frame):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, forward)
reply = conn.recv(4096)
status = json.loads(reply)["status"] if reply else 1
if status < 0:
    signal.signal(-status, signal.SIG_DFL)
    os.kill(os.getpid(), -status)
os._exit(status & 0xFF)
"""


def _stand_in(folder: str) -> tuple[socket.socket, str]:
    """The listening socket for stand-ins and the stand-in's path (an executable script)."""
    address = os.path.join(folder, "zygote.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(address)
    listener.listen(64)
    path = os.path.join(folder, "python")
    with open(path, "w") as handle:
        handle.write(f"#!{sys.executable} -SE\n" + _STAND_IN.format(address=address))
    os.chmod(path, 0o755)
    return listener, path


def _status(wait_status: int) -> int:
    return -os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else os.WEXITSTATUS(wait_status)


def _drop_preloaded_exit_work() -> None:
    """Exit handlers the preloaded libraries registered, which every child would run at exit: torch
    unregisters each of its op libraries (one weakref.finalize each) and dynamo formats a table of
    compile times for a log nobody enabled, about 50 ms together. They only tear down the dying
    process's own state, so children skip them; what the command itself registers still runs."""
    import torch._dynamo.utils

    atexit.unregister(torch._dynamo.utils.dump_compile_times)
    for info in list(weakref.finalize._registry.values()):  # type: ignore[attr-defined]
        info.atexit = False


def _serve() -> None:
    import torch  # noqa: F401  - the expensive part, paid once per test worker
    import torch._dynamo  # noqa: F401  - torch.optim imports it on the first optimizer (sympy & co: ~10 s here)
    import torch.utils.tensorboard  # noqa: F401  - the run's SummaryWriter (its file I/O layer pulls in boto3)
    import typer.rich_utils  # noqa: F401  - what --help and rich output import (~1 s a command here)
    import rich.markdown  # noqa: F401
    import rich.syntax  # noqa: F401

    import nestkit.cli.main  # noqa: F401
    from nestkit.builtin import BUILTIN_MODULES

    for module in (*BUILTIN_MODULES, "nestkit.train.loop", "nestkit.data.loader"):
        __import__(module)  # imported, never run: the child starts from a clean nestkit
    _drop_preloaded_exit_work()
    gc.freeze()  # the preloaded objects: a child's garbage collections never walk (and copy) them
    folder = tempfile.mkdtemp(prefix="nestkit-zygote-")
    listener, python_exec = _stand_in(folder)
    out = sys.stdout
    out.write(json.dumps({"ready": True, "python_exec": python_exec}) + "\n")
    out.flush()
    clients: set[int] = set()  # children the client asked for: it hears of their exit
    ranks: dict[int, socket.socket | None] = {}  # children forked for a stand-in -> its connection (None: killed)
    pending = b""
    # A child's exit wakes the loop at once (a byte on this pipe) instead of at its next poll.
    exits, exited = os.pipe()
    os.set_blocking(exited, False)
    signal.set_wakeup_fd(exited, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def fork(request: dict[str, Any], fds: list[int] | None) -> int:
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)  # the loop's wake-up on a child's exit is the zygote's, not the child's
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(exits)
            os.close(exited)
            listener.close()
            for conn in filter(None, ranks.values()):
                conn.close()
            _run_child(request, fds)
        return pid

    while True:
        readable, _, _ = select.select([0, listener, exits, *filter(None, ranks.values())], [], [], 1.0)
        if exits in readable:
            os.read(exits, 1 << 12)
        if 0 in readable:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                pid = fork(json.loads(line), None)
                clients.add(pid)
                out.write(json.dumps({"pid": pid}) + "\n")
                out.flush()
        if listener in readable:
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            pid = fork(json.loads(message), list(fds))
            for fd in fds:
                os.close(fd)
            conn.send(json.dumps({"pid": pid}).encode())
            ranks[pid] = conn
        for pid, conn in list(ranks.items()):
            if conn in readable and not conn.recv(16):  # the stand-in was killed: so is its rank (and its children)
                for kill in (os.killpg, os.kill):  # os.kill: the rank may not lead its own group yet
                    try:
                        kill(pid, signal.SIGKILL)
                        break
                    except ProcessLookupError:
                        pass
                conn.close()
                ranks[pid] = None
        for pid in [*clients, *ranks]:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
            if pid in clients:
                clients.discard(pid)
                out.write(json.dumps({"pid": pid, "status": _status(wait_status)}) + "\n")
                out.flush()
                continue
            conn = ranks.pop(pid)
            if conn is not None:
                try:
                    conn.send(json.dumps({"status": _status(wait_status)}).encode())
                except OSError:
                    pass
                conn.close()
    for pid in [*clients, *ranks]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    _serve()
