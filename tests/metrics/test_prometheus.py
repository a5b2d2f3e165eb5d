"""Prometheus text as scrapers read it: exact numbers, escaped labels, histograms, and sums read back."""

from __future__ import annotations

import math

from baremetal.metrics.prometheus import family, histogram, labels, number, page, sums


def test_numbers_are_exact():
    assert number(1_234_567) == "1234567"                    # `:g` gave 1.23457e+06
    assert number(80 * 2**30 * 1.0) == "85899345920"         # 80 GiB, `:g` gave 8.58993e+10
    assert number(0.37) == "0.37" and number(1 / 3) == repr(1 / 3)
    assert number(True) == "1" and number(math.inf) == "+Inf" and number(-math.inf) == "-Inf"
    assert number(math.nan) == "NaN" and number(2.0**70) == repr(2.0**70)


def test_labels_are_escaped_and_families_are_well_formed():
    assert labels(model='a"b\\c\nd') == '{model="a\\"b\\\\c\\nd"}'
    assert labels() == "" and labels((("a", 1), ("b", "x"))) == '{a="1",b="x"}'
    lines = family("x_total", "counter", "Things.", [(labels(k="v"), 3), ("", 4.5)])
    assert lines == ["# HELP x_total Things.", "# TYPE x_total counter", 'x_total{k="v"} 3', "x_total 4.5"]


def test_histogram_buckets_are_cumulative_and_end_with_inf():
    lines = histogram("d_seconds", (("m", "a"),), (0.1, 1.0), [2, 1, 4], 9.25, 7)
    assert lines == ['d_seconds_bucket{m="a",le="0.1"} 2', 'd_seconds_bucket{m="a",le="1.0"} 3',
                     'd_seconds_bucket{m="a",le="+Inf"} 7', 'd_seconds_sum{m="a"} 9.25', 'd_seconds_count{m="a"} 7']


def test_a_written_page_reads_back():
    text = page(family("big_total", "counter", "Big.", [(labels(gpu=0), 1_234_567), (labels(gpu=1), 1)]))
    assert text.endswith("\n") and sums(text, ["big_total"]) == {"big_total": 1_234_568.0}
