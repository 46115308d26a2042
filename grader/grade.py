"""Grade a whole class: ``python -m grader grade SUBMISSIONS_DIR --out OUT_DIR [--jobs N]``.

Every archive (``.rar``, ``.zip``, ``.tar``, ``.tar.gz``, ``.7z``...) or folder
in SUBMISSIONS_DIR is one student, whose id is the file name without its
suffix (``.ptmodel`` files, for the leaderboard, are skipped). Each is
unpacked safely (:mod:`grader.archives`), then the judge (:mod:`grader.judge`)
runs the hidden suites, which send the student's code in its box
(:mod:`grader.box`) requests and score its answers. Results are written as
they come:

``OUT_DIR/results/<id>.json``
    Gradescope's ``results.json`` format (score, max_score, tests with
    name/score/max_score/output/visibility), plus ``extra_data`` with the
    submission's hash and the grader version used for resuming.
``OUT_DIR/feedback/<id>.md``
    every test, its points and its message, for the student.
``OUT_DIR/grades.csv``
    ``student_id``, Part 1's parts, ``code_total``, Part 2's parts,
    ``deploy_total``, ``status``, ``isolation`` (``CSV_FIELDS``),
    rebuilt from ``results/`` at most every 30 s and, at the end, by the
    same merge that joins the shards of a class graded on many machines
    (``--shard K/N``, :mod:`grader.shards`).

A run that is stopped and started again skips every student whose results
were made from the same file (sha256) by the same grader version (the suites,
the reference solutions and the limits); ``--force`` grades everyone again.

Part 2 (``deploy/``, ``homework.DEPLOY_PARTS``) is graded in the same judge,
after Part 1 and in a box of its own, when the submission holds any of
``homework.DEPLOY_STUDENT_FILES``; otherwise its tests score 0 with a message
that says what to add. ``homework.DEPLOY_SCORING`` decides how it counts:
``"separate"`` (``deploy_total`` is its own total; ``code_total`` is Part 1's)
or ``"bonus"`` (``code_total`` adds Part 2's points to Part 1's).
"""
import argparse
import concurrent.futures
import csv
import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from grader import archives, box, homework, judge, resubmit, roster, shards
from grader.files import write_atomic
from grader.homework import DEPLOY_ABSENT, Limits

REPO = Path(__file__).resolve().parent.parent
PARTS = homework.PART_NAMES
DEPLOY_PARTS = homework.DEPLOY_PART_NAMES
ALL_PARTS = PARTS + DEPLOY_PARTS
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
DEPLOY_TOTAL = homework.DEPLOY_COLUMN
CSV_FIELDS = ["student_id", *PARTS, "code_total", *DEPLOY_PARTS, DEPLOY_TOTAL, "status", "isolation"]
VERSIONED = ("grader/suites", "grader/worker", "grader/box.py", "grader/judge.py", "grader/files.py",
             "grader/homework.py", "grader/reference.py")
"""What decides a score, besides the reference solutions and the limits (see ``grader_version``)."""
GRADES_EVERY_S = 30.0
"""During a whole-class run grades.csv is rebuilt at most this often (and at the end, by the merge)."""


class GradingError(Exception):
    """A grading run cannot start (no sandbox, no tests...); the message says why and what to do."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TestResult:
    """One scored test, as the judge reported it and the grader clamped it."""
    name: str
    part: str
    todo: str
    score: float
    max_score: float
    output: str = ""
    visibility: str = "visible"

    @property
    def status(self) -> str:
        return "passed" if self.score >= self.max_score else "failed"

    def to_gradescope(self) -> dict:
        return {"name": self.name, "score": self.score, "max_score": self.max_score, "status": self.status,
                "output": self.output, "visibility": self.visibility, "tags": [self.part, self.todo],
                "extra_data": {"part": self.part, "todo": self.todo}}


@dataclass(frozen=True)
class Results:
    """One student's graded submission: what ``results/<id>.json`` holds (Gradescope's format, plus
    ``extra_data``), what feedback and grades.csv are made from."""
    student_id: str
    submission: str
    sha256: str
    grader_version: str
    status: str
    isolation: str
    tests: Tuple[TestResult, ...] = ()
    missing: Tuple[str, ...] = ()
    """Student files the submission did not hold."""
    superseded: Tuple[str, ...] = ()
    """Older files of the same student, not graded (``grader/resubmit.py``)."""
    history: Tuple[dict, ...] = ()
    """Earlier grades this one replaced, oldest first (``grader/resubmit.py``)."""

    @property
    def parts(self) -> Dict[str, float]:
        """The points of every part, Part 1's then Part 2's."""
        return {part: sum(t.score for t in self.tests if t.part == part) for part in ALL_PARTS}

    @property
    def maxima(self) -> Dict[str, float]:
        return {part: sum(t.max_score for t in self.tests if t.part == part) for part in ALL_PARTS}

    @property
    def score(self) -> float:
        """The code total: Part 1's points, plus Part 2's when it is a bonus (``homework.counted_parts``)."""
        return sum(self.parts[part] for part in homework.counted_parts())

    @property
    def max_score(self) -> float:
        """What the code total is out of: Part 1's maximum (bonus points come on top of it)."""
        return sum(self.maxima[part] for part in PARTS)

    @property
    def deploy_score(self) -> float:
        """Part 2's own total."""
        return sum(self.parts[part] for part in DEPLOY_PARTS)

    @property
    def deploy_max(self) -> float:
        return sum(self.maxima[part] for part in DEPLOY_PARTS)

    @property
    def deploy_handed_in(self) -> bool:
        return not set(homework.DEPLOY_STUDENT_FILES) <= set(self.missing)

    def _scores(self, parts: Sequence[str]) -> str:
        return ", ".join(f"{part} {self.parts[part]:g}/{self.maxima[part]:g}" for part in parts)

    def summary(self) -> str:
        """The result in a few lines: Part 1's points, Part 2's, and what the submission lacks."""
        bonus = homework.DEPLOY_SCORING == "bonus"
        included = f", Part 2's {self.deploy_score:g} bonus points included" if bonus else ""
        lines = [f"Code: {self.score:g}/{self.max_score:g} points ({self._scores(PARTS)}{included}). "
                 f"Status: {self.status}",
                 f"Part 2 ({homework.DEPLOY_NAME}/): {self.deploy_score:g}/{self.deploy_max:g} points "
                 f"({self._scores(DEPLOY_PARTS)}; {'bonus points on top of Part 1' if bonus else 'a separate total'})."]
        missing = [f for f in self.missing if f in homework.STUDENT_FILES]
        if missing:
            lines.append(f"Missing from the submission: {', '.join(missing)}; the tests of their TODOs "
                         f"score 0. Hand in {', '.join(homework.STUDENT_FILES)}.")
        if not self.deploy_handed_in:
            lines.append(DEPLOY_ABSENT)
        elif any(f in homework.DEPLOY_STUDENT_FILES for f in self.missing):
            lines.append(f"Missing from Part 2: {', '.join(f for f in self.missing if f not in missing)}; the tests "
                         f"of their TODOs score 0. Hand in {', '.join(homework.DEPLOY_STUDENT_FILES)}.")
        return "\n".join(lines)

    def to_gradescope(self) -> dict:
        return {"score": self.score, "max_score": self.max_score, "output": self.summary(),
                "visibility": "visible", "stdout_visibility": "hidden",
                "tests": [t.to_gradescope() for t in self.tests],
                "extra_data": {"student_id": self.student_id, "submission": self.submission, "sha256": self.sha256,
                               "grader_version": self.grader_version, "status": self.status, "parts": self.parts,
                               "deploy_score": self.deploy_score, "deploy_scoring": homework.DEPLOY_SCORING,
                               "missing": list(self.missing), "superseded": list(self.superseded),
                               "history": list(self.history), "isolation": self.isolation,
                               "sandbox": box.describe(self.isolation) if self.isolation else ""}}

    @classmethod
    def from_json(cls, document: dict) -> "Results":
        """The results a ``to_gradescope()`` document holds; ``ValueError`` when it is damaged."""
        try:
            extra = document["extra_data"]
            tests = tuple(TestResult(name=str(t["name"]), part=str(t["extra_data"]["part"]),
                                     todo=str(t["extra_data"]["todo"]), score=float(t["score"]),
                                     max_score=float(t["max_score"]), output=str(t.get("output", "")),
                                     visibility=str(t.get("visibility", "visible")))
                          for t in document["tests"])
            results = cls(str(extra["student_id"]), str(extra["submission"]), str(extra["sha256"]),
                          str(extra["grader_version"]), str(extra["status"]), str(extra.get("isolation", "")),
                          tests, tuple(map(str, extra.get("missing", ()))),
                          tuple(map(str, extra.get("superseded", ()))),
                          tuple(h for h in extra.get("history", ()) if isinstance(h, dict)))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"not a results document ({type(error).__name__}: {error})") from None
        if not all(math.isfinite(t.score) and 0 <= t.score <= t.max_score and t.part in ALL_PARTS for t in tests):
            raise ValueError("a test's score is not a number between 0 and its maximum, or its part is unknown")
        return results

    @classmethod
    def read(cls, path: Path) -> "Results":
        """The results stored at ``path``; ``ValueError`` when the file is unreadable or damaged."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path.name} cannot be read ({type(error).__name__})") from None
        return cls.from_json(document)


@dataclass(frozen=True)
class Setup:
    """Everything a grading run shares between students."""
    tests: Tuple[dict, ...]
    """The runner's ``--list``: name, part, todo, max_score of every test."""
    version: str
    limits: Limits = Limits()
    archive_limits: archives.Limits = archives.Limits()
    isolation: str = "bwrap"
    preload: Tuple[str, ...] = judge.DEFAULT_PRELOAD


# --------------------------------------------------------------------------- set-up


def list_tests() -> Tuple[dict, ...]:
    """The runner's test list, from a process of its own (it runs no student code)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-m", "grader.suites.runner", "--list", "--homework", "all"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise GradingError(f"listing the tests failed:\n{done.stderr.strip()}")
    tests = tuple(json.loads(done.stdout))
    if not tests or any(t.get("part") not in ALL_PARTS for t in tests):
        raise GradingError("listing the tests gave no tests or an unknown part")
    return tests


def grader_version(limits: Limits, archive_limits: archives.Limits, repo: Path = REPO) -> str:
    """A hash of everything that decides a score: the suites, the box, the reference solutions and the limits."""
    from grader.assign import source_files
    digest = hashlib.sha256(json.dumps([asdict(limits), asdict(archive_limits)], sort_keys=True).encode())
    files = [p for top in VERSIONED for p in ([repo / top] if (repo / top).is_file() else (repo / top).rglob("*.py"))]
    files += [repo / "solutions" / relative for relative in source_files(repo / "solutions")]
    for path in sorted(files):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def find_submissions(folder: Path) -> Tuple[Dict[str, List[Path]], List[Path]]:
    """Map each student id to its submission(s) in ``folder``; also return the entries that are not submissions."""
    found: Dict[str, List[Path]] = {}
    ignored = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or archives.is_junk([entry.name]):
            continue
        if entry.is_dir() or (entry.is_file() and archives.archive_suffix(entry)):
            found.setdefault(homework.student_id(archives.student_id(entry)), []).append(entry)
        else:
            ignored.append(entry)
    return found, ignored


def submission_hash(sources: Sequence[Path]) -> str:
    """The hash that decides whether a student must be graded again."""
    return "+".join(archives.content_hash(p) for p in sources)


# --------------------------------------------------------------------------- one student


def _not_graded(student: str, source: Path, digest: str, setup: Setup, status: str) -> Results:
    """Results with 0 points everywhere, for a submission that could not be graded."""
    tests = tuple(_test(spec, 0.0, f"Not graded: {status}") for spec in setup.tests)
    return Results(student, source.name, digest, setup.version, status, setup.isolation, tests)


def _test(spec: dict, score: float, output: str, visibility: str = "visible") -> TestResult:
    return TestResult(spec["name"], spec["part"], spec["todo"], score, float(spec["max_score"]), output, visibility)


def _score(setup: Setup, recorded: List[dict]) -> Tuple[TestResult, ...]:
    """One result per listed test, from the judge's own scores: finite, within [0, max]; a missing test scores 0."""
    by_name = {t.get("name"): t for t in recorded if isinstance(t, dict)}
    scored = []
    for spec in setup.tests:
        got = by_name.get(spec["name"])
        if got is None:
            scored.append(_test(spec, 0.0, "Not run: the judge did not report this test."))
            continue
        try:
            score = float(got.get("score", 0.0))
        except (TypeError, ValueError):
            score = 0.0
        score = min(max(score, 0.0), float(spec["max_score"])) if math.isfinite(score) else 0.0
        visibility = got.get("visibility") if got.get("visibility") in VISIBILITIES else "visible"
        scored.append(_test(spec, score, str(got.get("output", "")), visibility))
    return tuple(scored)


def _missing(submission: Path) -> Tuple[str, ...]:
    """The student files of both parts that ``submission`` lacks (a link counts as missing)."""
    return tuple(f for f in homework.STUDENT_FILES + homework.DEPLOY_STUDENT_FILES
                 if not (submission / f).is_file() or (submission / f).is_symlink())


def _without_deploy(tests: Tuple[TestResult, ...]) -> Tuple[TestResult, ...]:
    """The tests of a submission that holds no Part 2: Part 2's score 0 and say what to add."""
    return tuple(replace(t, score=0.0, output=DEPLOY_ABSENT) if t.part in DEPLOY_PARTS else t for t in tests)


def grade_one(student: str, sources: Sequence[Path], setup: Setup) -> Results:
    """Grade one student's submission; always returns results, never raises."""
    source, digest = sources[0], submission_hash(sources)
    if len(sources) > 1:
        names = ", ".join(s.name for s in sources)
        return _not_graded(student, source, digest, setup, f"error: several submissions for this id ({names}); "
                           "keep one, or name the newer <id>__2 (docs/TA.md)")
    try:
        with tempfile.TemporaryDirectory(prefix="grade-") as work:
            try:
                submission = archives.prepare(source, Path(work), setup.archive_limits)
            except archives.Rejected as why:
                return _not_graded(student, source, digest, setup, f"rejected: {why}")
            missing = _missing(submission)
            with_deploy = not set(homework.DEPLOY_STUDENT_FILES) <= set(missing)
            try:
                recorded = judge.run(submission, setup.limits, setup.isolation, setup.preload,
                                     "all" if with_deploy else "compression")
            except judge.JudgeFailure as why:
                if "time limit" not in str(why):
                    raise
                return _not_graded(student, source, digest, setup, f"partial: {why}")
        scored = _score(setup, recorded)
        return Results(student, source.name, digest, setup.version, "ok", setup.isolation,
                       scored if with_deploy else _without_deploy(scored), missing)
    except Exception as error:  # noqa: BLE001 - a grader bug must not stop the class
        traceback.print_exc()
        results = _not_graded(student, source, digest, setup,
                              f"error: the grader failed ({type(error).__name__}: {error}); it is retried next run")
        return replace(results, grader_version="")


# --------------------------------------------------------------------------- outputs


def _fence(text: str) -> str:
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}\n{text.rstrip()}\n{ticks}"


def feedback(results: Results) -> str:
    """The student's feedback file: the totals, each part, each test with its points and message."""
    summary = results.summary().splitlines()
    lines = [f"# Feedback for {results.student_id}", "",
             f"**Code: {results.score:g} / {results.max_score:g} points.** "
             f"(The compression-rate ranking, {homework.RANKING_POINTS[0]:g} points, is graded separately.)", "",
             f"**{summary[1]}**", "",
             f"Submission: `{results.submission}`; status: {results.status}", ""]
    lines += [line for extra in summary[2:] for line in (extra, "")]
    lines += resubmit.feedback_lines(results)
    for part in ALL_PARTS:
        if part == DEPLOY_PARTS[0]:
            lines += [f"# Part 2 ({homework.DEPLOY_NAME}/): {results.deploy_score:g} / {results.deploy_max:g}", ""]
            if not results.deploy_handed_in:  # one message, not the same one under every test
                lines += [DEPLOY_ABSENT, "", *(f"- {t.name} ({t.part}): 0 / {t.max_score:g}"
                                               for t in results.tests if t.part in DEPLOY_PARTS), ""]
                break
        lines += [f"## {part}: {results.parts[part]:g} / {results.maxima[part]:g}", ""]
        for test in (t for t in results.tests if t.part == part):
            hidden = " (hidden on Gradescope)" if test.visibility == "hidden" else ""
            lines += [f"### {test.status}: {test.name}: {test.score:g} / {test.max_score:g}{hidden}", "",
                      f"TODO: {test.todo}", "", _fence(test.output or "(no message)"), ""]
    return "\n".join(lines)


def read_results(out: Path) -> Tuple[List[Results], Dict[str, str]]:
    """Every student's results in ``out/results``, and the problem of each results file that is damaged."""
    found, damaged = [], {}
    for path in sorted((out / "results").glob("*.json")):
        try:
            found.append(Results.read(path))
        except ValueError as why:
            damaged[path.stem] = f"error: {path.name} is damaged ({why}); grade again with --only {path.stem} --force"
    return found, damaged


def grade_rows(out: Path) -> List[dict]:
    """The rows of grades.csv, from every results file in ``out/results``."""
    found, damaged = read_results(out)
    rows = [{"student_id": r.student_id, **{p: f"{v:g}" for p, v in r.parts.items()},
             "code_total": f"{r.score:g}", DEPLOY_TOTAL: f"{r.deploy_score:g}", "status": r.status,
             "isolation": r.isolation} for r in found]
    rows += [{"student_id": sid, **dict.fromkeys(ALL_PARTS, "0"), "code_total": "0", DEPLOY_TOTAL: "0",
              "status": why, "isolation": ""} for sid, why in damaged.items()]
    return sorted(rows, key=lambda row: row["student_id"])


def write_grades(out: Path) -> None:
    """Rebuild ``out/grades.csv`` from ``out/results`` (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(grade_rows(out))
    write_atomic(out / "grades.csv", buffer.getvalue())


def save(out: Path, results: Results) -> None:
    """Write one student's results and feedback (the class-wide grades.csv is the caller's)."""
    write_atomic(out / "feedback" / f"{results.student_id}.md", feedback(results))
    write_atomic(out / "results" / f"{results.student_id}.json",
                 json.dumps(results.to_gradescope(), indent=1, ensure_ascii=False) + "\n")


def merge(out: Path) -> str:
    """The class-wide files of a grading folder (grades.csv, roster-check.txt) from every shard's results, once
    :func:`grader.shards.collect` has checked the shards; ``ShardError`` when a student's results are not what
    its shard recorded."""
    done = shards.collect(out, "grade")
    for sid, facts in done.students.items():
        try:
            results = Results.read(out / "results" / f"{sid}.json")
        except ValueError as why:
            raise shards.ShardError(f"cannot merge {out}: shard {shards.shard_of(sid, done.n)}/{done.n} graded "
                                    f"{sid} but {why}.\nRun that shard again with --only {sid} --force.") from None
        if "sha256" in facts and (results.sha256 != facts["sha256"]
                                  or results.grader_version not in (done.version, "")):
            raise shards.ShardError(f"cannot merge {out}: results/{sid}.json is not what shard "
                                    f"{shards.shard_of(sid, done.n)}/{done.n} graded (another file or grader "
                                    f"version wrote it since).\nRun that shard again.")
    write_grades(out)
    if done.settings.get("roster"):
        check = roster.Check(*(sorted(s for extra in done.extras for s in extra.get(key, ()))
                               for key in ("missing", "unknown", "kept")))
        roster.report(out, check, Path(done.settings["roster"]), Path(done.settings["submissions"]))
    return f"merged {done.n} shard(s) of {len(done.students)} students (grader version {done.version}): " \
           f"{out / 'grades.csv'}"


def already_graded(out: Path, student: str, digest: str, version: str) -> bool:
    """True when ``out`` holds this student's results for the same file and grader version."""
    try:
        results = Results.read(out / "results" / f"{student}.json")
    except ValueError:
        return False
    return results.sha256 == digest and results.grader_version == version \
        and (out / "feedback" / f"{student}.md").exists()


def _clean_temporaries(out: Path) -> None:
    for folder in (out, out / "results", out / "feedback"):
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the Python API


def isolation_level(wanted: str, strongest: str, why: str) -> str:
    """The box level to grade at, given the strongest one here; raises ``GradingError`` rather than grade
    without a sandbox unasked."""
    if wanted == "basic":
        return "basic"
    if strongest == "basic":
        raise GradingError(f"no sandbox can be made here: {why}.\nInstall bubblewrap (Debian/Ubuntu: "
                           "apt-get install bubblewrap), or pass --isolation basic to grade without one "
                           "(the student's code can then read and write what you can: see docs/GRADING.md)")
    return strongest


_listed: Dict[str, Tuple[dict, ...]] = {}


def make_setup(limits: Limits = Limits(), isolation: str = "auto",
               preload: Optional[Sequence[str]] = None) -> Setup:
    """The run's settings; starts the judge server and finds the isolation level (call it from the main thread)."""
    version = grader_version(limits, archives.Limits())
    try:
        if version not in _listed:
            _listed[version] = list_tests()
    except subprocess.TimeoutExpired:
        raise GradingError("listing the tests took more than 10 minutes") from None
    preload = judge.DEFAULT_PRELOAD if preload is None else tuple(preload)
    server = judge.server(preload)
    level = isolation_level(isolation, server.level, server.why_not_bwrap)
    return Setup(_listed[version], version, limits, isolation=level, preload=preload)


@dataclass
class Run:
    """What :func:`grade` did."""
    graded: List[Results] = field(default_factory=list)
    skipped: int = 0
    """Students already graded from the same file by the same grader version."""
    setup: Optional[Setup] = None

    @property
    def not_ok(self) -> List[Results]:
        return [r for r in self.graded if r.status != "ok"]


def grade(submissions: Path, out: Path, *, jobs: int = 1, only: Sequence[str] = (), force: bool = False,
          limits: Limits = Limits(), isolation: str = "auto", progress: bool = False,
          preload: Optional[Sequence[str]] = None, roster_csv: Optional[Path] = None,
          shard: Optional[shards.Shard] = None) -> Run:
    """Grade every submission in ``submissions`` into ``out`` (results/, feedback/, grades.csv) and return what
    was done. Students already graded from the same file by the same grader version are skipped unless
    ``force``; ``only`` restricts the run to those ids. Of ``<id>__<n>`` files only the newest is graded
    (``grader/resubmit.py``); with ``roster_csv``, roster students without a file get 0 points
    (``grader/roster.py``). With ``shard=(K, N)`` only the students of shard K of N are graded and no class-wide
    file is written (``grader/shards.py``). Raises ``GradingError`` when the run cannot start."""
    if jobs < 1:
        raise GradingError("jobs must be at least 1")
    if shard is not None and not (isinstance(shard, tuple) and len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise GradingError(f"shard must be (K, N) with 0 <= K < N, not {shard!r}")
    if not Path(submissions).is_dir():
        raise GradingError(f"{submissions} is not a folder")
    for folder in ("results", "feedback"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    _clean_temporaries(out)
    try:
        students = roster.load(roster_csv) if roster_csv else None
    except roster.RosterError as error:
        raise GradingError(str(error)) from None
    check = None
    try:
        run = Run(setup=make_setup(limits, isolation, preload))
        shards.start(out, shard)  # only once the run can start: a refused run leaves the markers as they were
        found, ignored = find_submissions(submissions)
        found, older = resubmit.latest(found)
        found = {sid: paths for sid, paths in found.items() if shards.belongs(sid, shard)}
        if students is not None:
            students = {sid: student for sid, student in students.items() if shards.belongs(sid, shard)}
            check = roster.record(students, found, out, run.setup)
        if only:
            wanted = {homework.student_id(sid) for sid in only}
            found = {sid: paths for sid, paths in found.items() if sid in wanted}
        part = f" (shard {shards.name(shard)})" if shard else ""
        print(f"{len(found)} submissions{part} in {submissions}, {len(ignored)} other files skipped; "
              f"isolation: {box.describe(run.setup.isolation)}; grader version {run.setup.version}", file=sys.stderr)
        todo = {}
        for sid, paths in found.items():
            if not force and already_graded(out, sid, submission_hash(paths), run.setup.version):
                run.skipped += 1
            else:
                todo[sid] = paths
        _grade_all(todo, run, out, jobs, progress, older, whole_class=shard is None)
    finally:
        judge.shutdown()
    done = {sid: {"sha256": submission_hash(paths)} for sid, paths in found.items()}
    settings = {"isolation": run.setup.isolation, "roster": None}
    if check is not None:
        done.update({sid: {"roster": roster.MISSING} for sid in check.missing})
        settings.update(roster=str(roster_csv), submissions=str(submissions))
    extra = {"missing": check.missing, "unknown": check.unknown, "kept": check.kept} if check else {}
    shards.finish(out, "grade", shard, run.setup.version, settings, done, extra)
    if shard is None:
        merge(out)
    return run


def _grade_all(todo: Dict[str, List[Path]], run: Run, out: Path, jobs: int, progress: bool,
               older: Dict[str, List[Path]], whole_class: bool) -> None:
    """Grade ``todo`` with ``jobs`` threads (each drives a judge process), saving each student as it is done
    (and, for the whole class, grades.csv at most every ``GRADES_EVERY_S``: rebuilding it reads every results
    file; a shard writes no class-wide file)."""
    from tqdm import tqdm
    rebuilt = time.monotonic()
    bar = tqdm(total=len(todo) + run.skipped, initial=run.skipped, unit="student", desc="grading",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(grade_one, sid, paths, run.setup): sid for sid, paths in sorted(todo.items())}
        try:
            for future in concurrent.futures.as_completed(futures):
                results = resubmit.annotate(future.result(), older.get(futures[future], []), out)
                save(out, results)
                if whole_class and time.monotonic() - rebuilt >= GRADES_EVERY_S:
                    write_grades(out)
                    rebuilt = time.monotonic()
                run.graded.append(results)
                if results.status != "ok":
                    bar.write(f"{futures[future]}: {results.score:g} points, {results.status}", file=sys.stderr)
                bar.set_postfix(done=len(run.graded) - len(run.not_ok) + run.skipped, failed=len(run.not_ok),
                                left=len(todo) - len(run.graded), refresh=False)
                bar.update()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            judge.stop_all()
            raise
    bar.close()


# --------------------------------------------------------------------------- the command


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m grader grade", description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path, help="folder of <student_id>.rar/.zip/.tar.gz/... or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder (grades.csv, feedback/, results/)")
    parser.add_argument("--jobs", type=int, default=1, help="students graded in parallel (default 1)")
    parser.add_argument("--only", action="append", metavar="ID", help="grade only this student (repeatable)")
    parser.add_argument("--force", action="store_true", help="grade again students already graded")
    parser.add_argument("--roster", type=Path, help="CSV id,name[,lms_id]: who gets 0 for no submission (docs/TA.md)")
    add_limit_options(parser)
    shards.add_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--preload", help=argparse.SUPPRESS)  # modules the judge server imports, comma-separated
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    try:
        args.shard = shards.parse(args.shard) if args.shard is not None else None
    except shards.ShardError as error:
        parser.error(str(error))
    return args


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The options that set the student's box: time and memory limits, isolation level."""
    defaults = Limits()
    parser.add_argument("--test-timeout", type=float, default=defaults.test_timeout_s, help="seconds per test")
    parser.add_argument("--submission-timeout", type=float, default=defaults.submission_timeout_s,
                        help="seconds for one student in all")
    parser.add_argument("--memory-mb", type=int, default=defaults.memory_mb,
                        help="memory the student's code may use beyond the preloaded libraries")
    parser.add_argument("--isolation", choices=("auto", *box.LEVELS), default="auto",
                        help="the student's box: auto (the strongest here, refusing to grade without a sandbox), "
                             "bwrap (bubblewrap), or basic (no sandbox: only for code you would run yourself)")


def limits_of(args: argparse.Namespace) -> Limits:
    return Limits(test_timeout_s=args.test_timeout, memory_mb=args.memory_mb,
                  submission_timeout_s=args.submission_timeout)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    preload = None if args.preload is None else [m for m in args.preload.split(",") if m]
    try:
        run = grade(args.submissions, args.out, jobs=args.jobs, only=args.only or (), force=args.force,
                    limits=limits_of(args), isolation=args.isolation, progress=not args.no_progress, preload=preload,
                    roster_csv=args.roster, shard=args.shard)
    except (GradingError, shards.ShardError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: what was graded is saved; run the same command again to go on", file=sys.stderr)
        return 130
    where = f"shard {shards.name(args.shard)} done; `python -m grader merge {args.out}` once every shard is" \
        if args.shard else args.out / "grades.csv"
    print(f"graded {len(run.graded)} submissions ({len(run.not_ok)} not ok), {run.skipped} already graded, "
          f"in {time.monotonic() - started:.0f} s: {where}")
    return 0
