"""A small reader of vllm/Dockerfile for the static tests: stages, their dependencies, ARG defaults, labels.

Just enough Dockerfile grammar for this file: line continuations, FROM ... AS, ARG name[=default],
RUN --mount=...from=STAGE, COPY --from=STAGE, LABEL k="v" pairs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str
    base: str
    deps: list[str] = field(default_factory=list)
    args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)


@dataclass
class Dockerfile:
    global_args: dict[str, str | None]
    stages: dict[str, Stage]

    def arg_defaults(self) -> dict[str, str]:
        """Every ARG default in the file; a name declared twice must have the same default everywhere."""
        out: dict[str, str] = {}
        for scope in [self.global_args, *(s.args for s in self.stages.values())]:
            for name, default in scope.items():
                if default is None:
                    continue
                assert out.get(name, default) == default, f"ARG {name} has two defaults: {out[name]!r}, {default!r}"
                out[name] = default
        return out


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str | None] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, rest in instructions(path.read_text()):
        if keyword == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)\s+AS\s+(\S+)$", rest, re.IGNORECASE)
            assert m, f"every FROM must name its stage: FROM {rest}"
            base, name = m.groups()
            current = Stage(name=name, base=base)
            if not base.startswith("$") and (base in stages or "${" in base):
                current.deps.append(base)
            stages[name] = current
        elif keyword == "ARG":
            name, eq, default = rest.partition("=")
            value = shlex.split(default)[0] if eq and default else ("" if eq else None)
            (current.args if current else global_args)[name] = value
        elif current is None:
            continue
        elif keyword in ("RUN", "COPY"):
            current.deps += re.findall(r"--(?:mount=\S*?from=|from=)([A-Za-z0-9_${}.-]+)", rest)
            if keyword == "RUN":
                current.runs.append(rest)
        elif keyword == "LABEL":
            for pair in shlex.split(rest):
                k, _, v = pair.partition("=")
                current.labels[k] = v
    for stage in stages.values():
        stage.deps = list(dict.fromkeys(stage.deps))
    return Dockerfile(global_args, stages)

