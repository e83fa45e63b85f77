"""RunTimeline, the pure model and its text, SVG and matplotlib views, on readings made up for each test."""

import xml.etree.ElementTree as ET

import pytest

from ipy_parallel.timeline import RunTimeline


def one_sided(cores=2) -> RunTimeline:
    """Worker 0 busy for 1 s of a 4 s run, worker 1 busy throughout: samples every 0.5 s."""
    times = [0.5 * k for k in range(9)]
    samples = [(t, (min(t, 1.0), t)) for t in times]
    return RunTimeline.of([0, 1], samples, ends=[1.0, 4.0], states=["ok", "ok"], cores=cores)


def test_efficiency_is_cpu_over_wall_times_the_cores_it_could_use():
    timeline = one_sided()
    assert timeline.wall == 4.0 and timeline.cpu_time == 5.0
    assert timeline.efficiency == pytest.approx(5.0 / (4.0 * 2))
    assert one_sided(cores=1).efficiency == pytest.approx(5.0 / 4.0)  # one core: min(2 workers, 1)
    assert "efficiency 62% of 2 cores" in timeline.summary()
    # A cluster's engines may run on other machines: a core each.
    cluster = RunTimeline.of([0, 1, 2], [(0.0, (0, 0, 0)), (1.0, (1, 1, 1))], [1, 1, 1], ["ok"] * 3, cores=None)
    assert cluster.efficiency == pytest.approx(1.0) and "of 3 cores, one per worker" in cluster.summary()


def test_busy_slices_the_run_evenly_and_a_worker_is_idle_after_its_end():
    first, second = one_sided().busy(4)
    assert first == pytest.approx([1.0, 0.0, 0.0, 0.0]) and second == pytest.approx([1.0] * 4)
    # Readings 0.5 s apart, its end between two of them: nothing is smeared past the end.
    samples = [(0.0, (0.0,)), (0.5, (0.5,)), (1.0, (0.6,)), (2.0, (0.6,))]
    timeline = RunTimeline.of([3], samples, ends=[0.6], states=["failed"], cores=2)
    (row,) = timeline.busy(20)  # 0.1 s columns
    assert row[:5] == pytest.approx([1.0] * 5) and row[5] == pytest.approx(1.0) and row[6:] == [0.0] * 14


def test_the_text_view_has_a_row_per_worker_idle_dots_and_how_each_ended():
    samples = [(0.0, (0.0, 0.0)), (1.0, (1.0, 1.0)), (2.0, (1.0, 2.0))]
    text = RunTimeline.of([4, 7], samples, ends=[1.0, None], states=["failed", "stopped"], cores=8).format_text(
        width=10
    )
    lines = text.splitlines()
    assert lines[0] == "timeline: 2 workers, 2.00 s wall, 3.00 s CPU: efficiency 75% of 2 cores"
    assert lines[1] == "  [4] █████·····  failed at 1.00 s, 1.00 s CPU"
    assert lines[2] == "  [7] ██████████  stopped, 2.00 s CPU"
    assert lines[3].split() == ["0", "s", "2.00", "s"]


def test_the_svg_is_well_formed_with_a_row_and_an_end_mark_per_worker():
    svg = one_sided()._repr_html_()
    root = ET.fromstring(svg)  # inline SVG, no script, nothing to load: kept in a saved notebook
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts[0].startswith("timeline: 2 workers") and "[0]" in texts and "[1]" in texts
    marks = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert marks == ["worker 0: ok at 1.000 s", "worker 1: ok at 4.000 s"]


def test_a_run_too_short_to_sample_still_has_a_timeline():
    timeline = RunTimeline.of([0, 1], [(0.0, (0.0, 0.0))], ends=[0.0, 0.0], states=["ok", "ok"])
    assert timeline.busy(3) == [[0.0] * 3, [0.0] * 3] and timeline.efficiency == 0.0
    assert "2 workers" in str(timeline) and ET.fromstring(timeline.svg()) is not None


def test_plot_draws_a_row_per_worker_with_matplotlib():
    import matplotlib  # the [bench] extra, which [test] includes

    matplotlib.use("Agg")
    ax = one_sided().plot()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["[0]", "[1]"]
    assert "efficiency" in ax.get_title()
