"""The renderers of a BenchReport: its text table, its HTML table, its matplotlib chart, and where each is shown."""

from __future__ import annotations

import html
import os
import textwrap
import time
from pathlib import Path

from ..bars import text_bar
from .report import COMPILED, NOISY, OURS, BenchReport, MethodResult

# The report's look. The colours read on light and dark themes alike (mid tones; the tint is
# translucent); the ceiling tick takes the text's own colour.
BAR_WIDTH = 20  # characters of a text bar from 0x to the ceiling
HTML_BAR_EM = 10  # the same in an HTML bar, in em
HTML_BEYOND = 0.2  # an HTML bar shows up to this fraction past the ceiling, then » (cut)
BAR_COLOUR, OURS_COLOUR = "#4c72b0", "#dd8452"
OURS_TINT = "rgba(221,132,82,0.18)"
FLAG_COLOUR, NOISE_COLOUR = "#d62728", "#e08a00"


def ceiling_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A fraction of the ceiling as a text bar, then a | at the ceiling; » after it for a bar that goes past."""
    past = round(max(fraction, 0.0) * width * 8) > width * 8
    return text_bar(fraction, width) + "|" + ("»" if past else " ")


def _wrap(text: str) -> list[str]:
    """A line of the text report kept near 110 characters, what follows indented."""
    return textwrap.wrap(text, 110, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def _html_flag(mark: str, colour: str, why: str) -> str:
    return f'<span style="color:{colour};font-weight:bold;cursor:help" title="{html.escape(why)}">{mark}</span>'


def text_table(report: BenchReport) -> str:
    """The report as text (the terminal's, and text/plain): a row per method, our row marked
    ▶, a speedup bar per row with a | at the ceiling, flags on the figures, then the warnings."""
    scale = f"{'0':<{BAR_WIDTH - len(str(report.ceiling)) - 1}}{report.ceiling}x|"  # its | over the bars' |
    columns = (
        f"  {'method':<31}{'time':>9}{'spread':>7}{'speedup':>9}  {scale:<{BAR_WIDTH + 2}}{'CPU':>5}{'eff.':>6}  note"
    )
    lines = [report.headline + ",", f"  {report.machine}", columns]
    for r in report.rows:
        mark = "▶ " if r.method == OURS else "  "
        flag = "!" if report.above_ceiling(r.method) else " "
        noise = "~" if report.noisy(r.method) else " "
        efficiency = "-" if r.method in COMPILED else f"{report.efficiency(r.method):.0%}"
        lines.append(
            f"{mark}{r.method:<31}{r.median:>8.3f}s{r.spread:>6.0%}{noise}{report.speedup(r.method):>8.2f}x"
            f"{flag} {ceiling_bar(report.speedup(r.method) / report.ceiling)}{r.cpu_percent:>4.0f}%"
            f"{efficiency:>5}{flag} {r.note}"
        )
    lines.append("every method computed the same values" if report.agree else "VALUES DIFFER between methods")
    said = [f"{method}: not run ({why})" for method, why in report.skipped.items()]
    said.append(
        f"▶ marks ipy_parallel's row. spread: (slowest - fastest round) / median. Bars: speedup, longer is "
        f"better, | at the ceiling min(tasks, cores) = {report.ceiling}x. eff.: speedup / ceiling."
    )
    return "\n".join(lines + [line for text in said + report.warnings for line in _wrap(text)])


def html_table(report: BenchReport) -> str:
    """The report as HTML for a notebook (inline CSS only, so that it survives saving and
    nbconvert, in colours readable on light and dark themes): the table of text_table(), our row
    tinted and bold, a bar per method up to a tick at the ceiling, each flag on its figure
    with a tooltip saying why, then the warnings."""
    esc = html.escape
    cell = "padding:1px 8px;text-align:right;white-space:nowrap"
    # The bars' heading is a scale: "ceiling 2x" ends at the tick.
    scale = (
        f'<span style="display:inline-block;width:{HTML_BAR_EM}em;text-align:right">ceiling '
        f'{report.ceiling}x</span><span style="display:inline-block;width:{HTML_BEYOND * HTML_BAR_EM + 1}em">'
        "</span>"
    )
    heads = [
        ("method", "left"),
        ("time", "right"),
        ("spread", "right"),
        ("speedup", "right"),
        (scale, "left"),
        ("CPU", "right"),
        ("efficiency", "right"),
        ("note", "left"),
    ]
    out = [
        '<div class="ipy-parallel-bench" style="line-height:1.4">',
        f'<div style="font-weight:bold;margin-bottom:4px">{esc(report.headline)}, {esc(report.machine)}</div>',
        '<table style="border-collapse:collapse;line-height:1.4;color:inherit">',
        "<thead><tr>"
        + "".join(
            f'<th style="{cell};text-align:{align};border-bottom:1px solid '
            f'rgba(128,128,128,0.5)">{h if h is scale else esc(h)}</th>'
            for h, align in heads
        )
        + "</tr></thead><tbody>",
    ]
    for r in report.rows:
        speedup, ours = report.speedup(r.method), r.method == OURS
        above = _html_flag("!", FLAG_COLOUR, _above_why(report)) if report.above_ceiling(r.method) else ""
        noise = _html_flag("~", NOISE_COLOUR, _noisy_why(report, r)) if report.noisy(r.method) else ""
        efficiency = "-" if r.method in COMPILED else f"{report.efficiency(r.method):.0%}"
        style = f' style="background-color:{OURS_TINT};font-weight:bold"' if ours else ""
        marker = f' <span style="color:{OURS_COLOUR}">◀ ipy_parallel</span>' if ours else ""
        figures = [
            f"{r.median:.3f} s",
            f"{r.spread:.0%}{noise}",
            f"{speedup:.2f}x{above}",
            _html_bar(report, r),
            f"{r.cpu_percent:.0f}%",
            f"{efficiency}{above}",
        ]
        out.append(
            f"<tr{style}>"
            + f'<td style="{cell};text-align:left">{esc(r.method)}</td>'
            + "".join(f'<td style="{cell}">{f}</td>' for f in figures)
            + f'<td style="{cell};text-align:left">{esc(r.note)}{marker}</td></tr>'
        )
    out.append("</tbody></table>")
    if report.agree:
        out.append("<div>✓ every method computed the same values</div>")
    else:
        out.append(f'<div style="color:{FLAG_COLOUR};font-weight:bold">✗ VALUES DIFFER between methods</div>')
    out += [f"<div>{esc(method)}: not run ({esc(why)})</div>" for method, why in report.skipped.items()]
    if report.warnings:
        out.append(
            f'<ul style="margin:4px 0;padding-left:1.5em;border-left:3px solid {NOISE_COLOUR}">'
            + "".join(f"<li>{esc(w)}</li>" for w in report.warnings)
            + "</ul>"
        )
    out.append(
        f'<div style="opacity:0.75">bars: speedup over serial, longer is better, the tick at the ceiling '
        f"min(tasks, cores) = {report.ceiling}x; spread: (slowest - fastest round) / median; efficiency: "
        "speedup / ceiling; hover a ~ or ! for why it is flagged</div></div>"
    )
    return "".join(out)


def _html_bar(report: BenchReport, r: MethodResult) -> str:
    """A speedup bar: a track from 0x to a tick at the ceiling, then room for 20% more (a red
    fill there when the figure cannot be real), and » where the bar is cut."""
    speedup, compiled = report.speedup(r.method), r.method in COMPILED
    fraction = speedup / report.ceiling
    colour = OURS_COLOUR if r.method == OURS else BAR_COLOUR
    fade = ";opacity:0.55" if report.noisy(r.method) else ""  # a noisy figure is a paler bar
    why = (
        f"{speedup:.2f}x serial; compiled code, so no ceiling applies"
        if compiled
        else f"{speedup:.2f}x serial, {fraction:.0%} of the ceiling ({report.ceiling}x)"
    )
    inside = min(fraction, 1.0) * HTML_BAR_EM
    beyond = min(max(fraction - 1.0, 0.0), HTML_BEYOND) * HTML_BAR_EM
    beyond_colour = FLAG_COLOUR if report.above_ceiling(r.method) else colour
    return (
        f'<span title="{html.escape(why)}" style="display:inline-block;white-space:nowrap;text-align:left">'
        f'<span style="display:inline-block;vertical-align:middle;width:{HTML_BAR_EM}em;height:0.9em;'
        f'background-color:rgba(128,128,128,0.15);border-right:2px solid currentColor">'
        f'<span style="display:block;width:{inside:.2f}em;height:100%;background-color:{colour}{fade}"></span>'
        f'</span><span style="display:inline-block;vertical-align:middle;width:{HTML_BEYOND * HTML_BAR_EM}em;'
        f'height:0.9em"><span style="display:block;width:{beyond:.2f}em;height:100%;'
        f'background-color:{beyond_colour}{fade}"></span></span>'
        f'<span style="display:inline-block;width:1em">{"»" if fraction > 1 + HTML_BEYOND else ""}</span>'
        "</span>"
    )


def _above_why(report: BenchReport) -> str:
    return (
        f"above the ceiling of {report.ceiling}x (min(tasks, cores)): no method can be that much faster "
        "than serial; serial's rounds were slowed by other load. Rerun."
    )


def _noisy_why(report: BenchReport, r: MethodResult) -> str:
    return (
        f"noisy: its rounds differ by {r.spread:.0%} of their median (more than {NOISY:.0%}); "
        "the machine was shared meanwhile."
    )


def _figsize(report: BenchReport) -> tuple[float, float]:
    return 8, 0.45 * len(report.rows) + 1.4


def plot_speedups(report: BenchReport, ax=None):
    """A bar chart of the speedup over serial per method (matplotlib; longer is better): our
    row in its own colour, the ceiling min(tasks, cores) as a vertical line, the range of the
    rounds as error bars; noisy bars hatched //, bars above the ceiling hatched xx and marked
    !, and compiled code (no ceiling) cut at the right edge with its figure written on it."""
    from matplotlib.patches import Patch

    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=_figsize(report))
    rows = report.rows[::-1]  # barh draws bottom up: the table's first row on top
    names = [r.method for r in rows]
    speedups = [report.speedup(n) for n in names]
    # Compiled code's 40x would squash every other bar: the axis ends past the rest.
    right = 1.3 * max([report.ceiling, *(s for n, s in zip(names, speedups) if n not in COMPILED)])
    serial = report.row("serial").median
    colours = [OURS_COLOUR if n == OURS else BAR_COLOUR for n in names]
    bars = ax.barh(names, [min(s, right) for s in speedups], color=colours)
    for bar, r, speedup in zip(bars, rows, speedups):
        above, noisy = report.above_ceiling(r.method), report.noisy(r.method)
        if above or noisy:
            bar.set_hatch("xx" if above else "//")
            bar.set_edgecolor(FLAG_COLOUR if above else "0.2")
        label = f"{speedup:.2f}x" + (" !" if above else "") + (" ~" if noisy else "")
        y = bar.get_y() + bar.get_height() / 2
        if speedup > right:  # cut: no range to draw, its figure on the bar
            ax.text(right, y, f"{label} » ", va="center", ha="right", color="white", fontweight="bold")
            continue
        fastest = serial / min(r.times) if min(r.times) > 0 else speedup
        ax.errorbar(
            speedup,
            y,
            xerr=[[speedup - serial / max(r.times)], [fastest - speedup]],
            color="black",
            capsize=3,
            linewidth=1,
        )
        ax.text(max(speedup, fastest), y, f" {label}", va="center")
    ax.axvline(report.ceiling, color="0.35", linestyle="--", linewidth=1)
    ax.text(
        report.ceiling,
        1.0,
        f"ceiling {report.ceiling}x",
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="bottom",
        fontsize="small",
        color="0.35",
    )
    ax.set_xlim(0, right)
    for label in ax.get_yticklabels():
        if label.get_text() == OURS:
            label.set_fontweight("bold")
            label.set_color(OURS_COLOUR)
    flags = (
        [Patch(facecolor="none", edgecolor="0.2", hatch="//", label="~ noisy rounds")]
        if any(report.noisy(n) and not report.above_ceiling(n) for n in names)
        else []
    )
    if any(report.above_ceiling(n) for n in names):
        flags.append(Patch(facecolor="none", edgecolor=FLAG_COLOUR, hatch="xx", label="! above the ceiling"))
    if flags:
        ax.legend(
            handles=flags, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False, fontsize="small"
        )  # below the axes: inside, it would hide a bar
    ax.set_xlabel("speedup over serial (longer is better): median of the rounds, their range as error bars")
    ax.set_title(f"{report.tasks} tasks of n={report.size:,} on {report.cores} cores ({report.python})", pad=16)
    return ax


def save_plot(report: BenchReport, path: str | os.PathLike | None = None, dpi: int = 120) -> Path:
    """Draw plot_speedups() into an image file (PNG unless the name says otherwise) and return its
    absolute path; by default native_bench-YYYYmmdd-HHMMSS.png in the current directory.
    Needs matplotlib but not pyplot: no window opens and no figure is left open."""
    from matplotlib.figure import Figure

    target = Path(path if path is not None else time.strftime("native_bench-%Y%m%d-%H%M%S.png"))
    target = target.expanduser().resolve()
    if not target.suffix:
        target = target.with_suffix(".png")
    figure = Figure(figsize=_figsize(report))
    plot_speedups(report, figure.subplots())
    figure.savefig(target, dpi=dpi, bbox_inches="tight")
    return target


def show(report: BenchReport, notebook: bool, plot: bool = False, plot_file: str | os.PathLike | None = None) -> None:
    """Present the report where it ran: a notebook gets a display (its text and HTML both, so
    a saved notebook and nbconvert keep the table), anything else the printed table. The chart
    (``plot``, or a ``plot_file`` to save it in) goes inline in a notebook or to a window after
    %matplotlib, and to a file, whose path is printed, from a terminal or when named."""
    if notebook:
        from IPython.display import display

        display(report)
    else:
        print(text_table(report))
    if not (plot or plot_file is not None):
        return
    import matplotlib

    # A terminal has no inline images, and pyplot there (Agg, or a GUI backend with no event
    # loop) would draw a figure nobody sees: the chart goes to a file.
    if plot_file is not None or not notebook:
        print(f"native_bench: chart saved to {save_plot(report, plot_file)}")
    if notebook or matplotlib.is_interactive():
        plot_speedups(report)
