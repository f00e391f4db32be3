"""A report comparing eval runs: a markdown table, the setup needed to reproduce it, and plots.

An eval run is a directory written by the runner: `manifest.json` (how it was run),
`results.jsonl` (one line per item) and `summary.json` (the aggregate, written when the run
finishes). The report takes its numbers from the summary, and the per-item scores of
`results.jsonl` for the accuracy's interval and for the paired tests between runs
(`report_compare.py`; the methods are in `stats.py`).

In the markdown, "–" marks a field the run recorded as absent (or did not record), and "?" a
manifest fact of a run whose `manifest.json` is missing. Plots need matplotlib
(`pip install matplotlib`); without it `write_report` still writes the markdown.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentflow.exceptions import UserError
from agentflow_evals import _markdown as md
from agentflow_evals.report_compare import differences_section
from agentflow_evals.runs import Run, load_run
from agentflow_evals.stats import accuracy_interval, wilson_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

__all__ = ["Run", "load_run", "markdown_table", "plot_runs", "write_report"]

_UNKNOWN = "?"
_LONG_HASH = re.compile(r"\b([0-9a-f]{12})[0-9a-f]+\b")
_INSTALL_HINT = "plots need matplotlib: `pip install matplotlib`"


# --- reading fields ---------------------------------------------------------------------------


def _number(data: Mapping[str, object] | None, key: str) -> float | None:
    value = None if data is None else data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(run: Run, key: str) -> str:
    """A name from the summary, or else from the manifest ("?" when there is none)."""
    for source in (run.summary, run.manifest or {}):
        value = source.get(key)
        if value is not None:
            return str(value)
    return _UNKNOWN if run.manifest is None else md.MISSING


def _samples(run: Run) -> int:
    samples = _number(run.summary, "samples") or _number(run.manifest, "samples")
    return int(samples) if samples is not None else 1


def _per_item(run: Run, key: str) -> float | None:
    total, n = _number(run.summary, key), _number(run.summary, "n")
    return total / n if total is not None and n else None


def _bounds(run: Run) -> tuple[float, float] | None:
    """The 95% interval of the accuracy from the per-item scores (`stats.accuracy_interval`).
    A run without them falls back to the summary's accuracy and n, which is right only when
    each item was one trial (one sample)."""
    if run.scores:
        return _cached_interval(tuple(run.scores.values()))
    p, n = _number(run.summary, "accuracy"), _number(run.summary, "n")
    if p is None or not n or _samples(run) > 1:
        return None
    return wilson_interval(round(min(max(p, 0.0), 1.0) * n), int(n))


@functools.lru_cache(maxsize=64)
def _cached_interval(scores: tuple[float, ...]) -> tuple[float, float]:
    """The table and each plot ask for the same run's interval; a bootstrap takes a second."""
    return accuracy_interval(scores)


# --- formatting -------------------------------------------------------------------------------


def _interval(run: Run) -> str:
    bounds = _bounds(run)
    return md.MISSING if bounds is None else f"[{100 * bounds[0]:.1f}, {100 * bounds[1]:.1f}]"


# --- the results table ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Column:
    header: str
    cell: Callable[[Run], str]
    right: bool = True
    shown: Callable[[Sequence[Run]], bool] = lambda runs: True
    note: str = ""
    """What the column means, for the legend under the table."""


def _any(key: str) -> Callable[[Sequence[Run]], bool]:
    return lambda runs: any(_number(run.summary, key) is not None for run in runs)


def _multi_sample(key: str) -> Callable[[Run], str]:
    return lambda run: md.percent(_number(run.summary, key)) if _samples(run) > 1 else md.MISSING


_COLUMNS = (
    _Column(header="run", cell=lambda r: md.plain(r.name), right=False),
    _Column(header="dataset", cell=lambda r: md.plain(_text(r, "dataset")), right=False),
    _Column(header="planner", cell=lambda r: md.plain(_text(r, "planner")), right=False),
    _Column(header="model", cell=lambda r: md.plain(_text(r, "model")), right=False),
    _Column(header="n", cell=lambda r: md.count(_number(r.summary, "n")), note="items scored"),
    _Column(
        header="accuracy",
        cell=lambda r: md.percent(_number(r.summary, "accuracy")),
        note="mean over items of the fraction of correct samples",
    ),
    _Column(
        header="95% CI",
        cell=_interval,
        note="interval of the accuracy over the items, in %: Wilson when each item has one "
        "sample, a bootstrap over items when its score is the mean of several",
    ),
    _Column(header="EM", cell=lambda r: md.percent(_number(r.summary, "em")), shown=_any("em")),
    _Column(header="F1", cell=lambda r: md.percent(_number(r.summary, "f1")), shown=_any("f1")),
    _Column(
        header="avg@k",
        cell=_multi_sample("avg_at_k"),
        shown=lambda runs: any(_samples(r) > 1 for r in runs),
        note="mean accuracy over the k samples of an item",
    ),
    _Column(
        header="maj@k",
        cell=_multi_sample("maj_at_k"),
        shown=lambda runs: any(_samples(r) > 1 for r in runs),
        note="accuracy of the majority answer of the k samples",
    ),
    _Column(
        header="calib. error",
        cell=lambda r: md.count(_number(r.summary, "calibration_error"), 3),
        shown=_any("calibration_error"),
        note="calibration error of the answers' confidence, lower is better",
    ),
    _Column(
        header="p50 (s)",
        cell=lambda r: md.seconds(_number(r.summary, "latency_p50")),
        note="median wall-clock seconds per item",
    ),
    _Column(
        header="p90 (s)",
        cell=lambda r: md.seconds(_number(r.summary, "latency_p90")),
        note="90th percentile",
    ),
    _Column(
        header="tokens",
        cell=lambda r: md.count(_number(r.summary, "tokens_total")),
        note="prompt + completion tokens of the whole run",
    ),
    _Column(
        header="tokens/item",
        cell=lambda r: md.count(_per_item(r, "tokens_total")),
        note="run total divided by n (all samples of an item together), as are the calls per item",
    ),
    _Column(header="model calls/item", cell=lambda r: md.count(_per_item(r, "model_calls"), 1)),
    _Column(header="tool calls/item", cell=lambda r: md.count(_per_item(r, "tool_calls"), 1)),
    _Column(
        header="errors",
        cell=lambda r: md.count(_number(r.summary, "errors")),
        note="samples that ended in an error",
    ),
)


def _results_table(runs: Sequence[Run]) -> str:
    columns = [column for column in _COLUMNS if column.shown(runs)]
    rows = [[column.cell(run) for column in columns] for run in runs]
    table = md.table([c.header for c in columns], rows, [c.right for c in columns])
    legend = "; ".join(f"*{c.header}*: {c.note}" for c in columns if c.note)
    return f"{table}\n\n{legend}. A dash (–) marks a value the run did not record."


# --- the setup facts --------------------------------------------------------------------------

_FACTS = (
    ("model", "model"),
    ("dataset", "dataset"),
    ("dataset sha256", "dataset_sha256"),
    ("prompts sha256", "prompts_sha256"),
    ("judge model", "judge_model"),
    ("git revision", "git_revision"),
    ("agentflow version", "agentflow_version"),
    ("temperature", "temperature"),
    ("max tokens", "max_tokens"),
    ("samples", "samples"),
    ("seed", "seed"),
    ("limit", "limit"),
    ("concurrency", "concurrency"),
    ("model servers", "base_urls"),
)


def _fact(run: Run, key: str) -> str:
    if run.manifest is None:
        return _UNKNOWN
    value = run.manifest.get(key)
    if value is None:
        return md.MISSING
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, str):
        return "`" + _LONG_HASH.sub(r"\1", value) + "`"
    return str(value)


def _facts(runs: Sequence[Run]) -> str:
    values = {label: [_fact(run, key) for run in runs] for label, key in _FACTS}
    shared = [f"- {label}: {row[0]}" for label, row in values.items() if len(set(row)) == 1]
    differ = [[label, *row] for label, row in values.items() if len(set(row)) > 1]
    heading = "Setup shared by all runs" if len(runs) > 1 else "Setup"
    parts = [f"**{heading}** (hashes shortened to 12 characters)", "\n".join(shared)]
    if not shared:
        parts = []
    if differ:
        header = ["", *(md.plain(run.name) for run in runs)]
        table = md.table(header, differ, [False] * len(header))
        parts += ["**Setup that differs between runs**", table]
    return "\n\n".join(part for part in parts if part)


def _commands(runs: Sequence[Run]) -> str:
    lines: list[str] = []
    for run in runs:
        command = run.manifest.get("command") if run.manifest is not None else None
        recorded = isinstance(command, str) and bool(command)
        lines.append(f"# {run.name}" + ("" if recorded else ": command not recorded"))
        if recorded:
            lines.append(str(command))
    return "**Commands**\n\n```sh\n" + "\n".join(lines) + "\n```"


def _caveats(runs: Sequence[Run]) -> list[str]:
    notes = []
    hashes = {run.manifest.get("dataset_sha256") for run in runs if run.manifest is not None}
    if len(hashes - {None}) > 1:
        notes.append("The runs used different datasets (dataset sha256 differs).")
    if len({_number(run.summary, "n") for run in runs} - {None}) > 1:
        notes.append("The runs scored different numbers of items (n).")
    lines = [f"> **Note:** {note} Their scores are not directly comparable." for note in notes]
    for run in runs:
        n = _number(run.summary, "n")
        unfinished = _number(run.summary, "unfinished")
        if unfinished:  # items failed on the server: the run stopped with an error
            lines.append(
                f"> **Note:** {md.plain(run.name)} is unfinished: {unfinished:.0f} items were "
                "never answered (the model server failed); its figures cover the rest only. "
                "Resume it with its own command."
            )
        if run.scores and n is not None and n != len(run.scores):
            lines.append(
                f"> **Note:** {md.plain(run.name)} has {len(run.scores)} items in results.jsonl "
                f"but n = {n:.0f} in summary.json; its 95% CI and the differences use "
                "results.jsonl."
            )
    return lines


def markdown_table(runs: Sequence[Run]) -> str:
    """The results table, one row per run, then the setup facts a reader needs to reproduce it."""
    if not runs:
        raise UserError("no runs to report: pass at least one run directory")
    parts = [_results_table(runs), *_caveats(runs), _facts(runs), _commands(runs)]
    return "\n\n".join(parts) + "\n"


# --- plots ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Point:
    run: Run
    label: str
    x: float
    accuracy: float
    low: float
    high: float


@dataclass(frozen=True, kw_only=True)
class _Plot:
    filename: str
    title: str
    xlabel: str
    x: Callable[[Run], float | None]
    thousands: bool


_PLOTS = (
    _Plot(
        filename="accuracy_vs_tokens.png",
        title="Accuracy vs. tokens per item",
        xlabel="tokens per item (prompt + completion)",
        x=lambda run: _per_item(run, "tokens_total"),
        thousands=True,
    ),
    _Plot(
        filename="accuracy_vs_latency.png",
        title="Accuracy vs. median latency",
        xlabel="latency p50 per item (s)",
        x=lambda run: _number(run.summary, "latency_p50"),
        thousands=False,
    ),
)

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
_MARKER_SIZE = 6.0
_LABEL_OFFSETS = (  # points right/up, then the other corners, then above and below
    (7, 3, "left", "bottom"),
    (7, -3, "left", "top"),
    (-7, 3, "right", "bottom"),
    (-7, -3, "right", "top"),
    (0, 9, "center", "bottom"),
    (0, -9, "center", "top"),
)
_SIZE_INCHES = (5.0, 3.5)
_TITLE_CHARS = 62  # what fits on one line of a 5-inch-wide figure at 9.5 pt
_DPI = 200


def _labels(runs: Sequence[Run]) -> list[str]:
    planners = [_text(run, "planner") for run in runs]
    if {_UNKNOWN, md.MISSING} & set(planners) or len(set(planners)) < len(planners):
        return [run.name for run in runs]
    return planners


def _points(runs: Sequence[Run], plot: _Plot) -> list[_Point]:
    points = []
    for run, label in zip(runs, _labels(runs), strict=True):
        x, accuracy, bounds = plot.x(run), _number(run.summary, "accuracy"), _bounds(run)
        if x is None or x <= 0 or accuracy is None:
            continue
        low, high = bounds if bounds is not None else (accuracy, accuracy)
        low, high = min(low, accuracy), max(high, accuracy)  # a stale summary may lie outside
        point = _Point(run=run, label=label, x=x, accuracy=accuracy, low=low, high=high)
        points.append(point)
    return points


def _subtitle(runs: Sequence[Run]) -> str:
    """The datasets and models, on one line if they fit, else on two, else counted."""

    def names(key: str, plural: str) -> str:
        found = sorted({_text(run, key) for run in runs})
        joined = ", ".join(found)
        return joined if len(joined) <= _TITLE_CHARS else f"{len(found)} {plural}"

    datasets, models = names("dataset", "datasets"), names("model", "models")
    line = f"{datasets} · {models}"
    return line if len(line) <= _TITLE_CHARS else f"{datasets}\n{models}"


def _new_figure() -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    figure = Figure(figsize=_SIZE_INCHES, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _draw_points(axes: Axes, points: Sequence[_Point]) -> None:
    for i, point in enumerate(points):
        axes.errorbar(
            [point.x],
            [100 * point.accuracy],
            yerr=[[100 * (point.accuracy - point.low)], [100 * (point.high - point.accuracy)]],
            fmt=_MARKERS[i % len(_MARKERS)],
            color=f"C{i % 10}",
            markersize=_MARKER_SIZE,
            elinewidth=0.8,
            capsize=2.5,
            zorder=3,
            clip_on=False,
        )


def _obstacles(axes: Axes, points: Sequence[_Point]) -> list[Bbox]:
    """Display-space boxes around each marker and error bar, which labels should not cover."""
    from matplotlib.transforms import Bbox

    radius = (_MARKER_SIZE / 2 + 1) * _DPI / 72
    boxes = []
    for point in points:
        x, y = axes.transData.transform((point.x, 100 * point.accuracy))
        low = axes.transData.transform((point.x, 100 * point.low))[1]
        high = axes.transData.transform((point.x, 100 * point.high))[1]
        boxes.append(Bbox.from_extents(x - radius, y - radius, x + radius, y + radius))
        boxes.append(Bbox.from_extents(x - radius / 2, low, x + radius / 2, high))
    return boxes


def _overlap(box: Bbox, others: Iterable[Bbox]) -> float:
    area = 0.0
    for other in others:
        width = min(box.x1, other.x1) - max(box.x0, other.x0)
        height = min(box.y1, other.y1) - max(box.y0, other.y0)
        area += max(width, 0.0) * max(height, 0.0)
    return area


def _label_points(figure: Figure, axes: Axes, points: Sequence[_Point]) -> None:
    """Label each point at the candidate offset that covers the least of the others."""
    figure.draw_without_rendering()
    taken = _obstacles(axes, points)
    for point in points:
        scored = []
        for dx, dy, ha, va in _LABEL_OFFSETS:
            text = axes.annotate(
                point.label,
                (point.x, 100 * point.accuracy),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=8,
                color="0.15",
                parse_math=False,
                zorder=4,
            )
            box = text.get_window_extent()
            outside = box.width * box.height - _overlap(box, [axes.bbox])
            scored.append((_overlap(box, taken) + 4 * outside, box, text))
        best = min(scored, key=lambda entry: entry[0])
        for _, _, text in scored:
            if text is not best[2]:
                text.remove()
        taken.append(best[1])


def _style_axes(axes: Axes, points: Sequence[_Point], plot: _Plot) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter

    xs = [point.x for point in points]
    axes.margins(x=0.15, y=0.15)
    if max(xs) > 10 * min(xs):
        axes.set_xscale("log")
        if max(xs) <= 1000 * min(xs):
            axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_minor_formatter(NullFormatter())
    else:
        axes.set_xlim(left=0.0)
    if plot.thousands:
        axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    axes.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    low, high = axes.get_ylim()
    axes.set_ylim(max(low, 0.0), min(high, 100.0))
    axes.set_xlabel(plot.xlabel, fontsize=9)
    axes.set_ylabel("accuracy (%)", fontsize=9)
    axes.tick_params(labelsize=8)
    axes.grid(True, linewidth=0.4, color="0.85", zorder=0)
    axes.spines[["top", "right"]].set_visible(False)


def _scatter(points: Sequence[_Point], plot: _Plot, path: Path) -> Path:
    figure = _new_figure()
    axes = figure.add_subplot()
    _draw_points(axes, points)
    _style_axes(axes, points, plot)
    subtitle = _subtitle([point.run for point in points])
    axes.set_title(f"{plot.title}\n{subtitle}", fontsize=9.5, parse_math=False)
    _label_points(figure, axes, points)
    figure.savefig(path, format="png", dpi=_DPI, facecolor="white")
    return path


def plot_runs(runs: Sequence[Run], out_dir: Path) -> list[Path]:
    """PNG scatter plots of accuracy against tokens and latency; raises ImportError without
    matplotlib. A plot none of whose runs has both numbers is not drawn."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for plot in _PLOTS:
        points = _points(runs, plot)
        if points:
            paths.append(_scatter(points, plot, out_dir / plot.filename))
    return paths


# --- the report -------------------------------------------------------------------------------


def _figures_section(runs: Sequence[Run], out: Path) -> str:
    try:
        paths = plot_runs(runs, out)
    except ImportError:
        return f"_No plots: {_INSTALL_HINT}._"
    if not paths:
        return "_No plots: no run has both an accuracy and a cost to plot._"
    links = (f"![{_alt_text(path)}]({path.relative_to(out).as_posix()})" for path in paths)
    return "\n\n".join(links)


def _alt_text(path: Path) -> str:
    return next(plot.title for plot in _PLOTS if plot.filename == path.name)


def write_report(run_dirs: Sequence[Path], out: Path) -> Path:
    """Write `out/report.md` (table, setup, the paired tests between runs when there are
    several, plots as relative links) and the PNGs into `out`."""
    runs = [load_run(Path(run_dir)) for run_dir in run_dirs]
    if not runs:
        raise UserError("no runs to report: pass at least one run directory")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # --out names a file, or a place we may not write
        raise UserError(f"cannot write the report into {out} ({exc.strerror})") from exc
    parts = ["# Eval report", "## Results", markdown_table(runs).rstrip()]
    if len(runs) > 1:
        parts += ["## Differences between runs", differences_section(runs)]
    parts += ["## Figures", _figures_section(runs, out)]
    report = out / "report.md"
    report.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return report
