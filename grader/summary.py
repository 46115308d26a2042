"""An instructor's summary of a graded class: ``python -m grader summary GRADED [--leaderboard BOARD]``.

Reads ``GRADED/results/*.json`` (written by ``grade``) and, when there is one,
the leaderboard's ``leaderboard.csv`` (``--leaderboard BOARD``, or found in
GRADED itself), and writes ``summary.md`` and ``summary.html`` (into GRADED, or
``--out``). The HTML page is self-contained: inline CSS, the plots as
embedded PNG images, no scripts, nothing fetched. It holds student ids: it is
for the staff, not for publishing.

Sections: the statuses; the distribution of each part's score and of the
code total; the tests most students failed, with their most common messages;
the leaderboard's spread (accuracy and compression rate of the ranked models,
points, reasons for the others); and every student whose status is not ``ok``.
"""
import argparse
import base64
import csv
import html
import io
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from grader import homework
from grader.homework import DEPLOY_ABSENT
from grader.files import write_atomic

if TYPE_CHECKING:
    from grader.grade import Results

TOP_TESTS = 10
PLOTS_PER_ROW = 5
"""Histograms side by side in the plot of the parts (Part 1's and Part 2's parts make two rows)."""
TOP_MESSAGES = 3
MESSAGE_CHARS = 240


class SummaryError(ValueError):
    """The summary cannot be made; the message says what to do."""


@dataclass
class ClassResults:
    """What the summary needs from ``results/``."""

    students: Dict[str, "Results"] = field(default_factory=dict)
    """Each student's results, by student id."""
    parts: Dict[str, float] = field(default_factory=dict)
    """Each part's maximum, in the order of the test list."""
    damaged: List[str] = field(default_factory=list)


def load_results(folder: Path) -> ClassResults:
    """Every results document of ``folder/results``; raises SummaryError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SummaryError(f"{folder} is not a folder; give the --out folder of `python -m grader grade`")
    paths = sorted((folder / "results").glob("*.json"))
    if not paths:
        raise SummaryError(f"{folder} has no results/*.json; grade the class first "
                           f"(`python -m grader grade SUBMISSIONS --out {folder}`)")
    from grader.grade import Results
    loaded = ClassResults()
    for path in paths:
        try:
            results = Results.read(path)
        except ValueError:
            loaded.damaged.append(path.name)
            continue
        loaded.students[results.student_id] = results
        if not loaded.parts:  # every student's results list the same tests
            loaded.parts = dict(results.maxima)
    return loaded


def part_scores(results: ClassResults) -> Dict[str, List[float]]:
    """Each part's scores over the class, the code total's (``"total"``) and Part 2's total."""
    scores: Dict[str, List[float]] = {part: [] for part in results.parts}
    scores["total"], scores[homework.DEPLOY_COLUMN] = [], []
    for student in results.students.values():
        for part in results.parts:
            scores[part].append(student.parts.get(part, 0.0))
        scores["total"].append(student.score)
        scores[homework.DEPLOY_COLUMN].append(student.deploy_score)
    return scores


def _describe(values: Sequence[float], maximum: float) -> Dict[str, str]:
    if not values:
        return {"students": "0", "mean": "", "median": "", "min": "", "max": "", "full": "", "zero": ""}
    return {"students": str(len(values)), "mean": f"{statistics.fmean(values):.1f}",
            "median": f"{statistics.median(values):g}", "min": f"{min(values):g}", "max": f"{max(values):g}",
            "full": str(sum(v >= maximum for v in values)), "zero": str(sum(v == 0 for v in values))}


def headline(output: str) -> str:
    """The line of a test's message that says what went wrong: the first one after the "Checks: ..." line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith("Checks:")] or lines or ["(no message)"]
    return telling[0][:MESSAGE_CHARS]


def most_failed(results: ClassResults) -> List[Tuple[str, str, int, int, List[Tuple[str, int]]]]:
    """The tests failed by most graded (status ``ok``) students: (name, part, failed, graded, [(message, count)]).

    A Part 2 test of a submission without ``deploy/`` is not counted: the part was not handed in, and counting it
    would push every test that students did attempt off the list.
    """
    failed: Counter = Counter()
    messages: Dict[str, Counter] = {}
    parts: Dict[str, str] = {}
    graded = [r for r in results.students.values() if r.status == "ok"]
    for student in graded:
        for test in student.tests:
            parts[test.name] = test.part
            if test.score < test.max_score and test.output != DEPLOY_ABSENT:  # not handed in: nothing to learn
                failed[test.name] += 1
                messages.setdefault(test.name, Counter())[headline(test.output)] += 1
    return [(name, parts[name], count, len(graded), messages[name].most_common(TOP_MESSAGES))
            for name, count in failed.most_common(TOP_TESTS)]


def not_ok(results: ClassResults) -> List[Tuple[str, str]]:
    """(student id, status) of every student whose status is not ``ok``, sorted by id."""
    return sorted((sid, r.status) for sid, r in results.students.items() if r.status != "ok")


@dataclass(frozen=True)
class Spread:
    """The leaderboard in numbers."""

    students: int
    ranked: int
    accuracy: Tuple[float, float, float]
    rate: Tuple[float, float, float]
    points: Dict[str, int]
    reasons: List[Tuple[str, int]]
    rates: List[float]


def leaderboard_spread(board: Path) -> Optional[Spread]:
    """The spread of ``board/leaderboard.csv``, or None when there is none."""
    path = Path(board) / "leaderboard.csv"
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ranked = [r for r in rows if r.get("qualified") == "yes"]

    def three(values: List[float]) -> Tuple[float, float, float]:
        return (min(values), statistics.median(values), max(values)) if values else (0.0, 0.0, 0.0)

    reasons = Counter(r.get("status", "").split(":")[0] or "?" for r in rows if r.get("qualified") != "yes")
    return Spread(len(rows), len(ranked), three([float(r["accuracy"]) for r in ranked]),
                  three([float(r["compression_rate"]) for r in ranked]),
                  dict(sorted(Counter(r.get("points", "0") for r in rows).items(), key=lambda kv: -float(kv[0]))),
                  reasons.most_common(), sorted(float(r["compression_rate"]) for r in ranked))


# --------------------------------------------------------------------------- plots


def _png(figure) -> str:
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_parts(scores: Dict[str, List[float]], maxima: Dict[str, float]) -> str:
    """One histogram per part and one of the total, as base64 PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    names = list(scores)
    columns = min(len(names), PLOTS_PER_ROW)
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        of = maxima.get(name) or 0
        top = max(of, max(scores[name], default=0)) or 1  # bonus points may pass the maximum
        axis.hist(scores[name], bins=min(20, max(5, int(top))), range=(0, top), color="#4575b4", edgecolor="white")
        axis.set_title(f"{name} (of {of or top:g})", fontsize=9)
        axis.set_xlabel("points", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for axis in list(axes.flat)[len(names):]:
        axis.set_visible(False)
    for row in axes:
        row[0].set_ylabel("students", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def plot_rates(rates: Sequence[float]) -> str:
    """The ranked models' compression rates, as base64 PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    figure, axis = plt.subplots(figsize=(6, 2.6))
    axis.hist(rates, bins=min(20, max(5, len(rates))), color="#1a9850", edgecolor="white")
    axis.set_xlabel("compression rate of the ranked models (×)", fontsize=8)
    axis.set_ylabel("students", fontsize=8)
    axis.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.tick_params(labelsize=7)
    figure.tight_layout()
    return _png(figure)


# --------------------------------------------------------------------------- the documents


@dataclass
class Summary:
    """Everything both documents show."""

    folder: Path
    results: ClassResults
    spread: Optional[Spread]

    @property
    def statuses(self) -> List[Tuple[str, int]]:
        return Counter(r.status.split(":")[0] for r in self.results.students.values()).most_common()

    def maxima(self) -> Dict[str, float]:
        parts = self.results.parts
        return {**parts, "total": sum(parts.get(part, 0.0) for part in homework.PART_NAMES),
                homework.DEPLOY_COLUMN: sum(parts.get(part, 0.0) for part in homework.DEPLOY_PART_NAMES)}

    def distribution(self) -> List[Tuple[str, Dict[str, str]]]:
        scores, maxima = part_scores(self.results), self.maxima()
        return [(name, {"of": f"{maxima[name]:g}", **_describe(values, maxima[name])}) for name, values in
                scores.items()]


STAT_COLUMNS = ("of", "students", "mean", "median", "min", "max", "full", "zero")


def _md(text: str) -> str:
    return html.escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")


def markdown(summary: Summary) -> str:
    """The summary as Markdown."""
    results = summary.results
    lines = ["# Class summary", "", f"{len(results.students)} students graded in `{_md(summary.folder)}`. Statuses: "
             + ", ".join(f"{status} {count}" for status, count in summary.statuses) + ".", ""]
    if results.damaged:
        lines += [f"Damaged results files (grade those students again): {', '.join(map(_md, results.damaged))}", ""]
    lines += ["## Score distribution", "", "`full`: students with every point of the part; `zero`: with none.", "",
              "| part | " + " | ".join(STAT_COLUMNS) + " |", "|---|" + "---:|" * len(STAT_COLUMNS)]
    for name, stats in summary.distribution():
        lines.append(f"| {name} | " + " | ".join(stats[c] for c in STAT_COLUMNS) + " |")
    scores = part_scores(results)
    lines += ["", "Scores and how many students got each:", ""]
    for name, values in scores.items():
        counts = sorted(Counter(values).items())
        lines.append(f"- {name}: " + ", ".join(f"{score:g} ×{count}" for score, count in counts))
    lines += ["", "## Tests most students failed", "", "Among the students graded (status ok).", ""]
    failed = most_failed(results)
    if not failed:
        lines.append("No test was failed.")
    for name, part, count, graded, messages in failed:
        lines += [f"- **{_md(name)}** ({part}): failed by {count} of {graded}"]
        lines += [f"  - {count_m}×: {_md(message)}" for message, count_m in messages]
    lines += ["", "## Leaderboard", ""]
    lines += _spread_md(summary.spread)
    lines += ["", "## Students whose status is not ok", ""]
    others = not_ok(results)
    lines += ["Everyone's status is ok."] if not others else \
        ["| student | status |", "|---|---|"] + [f"| {_md(sid)} | {_md(status)} |" for sid, status in others]
    return "\n".join(lines) + "\n"


def _spread_md(spread: Optional[Spread]) -> List[str]:
    if spread is None:
        return ["No leaderboard found (pass `--leaderboard BOARD`, the leaderboard's --out folder)."]
    lines = [f"{spread.ranked} of {spread.students} students ranked."]
    if spread.ranked:
        lines += ["", "| | min | median | max |", "|---|---:|---:|---:|",
                  "| accuracy (%) | {:.2f} | {:.2f} | {:.2f} |".format(*spread.accuracy),
                  "| compression rate (×) | {:.2f} | {:.2f} | {:.2f} |".format(*spread.rate)]
    lines += ["", "Ranking points: " + ", ".join(f"{p} points ×{n}" for p, n in spread.points.items()) + "."]
    if spread.reasons:
        lines.append("Not ranked: " + ", ".join(f"{_md(reason)} ×{n}" for reason, n in spread.reasons) + ".")
    return lines


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 64rem;
       color: #222; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.8rem 0 1.6rem; font-size: 0.92rem; }
th, td { padding: 0.3rem 0.6rem; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } code, .msg { font-family: ui-monospace, monospace; font-size: 0.85rem; } .msg { white-space: pre-line; }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f"<td class=\"num\">{html.escape(c)}</td>" if i < len(numeric) and numeric[i]
                        else f"<td>{html.escape(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(summary: Summary) -> str:
    """The summary as one self-contained HTML page."""
    results = summary.results
    out = ["<h1>Class summary</h1>",
           f"<p>{len(results.students)} students graded in <code>{html.escape(str(summary.folder))}</code>. "
           "Statuses: " + html.escape(", ".join(f"{s} {n}" for s, n in summary.statuses)) + ".</p>"]
    if results.damaged:
        out.append(f"<p>Damaged results files (grade those students again): "
                   f"{html.escape(', '.join(results.damaged))}</p>")
    out += ["<h2>Score distribution</h2>",
            "<p><em>full</em>: students with every point of the part; <em>zero</em>: with none.</p>",
            _table(["part", *STAT_COLUMNS], [[name, *(stats[c] for c in STAT_COLUMNS)]
                                            for name, stats in summary.distribution()], [False] + [True] * 8),
            f"<img alt=\"histograms of each part's score\" src=\"data:image/png;base64,"
            f"{plot_parts(part_scores(results), summary.maxima())}\">",
            "<h2>Tests most students failed</h2><p>Among the students graded (status ok).</p>"]
    failed = most_failed(results)
    rows = [[name, part, f"{count} of {graded}",
             "\n".join(f"{n}×: {message}" for message, n in messages)] for name, part, count, graded, messages in failed]
    out.append(_table(["test", "part", "failed by", "most common messages"], rows).replace(
        "<td>", "<td class=\"msg\">") if rows else "<p>No test was failed.</p>")
    out.append("<h2>Leaderboard</h2>")
    spread = summary.spread
    out += [f"<p>{html.escape(line)}</p>" for line in _spread_md(spread) if line and not line.startswith("|")]
    if spread is not None and spread.ranked:
        out.append(_table(["", "min", "median", "max"],
                          [["accuracy (%)", *(f"{v:.2f}" for v in spread.accuracy)],
                           ["compression rate (×)", *(f"{v:.2f}" for v in spread.rate)]], [False, True, True, True]))
        out.append(f"<img alt=\"histogram of the compression rates\" src=\"data:image/png;base64,"
                   f"{plot_rates(spread.rates)}\">")
    out.append("<h2>Students whose status is not ok</h2>")
    others = not_ok(results)
    out.append(_table(["student", "status"], others) if others else "<p>Everyone's status is ok.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Class summary</title>"
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(out) + "\n</body></html>\n")


def write(folder: Path, out: Path, board: Optional[Path] = None) -> Summary:
    """Make the summary of the grading ``folder`` (and of the leaderboard ``board``) into ``out``."""
    board = board if board is not None else folder
    summary = Summary(Path(folder), load_results(folder), leaderboard_spread(board))
    write_atomic(out / "summary.md", markdown(summary))
    write_atomic(out / "summary.html", page(summary))
    return summary


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader summary", description=__doc__.splitlines()[0])
    parser.add_argument("graded", type=Path, help="the --out folder of `python -m grader grade`")
    parser.add_argument("--leaderboard", type=Path, help="the --out folder of `python -m grader leaderboard` "
                                                         "(default: look for leaderboard.csv in GRADED)")
    parser.add_argument("--out", type=Path, help="where to write summary.md and summary.html (default: GRADED)")
    args = parser.parse_args(argv)
    try:
        if args.leaderboard is not None and not (args.leaderboard / "leaderboard.csv").is_file():
            raise SummaryError(f"{args.leaderboard} holds no leaderboard.csv; give the leaderboard's --out folder")
        summary = write(args.graded, args.out or args.graded, args.leaderboard)
    except (SummaryError, OSError, csv.Error, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    where = args.out or args.graded
    print(f"{len(summary.results.students)} students; {len(not_ok(summary.results))} not ok: "
          f"{where / 'summary.md'} and {where / 'summary.html'}")
    return 0
