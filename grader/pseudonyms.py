"""Publish the leaderboard under pseudonyms: ``python -m grader leaderboard ... --pseudonyms``.

A pseudonym is ``<adjective>-<animal>-<4 hex digits>`` taken from
HMAC-SHA256(course key, student id), so it is the same at every run with the
same key (a student keeps theirs all semester and can be told it privately),
and nobody without the key can compute or invert it. The key is 32 random
bytes, written in hex to ``OUT/private/pseudonym.key`` (mode 600) on first
use, or read from ``--pseudonym-key FILE`` (keep one file for the whole
course, outside any published folder; pseudonyms change if it is lost).

With ``--pseudonyms`` the leaderboard also writes:

``OUT/public/``
    ``leaderboard.csv``, ``.md``, ``.html`` and ``.png`` with pseudonyms in
    place of ids, and nothing else: this folder is the one to publish.
``OUT/private/pseudonyms.csv``
    ``student_id,pseudonym``: the map, for the staff only.

Everything else in OUT (the ranking under real ids, ``details/``,
``final_grades.csv``, ``cache/``) stays as without the option and is not for
publishing. Rows that share a rank are listed by pseudonym, so the order of
the public table says nothing about the ids.
"""
import csv
import hashlib
import hmac
import io
import os
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from grader.files import write_atomic

ADJECTIVES = ("amber", "bold", "brisk", "calm", "clever", "coral", "daring", "eager", "fair", "gentle", "golden",
              "happy", "jolly", "keen", "lively", "lucky", "mellow", "nimble", "noble", "olive", "plucky", "proud",
              "quick", "quiet", "rapid", "silver", "steady", "sunny", "swift", "tidy", "vivid", "witty")
ANIMALS = ("badger", "beaver", "bison", "crane", "dolphin", "eagle", "falcon", "ferret", "gecko", "heron", "ibis",
           "jackal", "koala", "lemur", "lynx", "marten", "newt", "ocelot", "otter", "panda", "puffin", "quail",
           "raven", "salmon", "seal", "stork", "tapir", "toucan", "walrus", "weasel", "wombat", "yak")
KEY_BYTES = 32


class PseudonymError(ValueError):
    """The key cannot be used; the message says what to do."""


def load_or_create_key(path: Path) -> bytes:
    """The course key in ``path`` (hex); a new random one is written there (mode 600) when the file is absent."""
    path = Path(path)
    if path.exists():
        try:
            key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        except (ValueError, UnicodeDecodeError, OSError):
            raise PseudonymError(f"the pseudonym key {path} is not a hex key; restore it from a backup, or delete "
                                 "it to start over (every pseudonym then changes)") from None
        if len(key) < 16:
            raise PseudonymError(f"the pseudonym key {path} is too short ({len(key)} bytes, 16 at least); "
                                 "restore it, or delete it to make a new one (every pseudonym then changes)")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
    return key


def key_file(out_dir: Path, key_path: Optional[Path] = None) -> Path:
    """Where the key is: ``key_path``, else ``out_dir/private/pseudonym.key``; never inside ``out_dir/public``."""
    path = Path(key_path or Path(out_dir) / "private" / "pseudonym.key")
    if path.resolve().is_relative_to((Path(out_dir) / "public").resolve()):
        raise PseudonymError(f"the pseudonym key {path} must not be inside the published folder "
                             f"{Path(out_dir) / 'public'}; keep it elsewhere")
    return path


def pseudonym(key: bytes, student_id: str, digits: int = 4) -> str:
    """The pseudonym of ``student_id`` under ``key``, with ``digits`` hex digits after the two words."""
    digest = hmac.new(key, student_id.encode("utf-8"), hashlib.sha256).digest()
    words = f"{ADJECTIVES[digest[0] % len(ADJECTIVES)]}-{ANIMALS[digest[1] % len(ANIMALS)]}"
    return f"{words}-{digest[2:].hex()[:digits]}"


def assign(key: bytes, student_ids: Iterable[str]) -> Dict[str, str]:
    """A distinct pseudonym for every id: ids whose short pseudonyms collide get more hex digits."""
    ids = sorted(set(student_ids))
    digits = {sid: 4 for sid in ids}
    while True:
        names = {sid: pseudonym(key, sid, digits[sid]) for sid in ids}
        seen: Dict[str, List[str]] = {}
        for sid, name in names.items():
            seen.setdefault(name, []).append(sid)
        clashes = [sid for group in seen.values() if len(group) > 1 for sid in group]
        if not clashes:
            return names
        for sid in clashes:
            digits[sid] += 4


def public_rows(rows: Sequence, names: Dict[str, str]) -> List:
    """The leaderboard rows under pseudonyms, in the same groups and ranks, ties listed by pseudonym."""
    renamed = [replace(row, entry=replace(row.entry, student_id=names[row.entry.student_id])) for row in rows]

    def order(row) -> tuple:
        group = 0 if row.qualified else (1 if not row.entry.problem else 2)
        return group, row.entry.cost if group < 2 else 0, row.entry.student_id

    return sorted(renamed, key=order)


def publish(out_dir: Path, rows: Sequence, gate: str, key_path: Optional[Path] = None,
            layout=None) -> Dict[str, str]:
    """Write ``out_dir/public/`` (the ranking under pseudonyms) and ``out_dir/private/pseudonyms.csv``.

    ``layout`` is the board's ``grader.publish.Layout`` (Part 1's by default)."""
    from grader import publish as pages
    layout = layout or pages.COMPRESSION
    key = load_or_create_key(key_file(out_dir, key_path))
    names = assign(key, (row.entry.student_id for row in rows))
    public, shown = out_dir / "public", public_rows(rows, names)
    write_atomic(public / "leaderboard.csv", pages.to_csv([layout.cells(r) for r in shown], layout.csv_columns))
    write_atomic(public / "leaderboard.md", pages.markdown(shown, gate, layout))
    svg = pages.plot(shown, gate, public / "leaderboard.png", layout)
    write_atomic(public / "leaderboard.html", pages.page(shown, gate, svg, layout))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student_id", "pseudonym"])
    writer.writerows(sorted(names.items()))
    write_atomic(out_dir / "private" / "pseudonyms.csv", buffer.getvalue())
    os.chmod(out_dir / "private" / "pseudonyms.csv", 0o600)
    return names
