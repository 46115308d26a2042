"""Safe unpacking of submissions (grader/archives.py): real RAR files, hostile zips and tars, finding net/."""
import gzip
import hashlib
import io
import resource
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from grader import archives
from grader.archives import Limits, Rejected

REPO = Path(__file__).resolve().parent.parent
RAR_FIXTURES = REPO.parent / "shared" / "fixtures" / "rar"
needs_rar = pytest.mark.skipif(not (RAR_FIXTURES.is_dir() and shutil.which("bsdtar")),
                               reason="needs ../shared/fixtures/rar and bsdtar (apt-get install libarchive-tools)")
EVERYTHING = lambda relative: True  # noqa: E731 - extract every file, not only Python ones


def make_zip(path: Path, files: dict, symlinks: dict = None) -> Path:
    """A zip of ``{name: text or bytes}`` plus ``{name: target}`` symbolic links."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: list, mode: str = "w") -> Path:
    """A tar of ``[(TarInfo, bytes or None)]``."""
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = None, target: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, data


def solution_files() -> dict:
    """The reference net/ and pruning.py as ``{relative name: bytes}``."""
    files = {f"net/{p.name}": p.read_bytes() for p in (REPO / "solutions" / "net").glob("*.py")}
    files["pruning.py"] = (REPO / "solutions" / "pruning.py").read_bytes()
    return files


def nothing_outside(tmp_path: Path, dest: Path) -> None:
    """Nothing but ``dest`` and the archives was written under ``tmp_path``."""
    for path in tmp_path.rglob("*"):
        assert path == dest or dest in path.parents or path.suffix in (".zip", ".tar", ".gz", ".rar"), path


# --------------------------------------------------------------------------- real RAR archives


@needs_rar
@pytest.mark.parametrize("name", ["rar3-subdirs.rar", "rar5-subdirs.rar"])
def test_rar3_and_rar5_unpack_with_unicode_and_spaces(tmp_path, name):
    dest = archives.extract(RAR_FIXTURES / name, tmp_path / "out", select=EVERYTHING)
    assert (dest / "sub/dir1/file1.txt").read_text() == "file1\n"
    assert (dest / "sub/with space/long fn.txt").read_text() == "long fn\n"
    assert (dest / "sub/üȵĩöḋè/file.txt").read_text() == "file\n"


@needs_rar
def test_solid_rar5_unpacks_byte_exact(tmp_path):
    dest = archives.extract(RAR_FIXTURES / "rar5-solid.rar", tmp_path / "out", select=EVERYTHING)
    for name in ("stest1.txt", "stest2.txt"):
        assert hashlib.md5((dest / name).read_bytes()).hexdigest() == "2c3dc8055c457947e5a16d46c969ea79"


@needs_rar
def test_rar_only_python_files_are_extracted_by_default(tmp_path):
    dest = archives.extract(RAR_FIXTURES / "rar5-subdirs.rar", tmp_path / "out")
    assert [p for p in dest.rglob("*") if p.is_file()] == []


@needs_rar
@pytest.mark.parametrize("name", ["rar5-symlink-unix.rar", "rar5-evil-symlink-traversal.rar"])
def test_rar_with_links_is_rejected_and_writes_nothing_outside(tmp_path, name):
    work = tmp_path / "work"
    with pytest.raises(Rejected, match="link"):
        archives.extract(RAR_FIXTURES / name, work / "out", select=EVERYTHING)
    assert not list(tmp_path.rglob("pwned.txt"))
    assert not (tmp_path / "random123").exists()
    assert not work.exists() or [p.name for p in work.iterdir()] in ([], ["out"])


@needs_rar
def test_damaged_rar_is_rejected_with_a_reason(tmp_path):
    broken = tmp_path / "broken.rar"
    broken.write_bytes((RAR_FIXTURES / "rar5-solid.rar").read_bytes()[:100])
    with pytest.raises(Rejected, match="damaged"):
        archives.extract(broken, tmp_path / "out")
    garbage = tmp_path / "garbage.rar"
    garbage.write_bytes(b"this is not an archive at all")
    with pytest.raises(Rejected, match="not an archive"):
        archives.extract(garbage, tmp_path / "out2")


# --------------------------------------------------------------------------- hostile zips and tars


@pytest.mark.parametrize("name, reason", [
    ("../evil.py", "climbs out"),
    ("net/../../evil.py", "climbs out"),
    ("/tmp/evil_absolute.py", "absolute path"),
    ("C:/evil.py", "absolute path"),
    ("net/a\x01b.py", "control characters"),
    ("net/" + "a" * 300 + ".py", "longer than 255"),
    ("/".join(["d"] * 600) + "/x.py", "absurdly long"),
])
def test_zip_with_hostile_names_is_rejected(tmp_path, name, reason):
    archive = make_zip(tmp_path / "a.zip", {**solution_files(), name: "print('pwned')\n"})
    with pytest.raises(Rejected, match=reason):
        archives.extract(archive, tmp_path / "out")
    assert not (tmp_path.parent / "evil.py").exists() and not Path("/tmp/evil_absolute.py").exists()
    nothing_outside(tmp_path, tmp_path / "out")


def test_zip_symlink_is_rejected(tmp_path):
    archive = make_zip(tmp_path / "a.zip", solution_files(), symlinks={"net/link.py": "/etc/passwd"})
    with pytest.raises(Rejected, match="link"):
        archives.extract(archive, tmp_path / "out")


@pytest.mark.parametrize("member, reason", [
    (tar_member("net/up", tarfile.SYMTYPE, target=".."), "link"),
    (tar_member("net/pw.py", tarfile.LNKTYPE, target="/etc/passwd"), "link"),
    (tar_member("net/dev", tarfile.CHRTYPE), "special file"),
    (tar_member("net/fifo", tarfile.FIFOTYPE), "special file"),
    (tar_member("../../escape.py", data=b"x = 1\n"), "climbs out"),
])
def test_tar_with_links_devices_or_traversal_is_rejected(tmp_path, member, reason):
    members = [(tar_member(name, data=data)) for name, data in solution_files().items()] + [member]
    archive = make_tar(tmp_path / "a.tar.gz", members, "w:gz")
    with pytest.raises(Rejected, match=reason):
        archives.extract(archive, tmp_path / "out")
    nothing_outside(tmp_path, tmp_path / "out")
    assert not (tmp_path.parent.parent / "escape.py").exists()


def test_zip_bomb_is_rejected_by_ratio(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {**solution_files(), "data/zeros.bin": bytes(20 * 2**20)})
    with pytest.raises(Rejected, match="bomb"):
        archives.extract(archive, tmp_path / "out")


def test_tar_gz_bomb_is_rejected_by_ratio(tmp_path):
    archive = make_tar(tmp_path / "bomb.tar.gz", [tar_member("zeros.bin", data=bytes(20 * 2**20))], "w:gz")
    with pytest.raises(Rejected, match="bomb"):
        archives.extract(archive, tmp_path / "out")


def test_caps_on_entries_total_size_and_extracted_size(tmp_path):
    many = make_zip(tmp_path / "many.zip", {f"f{i}.txt": "" for i in range(51)})
    with pytest.raises(Rejected, match="more than 50 entries"):
        archives.extract(many, tmp_path / "o1", Limits(max_entries=50))
    big = make_zip(tmp_path / "big.zip", {"noise.bin": bytes(range(256)) * 8192})
    with pytest.raises(Rejected, match="more than 1 MB"):
        archives.extract(big, tmp_path / "o2", Limits(max_total_mb=1))
    code = make_zip(tmp_path / "code.zip", {"net/prune.py": "x = 1\n" * 5000})
    with pytest.raises(Rejected, match="Python files unpack to more than"):
        archives.extract(code, tmp_path / "o3", Limits(max_extract_mb=0.01))


@pytest.mark.parametrize("content, reason", [
    (b"PK\x03\x04 this is a broken zip", "damaged"),
    (b"\x1f\x8b\x08\x00 broken gzip", "damaged"),
])
def test_corrupt_archives_are_rejected(tmp_path, content, reason):
    path = tmp_path / "broken.zip"
    path.write_bytes(content)
    with pytest.raises(Rejected, match=reason):
        archives.extract(path, tmp_path / "out")


def test_empty_archive_and_duplicate_entries_are_rejected(tmp_path):
    with pytest.raises(Rejected, match="empty"):
        archives.extract(make_zip(tmp_path / "empty.zip", {}), tmp_path / "o1")
    with zipfile.ZipFile(tmp_path / "dup.zip", "w") as zf, pytest.warns(UserWarning):
        zf.writestr("net/prune.py", "a = 1\n")
        zf.writestr("net/prune.py", "a = 2\n")
    with pytest.raises(Rejected, match="twice"):
        archives.extract(tmp_path / "dup.zip", tmp_path / "o2")


def test_format_comes_from_the_content_and_windows_separators_work(tmp_path):
    renamed = tmp_path / "123.rar"  # a zip under a .rar name
    make_zip(renamed, {name.replace("/", "\\"): data for name, data in solution_files().items()})
    found = archives.locate(archives.extract(renamed, tmp_path / "out"))
    assert (found.net / "prune.py").is_file() and [p.name for p in found.scripts] == ["pruning.py"]


# --------------------------------------------------------------------------- finding net/ and pruning.py


@pytest.mark.parametrize("prefix", ["", "assignment/", "108062345/", "108062345/hw3/assignment/"])
def test_locate_finds_net_wherever_it_sits_and_ignores_junk(tmp_path, prefix):
    files = {prefix + name: data for name, data in solution_files().items()}
    files.update({"__MACOSX/" + prefix + "net/._prune.py": b"\x00\x05junk", prefix + ".DS_Store": b"junk",
                  prefix + "net/prune.py~": b"backup", prefix + "net/.prune.py.swp": b"swap",
                  prefix + "net/__pycache__/prune.cpython-311.pyc": b"junk"})
    submission = archives.prepare(make_zip(tmp_path / "s.zip", files), tmp_path / "work")
    assert sorted(p.relative_to(submission).as_posix() for p in submission.rglob("*.py")) == sorted(
        solution_files())
    assert (submission / "net/prune.py").read_bytes() == (REPO / "solutions/net/prune.py").read_bytes()


def test_locate_accepts_the_contents_of_net_packed_without_the_folder(tmp_path):
    files = {name.removeprefix("net/"): data for name, data in solution_files().items()}
    submission = archives.prepare(make_tar(tmp_path / "s.tar", [tar_member(n, data=d) for n, d in files.items()]),
                                  tmp_path / "work")
    assert (submission / "net/quantization.py").is_file() and (submission / "pruning.py").is_file()


@pytest.mark.parametrize("change, reason", [
    (lambda f: f.clear(), "none of the homework's files found"),
    (lambda f: f.update({"old/net/prune.py": b"", "old/pruning.py": b""}), "found 2 net/ folders"),
    (lambda f: f.update({"backup/pruning.py": b""}), "found 2 pruning.py files"),
])
def test_locate_says_plainly_what_is_missing_or_ambiguous(tmp_path, change, reason):
    files = solution_files()
    change(files)
    files.setdefault("README.txt", b"my homework")
    with pytest.raises(Rejected, match=reason):
        archives.prepare(make_zip(tmp_path / "s.zip", files), tmp_path / "work")


@pytest.mark.parametrize("left_out", ["pruning.py", "net/"])
def test_a_submission_missing_a_piece_is_staged_with_what_it_holds(tmp_path, left_out):
    files = {name: data for name, data in solution_files().items() if not name.startswith(left_out)}
    submission = archives.prepare(make_zip(tmp_path / "s.zip", files), tmp_path / "work")
    staged = sorted(p.relative_to(submission).as_posix() for p in submission.rglob("*.py"))
    assert staged == sorted({"net/__init__.py", *(name for name in files if name.endswith(".py"))})


def test_prepare_unpacks_a_folder_holding_one_archive(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    make_zip(folder / "108062345.zip", solution_files())
    submission = archives.prepare(folder, tmp_path / "work")
    assert (submission / "net/prune.py").is_file()


def test_folder_with_a_symlink_is_rejected(tmp_path):
    folder = tmp_path / "s"
    (folder / "net").mkdir(parents=True)
    for name, data in solution_files().items():
        (folder / name).write_bytes(data)
    (folder / "net" / "secret.py").symlink_to("/etc/passwd")
    with pytest.raises(Rejected, match="link"):
        archives.prepare(folder, tmp_path / "work")


def test_student_id_hash_and_junk():
    assert archives.student_id(Path("108062345.tar.gz")) == "108062345"
    assert archives.student_id(Path("a.b.zip")) == "a.b"
    assert archives.archive_suffix(Path("x.ptmodel")) is None
    assert archives.is_junk(["__MACOSX", "net", "prune.py"]) and archives.is_junk(["net", "._prune.py"])
    assert not archives.is_junk(["net", "prune.py"])


def test_content_hash_of_folders_follows_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_text("1")
    first = archives.content_hash(tmp_path / "a")
    assert archives.content_hash(tmp_path / "a") == first
    (tmp_path / "a" / "x.py").write_text("2")
    assert archives.content_hash(tmp_path / "a") != first


@pytest.mark.skipif(not any(map(shutil.which, ("unar", "7z", "7zz"))) or not RAR_FIXTURES.is_dir(),
                    reason="no unar or 7z to test the fallback extractor")
def test_fallback_extractor_without_bsdtar(tmp_path, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(archives.shutil, "which", lambda name: None if name == "bsdtar" else real_which(name))
    dest = archives.extract(RAR_FIXTURES / "rar3-subdirs.rar", tmp_path / "out", select=EVERYTHING)
    assert (dest / "sub/dir1/file1.txt").read_text() == "file1\n"
    with pytest.raises(Rejected):  # a link, or an archive this extractor cannot read (unar 1.10 and RAR5)
        archives.extract(RAR_FIXTURES / "rar5-evil-symlink-traversal.rar", tmp_path / "o2" / "out", select=EVERYTHING)
    assert not list(tmp_path.rglob("pwned.txt")) and not (tmp_path / "o2").exists()


def tar_with_huge_extension_header(path: Path, kind: bytes, size: int) -> None:
    """A .tar.gz whose first header is an extension (GNU long name/link, pax) claiming ``size`` bytes.

    Only its first MB is there: the claim alone must be refused, before anything is read.
    """
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = kind, size
    with gzip.open(path, "wb") as f:
        f.write(header.tobuf(format=tarfile.GNU_FORMAT))
        f.write(b"a" * (1 << 20))


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                                  tarfile.XGLTYPE])
def test_a_tar_header_claiming_gigabytes_is_refused_before_it_is_read(tmp_path, kind):
    bomb = tmp_path / "bomb.tar.gz"
    tar_with_huge_extension_header(bomb, kind, 7 << 29)  # 3.5 GiB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(archives.Rejected, match="tar header .* over the 64 KB limit"):
        archives.list_entries(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KB: nothing was read whole
    if shutil.which("bsdtar"):  # the same header in a stream from bsdtar (as for .rar and .7z)
        plain = tmp_path / "bomb.tar"
        plain.write_bytes(gzip.decompress(bomb.read_bytes()))
        entries = archives._bsdtar_entries(plain, archives.Limits())
        with pytest.raises(archives.Rejected):
            list(entries)


def test_a_long_name_is_refused_before_it_is_scanned():
    with pytest.raises(archives.Rejected, match="absurdly long"):
        archives._check_name("a" * 10_000_000)
