"""STAND-IN vLLM platform plugin for the GPU-less test bed, mounted at run time only (never in an image).

The official vLLM wheel is a CUDA build: with no GPU (no NVML) it detects no platform, and `vllm serve --help`
fails while building its argument parser ("Failed to infer device type"). Through vLLM's own out-of-tree platform
plugin group (vllm.platform_plugins) this names vLLM's CPU platform, so the real CLI behind the image's
ENTRYPOINT can answer on the test bed. On a GPU node nothing is mounted and vLLM picks CUDA itself.
"""


def cpu_platform() -> str:
    return "vllm.platforms.cpu.CpuPlatform"
