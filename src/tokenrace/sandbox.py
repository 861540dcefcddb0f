"""Run untrusted Python (model-written code) in a child process with hard limits.

``run_python(code)`` writes the code to ``main.py`` in a fresh private temporary directory and runs it in
two stages: a launcher (the ``_child_*`` functions below, handed to ``python -c``) that sets up the cage and
then execs a second, clean interpreter that installs an audit hook and runs the code. ``SandboxResult.layers``
lists what applied to a run. The layers:

Always (any user, any kernel):
  - a separate ``python -I -S -B`` (isolated: no site-packages, no ``PYTHON*`` variables, no bytecode
    written), its own session and process group, stdin from /dev/null;
  - the temporary directory is its cwd, HOME and TMPDIR, and is deleted afterwards;
  - an environment of PATH, HOME, TMPDIR and LANG only: the parent's, where API keys live, is never passed;
  - rlimits: CPU seconds (SIGXCPU, then SIGKILL a second later), address space, file size (stdout and
    stderr included), processes, and no core dumps;
  - a wall-clock timeout, after which the whole process group is killed; the launcher dies with its parent;
    no-new-privileges (a setuid binary gains nothing);
  - a Python audit hook (unless ``audit=False``, which exists to test the other layers): refuses network
    (socket creation other than AF_UNIX, connect, bind, sendto, name lookups), processes (subprocess, exec,
    system, spawn; ``ctypes`` and ``_posixsubprocess`` cannot be imported), signals to other processes,
    gc introspection, and writes, renames, removals and permission changes outside the temporary directory.
    It is defence in depth against accidents, not a boundary against code written to escape it.

As root (tests and CI), where the kernel exempts root from RLIMIT_NPROC and every file is writable:
  - a network namespace: only a loopback interface that is down, so no connection can leave;
  - a pid namespace whose init (a tiny reaper; the code runs as its child, since the kernel drops signals
    such as SIGXCPU that an init has no handler for) exits when the code's process does, upon which the
    kernel kills every other process in it: nothing, not even a ``setsid`` escapee, outlives the run;
    a fresh ``/proc`` shows only the sandbox's processes;
  - a mount namespace: /root and /home (where keys and configs live) covered by an empty tmpfs, private
    tmpfs over /tmp, /var/tmp and /dev/shm (the interpreter and the temporary directory are bound back in
    where they lie below one of these), every other mount read-only;
  - the code runs as a fresh unprivileged uid/gid (random, one per run, no supplementary groups), so
    RLIMIT_NPROC applies, file permissions hold, and parallel sandboxes cannot signal each other; any process
    of that uid left afterwards is killed. If the interpreter lives where an unprivileged uid cannot read it
    (pyenv under /root), the mount namespace covers the unreadable directories with a tmpfs that holds only
    the interpreter (and the run's directory). Without a mount namespace (a container without
    CAP_SYS_ADMIN), what that uid left in /tmp, /var/tmp or /dev/shm is deleted afterwards; if the
    interpreter is unreadable too, the code stays root, and the audit hook refuses fork as well.

Not root:
  - where the kernel allows unprivileged user namespaces: a user namespace (same uid, no capabilities once
    the code runs) holding the same network, pid and mount namespaces as for root, so the file system outside
    the temporary directory is read-only and RLIMIT_NPROC counts only the sandbox's processes;
  - otherwise only the layers that always apply: RLIMIT_NPROC then counts all of the user's processes, the
    file system is as writable as for the caller (the audit hook alone refuses writes), the network is
    refused by the audit hook alone, the caller's environment is readable in /proc/<pid>/environ (same
    uid), and a process that leaves the process group (``setsid``) can outlive the run.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import math
import os
import random
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

OUTPUT_LIMIT = 4096  # bytes of stdout (its head) and stderr (its tail) kept in a result

# Linux constants the launcher needs (it runs before anything but the standard library is importable).
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_NOATIME = 1024
_MS_NODIRATIME = 2048
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_RELATIME = 1 << 21
_MS_STRICTATIME = 1 << 24
_MNT_DETACH = 2
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38

# Per-run uids for root: a range no distribution or systemd convention allocates.
_UID_BASE = 0x71000000
_UID_SPAN = 1 << 24


@dataclass(frozen=True, slots=True)
class SandboxResult:
    ok: bool  # exited 0 within every limit
    exit_code: int | None  # the exit status; negative: killed by that signal; None: stopped at the timeout
    reason: str  # "ok", "timeout", "cpu limit", "memory limit", "file size limit", "killed by signal N",
    # "exit code N", or the last line of stderr (the exception) when the program failed with one
    stdout: str = ""  # the first OUTPUT_LIMIT bytes
    stderr: str = ""  # the last OUTPUT_LIMIT bytes
    duration_s: float = 0.0  # wall time from start to exit (or to the timeout)
    layers: tuple[str, ...] = ()  # the isolation that applied (see the module docstring)


class SandboxError(RuntimeError):
    """The sandbox itself cannot run here (not the code's fault)."""


def run_python(
    code: str,
    *,
    timeout_s: float = 10,
    cpu_s: float = 5,
    memory_mb: int = 512,
    max_file_mb: int = 16,
    max_processes: int = 16,
    audit: bool = True,
) -> SandboxResult:
    """Run ``code`` as ``__main__`` in the sandbox and wait at most ``timeout_s``; every process it made is
    gone and its directory deleted when this returns. Thread-safe. ``audit=False`` drops the audit hook
    (only to test that the other layers hold on their own)."""
    if os.name != "posix":
        raise SandboxError("the code sandbox needs Linux (or another POSIX system)")
    source = _child_source()
    uid = _claim_uid() if os.geteuid() == 0 else None
    workdir = ""
    report_read = report_write = -1
    process: subprocess.Popen[bytes] | None = None
    timed_out = False
    duration = 0.0
    layers: tuple[str, ...] = ()
    status = None
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            workdir = os.path.realpath(tempfile.mkdtemp(prefix="tokenrace-sandbox-"))
            main = os.path.join(workdir, "main.py")
            with open(main, "wb") as file:
                file.write(code.encode("utf-8", "replace"))
            if uid is not None:
                os.chown(workdir, uid, uid)
                os.chown(main, uid, uid)
            report_read, report_write = os.pipe()
            config = {
                "workdir": workdir,
                "uid": uid,
                "cpu_s": max(1, math.ceil(cpu_s)),
                "memory_bytes": int(memory_mb) << 20,
                "file_bytes": int(max_file_mb) << 20,
                "processes": int(max_processes),
                "tmpfs_mb": max(1, int(max_file_mb)),
                "report_fd": report_write,
                "parent": os.getpid(),
                "audit": audit,
            }
            executable = os.path.realpath(sys.executable)
            started = time.perf_counter()
            try:
                process = subprocess.Popen(
                    [executable, "-I", "-S", "-B", "-c", source, "stage1", json.dumps(config)],
                    cwd=workdir,
                    env=_child_env(workdir),
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                    pass_fds=(report_write,),
                )
            except OSError as exc:
                raise SandboxError(f"cannot start the sandbox interpreter {executable}: {exc}") from exc
            os.close(report_write)
            report_write = -1
            timed_out = not _wait_for_exit(process.pid, timeout_s)
            duration = time.perf_counter() - started
        finally:
            if report_write >= 0:
                os.close(report_write)
            if process is not None:
                _stop(process, uid)
            if report_read >= 0:
                layers, status = _read_report(report_read)
                os.close(report_read)
            if workdir:
                _remove_tree(workdir)
            if uid is not None:
                _remove_files_of(uid)
                _release_uid(uid)
        out = _head(stdout)
        err = _tail(stderr)
    exit_code = None if timed_out else process.returncode
    if status is not None and not timed_out:
        exit_code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    reason = _reason(timed_out, exit_code, err)
    return SandboxResult(reason == "ok", exit_code, reason, out, err, duration, layers)


# --- the parent side ------------------------------------------------------------------------------------

_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _claim_uid() -> int:
    """A uid (and gid of the same number) that no account and no other running sandbox has."""
    import grp
    import pwd

    rng = random.SystemRandom()
    with _uid_lock:
        while True:
            uid = _UID_BASE + rng.randrange(_UID_SPAN)
            if uid in _uids_in_use:
                continue
            try:
                pwd.getpwuid(uid)
                continue
            except KeyError:
                pass
            try:
                grp.getgrgid(uid)
                continue
            except KeyError:
                break
        _uids_in_use.add(uid)
    return uid


def _release_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _child_env(workdir: str) -> dict[str, str]:
    """A fresh environment: nothing of the parent's, which holds API keys."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}


def _wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` exits, without reaping it: while it is a zombie its pid (and process group id)
    cannot be reused, so killing the group afterwards cannot hit a stranger. False on timeout."""
    deadline = time.monotonic() + max(timeout_s, 0.0)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    if pidfd >= 0:
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _has_exited(pid)
                if poller.poll(math.ceil(remaining * 1000)):
                    return True
        finally:
            os.close(pidfd)
    delay = 0.0005
    while not _has_exited(pid):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)
    return True


def _has_exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _stop(process: subprocess.Popen[bytes], uid: int | None) -> None:
    """Kill the launcher's process group (and, as root, every process of the run's uid), then reap."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if uid is not None:
        _kill_uid(uid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


# Directories anyone may write to: without a private mount namespace a per-run uid can leave files there.
_SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock")


def _remove_files_of(uid: int) -> None:
    """Delete what the run's uid created in the world-writable directories (its processes are dead)."""
    for directory in _SHARED_WRITABLE:
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        _remove_tree(entry.path)
                    else:
                        os.unlink(entry.path)


def _kill_uid(uid: int) -> None:
    """SIGKILL every live process of ``uid`` until none is left (a fork bomb may race the first pass)."""
    for _ in range(200):
        alive = [pid for pid in _pids_of(uid) if _is_alive(pid)]
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.001)


def _pids_of(uid: int) -> list[int]:
    pids = []
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid == uid:
                        pids.append(int(entry.name))
    return pids


def _is_alive(pid: int) -> bool:
    """Not a zombie (a zombie is already dead; its parent or init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            state = file.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _read_report(fd: int) -> tuple[tuple[str, ...], int | None]:
    """The launcher's report: the layers that applied, and (with a pid namespace, whose init stands between
    us and the code) the code's own wait status."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(fd, 65536):
            data += chunk
    layers: tuple[str, ...] = ()
    status = None
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("layers"), list):
            layers = tuple(str(layer) for layer in entry["layers"])
        elif isinstance(entry, dict) and isinstance(entry.get("status"), int):
            status = entry["status"]
    return layers, status


def _remove_tree(path: str) -> None:
    """Delete a run's directory even where the code took permissions away from its own directories: on a
    failure, give every real directory inside ``path`` (``path`` included, never its parent, never through
    a symlink) back to its owner, then try again."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        pending = [path]
        while pending:
            directory = pending.pop()
            with contextlib.suppress(OSError):
                if not stat.S_ISDIR(os.lstat(directory).st_mode):
                    continue
                os.chmod(directory, stat.S_IRWXU)
                with os.scandir(directory) as entries:
                    pending.extend(entry.path for entry in entries if entry.is_dir(follow_symlinks=False))
        shutil.rmtree(path, ignore_errors=True)


def _head(file: IO[bytes]) -> str:
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    text = file.read(OUTPUT_LIMIT).decode("utf-8", "replace")
    return text + (f"\n[... {size - OUTPUT_LIMIT} more bytes]" if size > OUTPUT_LIMIT else "")


def _tail(file: IO[bytes]) -> str:
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - OUTPUT_LIMIT))
    text = file.read().decode("utf-8", "replace")
    return (f"[... {size - OUTPUT_LIMIT} bytes before]\n" if size > OUTPUT_LIMIT else "") + text


def _reason(timed_out: bool, exit_code: int | None, stderr: str) -> str:
    if timed_out:
        return "timeout"
    if exit_code is None:
        return "killed by signal 9"  # the launcher did not even die of a SIGKILL in time
    if exit_code == 0:
        return "ok"
    if exit_code < 0:
        signum = -exit_code
        if signum == signal.SIGXCPU:
            return "cpu limit"
        if signum == signal.SIGXFSZ:
            return "file size limit"
        return f"killed by signal {signum}"
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    if last.startswith("MemoryError"):
        return "memory limit"
    if f"[Errno {errno.EFBIG}]" in last:  # Python ignores SIGXFSZ, so the write fails instead
        return "file size limit"
    return last or f"exit code {exit_code}"


# --- the child side: these functions are the source of `python -c` (standard library only) ---------------


def _child_boot() -> None:
    import sys

    if sys.argv[1] == "stage1":
        import json

        _child_stage1(json.loads(sys.argv[2]))
    else:
        _child_stage2(sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1")


def _child_stage1(config: dict[str, Any]) -> None:
    """The launcher: namespaces, mounts, limits and privileges, then exec a clean interpreter (stage 2)."""
    import ctypes
    import json
    import os
    import resource
    import sys

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        libc: Any = ctypes.CDLL(None, use_errno=True)
    except OSError:
        libc = None
    _child_die_with_parent(libc)
    if os.getppid() != config["parent"]:
        os._exit(70)  # the caller is already gone
    report = int(config["report_fd"])
    workdir = str(config["workdir"])
    uid = config["uid"]
    root = os.geteuid() == 0
    layers: list[str] = []

    privileged = root
    if not root:
        euid, egid = os.geteuid(), os.getegid()
        if _child_unshare(libc, _CLONE_NEWUSER) and _child_map_ids(euid, egid):
            privileged = True
            layers.append("user namespace")
    namespaces = set()
    if privileged:
        for name, flag in (("network", _CLONE_NEWNET), ("mount", _CLONE_NEWNS), ("pid", _CLONE_NEWPID)):
            if _child_unshare(libc, flag):
                namespaces.add(name)
    if "network" in namespaces:
        layers.append("network namespace")
    if "mount" in namespaces:
        try:
            layers.extend(_child_mounts(libc, workdir, root and uid is not None, int(config["tmpfs_mb"])))
        except OSError as exc:
            layers.append(f"no private mounts ({exc})")
    _child_die_with_parent(libc)

    if "pid" in namespaces:
        init = os.fork()
        if init:
            os.close(report)
            _child_mirror(init)
        # The namespace's init: the kernel drops signals that init has no handler for (SIGXCPU included),
        # so the code runs as its child, and init only reaps and reports.
        _child_die_with_parent(libc)
        layers.append("pid namespace")
        if "mount" in namespaces:
            try:
                _child_mount(libc, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
                layers.append("private /proc")
            except OSError:
                pass
        code = os.fork()
        if code:
            _child_init(code, report)
        _child_die_with_parent(libc)

    _child_limits(config)
    layers.append("rlimits")
    block_fork = False
    if root:
        if uid is not None and _child_first_blocked([workdir]) is None and _child_others_may_run_python():
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            layers.append(f"uid {uid}")
        else:
            block_fork = True
            layers.append("root (the interpreter is unreadable to other users): fork refused")
    _child_prctl(libc, _PR_SET_NO_NEW_PRIVS, 1)
    _child_die_with_parent(libc)
    if config["audit"]:
        layers.append("audit hook")
    os.write(report, json.dumps({"layers": layers}).encode() + b"\n")
    os.close(report)
    source = sys.orig_argv[sys.orig_argv.index("-c") + 1]
    flags = ["1" if config["audit"] else "0", "1" if block_fork else "0"]
    os.execv(sys.executable, [sys.executable, "-I", "-S", "-B", "-u", "-c", source, "stage2", workdir, *flags])


def _child_stage2(workdir: str, audit: bool, block_fork: bool) -> None:
    """A clean interpreter: install the audit hook, then run main.py as __main__."""
    import sys

    with open("main.py", "rb") as file:
        code = compile(file.read(), "main.py", "exec", dont_inherit=True)
    if audit:
        sys.addaudithook(_child_audit_hook(workdir, block_fork))
    module = type(sys)("__main__")
    module.__file__ = "main.py"
    sys.modules["__main__"] = module
    sys.argv = ["main.py"]
    exec(code, module.__dict__)


def _child_mirror(pid: int) -> None:
    """The launcher outside the pid namespace: wait for the namespace's init and exit the same way."""
    import contextlib
    import os
    import signal

    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            os._exit(70)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            break
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)
    os._exit(os.WEXITSTATUS(status))


def _child_init(code: int, report: int) -> None:
    """Pid 1 of the namespace: reap every orphan; when the code's process ends, report how, and exit (the
    kernel then kills whatever is left in the namespace)."""
    import json
    import os

    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(70)
        if pid == code:
            break
    os.write(report, json.dumps({"status": status}).encode() + b"\n")
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _child_unshare(libc: Any, flags: int) -> bool:
    try:
        return libc is not None and libc.unshare(flags) == 0
    except AttributeError:
        return False


def _child_prctl(libc: Any, option: int, value: int) -> None:
    import contextlib
    import ctypes

    with contextlib.suppress(AttributeError):
        libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def _child_die_with_parent(libc: Any) -> None:
    """SIGKILL when the parent dies; set again after every credential change, which clears it."""
    _child_prctl(libc, _PR_SET_PDEATHSIG, 9)


def _child_map_ids(uid: int, gid: int) -> bool:
    """Map our own uid and gid into the new user namespace (the only mapping an unprivileged user may make)."""
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1\n"), ("gid_map", f"{gid} {gid} 1\n")):
            with open(f"/proc/self/{name}", "w") as file:
                file.write(text)
    except OSError:
        return False
    return True


def _child_mount(libc: Any, source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    import ctypes
    import os

    def encode(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    if libc is None:
        raise OSError("no libc")
    if libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data or None)):
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _child_python_paths() -> list[str]:
    """What the stage-2 interpreter must read: itself, its installation (libpython), the standard library."""
    import os
    import sys

    paths = [os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)]
    paths.append(os.path.dirname(os.path.realpath(os.__file__)))
    paths.extend(os.path.realpath(p) for p in sys.path if p.endswith("lib-dynload") and os.path.isdir(p))
    return paths


def _child_first_blocked(paths: list[str]) -> str | None:
    """The outermost directory on the way to one of ``paths`` that a user who owns nothing (only the
    "other" permission bits apply) cannot enter; None when there is none."""
    import os
    import stat

    for path in paths:
        current = "/"
        for part in path.strip("/").split("/"):
            try:
                mode = os.stat(current).st_mode
            except OSError:
                break
            if current != "/" and not mode & stat.S_IXOTH:
                return current
            current = os.path.join(current, part)
    return None


def _child_others_may_run_python() -> bool:
    """Whether a user who owns nothing can run this interpreter with its standard library."""
    import os
    import stat

    paths = _child_python_paths()
    if _child_first_blocked(paths) is not None:
        return False
    wanted = stat.S_IROTH | stat.S_IXOTH
    try:
        return all(os.stat(path).st_mode & wanted == wanted for path in paths)
    except OSError:
        return False


def _child_overlay(libc: Any, directory: str, keep: list[str], options: str) -> list[str]:
    """Cover ``directory`` with an empty tmpfs, then bind the paths in ``keep`` below it back in place."""
    import os
    import stat

    inside = [path for path in keep if path.startswith(directory.rstrip("/") + "/")]
    inside = [path for path in inside if not any(path.startswith(other + "/") for other in inside)]
    handles = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in inside]
    try:
        _child_mount(libc, "tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
        try:
            for path, fd in handles:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    os.makedirs(path, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                _child_mount(libc, f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        except OSError:
            _child_umount(libc, directory)
            raise
    finally:
        for _, fd in handles:
            os.close(fd)
    return inside


def _child_umount(libc: Any, target: str) -> None:
    import os

    libc.umount2(os.fsencode(target), _MNT_DETACH)


def _child_mounts(libc: Any, workdir: str, expose_python: bool, tmpfs_mb: int) -> list[str]:
    """Private mounts: make them private first (or nothing may propagate back to the host), cover /root and
    /home (and, for a per-run uid, any other directory that hides the interpreter or the run's directory
    from it) with a tmpfs holding only those, put private tmpfs over the shared writable directories, and
    remount everything else read-only."""
    import os

    _child_mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    layers = []
    python = _child_python_paths()
    keep = [workdir, *python]
    for directory in ("/root", "/home"):  # where keys and configs live
        if os.path.isdir(directory) and os.path.realpath(directory) == directory:
            try:
                _child_overlay(libc, directory, keep, "mode=755,size=1m")
            except OSError:
                continue
            layers.append(f"{directory} hidden")
    for _ in range(16 if expose_python else 0):
        blocked = _child_first_blocked([*python, workdir])
        if blocked is None:
            break
        _child_overlay(libc, blocked, keep, "mode=755,size=1m")
        layers.append(f"{blocked} hidden")
    writable = []
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(directory) and os.path.realpath(directory) == directory:
            try:
                kept = _child_overlay(libc, directory, keep, f"mode=1777,size={tmpfs_mb}m")
            except OSError:
                continue
            writable.append(directory)
            writable.extend(path for path in kept if workdir == path or workdir.startswith(path + "/"))
            layers.append(f"private {directory}")
    if not any(workdir == path or workdir.startswith(path + "/") for path in writable):
        _child_mount(libc, workdir, workdir, None, _MS_BIND | _MS_REC)
        writable.append(workdir)
    os.chdir(workdir)  # the bind mount, not the directory below it that is about to become read-only
    failed = _child_read_only(libc, set(writable))
    layers.append("read-only file system" + (f" ({failed} mounts left writable)" if failed else ""))
    return layers


def _child_read_only(libc: Any, writable: set[str]) -> int:
    """Remount every visible mount read-only but ``writable`` and the kernel's (/proc, /sys, /dev);
    returns how many could not be. A remount must repeat the flags the mount has (a user namespace may not
    drop them), which mountinfo lists."""
    import errno

    keep_flags = {
        "nosuid": _MS_NOSUID,
        "nodev": _MS_NODEV,
        "noexec": _MS_NOEXEC,
        "noatime": _MS_NOATIME,
        "nodiratime": _MS_NODIRATIME,
        "relatime": _MS_RELATIME,
    }
    with open("/proc/self/mountinfo", "rb") as file:
        lines = file.read().decode("utf-8", "surrogateescape").splitlines()
    done = set()
    failed = 0
    for line in lines:
        fields = line.split(" ")
        point = fields[4]
        for escape, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
            point = point.replace(escape, char)
        options = fields[5].split(",")
        kernel = any(point == top or point.startswith(top + "/") for top in ("/proc", "/sys", "/dev"))
        if point in done or point in writable or kernel:
            continue
        done.add(point)
        flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY
        for option in options:
            flags |= keep_flags.get(option, 0)
        if "noatime" not in options and "relatime" not in options:
            flags |= _MS_STRICTATIME
        try:
            _child_mount(libc, None, point, None, flags)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL):  # hidden below a tmpfs of ours
                failed += 1
    return failed


def _child_limits(config: dict[str, Any]) -> None:
    """Set the rlimits; never above a hard limit the caller already has."""
    import resource

    cpu = int(config["cpu_s"])
    limits = (
        ("RLIMIT_CPU", cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL a second later
        ("RLIMIT_AS", config["memory_bytes"], config["memory_bytes"]),
        ("RLIMIT_FSIZE", config["file_bytes"], config["file_bytes"]),
        ("RLIMIT_NPROC", config["processes"], config["processes"]),
    )
    for name, soft, hard in limits:
        which = getattr(resource, name, None)
        if which is None:
            continue
        current = resource.getrlimit(which)[1]
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))


def _child_audit_hook(workdir: str, block_fork: bool) -> Any:
    """The audit hook of stage 2. Everything it decides with is bound as a positional default (an immutable
    tuple; replacing it is itself audited) or is a method of a built-in type, so code that rebinds module
    attributes or builtins cannot change its answers; an error inside it denies the operation."""
    import os

    refused = {
        "socket.bind",
        "socket.connect",
        "socket.getaddrinfo",
        "socket.gethostbyaddr",
        "socket.gethostbyname",
        "socket.getnameinfo",
        "socket.sendmsg",
        "socket.sendto",
        "socket.sethostname",
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.startfile",
        "os.killpg",
        "pty.spawn",
        "resource.prlimit",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "webbrowser.open",
    }
    if block_fork:
        refused |= {"os.fork", "os.forkpty"}
    modules = frozenset(
        {
            "ctypes",
            "_ctypes",
            "_posixsubprocess",
            "_xxsubinterpreters",
            "_xxinterpchannels",
            "_interpreters",
            "_interpchannels",
            "_interpqueues",
        }
    )
    # event: (indices of paths written, indices of dir_fd arguments, which must be unset)
    path_events = (
        ("os.mkdir", (0,), (2,)),
        ("os.rmdir", (0,), (1,)),
        ("os.remove", (0,), (1,)),
        ("os.rename", (0, 1), (2, 3)),
        ("os.symlink", (1,), (2,)),
        ("os.link", (1,), (2, 3)),
        ("os.chmod", (0,), (2,)),
        ("os.chown", (0,), (3,)),
        ("os.truncate", (0,), ()),
        ("os.utime", (0,), (3,)),
        ("os.setxattr", (0,), ()),
        ("os.removexattr", (0,), ()),
        ("sqlite3.connect", (0,), ()),
    )
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    devices = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})

    def inside(
        path: Any,
        _root: str = workdir,
        _prefix: str = workdir.rstrip("/") + "/",
        _devices: frozenset[str] = devices,
        _lstat: Any = os.lstat,
        _readlink: Any = os.readlink,
        _getcwd: Any = os.getcwd,
        _fspath: Any = os.fspath,
        _isinstance: Any = isinstance,
        _int: Any = int,
        _bytes: Any = bytes,
        _oserror: Any = OSError,
    ) -> bool:
        """Whether ``path`` resolves (symlinks followed) into the sandbox directory; an fd is allowed."""
        if _isinstance(path, _int):
            return True
        path = _fspath(path)
        if _isinstance(path, _bytes):
            path = path.decode("utf-8", "surrogateescape")
        if path in _devices:
            return True
        if not path.startswith("/"):
            path = _getcwd() + "/" + path
        pending = [part for part in path.split("/") if part and part != "."]
        pending.reverse()
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/" + "/".join([*resolved, part])
            try:
                mode = _lstat(candidate).st_mode
            except _oserror:
                resolved.append(part)  # does not exist (yet): the rest is taken as written
                continue
            if mode & 0o170000 == 0o120000:
                hops += 1
                if hops > 40:
                    return False
                target = _readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                more = [piece for piece in target.split("/") if piece and piece != "."]
                more.reverse()
                pending.extend(more)
            else:
                resolved.append(part)
        final = "/" + "/".join(resolved)
        return final == _root or final.startswith(_prefix)

    def hook(
        event: str,
        args: tuple[Any, ...],
        _inside: Any = inside,
        _refused: frozenset[str] = frozenset(refused),
        _modules: frozenset[str] = modules,
        _path_events: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = path_events,
        _path_names: frozenset[str] = frozenset(name for name, _, _ in path_events),
        _write_flags: int = write_flags,
        _getpid: Any = os.getpid,
        _isinstance: Any = isinstance,
        _str: Any = str,
        _int: Any = int,
        _deny: Any = PermissionError,
    ) -> None:
        if event == "open":
            path, mode, flags = args
            writes = _isinstance(flags, _int) and flags & _write_flags
            if _isinstance(mode, _str) and ("w" in mode or "a" in mode or "x" in mode or "+" in mode):
                writes = True
            if writes and not _inside(path):
                raise _deny(f"sandbox: writing {path!r} outside the sandbox directory is not allowed")
        elif event in _refused:
            raise _deny(f"sandbox: {event} is not allowed")
        elif event == "import":
            name = args[0].partition(".")[0]
            if name in _modules or name.startswith("_test"):
                raise _deny(f"sandbox: importing {args[0]} is not allowed")
        elif event == "socket.__new__":
            if args[1] != 1:  # AF_UNIX (socketpair) only
                raise _deny("sandbox: network sockets are not allowed")
        elif event == "os.kill":
            if args[0] != _getpid():
                raise _deny("sandbox: signalling other processes is not allowed")
        elif event in _path_names:
            for name, paths, dir_fds in _path_events:
                if name == event:
                    for index in dir_fds:
                        if args[index] is not None and args[index] != -1:
                            raise _deny(f"sandbox: {event} relative to a directory fd is not allowed")
                    for index in paths:
                        if not _inside(args[index]):
                            raise _deny(f"sandbox: {event} {args[index]!r} outside the sandbox directory")

    return hook


_CHILD_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    _child_boot,
    _child_stage1,
    _child_stage2,
    _child_mirror,
    _child_init,
    _child_unshare,
    _child_prctl,
    _child_die_with_parent,
    _child_map_ids,
    _child_mount,
    _child_python_paths,
    _child_first_blocked,
    _child_others_may_run_python,
    _child_overlay,
    _child_umount,
    _child_mounts,
    _child_read_only,
    _child_limits,
    _child_audit_hook,
)


@functools.cache
def _child_source() -> str:
    """The launcher's and stage 2's program: the ``_child_*`` functions and the constants they use."""
    constants = {
        name: value for name, value in globals().items() if name.startswith(("_CLONE_", "_MS_", "_MNT_", "_PR_"))
    }
    try:
        functions = [textwrap.dedent(inspect.getsource(function)) for function in _CHILD_FUNCTIONS]
    except OSError as exc:
        raise SandboxError(f"the sandbox needs its own source file: {exc}") from exc
    lines = [f"{name} = {value!r}" for name, value in constants.items()]
    return (
        "from __future__ import annotations\n\n"
        + "\n".join(lines)
        + "\n\n\n"
        + "\n\n".join(functions)
        + "\n_child_boot()\n"
    )
