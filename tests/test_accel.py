"""The GPU fast path switch (precision, channels_last, compile): exact no-op on a CPU, same numbers in NHWC."""

import pytest
import torch

from texad.accel import FP32, Accel
from texad.accel_module import AcceleratedModule
from texad.config import ConfigError, validate_config
from texad.diffusion.unet import build_unet
from texad.methods.base import Runtime


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_unet("tiny", 32).eval()


def test_cpu_runs_plain_fp32_whatever_is_asked(unet):
    asked = Accel(precision="bf16", channels_last=True, compile=True)
    assert asked.on("cpu") == FP32 and not FP32.active
    assert asked.on("cuda") == asked  # on CUDA everything asked is applied
    assert asked.prepare(unet, "cpu") is unet  # no wrapper, no compile: the exact CPU path of before


def test_channels_last_gives_the_same_numbers(unet):
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([10, 500])
    wrapped = AcceleratedModule(unet, Accel(channels_last=True), "cpu")
    with torch.no_grad():
        want = unet(x, t)
        got = wrapped(x, t)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        Accel(precision="int8")


def test_switches_come_from_the_config():
    def accel(**top):
        return Runtime.from_config(validate_config(top, partial=True)).accel()

    assert accel() == FP32  # the schema's defaults: plain fp32, eager, NCHW
    assert accel(precision="fp16", channels_last=True, compile=True) == Accel("fp16", True, True)
    assert accel(precision="bf16") == Accel(precision="bf16")
    assert accel(channels_last=True) == Accel(channels_last=True)
    with pytest.raises(ConfigError, match="precision"):
        accel(precision="int8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda_stays_close_to_fp32(unet, precision):
    net = build_unet("tiny", 32).eval().cuda()
    net.load_state_dict(unet.state_dict())
    x = torch.randn(4, 3, 32, 32, device="cuda")
    t = torch.tensor([1, 10, 100, 900], device="cuda")
    fast = Accel(precision=precision, channels_last=True).prepare(net, "cuda")
    with torch.no_grad():
        want, got = net(x, t), fast(x, t)
    assert got.dtype == torch.float32
    assert (got - want).abs().max() < 0.05 * want.abs().max()
