"""pycrio/metrics.py: the Prometheus text format of counters and histograms."""

from __future__ import annotations

from pycrio.metrics import Counter, Histogram, Metrics


def test_histogram_buckets_are_cumulative_and_inclusive():
    h = Histogram("x_seconds", "help", ("op",), buckets=(0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 7.0):
        h.observe(("a",), value)
    lines = h.render()
    assert lines[:2] == ["# HELP x_seconds help", "# TYPE x_seconds histogram"]
    assert lines[2:] == [
        'x_seconds_bucket{op="a",le="0.1"} 1',  # le: a value on the bound is in its bucket
        'x_seconds_bucket{op="a",le="1.0"} 3',
        'x_seconds_bucket{op="a",le="+Inf"} 4',
        'x_seconds_sum{op="a"} 8.6',
        'x_seconds_count{op="a"} 4',
    ]
    assert h.count(("a",)) == 4 and h.count(("b",)) == 0


def test_label_values_are_escaped():
    c = Counter("x_total", "help", ("phase",))
    c.inc(('a "quoted"\\ne\nw',), 2)
    assert c.render()[-1] == 'x_total{phase="a \\"quoted\\"\\\\ne\\nw"} 2.0'


def test_unlabelled_counter_and_process_series():
    m = Metrics()
    m.pulled(1234, 2, {"resolve": 0.01})
    text = m.render()
    assert "pycrio_image_pulls_bytes_total 1234.0\n" in text
    assert 'pycrio_image_pulls_total{result="success"} 1.0\n' in text
    assert 'pycrio_operation_phase_seconds_count{operation="PullImage",phase="resolve"} 1\n' in text
    rss = next(line for line in text.splitlines() if line.startswith("process_resident_memory_bytes "))
    assert float(rss.split()[1]) > 1 << 20
    assert text.endswith("\n")
