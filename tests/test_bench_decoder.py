"""benchmarks/bench_decoder.py at a toy size on the CPU (the figures mean nothing; the FLOP count
does), and its clean refusal where CUDA is asked for and absent."""
from __future__ import annotations

import json

import pytest

from benchmarks import bench_decoder
from tests.conftest import CUDA


def test_decoder_bench_reports_both_precisions_against_the_matmul(tmp_path):
    out = tmp_path / "decoder.json"
    bench_decoder.main(["--device", "cpu", "--size", "32", "--batch", "2", "--matmul", "64",
                        "--seconds", "0.05", "--out", str(out)])
    summary = json.loads(out.read_text())
    # Issue 9: 22.25 GFLOP per 224x224 image for ResNet-50 layer3's decoder; FLOPs scale with
    # the pixel count, so 22.25 * (32 / 224)**2 = 0.454 at 32x32.
    assert summary["gflop_per_image"] == pytest.approx(22.25 * (32 / 224) ** 2, rel=0.02)
    assert summary["matmul_bf16_tflops"] > 0
    assert set(summary["variants"]) == {"fp32 NCHW, TF32 off", "bf16 autocast, channels-last"}
    for label, variant in summary["variants"].items():
        assert variant["images_per_s"] > 0, label
        assert variant["of_matmul"] == pytest.approx(
            variant["tflops"] / summary["matmul_bf16_tflops"]), label


@pytest.mark.skipif(CUDA, reason="checks the answer where no CUDA device is")
def test_decoder_bench_says_when_there_is_no_gpu(capsys):
    assert bench_decoder.main(["--device", "cuda"]) == {}
    assert "no CUDA device" in capsys.readouterr().out
