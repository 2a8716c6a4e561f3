"""Static checks of vllm/Dockerfile against the plan: the file and the manifests must not drift apart."""

from __future__ import annotations

import re
import subprocess

import pytest

from dockerfile_model import parse, substitute
from gracectl.manifest import load_release
from gracectl.plan import DOCKERFILE, FINAL_STAGE, STAGE_GRAPH, make_plan, stage_closure

DF = parse(DOCKERFILE)
TEXT = DOCKERFILE.read_text()


def plan(release: str):
    return make_plan(load_release(release), commit="0" * 40)


def test_hadolint_reports_nothing():
    result = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_every_ignored_hadolint_rule_carries_a_reason():
    lines = TEXT.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"#\s*hadolint ignore=(\S+)", line)
        if m:
            comment_block = []  # the comment lines directly above the ignore
            j = i - 1
            while j >= 0 and lines[j].startswith("#"):
                comment_block.append(lines[j])
                j -= 1
            for rule in m.group(1).split(","):
                assert any(c.startswith(f"# {rule} (") for c in comment_block), (
                    f"line {i + 1}: ignore of {rule} lacks a '# {rule} (...): reason' comment above it")


def test_stage_graph_is_the_plans():
    parsed = {name: [d.replace("${TRITON_KERNELS}", "{mode}") for d in s.deps] for name, s in DF.stages.items()}
    assert parsed == {name: list(deps) for name, deps in STAGE_GRAPH.items()}


def test_one_stage_per_component():
    for stage in ("build-triton", "build-triton-kernels", "build-flash-attn", "build-flashmla", "build-vllm"):
        assert stage in DF.stages


@pytest.mark.parametrize("release", ["v0.19.0-tfa", "v0.19.0"])
def test_every_build_arg_is_declared_and_every_default_matches_the_tfa_manifest(release):
    declared = set(DF.global_args) | {a for s in DF.stages.values() for a in s.args}
    args = plan(release).build_args
    assert set(args) <= declared, f"plan passes args the Dockerfile lacks: {set(args) - declared}"
    if release == "v0.19.0-tfa":  # the file's defaults are the tfa release's (the header says so)
        defaults = DF.arg_defaults()
        mismatched = {k: (defaults[k], args[k]) for k in defaults if k in args and defaults[k] != args[k]
                      and k != "IMAGE_REVISION"}
        assert not mismatched, f"ARG default != manifest: {mismatched}"


@pytest.mark.parametrize("release", ["v0.19.0-tfa", "v0.19.0"])
def test_labels_resolve_to_the_plans_labels(release):
    p = plan(release)
    final = DF.stages[FINAL_STAGE]
    resolved = {k: substitute(v, p.build_args) for k, v in final.labels.items()}
    assert resolved == p.labels


def test_every_external_input_is_a_build_arg():
    # No URL or registry host may be hard-coded outside ARG defaults: a mirror site must be able to override it.
    for keyword_line in re.sub(r"\\\n", " ", TEXT).splitlines():
        line = keyword_line.strip()
        if line.startswith(("#", "ARG ")) or not line:
            continue
        assert not re.search(r"https?://|nvcr\.io|github\.com", line), f"hard-coded input: {line[:120]}"


def test_final_image_takes_triton_kernels_only_in_the_tfa_release():
    tfa, fallback = plan("v0.19.0-tfa"), plan("v0.19.0")
    assert "triton-kernels-site-packages" in tfa.final_stages
    assert "triton-kernels-vendored" not in tfa.final_stages
    assert "triton-kernels-vendored" in fallback.final_stages
    assert "triton-kernels-site-packages" not in fallback.final_stages
    # Both releases still build triton_kernels' source: vLLM's build vendors it (TRITON_KERNELS_SRC_DIR).
    assert "build-triton-kernels" in fallback.final_stages


def test_final_stage_installs_the_choice_into_the_pinned_pythons_venv():
    final = DF.stages[FINAL_STAGE]
    assert final.base == "base"
    install = next(r for r in final.runs if "pip install" in r)
    assert "from=triton-kernels-choice,source=/wheels/triton_kernels" in install
    assert "-r /wheels/triton_kernels/install.txt" in install
    # pip is the venv's (PATH=/opt/venv/bin), and the venv is made by python${PYTHON_VERSION} in base.
    assert any('"python${PYTHON_VERSION}" -m venv /opt/venv' in r for r in DF.stages["base"].runs)
    assert "PATH=/opt/venv/bin:$PATH" in TEXT
    site = DF.stages["triton-kernels-site-packages"]
    assert site.base == "build-triton-kernels"
    wheel_step = next(r for r in DF.stages["build-triton-kernels"].runs if "pip wheel" in r)
    assert "> /wheels/triton_kernels/install.txt" in wheel_step
    vendored = DF.stages["triton-kernels-vendored"]
    assert any("touch /wheels/triton_kernels/install.txt" in r for r in vendored.runs)


def test_vllm_build_fetches_nothing_itself():
    step = next(r for r in DF.stages["build-vllm"].runs if "pip wheel" in r)
    for env in ("TRITON_KERNELS_SRC_DIR=", "VLLM_FLASH_ATTN_SRC_DIR=", "FLASH_MLA_SRC_DIR="):
        assert env in step
    assert "--no-build-isolation" in step


def test_final_image_has_no_toolchain_or_build_cache():
    final_closure = stage_closure({n: list(d) for n, d in STAGE_GRAPH.items()}, "base")
    assert final_closure == ["base"]  # the final image's own layers come from the runtime base only
    for run in DF.stages[FINAL_STAGE].runs + DF.stages["base"].runs:
        assert "build-essential" not in run and "ccache" not in run
        if "pip install" in run:
            assert "--mount=type=cache,target=/root/.cache/pip" in run
    assert 'ENTRYPOINT ["vllm", "serve"]' in TEXT


def test_torch_comes_from_the_torch_index():
    runs = " ".join(DF.stages["build-base"].runs + DF.stages[FINAL_STAGE].runs)
    assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in runs
    assert '--extra-index-url "${TORCH_INDEX_URL}"' in runs
