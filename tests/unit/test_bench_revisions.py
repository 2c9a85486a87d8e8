"""bench.revisions: the figures it reads from a report, and the ratios it prints."""

from __future__ import annotations

import re
from pathlib import Path

from bench.revisions import Variant, figures, parse_variant, report


def test_figures_are_named_by_path_and_list_items_by_their_config() -> None:
    found = dict(figures({"results": [{"config": "a", "events_per_s": 10, "ok": True}], "n": 2.5}))
    assert found == {"results[a].events_per_s": 10.0, "n": 2.5}


def test_each_variant_gets_the_ratio_of_medians_and_the_median_of_paired_ratios() -> None:
    variants = [Variant("base", Path(), "python"), Variant("new", Path(), "python")]
    runs = {
        "base": [{"x": 100.0, "y": 1.0}, {"x": 200.0, "y": 1.0}, {"x": 400.0, "y": 1.0}],
        "new": [{"x": 110.0, "y": 1.0}, {"x": 180.0, "y": 1.0}, {"x": 800.0, "y": 1.0}],
    }
    lines = report(variants, runs, re.compile("^x$")).splitlines()
    # Medians 200 and 180 (0.900); per-round ratios 1.1, 0.9, 2.0 (median 1.100).
    assert lines[1] == "x: base 200 · new 180 (0.900/1.100)"
    assert len(lines) == 2


def test_a_variant_takes_a_checkout_a_python_and_settings() -> None:
    variant = parse_variant(["pure", ".", "/usr/bin/python3", "CTRLTRACE_NO_ACCELERATORS=1"])
    assert variant.env == {"CTRLTRACE_NO_ACCELERATORS": "1"}
    assert variant.checkout == Path().resolve()


def test_a_figure_that_is_zero_in_the_first_variant_has_no_ratio() -> None:
    variants = [Variant("base", Path(), "python"), Variant("new", Path(), "python")]
    runs = {"base": [{"dropped": 0.0}], "new": [{"dropped": 3.0}]}
    assert report(variants, runs, re.compile("dropped")).splitlines()[1] == (
        "dropped: base 0 · new 3 (nan/nan)"
    )
