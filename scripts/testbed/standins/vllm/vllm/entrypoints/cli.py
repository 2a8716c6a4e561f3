"""STAND-IN for vLLM's `vllm` console script: `vllm --version`, `vllm info`; `vllm serve` refuses."""

import sys
from importlib.resources import files


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import vllm

    if not argv or argv[0] in ("--version", "-v"):
        print(vllm.__version__)
        return 0
    if argv[0] == "info":
        print(files("vllm").joinpath("_build_info.json").read_text(), end="")
        return 0
    if argv[0] == "serve":
        print("vllm serve: this is the gracectl test bed's STAND-IN vLLM; it serves no model", file=sys.stderr)
        return 2
    print(f"stand-in vllm: unknown command {argv[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
