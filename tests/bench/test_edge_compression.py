"""The edge compression study on one task: the edge's frames are a fraction of the direct path's requests, and
each compressed figure is a real compressed size (smaller than raw, never zero)."""

from __future__ import annotations

from tether.bench.edge_compression import anthropic_requests, study
from tether.bench.workloads import standard_tasks


def test_the_study_measures_the_edge_frames_against_the_direct_path() -> None:
    task = standard_tasks(7)[0]
    [(name, totals)] = study([task])
    assert name == task.name
    assert len(list(anthropic_requests(task))) == task.turns
    assert 0 < totals.raw < totals.direct_raw
    assert 0 < totals.deflate < totals.raw
    assert 0 < totals.zstd_dict < totals.raw
    assert 0 < totals.direct_deflate < totals.direct_raw
