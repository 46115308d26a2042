"""Unpack a student's submission safely and find its ``net/`` folder and ``pruning.py`` (what is there).

A submission is an archive (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``/``.tar.bz2``/
``.tar.xz``, ``.rar``, ``.7z``) or a plain folder. The format is taken from the
file's first bytes, not its name, so a zip renamed to ``.rar`` still works.
Zip and tar are read with Python's own modules; every other format is turned
by ``bsdtar`` (Debian's ``libarchive-tools``, which reads RAR3, RAR5 and 7z)
into a tar stream that Python reads the same way. Nothing is ever handed to an
extractor that writes to disk, except the fallbacks ``unar`` and ``7z`` when
bsdtar is missing.

Hostile archives are rejected with a reason the student can read:

1. The archive is *listed* first and every entry checked: no absolute path, no
   ``..``, no control character or absurd length in a name, no link (symbolic
   or hard), no device or FIFO, not more than ``max_entries`` entries, not more
   than ``max_total_mb`` unpacked, no compression ratio above ``max_ratio``.
2. Only then are the Python files extracted (nothing else is needed to grade),
   each checked again while written: ``O_EXCL | O_NOFOLLOW``, the real path
   inside the target folder, the written bytes counted against the caps.
3. The result is walked once more: regular files and folders only.
"""
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator, List, Optional, Sequence, Tuple

from grader.homework import DEPLOY_NAME, DEPLOY_STUDENT_FILES, PROVIDED_FILES, STUDENT_FILES

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip", ".rar", ".7z")
NET_MODULES = tuple(sorted({PurePosixPath(f).name for f in STUDENT_FILES + PROVIDED_FILES if f.startswith("net/")}
                           - {"__init__.py"}))
"""The file names that mark a ``net/`` folder."""
SCRIPT_FILES = tuple(f for f in STUDENT_FILES if "/" not in f)
DEPLOY_MODULES = tuple(sorted(PurePosixPath(f).name for f in DEPLOY_STUDENT_FILES))
"""The file names that mark Part 2's ``deploy/`` folder."""
JUNK_PARTS = {"__MACOSX", "__pycache__", ".git", ".svn", ".hg", ".idea", ".vscode", ".ipynb_checkpoints"}
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
JUNK_SUFFIXES = ("~", ".swp", ".swo", ".swx", ".pyc", ".orig", ".bak")


MAX_EXTENDED_HEADER = 64 << 10
"""Bytes a tar long-name, long-link or pax header may hold (real ones hold a few hundred)."""


class Rejected(Exception):
    """The submission cannot be graded; the message says why, in words for the student."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one submission may unpack to."""
    max_entries: int = 2000
    max_total_mb: float = 512.0
    """All entries together, including those not extracted (data, models)."""
    max_extract_mb: float = 50.0
    """The Python files that are actually written."""
    max_ratio: float = 200.0
    """Unpacked size over packed size, checked for anything above 10 MB."""
    timeout_s: float = 120.0
    """For an external reader (bsdtar, unar, 7z)."""


@dataclass(frozen=True)
class Entry:
    """One entry of an archive or folder, as listed."""
    name: str
    kind: str  # file, dir, symlink, hardlink, device, fifo, other
    size: int
    packed: Optional[int] = None
    target: str = ""
    open: Optional[Callable[[], IO[bytes]]] = None


def archive_suffix(path: Path) -> Optional[str]:
    """The archive suffix of ``path`` (``.tar.gz``, ``.zip``...), or None if it is not one."""
    lower = path.name.lower()
    return next((s for s in ARCHIVE_SUFFIXES if lower.endswith(s) and len(lower) > len(s)), None)


def student_id(path: Path) -> str:
    """The student id of a submission: its file name without the archive suffix."""
    suffix = archive_suffix(path)
    return path.name[: -len(suffix)] if suffix and not path.is_dir() else path.name


def is_junk(parts: Sequence[str]) -> bool:
    """True for OS and editor clutter (``__MACOSX``, ``.DS_Store``, ``*~``, ``*.swp``, ``._x``...)."""
    name = parts[-1] if parts else ""
    return (any(p in JUNK_PARTS for p in parts) or name in JUNK_NAMES or name.startswith(("._", ".#"))
            or name.endswith(JUNK_SUFFIXES) or (name.startswith("#") and name.endswith("#")))


def content_hash(path: Path) -> str:
    """sha256 of an archive's bytes, or of a folder's relative paths, kinds and file contents."""
    digest = hashlib.sha256()
    if path.is_dir():
        for item in sorted(path.rglob("*")):
            mode = item.lstat().st_mode
            label = f"{item.relative_to(path).as_posix()}\0{stat.S_IFMT(mode)}\0"
            digest.update(label.encode("utf-8", "surrogateescape"))
            if stat.S_ISREG(mode):
                digest.update(_file_hash(item).encode())
        return "dir:" + digest.hexdigest()
    return _file_hash(path)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- listing


def _kind_of_mode(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "fifo" if stat.S_ISFIFO(mode) else "other"


def _zip_entries(zf: zipfile.ZipFile) -> Iterator[Entry]:
    for info in zf.infolist():
        if info.flag_bits & 0x1:
            raise Rejected("the archive is password-protected")
        mode = info.external_attr >> 16
        kind = "dir" if info.is_dir() else _kind_of_mode(mode) if stat.S_IFMT(mode) else "file"
        yield Entry(info.filename.replace("\\", "/"), kind, info.file_size, info.compress_size,
                    open=lambda info=info: zf.open(info))


def _tar_entries(tf: tarfile.TarFile) -> Iterator[Entry]:
    for info in tf:
        kind = ("file" if info.isreg() else "dir" if info.isdir() else "symlink" if info.issym()
                else "hardlink" if info.islnk() else "device" if info.ischr() or info.isblk()
                else "fifo" if info.isfifo() else "other")
        yield Entry(info.name, kind, info.size, target=info.linkname,
                    open=lambda info=info: tf.extractfile(info))


def _folder_entries(root: Path) -> Iterator[Entry]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            path = Path(dirpath, name)
            st = path.lstat()
            kind = _kind_of_mode(st.st_mode)
            yield Entry(path.relative_to(root).as_posix(), kind, st.st_size if kind == "file" else 0,
                        target=os.readlink(path) if kind == "symlink" else "",
                        open=lambda path=path: open(path, "rb"))


class _CappedTarInfo(tarfile.TarInfo):
    """Tar headers whose long name, long link or pax record is refused before it is read when it is too big.

    tarfile reads such an extension header whole into memory (a GNU long name
    can claim gigabytes in a few compressed MB); here its size is checked first.
    """

    def _checked(self) -> None:
        if self.size > MAX_EXTENDED_HEADER:
            raise Rejected(f"a tar header (a long file name or a pax record) claims {self.size:,} bytes, over the "
                           f"{MAX_EXTENDED_HEADER >> 10} KB limit: the archive is damaged or hostile")

    def _proc_gnulong(self, tarfile):
        self._checked()
        return super()._proc_gnulong(tarfile)

    def _proc_pax(self, tarfile):
        self._checked()
        return super()._proc_pax(tarfile)


class _CappedReader:
    """A read-only stream that raises Rejected once more than ``limit`` bytes went through."""

    def __init__(self, raw: IO[bytes], limit: int, what: str):
        self.raw, self.limit, self.seen, self.what = raw, limit, 0, what

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.seen += len(data)
        if self.seen > self.limit:
            raise Rejected(f"the archive unpacks to more than {self.what}")
        return data


def _bsdtar_entries(path: Path, limits: Limits) -> Iterator[Entry]:
    """Entries of any archive libarchive reads, through ``bsdtar -cf - @archive`` (a pax stream)."""
    cap = int(limits.max_total_mb * 2**20) + 1536 * (limits.max_entries + 10)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(["bsdtar", "-cf", "-", "--format", "pax", f"@{path}"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        expired = threading.Event()
        timer = threading.Timer(limits.timeout_s, lambda: (expired.set(), proc.kill()))
        timer.start()
        broken = False
        try:
            stream = _CappedReader(proc.stdout, cap, f"{limits.max_total_mb:g} MB")
            try:
                with tarfile.open(fileobj=stream, mode="r|", tarinfo=_CappedTarInfo) as tf:
                    yield from _tar_entries(tf)
                while stream.read(1 << 16):
                    pass
            except tarfile.TarError:
                broken = True
            returncode = proc.wait()
        finally:
            timer.cancel()
            proc.kill()
            proc.wait()
            proc.stdout.close()
        if expired.is_set():
            raise Rejected(f"reading the archive took more than {limits.timeout_s:g} s")
        if returncode != 0 or broken:
            errors.seek(0)
            text = errors.read().decode("utf-8", "replace").replace(str(path), path.name)
            lines = [line.strip().removeprefix("bsdtar: ") for line in text.splitlines()
                     if line.strip() and "Error exit delayed" not in line]
            raise Rejected("the archive is damaged or not an archive" + (f" ({lines[0]})" if lines else ""))


def _fallback_command(path: Path, out: Path) -> Optional[List[str]]:
    """An unar or 7z command line extracting ``path`` into ``out``, for when bsdtar is missing."""
    if shutil.which("unar"):
        return ["unar", "-q", "-f", "-D", "-o", str(out), str(path)]
    tool = shutil.which("7zz") or shutil.which("7z")
    return [tool, "x", "-y", "-bd", f"-o{out}", str(path)] if tool else None


@contextmanager
def _entries(path: Path, limits: Limits) -> Iterator[Iterator[Entry]]:
    """Open ``path`` (archive or folder) and give an iterator over its entries."""
    if path.is_dir():
        yield _folder_entries(path)
        return
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as zf:
                yield _zip_entries(zf)
        except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error) as error:
            raise Rejected(f"the zip archive is damaged or uses an unsupported feature ({error})") from None
    elif magic.startswith(b"\x1f\x8b") or tarfile.is_tarfile(path):
        try:
            with tarfile.open(path, "r:*", tarinfo=_CappedTarInfo) as tf:
                yield _tar_entries(tf)
        except (tarfile.TarError, EOFError, zlib.error) as error:
            raise Rejected(f"the tar archive is damaged ({error})") from None
    elif shutil.which("bsdtar"):
        entries = _bsdtar_entries(path, limits)
        try:
            yield entries
        finally:
            entries.close()
    else:
        with tempfile.TemporaryDirectory(prefix="unpack-") as out:
            command = _fallback_command(path, Path(out))
            if command is None:
                raise Rejected("this archive format needs an extractor: install libarchive-tools (bsdtar)")
            try:
                done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                raise Rejected(f"reading the archive took more than {limits.timeout_s:g} s") from None
            if done.returncode != 0:
                raise Rejected("the archive is damaged or not an archive")
            yield _folder_entries(Path(out))


# --------------------------------------------------------------------------- checks


def _check_name(name: str) -> PurePosixPath:
    """The entry's path, relative and normalised; Rejected if it could escape or is absurd."""
    shown = repr(name[:80])
    if len(name) > 1024 or len(name.encode("utf-8", "surrogateescape")) > 1024:
        raise Rejected(f"an entry name is absurdly long ({len(name)} characters): {shown}...")
    if "\0" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise Rejected(f"an entry name contains control characters: {shown}")
    if name.startswith("/") or (name[:1].isalpha() and name[1:2] == ":"):
        raise Rejected(f"an entry has an absolute path: {shown}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Rejected(f"an entry's path climbs out of the archive with '..': {shown}")
    if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise Rejected(f"an entry has a file name longer than 255 bytes: {shown}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _check_entry(entry: Entry, limits: Limits) -> PurePosixPath:
    relative = _check_name(entry.name)
    if entry.kind in ("symlink", "hardlink"):
        raise Rejected(f"the archive contains a link ({entry.name} -> {entry.target}); "
                       "links are not accepted, pack the files themselves")
    if entry.kind not in ("file", "dir"):
        raise Rejected(f"the archive contains a special file ({entry.kind}): {entry.name}")
    if entry.packed is not None and entry.size > 10 * 2**20 and entry.size > limits.max_ratio * max(entry.packed, 1):
        raise Rejected(f"{entry.name} is compressed more than {limits.max_ratio:g} to 1: an archive bomb?")
    return relative


def python_source(relative: PurePosixPath) -> bool:
    """Only Python files are extracted by default: grading needs nothing else."""
    return relative.suffix == ".py" and not is_junk(relative.parts)


def list_entries(path: Path, limits: Limits = Limits()) -> List[Tuple[PurePosixPath, Entry]]:
    """List and check every entry of ``path``; Rejected on the first problem."""
    listed, total = [], 0
    with _entries(path, limits) as entries:
        for entry in entries:
            listed.append((_check_entry(entry, limits), entry))
            total += entry.size
            if len(listed) > limits.max_entries:
                raise Rejected(f"the archive holds more than {limits.max_entries} entries")
            if total > limits.max_total_mb * 2**20:
                raise Rejected(f"the archive unpacks to more than {limits.max_total_mb:g} MB")
    if not listed:
        raise Rejected("the submission is empty")
    packed = None if path.is_dir() else path.stat().st_size
    if packed is not None and total > 10 * 2**20 and total > limits.max_ratio * max(packed, 1):
        raise Rejected(f"the archive unpacks to {total / 2**20:.0f} MB from {packed / 2**20:.1f} MB: "
                       "an archive bomb?")
    return listed


def _write(source: IO[bytes], target: Path, root: Path, budget: int) -> int:
    """Copy ``source`` to the new file ``target`` (inside ``root``), at most ``budget`` bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not Path(os.path.realpath(target.parent)).is_relative_to(os.path.realpath(root)):
        raise Rejected(f"an entry would be written outside the archive folder: {target.name}")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise Rejected(f"the archive holds {target.relative_to(root)} twice") from None
    written = 0
    with os.fdopen(fd, "wb") as out:
        for block in iter(lambda: source.read(1 << 16), b""):
            written += len(block)
            if written > budget:
                raise Rejected(f"the Python files unpack to more than the {budget / 2**20:.0f} MB allowed")
            out.write(block)
    return written


def _verify_tree(root: Path, limits: Limits) -> None:
    """Check the extracted folder once more: only folders and regular files, within the caps."""
    count = total = 0
    for path in root.rglob("*"):
        mode = path.lstat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise Rejected(f"unpacking produced something that is not a file: {path.relative_to(root)}")
        count += 1
        total += path.lstat().st_size if stat.S_ISREG(mode) else 0
    if count > limits.max_entries or total > limits.max_extract_mb * 2**20:
        raise Rejected("the unpacked files exceed the size limits")


def extract(path: Path, dest: Path, limits: Limits = Limits(),
            select: Callable[[PurePosixPath], bool] = python_source) -> Path:
    """Check ``path`` (archive or folder), then copy the files ``select`` keeps into the empty folder ``dest``."""
    listed = list_entries(path, limits)
    wanted = {relative for relative, entry in listed if entry.kind == "file" and select(relative)}
    dest.mkdir(parents=True, exist_ok=True)
    budget = int(limits.max_extract_mb * 2**20)
    with _entries(path, limits) as entries:
        for entry in entries:
            relative = _check_entry(entry, limits)
            if relative in wanted and entry.kind == "file":
                with entry.open() as source:
                    budget -= _write(source, dest.joinpath(*relative.parts), dest, budget)
    _verify_tree(dest, limits)
    return dest


# --------------------------------------------------------------------------- finding the homework's files


@dataclass(frozen=True)
class Found:
    """Where a submission's pieces sit, inside the unpacked folder (``None``: not submitted)."""
    net: Optional[Path]
    scripts: Tuple[Path, ...]
    """The student files that sit beside ``net/`` (``pruning.py``)."""
    deploy: Optional[Path] = None
    """Part 2's folder (``deploy/``)."""


def _describe(paths: Sequence[Path], root: Path) -> str:
    return ", ".join(sorted(p.relative_to(root).as_posix() or "." for p in paths))


def _folder(files: Sequence[Path], name: str, modules: Sequence[str], root: Path) -> Optional[Path]:
    """The one folder called ``name`` holding any of ``modules`` (else the one holding two of them without the
    folder itself); ``None`` when there is none, ``Rejected`` when there are several."""
    found = [p for p in files if p.name in modules]
    folders = sorted({p.parent for p in found if p.parent.name == name})
    if not folders:  # the folder's contents packed without the folder itself
        folders = sorted({d for d in {p.parent for p in found} if sum((d / m).is_file() for m in modules) >= 2})
    if len(folders) > 1:
        raise Rejected(f"found {len(folders)} {name}/ folders ({_describe(folders, root)}); submit exactly one")
    return folders[0] if folders else None


def locate(root: Path) -> Found:
    """Find the ``net/`` folder, the student files beside it and Part 2's ``deploy/`` folder under ``root``.

    Whatever is present is graded (a missing file costs the tests of its TODOs); ``Rejected`` when none of the
    homework's files is there or a piece is there twice.
    """
    files = [p for p in root.rglob("*.py") if p.is_file() and not is_junk(p.relative_to(root).parts)]
    net = _folder(files, "net", NET_MODULES, root)
    deploy = _folder(files, DEPLOY_NAME, DEPLOY_MODULES, root)
    scripts = []
    for name in SCRIPT_FILES:
        found = sorted(p for p in files if p.name == name)
        if len(found) > 1:
            raise Rejected(f"found {len(found)} {name} files ({_describe(found, root)}); submit exactly one")
        scripts += found
    if not net and not scripts and not deploy:
        holds = _describe(sorted(files)[:12], root) or "no Python files"
        raise Rejected(f"none of the homework's files found: the submission must hold {', '.join(STUDENT_FILES)} "
                       f"(and, for Part 2, {DEPLOY_NAME}/); it holds: {holds}")
    return Found(net, tuple(scripts), deploy)


def stage(found: Found, dest: Path) -> Path:
    """Lay the submission out as the suites expect: ``dest/net/*.py``, ``dest/pruning.py`` and
    ``dest/deploy/*.py``."""
    net = dest / "net"
    net.mkdir(parents=True)
    for source in sorted(found.net.rglob("*.py")) if found.net else ():
        relative = source.relative_to(found.net)
        if source not in found.scripts and not is_junk(relative.parts):
            (net / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, net / relative)
    (net / "__init__.py").touch()
    for script in found.scripts:
        shutil.copyfile(script, dest / script.name)
    for module in DEPLOY_MODULES if found.deploy else ():
        if (found.deploy / module).is_file():
            (dest / DEPLOY_NAME).mkdir(exist_ok=True)
            shutil.copyfile(found.deploy / module, dest / DEPLOY_NAME / module)
    return dest


def prepare(source: Path, workdir: Path, limits: Limits = Limits()) -> Path:
    """Unpack ``source`` (archive or folder) under ``workdir`` and return a folder with what it holds of net/,
    pruning.py and deploy/.

    A folder holding no net/ but exactly one archive (as Gradescope stores an
    uploaded .rar) is unpacked one level further.
    """
    unpacked = extract(source, workdir / "unpacked", limits)
    try:
        found = locate(unpacked)
    except Rejected:
        inner = [p for p in source.iterdir() if archive_suffix(p) and p.is_file()] if source.is_dir() else []
        if len(inner) != 1:
            raise
        unpacked = extract(inner[0], workdir / "unpacked-inner", limits)
        found = locate(unpacked)
    return stage(found, workdir / "submission")
