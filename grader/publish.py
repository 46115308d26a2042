"""Write the leaderboard's outputs: CSV, Markdown, a self-contained HTML page, its plot, details, final grades.

The writers are shared by both leaderboards; a :class:`Layout` says what one
of them shows (Part 1's is ``COMPRESSION``, the deployable models' is in
``grader/onnx_leaderboard.py``).

All files are written atomically (a temporary file renamed over the old
one), so a run killed while publishing leaves the previous version intact.
The HTML page has no scripts and loads nothing: its CSS is inline and the
plot is an inline SVG (the same plot is saved as ``leaderboard.png``). Every
text that comes from a submission is escaped.
"""
import csv
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from grader.files import write_atomic
from grader import homework
from grader.ranking import BOTTOM_POINTS, MIDDLE_POINTS, TOP_POINTS, Row, original_bytes

CSV_COLUMNS = ["rank", "student_id", "accuracy", "compression_rate", "compressed_bytes", "qualified", "points",
               "status"]
FINAL_COLUMNS = ["student_id", *homework.PART_NAMES, homework.RANKING_NAME, homework.DEPLOY_COLUMN, "total"]
"""final_grades.csv: Part 1's parts, the ranking, Part 2's total, and the total (Part 1's code and ranking, plus
Part 2's points when ``homework.DEPLOY_SCORING`` is ``"bonus"``)."""
TIER_COLOURS = {TOP_POINTS: "#1a9850", MIDDLE_POINTS: "#f39c12", BOTTOM_POINTS: "#4575b4"}
BELOW_GATE_COLOUR = "#c0392b"
TIER_RULE = ("Qualified models (accuracy strictly above the gate) are ranked by compression rate. With n of them, "
             f"rank r earns {TOP_POINTS} points if r ≤ ⌈n/3⌉, {MIDDLE_POINTS} points if r ≤ ⌈2n/3⌉, otherwise "
             f"{BOTTOM_POINTS}. Equal rates share the best rank of their group. Every other submission earns 0.")


def cells(row: Row) -> Dict[str, str]:
    """The CSV fields of one leaderboard row, as text (empty where there is nothing to say)."""
    entry, measured = row.entry, not row.entry.problem
    return {"rank": "" if row.rank is None else str(row.rank),
            "student_id": entry.student_id,
            "accuracy": f"{entry.accuracy:.2f}" if measured else "",
            "compression_rate": f"{entry.rate:.2f}" if measured else "",
            "compressed_bytes": str(entry.compressed_bytes) if measured else "",
            "qualified": "yes" if row.qualified else "no",
            "points": str(row.points),
            "status": row.status}


def to_csv(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _md(text: str) -> str:
    return html.escape(text, quote=False).replace("\\", "\\\\").replace("|", "\\|")


def headline(rows: Sequence[Row], gate: str) -> str:
    """The sentence under the title: gate, test set, how many ranked."""
    images = max((r.entry.total for r in rows), default=0)
    test_set = f"the {images:,} CIFAR-10 test images" if images else "the CIFAR-10 test images"
    return (f"Gate: accuracy above {gate}% on {test_set}. {sum(r.qualified for r in rows)} of {len(rows)} "
            f"students ranked; compression is measured against {original_bytes():,} bytes (AlexNet in float32).")


@dataclass(frozen=True)
class Column:
    """One column of a published table: its header, its text from a row's ``cells``, its kind.

    ``kind`` is a CSS class: "num" (right-aligned figures), "id" (never wrapped) or "" (free text)."""
    header: str
    text: Callable[[Mapping[str, str]], str]
    kind: str = "num"


@dataclass(frozen=True)
class Layout:
    """What makes one leaderboard's pages: its title, CSV, tables, plot and details (the writers are shared)."""
    title: str
    csv_columns: Sequence[str]
    cells: Callable[[Row], Dict[str, str]]
    ranked: Sequence[Column]
    others: Sequence[Column]
    rule: str
    headline: Callable[[Sequence[Row], str], str]
    details: Callable[..., str]
    row_class: Callable[[Row], str]
    groups: Callable[[], Sequence[Tuple[str, Callable[[Row], bool], str]]]
    """Plot groups: (label, which rows, colour)."""
    x: Callable[[Row], float]
    x_label: str
    plot_title: str
    x_format: Optional[Callable[[float], str]] = None
    empty_xlim: Tuple[float, float] = (1, 1000)
    others_title: str = "Not ranked (0 points)"


def markdown(rows: Sequence[Row], gate: str, layout: Optional[Layout] = None) -> str:
    """The leaderboard as a Markdown page: ranked table, then everything else with its reason."""
    layout = layout or COMPRESSION

    def table(columns: Sequence[Column], members: Sequence[Row]) -> List[str]:
        lines = ["| " + " | ".join(column.header for column in columns) + " |",
                 "|" + "|".join("---:" if column.kind == "num" else "---" for column in columns) + "|"]
        for row in members:
            c = layout.cells(row)
            lines.append("| " + " | ".join(_md(column.text(c)) for column in columns) + " |")
        return lines

    lines = [f"# {layout.title}", "", layout.headline(rows, gate), "", layout.rule, ""]
    lines += table(layout.ranked, [r for r in rows if r.qualified])
    others = [r for r in rows if not r.qualified]
    if others:
        lines += ["", f"## {layout.others_title}", ""] + table(layout.others, others)
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Row], gate: str, png_path: Path, layout: Optional[Layout] = None) -> str:
    """Scatter accuracy against the layout's x (log scale) with the gate; save a PNG and return the plot as SVG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    layout = layout or COMPRESSION
    matplotlib.rcParams["svg.hashsalt"] = "leaderboard"  # stable ids: the same data gives the same file
    measured = [r for r in rows if not r.entry.problem]
    figure, axes = plt.subplots(figsize=(8, 5))
    for label, belongs, colour in layout.groups():
        members = [r for r in measured if belongs(r)]
        if members:
            axes.scatter([layout.x(r) for r in members], [r.entry.accuracy for r in members], s=42,
                         color=colour, edgecolor="black", linewidth=0.5, label=f"{label} ({len(members)})", zorder=3)
    if len(measured) <= 40:
        for r in measured:
            axes.annotate(r.entry.student_id, (layout.x(r), r.entry.accuracy), textcoords="offset points",
                          xytext=(4, 4), fontsize=7)
    axes.axhline(float(gate), color="black", linestyle="--", linewidth=1, label=f"gate: {gate}%", zorder=2)
    axes.set_xscale("log")
    axes.margins(x=0.2, y=0.12)
    if layout.x_format:
        label = matplotlib.ticker.FuncFormatter(lambda value, _: layout.x_format(value))
        axes.xaxis.set_major_formatter(label)
        axes.xaxis.set_minor_formatter(label)
    axes.tick_params(axis="x", which="both", labelsize=8)
    axes.set_xlabel(layout.x_label)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(layout.plot_title)
    axes.grid(True, which="both", alpha=0.3)
    if not measured:
        axes.text(0.5, 0.5, "no model could be measured", transform=axes.transAxes, ha="center")
        axes.set_xlim(*layout.empty_xlim)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120, metadata={"Software": None})
    svg = io.StringIO()
    figure.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(figure)
    write_atomic(png_path, png.getvalue())
    text = svg.getvalue()
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S)


PAGE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 62rem;
       color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } p.lead { color: #555; margin-top: 0; }
figure { margin: 1.5rem 0; } figure svg { width: 100%; height: auto; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0 2rem; font-size: 0.95rem; }
th, td { padding: 0.35rem 0.6rem; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f3f3f3; } td.id { white-space: nowrap; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.p10 td:first-child { border-left: 6px solid #1a9850; } tr.p5 td:first-child { border-left: 6px solid #f39c12; }
tr.p0 td:first-child { border-left: 6px solid #4575b4; } tr.out td:first-child { border-left: 6px solid #c0392b; }
tr.in td:first-child { border-left: 6px solid #1a9850; }
.rule { background: #f7f7f7; padding: 0.6rem 0.8rem; border-radius: 4px; font-size: 0.9rem; }
"""


def _cell(text: str, kind: str = "") -> str:
    """A table cell; ``kind`` is a CSS class: "num" (right-aligned figures) or "id" (never wrapped)."""
    return f"<td class=\"{kind}\">{html.escape(text)}</td>" if kind else f"<td>{html.escape(text)}</td>"


def page(rows: Sequence[Row], gate: str, svg: str, layout: Optional[Layout] = None) -> str:
    """The self-contained HTML leaderboard: summary, plot, ranked table, then the rest with reasons."""
    layout = layout or COMPRESSION

    def table(columns: Sequence[Column], members: Sequence[Row], row_class: Callable[[Row], str]) -> List[str]:
        lines = ["<table><thead><tr>" + "".join(f"<th>{html.escape(column.header)}</th>" for column in columns)
                 + "</tr></thead><tbody>"]
        for row in members:
            c = layout.cells(row)
            lines.append(f"<tr class=\"{row_class(row)}\">"
                         + "".join(_cell(column.text(c), column.kind) for column in columns) + "</tr>")
        return lines + ["</tbody></table>"]

    others = [r for r in rows if not r.qualified]
    body = [f"<h1>{html.escape(layout.title)}</h1>",
            f"<p class=\"lead\">{html.escape(layout.headline(rows, gate))}</p>",
            f"<p class=\"rule\">{html.escape(layout.rule)}</p>",
            f"<figure>{svg}</figure>",
            "<h2>Ranking</h2>"]
    body += table(layout.ranked, [r for r in rows if r.qualified], layout.row_class)
    if others:
        body += [f"<h2>{html.escape(layout.others_title)}</h2>"] + table(layout.others, others, lambda r: "out")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(layout.title)}</title><style>{PAGE_STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def details(row: Row, n_ranked: int, measurement=None, gate: str = "") -> str:
    """The per-student text file: the numbers, the verdict and the encoder's per-layer table."""
    entry = row.entry
    lines = [f"student: {entry.student_id}", f"status: {row.status}"]
    if not entry.problem:
        lines += [f"accuracy: {entry.accuracy:.2f}% ({entry.correct}/{entry.total} test images; the gate is "
                  f"above {gate}%)",
                  f"compressed size: {entry.compressed_bytes:,} bytes of {original_bytes():,} "
                  f"({entry.rate:.2f}x, {100 * entry.compressed_bytes / original_bytes():.2f}%)"]
    if row.rank is not None:
        lines.append(f"rank: {row.rank} of {n_ranked} ranked")
    lines.append(f"ranking points: {row.points}")
    if measurement is not None and measurement.table:
        lines += ["", "Where the bytes went (the reference Huffman encoder; biases are stored raw, 4 bytes each):",
                  "", measurement.table]
    return "\n".join(lines) + "\n"


def _number(text: Optional[str]) -> float:
    try:
        return float(text) if text not in (None, "") else 0.0
    except ValueError:
        return 0.0


def final_grades(rows: Sequence[Row], grades: Mapping[str, Mapping[str, str]]) -> List[Dict[str, str]]:
    """Merge the grader's parts with the ranking points; a student found in only one of them still gets a row.
    Part 2 counts in the total only as a bonus (``homework.counted_parts``)."""
    points = {row.entry.student_id: row.points for row in rows}
    merged = []
    for student_id in sorted(set(points) | set(grades)):
        graded = grades.get(student_id, {})
        parts = {part: _number(graded.get(part)) for part in homework.PART_NAMES}
        bonus = sum(_number(graded.get(part)) for part in homework.counted_parts() if part not in parts)
        ranking = points.get(student_id, 0)
        deploy = _number(graded.get(homework.DEPLOY_COLUMN))
        merged.append({"student_id": student_id, **{p: f"{v:g}" for p, v in parts.items()}, "ranking": str(ranking),
                       homework.DEPLOY_COLUMN: f"{deploy:g}", "total": f"{sum(parts.values()) + ranking + bonus:g}"})
    return merged


def write_all(out_dir: Path, rows: Sequence[Row], measurements: Mapping[str, object], gate: str,
              grades: Optional[Mapping[str, Mapping[str, str]]] = None, layout: Optional[Layout] = None) -> None:
    """Write every output of the leaderboard into ``out_dir`` (``final_grades.csv`` only when ``grades`` is given)."""
    layout = layout or COMPRESSION
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "leaderboard.csv", to_csv([layout.cells(r) for r in rows], layout.csv_columns))
    write_atomic(out_dir / "leaderboard.md", markdown(rows, gate, layout))
    svg = plot(rows, gate, out_dir / "leaderboard.png", layout)
    write_atomic(out_dir / "leaderboard.html", page(rows, gate, svg, layout))
    n_ranked = sum(r.qualified for r in rows)
    for row in rows:
        student_id = row.entry.student_id
        if homework.STUDENT_ID.fullmatch(student_id) and (student_id in measurements or row.entry.problem.startswith("missing")):
            write_atomic(out_dir / "details" / f"{student_id}.txt",
                         layout.details(row, n_ranked, measurements.get(student_id), gate))
    if grades is not None:
        write_atomic(out_dir / "final_grades.csv", to_csv(final_grades(rows, grades), FINAL_COLUMNS))


def _tier_groups() -> Sequence[Tuple[str, Callable[[Row], bool], str]]:
    return [(f"{TOP_POINTS} points", lambda r: r.qualified and r.points == TOP_POINTS, TIER_COLOURS[TOP_POINTS]),
            (f"{MIDDLE_POINTS} points", lambda r: r.qualified and r.points == MIDDLE_POINTS,
             TIER_COLOURS[MIDDLE_POINTS]),
            ("0 points", lambda r: r.qualified and r.points == 0, TIER_COLOURS[0]),
            ("below the gate", lambda r: not r.qualified, BELOW_GATE_COLOUR)]


def _times(text: str) -> str:
    return f"{text}×" if text else ""


COMPRESSION = Layout(
    title="Compression-rate leaderboard", csv_columns=CSV_COLUMNS, cells=cells,
    ranked=(Column("rank", lambda c: c["rank"]), Column("student", lambda c: c["student_id"], "id"),
            Column("accuracy (%)", lambda c: c["accuracy"]),
            Column("compression rate", lambda c: f"{c['compression_rate']}×"),
            Column("compressed bytes", lambda c: f"{int(c['compressed_bytes']):,}"),
            Column("points", lambda c: c["points"])),
    others=(Column("student", lambda c: c["student_id"], "id"), Column("accuracy (%)", lambda c: c["accuracy"]),
            Column("compression rate", lambda c: _times(c["compression_rate"])),
            Column("reason", lambda c: c["status"], "")),
    rule=TIER_RULE, headline=headline, details=details, row_class=lambda row: f"p{row.points}",
    groups=_tier_groups, x=lambda row: row.entry.rate,
    x_label="compression rate (original bytes / compressed bytes, log scale)",
    plot_title="Accuracy against compression rate", x_format=lambda value: f"{value:g}×")
"""Part 1's leaderboard: ranked by compression rate, tiered into points."""
