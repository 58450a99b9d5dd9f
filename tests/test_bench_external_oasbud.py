"""benchmarks/external_oasbud.py at a toy size: the file it writes is read by the engine's OASBUD
reader, with two scans per lesion, the labels and a lesion ROI in each scan."""
from __future__ import annotations

import numpy as np

from augengine.sources import read_oasbud
from benchmarks import external_oasbud


def test_writes_an_oasbud_layout_file_the_reader_reads(tmp_path):
    out = tmp_path / "external.mat"
    assert external_oasbud.main(["--out", str(out), "--lesions", "2", "--depth-mm", "25",
                                 "--lines", "64"]) == 0
    samples = read_oasbud(out)
    assert [s.sample_id for s in samples] == [f"ext{c}{k:03d}/rf{scan}" for c in "BM"
                                              for k in range(2) for scan in (1, 2)]
    assert [s.label for s in samples] == [0] * 4 + [1] * 4
    for sample in samples:
        assert sample.rf.shape == (1299, 64) and sample.rf.dtype == np.int16, sample.sample_id
        assert sample.roi.any(), f"{sample.sample_id}: the lesion lies in the frame"
        assert sample.meta["pitch_m"] == 0.25e-3 and sample.meta["fc_hz"] == 7.5e6
