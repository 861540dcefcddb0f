"""The code sandbox: every limit is exercised for real (loops, fork bombs, memory, files, network, env)."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tokenrace.sandbox import SandboxResult, run_python

REPO = Path(__file__).resolve().parent.parent


# Prepended to code whose processes a test tracks: the first line of its stdout is its sandbox directory.
PRINT_DIRECTORY = "import os as _os\nprint(_os.getcwd(), flush=True)\n"


def processes_of(directory: str) -> list[int]:
    """Live processes (not zombies) of one sandbox run: their HOME is its directory. (Other sandboxes may
    run at the same time, from other tests.)"""
    marker = b"HOME=" + directory.encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_bytes().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if marker in environ and state not in (b"Z", b"X"):
            found.append(int(entry.name))
    return found


def assert_nothing_left(result: SandboxResult) -> None:
    directory = result.stdout.splitlines()[0]
    assert "tokenrace-sandbox-" in directory
    deadline = time.monotonic() + 2
    while (left := processes_of(directory)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []


def isolated(result: SandboxResult) -> bool:
    """The OS (not only the audit hook) keeps the code away from the host: another uid or a private mount
    namespace with a read-only file system."""
    return any(layer.startswith(("uid ", "read-only file system")) for layer in result.layers)


def test_normal_program_runs_and_its_output_is_captured():
    result = run_python("import sys\nprint('hello', 6 * 7)\nprint('warn', file=sys.stderr)")
    assert result.ok and result.reason == "ok" and result.exit_code == 0
    assert result.stdout == "hello 42\n"
    assert result.stderr == "warn\n"
    assert 0 < result.duration_s < 5
    assert "rlimits" in result.layers and "audit hook" in result.layers


def test_exception_gives_its_last_line_as_reason():
    result = run_python("def f():\n    raise ValueError('boom')\nf()")
    assert not result.ok and result.exit_code == 1
    assert result.reason == "ValueError: boom"
    assert "Traceback" in result.stderr
    assert run_python("def f(:\n").reason.startswith("SyntaxError")
    assert run_python("import sys; sys.exit(3)").reason == "exit code 3"


def test_infinite_loop_hits_the_cpu_limit_quickly():
    started = time.monotonic()
    result = run_python(PRINT_DIRECTORY + "while True:\n    pass", cpu_s=1, timeout_s=10)
    assert not result.ok and result.reason == "cpu limit"
    assert time.monotonic() - started < 4
    assert_nothing_left(result)


def test_sleeping_program_hits_the_wall_clock_timeout():
    started = time.monotonic()
    result = run_python(PRINT_DIRECTORY + "import time\nprint('started')\ntime.sleep(60)", timeout_s=1)
    assert not result.ok and result.reason == "timeout" and result.exit_code is None
    assert result.stdout.endswith("\nstarted\n")  # unbuffered: output before a kill is kept
    assert time.monotonic() - started < 3
    assert_nothing_left(result)


def test_fork_bomb_is_contained_and_nothing_is_left_running():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    started = time.monotonic()
    result = run_python(PRINT_DIRECTORY + bomb, timeout_s=3, cpu_s=2, max_processes=8)
    assert not result.ok and result.reason in ("timeout", "cpu limit")
    assert time.monotonic() - started < 6
    assert_nothing_left(result)


def test_process_limit_holds_and_children_left_behind_are_killed():
    code = (
        "import os, time\n"
        "count = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    count += 1\n"
        "print(count)\n"
    )
    result = run_python(PRINT_DIRECTORY + code, max_processes=8)
    assert result.ok, result
    assert int(result.stdout.splitlines()[1]) < 8  # the code's own process counts too
    assert_nothing_left(result)


def test_process_that_leaves_the_session_is_killed_too():
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')"
    result = run_python(PRINT_DIRECTORY + code)
    if any("fork refused" in layer for layer in result.layers):
        assert result.reason == "PermissionError: sandbox: os.fork is not allowed"
        return
    assert result.ok and result.stdout.endswith("\nparent done\n")
    if not any(layer == "pid namespace" or layer.startswith("uid ") for layer in result.layers):
        pytest.skip("neither a pid namespace nor a per-run uid here: a setsid escapee can outlive the run")
    assert_nothing_left(result)


def test_memory_hog_hits_the_memory_limit():
    result = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))", memory_mb=256)
    assert not result.ok and result.reason == "memory limit"
    assert run_python("x = bytearray(1 << 30)", memory_mb=256).reason == "memory limit"


def test_output_is_truncated_and_a_flood_hits_the_file_size_limit():
    result = run_python("print('x' * 100_000)")
    assert result.ok and len(result.stdout) < 5000 and "more bytes" in result.stdout
    flood = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", max_file_mb=1)
    assert not flood.ok and flood.reason == "file size limit"


@pytest.mark.parametrize("audit", [True, False], ids=["audit-hook", "os-layers-only"])
def test_writing_outside_the_sandbox_directory_fails(audit: bool):
    name = f"tokenrace-escape-{uuid.uuid4().hex}"
    targets = [Path("/tmp") / name, Path("/var/tmp") / name, REPO / name, REPO / "tests" / name]
    code = "results = []\n"
    for target in targets:
        code += (
            "try:\n"
            f"    with open({str(target)!r}, 'w') as file:\n"
            "        file.write('escaped')\n"
            "    results.append('written')\n"
            "except OSError as exc:\n"
            "    results.append(type(exc).__name__)\n"
        )
    code += "print(results)\nopen('inside.txt', 'w').write('fine')\nprint(open('inside.txt').read())\n"
    try:
        result = run_python(code, audit=audit)
        if not audit and not isolated(result):
            pytest.skip("no per-run uid or private mount namespace here: only the audit hook guards writes")
        assert result.ok, result
        assert result.stdout.endswith("fine\n")
        if audit:
            assert "written" not in result.stdout  # the hook refuses each write
        for target in targets:
            assert not target.exists(), target
    finally:
        for target in targets:
            target.unlink(missing_ok=True)


def test_removing_or_renaming_outside_is_refused(tmp_path: Path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    code = (
        "import os\n"
        f"for action in (lambda: os.remove({str(victim)!r}), lambda: os.rename({str(victim)!r}, 'stolen')):\n"
        "    try:\n"
        "        action()\n"
        "    except OSError as exc:\n"
        "        print(type(exc).__name__)\n"
    )
    result = run_python(code)
    assert result.stdout == "PermissionError\nPermissionError\n"
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("audit", [True, False], ids=["audit-hook", "os-layers-only"])
def test_network_connection_never_arrives(audit: bool):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        code = (
            "import socket\n"
            f"connection = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "connection.sendall(b'leak')\n"
            "print('connected')\n"
        )
        result = run_python(code, audit=audit, timeout_s=5)
        if not audit and "network namespace" not in result.layers:
            pytest.skip("no network namespace here: only the audit hook guards the network")
        assert not result.ok and "connected" not in result.stdout
        assert result.reason.startswith(("PermissionError", "OSError")), result.reason
        listener.settimeout(0.3)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_subprocesses_and_ctypes_are_refused():
    for code in (
        "import os\nos.system('true')",
        "import subprocess",
        "import ctypes",
        "import os\nos.execv('/bin/true', ['true'])",
    ):
        result = run_python(code)
        assert not result.ok and result.reason.startswith("PermissionError: sandbox:"), (code, result.reason)


def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch):
    secret = f"sk-tokenrace-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("TOKENRACE_TEST_SECRET", secret)
    code = (
        "import os\n"
        "print(sorted(os.environ))\n"
        "print(open('/proc/self/environ', 'rb').read())\n"
        "try:\n"
        f"    print(open('/proc/{os.getpid()}/environ', 'rb').read())\n"
        "except OSError as exc:\n"
        "    print('parent environ:', type(exc).__name__)\n"
    )
    result = run_python(code)
    assert result.ok, result
    assert "OPENAI_API_KEY" not in result.stdout
    parent_visible = "parent environ:" not in result.stdout
    if parent_visible and not isolated(result):
        pytest.skip("same uid and no private /proc: the parent's /proc environ is readable here")
    assert secret not in result.stdout
    assert "['HOME', 'LANG', 'PATH', 'TMPDIR']" in result.stdout


def test_directory_is_private_and_removed():
    result = run_python(
        "import os\nprint(os.getcwd())\nprint(os.environ['HOME'] == os.getcwd() == os.environ['TMPDIR'])"
    )
    cwd, same = result.stdout.split()
    assert same == "True" and "tokenrace-sandbox-" in cwd
    assert not Path(cwd).exists()


def test_cleanup_survives_locked_directories_and_touches_nothing_outside():
    parent = Path(tempfile.gettempdir())
    mode_before = parent.stat().st_mode
    code = (
        "import os\n"
        "os.makedirs('a/b')\n"
        "open('a/b/f', 'w').write('x')\n"
        "os.symlink('/etc/passwd', 'a/link')\n"
        "os.chmod('a/b', 0)\n"
        "os.chmod('a', 0)\n"
        "print(os.getcwd())\n"
    )
    result = run_python(code)
    assert result.ok, result
    assert not Path(result.stdout.strip()).exists()
    assert parent.stat().st_mode == mode_before
    assert Path("/etc/passwd").stat().st_mode & 0o777 == 0o644
