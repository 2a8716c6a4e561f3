"""Static checks of vllm/Dockerfile against the plan: the file and the manifests must not drift apart."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from dockerfile_model import instructions, parse
from gracectl.releases.manifest import load_release
from gracectl.checkout import DOCKERFILE, REPO_ROOT
from gracectl.image.plan import FINAL_STAGE, STAGE_GRAPH, TARGETS, Overrides, make_plan, stage_closure

DF = parse(DOCKERFILE)
TEXT = DOCKERFILE.read_text()


def plan(release: str, vllm_build: str = ""):
    return make_plan(load_release(release), commit="0" * 40, overrides=Overrides(vllm_build=vllm_build))


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
    parsed = {name: [d.replace("${TRITON_KERNELS}", "{mode}").replace("${VLLM_BUILD}", "{vllm_build}") for d in s.deps]
              for name, s in DF.stages.items()}
    assert parsed == {name: list(deps) for name, deps in STAGE_GRAPH.items()}


def test_one_stage_per_component():
    for stage in ("build-triton", "build-triton-kernels", "build-flash-attn", "build-flashmla", "build-cmake-sources",
                  "build-deepgemm", "build"):
        assert stage in DF.stages
    # The release's own set of cmake sources is data (CMAKE_SOURCES), not one stage each.
    assert not {"build-cutlass", "build-qutlass"} & set(DF.stages)


def test_header_lists_every_stage():
    header = TEXT[:TEXT.index("\nARG ")]
    for stage in DF.stages:
        if not stage.startswith(("vllm-from-", "triton-kernels-")):
            assert f"#   {stage} " in header, f"the header comment lacks {stage}"


@pytest.mark.parametrize("release", ["v0.19.0-tfa", "v0.19.0"])
def test_every_build_arg_is_declared_and_every_default_matches_the_tfa_manifest(release):
    declared = set(DF.global_args) | {a for s in DF.stages.values() for a in s.args}
    args = plan(release).build_args
    assert set(args) <= declared, f"plan passes args the Dockerfile lacks: {set(args) - declared}"
    if release == "v0.19.0-tfa":  # the file's defaults are the tfa release's (the header says so)
        defaults = DF.arg_defaults()
        mismatched = {k: (defaults[k], args[k]) for k in defaults if k in args and defaults[k] != args[k]}
        assert not mismatched, f"ARG default != manifest: {mismatched}"


def test_labels_come_from_the_plan_only():
    # Written once: the plan computes every label and gives it to the build (--label); the file declares none,
    # so a pin cannot be stamped twice with two values.
    assert not any(s.labels for s in DF.stages.values())
    assert not re.search(r"^\s*LABEL\s", TEXT, flags=re.M)
    p = plan("v0.19.0-tfa")
    for builder in ("agents", ""):  # a buildx builder, the node's dockerd
        p.builder = builder
        cmd, _ = p.build_command()
        given = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--label"]
        assert given == [f"{k}={v}" for k, v in p.labels.items()], builder


def test_every_arg_default_is_written_once():
    # One default per name in the file (a name several stages use takes its default from a global ARG), so a
    # pin bumped in the manifest is bumped in one line here (the test above finds which).
    lines = [line for line in re.sub(r"\\\n", " ", TEXT).splitlines() if re.match(r"ARG \w+=", line.strip())]
    names = [re.match(r"ARG (\w+)=", line.strip()).group(1) for line in lines]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def smoke_expectations():
    """smoke_tests/conftest.py's EXPECT_KEYS and loader: what the suite inside the image reads from image.json."""
    import importlib.util
    import sys
    sys.path.insert(0, str(REPO_ROOT / "smoke_tests"))  # its own imports (node_driver, the contract)
    spec = importlib.util.spec_from_file_location("smoke_conftest", REPO_ROOT / "smoke_tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("release", ["v0.19.0-tfa", "v0.25.0", "v0.19.0"])
def test_image_json_says_what_the_labels_say(release, tmp_path):
    # The step that writes /opt/gracectl/image.json, run by bash with the plan's build args: every value the smoke
    # suite reads from it is the plan's label of the same name.
    p = plan(release)
    step = next(r for r in DF.stages[FINAL_STAGE].runs if "/opt/gracectl/image.json" in r)
    out = tmp_path / "image.json"
    script = step.replace("/opt/gracectl/image.json", str(out)).replace("python -c", f"{sys.executable} -c")
    subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True, env={"PATH": "/usr/bin:/bin", **p.build_args})
    written = json.loads(out.read_text())
    smoke = smoke_expectations()
    expected = smoke.load_expectations(str(out))
    compared = set()
    for key, names in smoke.EXPECT_KEYS.items():
        label = next((n for n in names if n in p.labels), None)
        if label:
            assert expected[key] == written[key] == p.labels[label], key
            compared.add(key)
    assert {"release", "min_driver", "runtime_extras", "vllm", "torch", "cuda"} <= compared
    assert written["deepgemm"] == ("wheel" if p.labels["io.gracectl.pin.deepgemm"] else "")


def test_every_external_input_is_a_build_arg():
    # No URL or registry host may be hard-coded outside ARG defaults: a mirror site must be able to override it.
    for keyword_line in re.sub(r"\\\n", " ", TEXT).splitlines():
        line = keyword_line.strip()
        if line.startswith(("#", "ARG ")) or not line:
            continue
        assert not re.search(r"https?://|nvcr\.io|github\.com", line), f"hard-coded input: {line[:120]}"


def test_final_image_takes_triton_kernels_only_in_the_tfa_release():
    tfa, fallback = plan("v0.19.0-tfa"), plan("v0.19.0", vllm_build="source")
    assert "triton-kernels-site-packages" in tfa.final_stages
    assert "triton-kernels-vendored" not in tfa.final_stages
    assert "triton-kernels-vendored" in fallback.final_stages
    assert "triton-kernels-site-packages" not in fallback.final_stages
    # build-triton-kernels only feeds the site-packages wheel: the copy vLLM vendors is a cmake source of its own.
    assert "build-triton-kernels" not in fallback.final_stages
    assert "build-cmake-sources" in fallback.final_stages
    assert "TRITON_KERNELS_SRC_DIR|" in fallback.build_args["CMAKE_SOURCES"]


def test_final_stage_installs_the_choice_into_the_pinned_pythons_venv():
    final = DF.stages[FINAL_STAGE]
    assert final.base == "vllm-base"
    install = next(r for r in final.runs if "uv pip install" in r)
    # The stack's install names nothing that differs between the tfa release and its fallback, so both images
    # share that multi-GB layer; triton_kernels comes in a later step of its own.
    assert "triton-kernels-choice" not in install and "TRITON_KERNELS" not in install
    assert "--compile-bytecode" in install  # compiled once at build, not by every container start
    kernels = [r for r in final.runs if "from=triton-kernels-choice,source=/wheels/triton_kernels" in r
               and "fetched-sources.txt" not in r]  # not the step that records the build's inputs
    assert len(kernels) == 1 and "-r /wheels/triton_kernels/install.txt" in kernels[0]
    assert final.runs.index(kernels[0]) > final.runs.index(install)
    assert final.runs.index(kernels[0]) > next(i for i, r in enumerate(final.runs) if "flashinfer-prefetch" in r)
    # No argument that differs between the two releases is declared before the triton_kernels step.
    final_start = TEXT.index("FROM vllm-base AS vllm-openai")
    before = TEXT[final_start:TEXT.index("from=triton-kernels-choice", final_start)]
    for arg in ("TRITON_KERNELS", "RELEASE"):
        assert f"ARG {arg}\n" not in before and f"ARG {arg}=" not in before, arg
    # pip is the venv's (PATH=/opt/venv/bin), and the venv is made by python${PYTHON_VERSION} in vllm-base.
    assert any('"python${PYTHON_VERSION}" -m venv /opt/venv' in r for r in DF.stages["vllm-base"].runs)
    assert "PATH=/opt/venv/bin:$PATH" in TEXT
    site = DF.stages["triton-kernels-site-packages"]
    assert site.base == "build-triton-kernels"
    wheel_step = next(r for r in DF.stages["build-triton-kernels"].runs if "pip wheel" in r)
    assert "> /wheels/triton_kernels/install.txt" in wheel_step
    vendored = DF.stages["triton-kernels-vendored"]
    assert any("touch /wheels/triton_kernels/install.txt" in r for r in vendored.runs)


def test_vllm_build_fetches_nothing_itself():
    # Every source vLLM's cmake would fetch comes from a pinned stage (tests/integration/test_vllm_sources.py
    # checks the manifest's list against vLLM's real cmake files), and any other fetch fails the build.
    step = next(r for r in DF.stages["build"].runs if "pip wheel" in r)
    for env in ("VLLM_FLASH_ATTN_SRC_DIR=", "FLASH_MLA_SRC_DIR="):
        assert env in step
    # Every cmake source: exported as <ENV>=/deps/cmake/<ENV> from build-cmake-sources, before the build.
    assert "from=build-cmake-sources,source=/src/cmake,target=/deps/cmake" in step
    assert 'for dir in /deps/cmake/*; do' in step and 'export "${dir##*/}=${dir}"' in step
    assert step.index('export "${dir##*/}') < step.index("pip wheel")
    assert 'CMAKE_ARGS="-DFETCHCONTENT_FULLY_DISCONNECTED=ON"' in step
    assert "--no-build-isolation" in step
    # The build stage no longer takes triton_kernels from build-triton-kernels (that stage feeds site-packages only).
    assert "build-triton-kernels" not in step


def test_cmake_sources_stage_fetches_each_entry_into_its_env_dir():
    fetch = DF.stages["build-cmake-sources"]
    assert fetch.base == "base" and len(fetch.runs) == 1
    run = fetch.runs[0]
    assert "IFS='|' read -r env repo ref subdir" in run and "|| exit 1" in run  # a failed fetch fails the loop
    assert 'fetch-source "$repo" "$ref" "/src/cmake/$env"' in run
    assert 'mv "/tmp/$env/$subdir" "/src/cmake/$env"' in run
    entries = [e.split("|") for e in plan("v0.19.0-tfa").build_args["CMAKE_SOURCES"].split()]
    assert {e[0]: e[3] for e in entries} == {"VLLM_CUTLASS_SRC_DIR": "", "QUTLASS_SRC_DIR": "",
                                            "TRITON_KERNELS_SRC_DIR": "python/triton_kernels/triton_kernels"}
    assert all(len(e) == 4 for e in entries)


def test_cmake_sources_stage_runs_the_way_the_dockerfile_says(tmp_path):
    # The stage's shell loop, run with a fake fetch-source: every entry lands in its ENV directory, a subdir
    # entry as that subdirectory with the fetched commit, and an empty list is an empty directory.
    run = DF.stages["build-cmake-sources"].runs[0]
    script = run.replace("/src/cmake", str(tmp_path / "cmake")).replace('"/tmp/$env', f'"{tmp_path}/tmp-$env')
    fake = tmp_path / "bin" / "fetch-source"
    fake.parent.mkdir()
    fake.write_text('#!/bin/bash\nmkdir -p "$3/python/pkg/inner" && echo "$1@$2" > "$3/.fetched-commit"'
                    ' && echo "$1 $2 c0ffee" > "$3/.fetched-source"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin",
           "CMAKE_SOURCES": "A_SRC_DIR|git://x/a.git|v1.0| B_SRC_DIR|git://x/b.git|" + "b" * 40 + "|python/pkg"}
    subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True, env=env, capture_output=True)
    assert (tmp_path / "cmake" / "A_SRC_DIR" / ".fetched-commit").read_text() == "git://x/a.git@v1.0\n"
    assert (tmp_path / "cmake" / "B_SRC_DIR" / "inner").is_dir()
    assert (tmp_path / "cmake" / "B_SRC_DIR" / ".fetched-commit").is_file()
    # what the provenance names moves with the subdirectory too (build-vllm collects it)
    assert (tmp_path / "cmake" / "B_SRC_DIR" / ".fetched-source").read_text() == f"git://x/b.git {'b' * 40} c0ffee\n"
    fake.write_text("#!/bin/bash\nexit 3\n")
    failed = subprocess.run(["bash", "-o", "pipefail", "-c", script], env={**env, "CMAKE_SOURCES": "C_SRC_DIR|r|v1|"},
                            capture_output=True)
    assert failed.returncode != 0
    empty = subprocess.run(["bash", "-o", "pipefail", "-c", script.replace(str(tmp_path / "cmake"),
                                                                           str(tmp_path / "none"))],
                           env={**env, "CMAKE_SOURCES": ""}, capture_output=True)
    assert empty.returncode == 0 and not any((tmp_path / "none").iterdir())


def test_vllm_build_is_release_with_the_manifests_parallelism():
    step = next(r for r in DF.stages["build"].runs if "pip wheel" in r)
    for env in ('CMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE}"', 'MAX_JOBS="${MAX_JOBS}"', 'NVCC_THREADS="${NVCC_THREADS}"'):
        assert env in step
    args = plan("v0.19.0-tfa").build_args
    assert args["CMAKE_BUILD_TYPE"] == "Release"
    # setup.py runs ninja -j(MAX_JOBS / NVCC_THREADS), each nvcc with NVCC_THREADS threads: 66 of 72 Grace cores.
    assert int(args["MAX_JOBS"]) // int(args["NVCC_THREADS"]) * int(args["NVCC_THREADS"]) == 66


def test_built_wheels_are_checked_for_what_optional_steps_drop():
    vllm_step = next(r for r in DF.stages["build"].runs if "pip wheel" in r)
    # __init__.py: the triton_kernels vendored by different releases have no other module in common.
    assert "check-wheel /wheels/vllm vllm/third_party/triton_kernels/__init__.py" in vllm_step
    assert "vllm/transformers_utils/chat_templates/*.jinja" in vllm_step
    # The vLLM source keeps its shallow .git for setuptools-scm's file finder.
    assert any(r.startswith('fetch-source --keep-git "$VLLM_REPO"') for r in DF.stages["build"].runs)


def test_no_step_hides_a_failure_behind_a_semicolon():
    # `a; b` under `bash -o pipefail -c` exits with b's status: a failed download followed by `ls` passes.
    for name, stage in DF.stages.items():
        for run in stage.runs:
            code = re.sub(r"'[^']*'|\"[^\"]*\"", "''", run.replace("\\\n", " "))
            for after in re.findall(r";\s*(\S+)", code):
                assert after in ("then", "else", "elif", "fi", "do", "done"), (
                    f"{name}: ';' joins commands (use &&): {run[:160]}")


def test_final_image_keeps_what_runtime_jit_and_serving_need_but_no_build_cache():
    # vLLM's own final image keeps a compiler and Python headers (Triton's launcher stub, Inductor), nvcc and
    # CUDA dev libraries (FlashInfer, DeepGEMM JIT), libibverbs (NCCL over InfiniBand) and media libraries.
    base_install = next(r for r in DF.stages["vllm-base"].runs if "apt-ensure" in r)
    for pkg in ('"python${PYTHON_VERSION}-dev"', "gcc", "g++", "libc6-dev", "libibverbs1", "ibverbs-providers",
                "ffmpeg", "libgl1", '"${cuda_packages[@]}"'):
        assert pkg in base_install, f"the final image's base lacks {pkg}"
    assert "nvcc" in plan("v0.19.0-tfa").build_args["CUDA_RUNTIME_PACKAGES"]
    final_closure = stage_closure({n: list(d) for n, d in STAGE_GRAPH.items()}, "vllm-base")
    assert final_closure == ["vllm-base"]  # the final image's own layers come from the runtime base only
    for run in DF.stages[FINAL_STAGE].runs + DF.stages["vllm-base"].runs:
        assert "ccache" not in run
        if "pip install" in run:
            assert "--mount=type=cache,target=/root/.cache/pip" in run
    assert 'ENTRYPOINT ["vllm", "serve"]' in TEXT
    assert "VLLM_USAGE_SOURCE=production-docker-image" in TEXT


def test_final_image_installs_flashinfer_jit_cache_and_deepgemm():
    install = next(r for r in DF.stages[FINAL_STAGE].runs if "uv pip install" in r)
    # The JIT cache and its index only when the release names one (FLASHINFER_INDEX_URL non-empty).
    assert ('if [ -n "${FLASHINFER_INDEX_URL}" ]; then jit_cache=(--extra-index-url "${FLASHINFER_INDEX_URL}" '
            '"flashinfer-jit-cache==${FLASHINFER_VERSION}")') in " ".join(install.split())
    assert '"${jit_cache[@]}"' in install
    # DeepGEMM through its requirements file, empty when the release has no DeepGEMM wheel (never a glob).
    assert "-r /wheels/deepgemm/install.txt" in install and "/wheels/deepgemm/*.whl" not in install
    deepgemm = DF.stages["build-deepgemm"].runs[-1]
    assert deepgemm.index("touch /wheels/deepgemm/install.txt") < deepgemm.index('if [ -n "$DEEPGEMM_REF" ]')
    assert "> /wheels/deepgemm/install.txt" in deepgemm
    assert any("flashinfer-prefetch.py" in r and 'FLASHINFER_CUBINS_REPOSITORY="${FLASHINFER_CUBINS_URL}"' in r
               for r in DF.stages[FINAL_STAGE].runs)


def test_release_overrides_are_a_uv_override_file():
    install = next(r for r in DF.stages[FINAL_STAGE].runs if "uv pip install" in r)
    assert """tr ' ' '\\n' <<< "${PIP_OVERRIDES}" > /tmp/uv-overrides.txt""" in install
    assert "--override /tmp/uv-overrides.txt" in install
    assert install.index("> /tmp/uv-overrides.txt") < install.index("uv pip install")
    assert DF.arg_defaults()["PIP_OVERRIDES"] == "" == plan("v0.19.0-tfa").build_args["PIP_OVERRIDES"]


def test_torch_comes_from_the_torch_index():
    runs = " ".join(DF.stages["base"].runs + DF.stages[FINAL_STAGE].runs)
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in " ".join(" ".join(runs.split("\\")).split())
    assert '--extra-index-url "${TORCH_INDEX_URL}"' in runs
    # The self-built vLLM wheel no longer names them (use_existing_torch.py): the final stage pins them itself.
    install = next(r for r in DF.stages[FINAL_STAGE].runs if "uv pip install" in r)
    assert '"torchvision==${TORCHVISION_VERSION}" "torchaudio==${TORCHAUDIO_VERSION}"' in install
    # With the local version, an index's CPU build of the same public version can never be picked.
    assert plan("v0.19.0-tfa").build_args["TORCH_VERSION"].endswith("+cu129")


def test_nonroot_target_is_the_final_image_run_as_uid_2000_gid_0():
    stage = DF.stages["vllm-openai-nonroot"]
    assert stage.base == FINAL_STAGE and set(TARGETS) == {FINAL_STAGE, "vllm-openai-nonroot"}
    steps = instructions(TEXT[TEXT.index("FROM vllm-openai AS vllm-openai-nonroot"):])
    # Numeric, so that a pod's runAsNonRoot can verify it; its home is where the caches go.
    assert ("USER", "2000:0") in steps and ("WORKDIR", "/home/vllm") in steps
    assert steps[-1] == ("ENTRYPOINT", '["/usr/local/bin/vllm-nonroot-entrypoint"]')
    (run,) = stage.runs
    assert "useradd --uid 2000 --gid 0 --create-home --home-dir /home/vllm" in run
    assert "chown -R 2000:0 /home/vllm" in run and "chmod -R g+rwX /home/vllm" in run
    assert "/opt/venv" not in run  # read as it is: a chmod -R would copy the venv's GBs into a new layer
    assert "install -m 0755 /tmp/nonroot-entrypoint.sh /usr/local/bin/vllm-nonroot-entrypoint" in run
    assert "!vllm/nonroot-entrypoint.sh" in (REPO_ROOT / "vllm" / "Dockerfile.dockerignore").read_text()


STANDIN_VLLM_CLI = '#!/bin/sh\necho "HOME=$HOME USER=$USER LOGNAME=$LOGNAME ARGS=$*"\n'


def test_nonroot_entrypoint_serves_with_a_writable_home_for_an_arbitrary_uid():
    # The entrypoint script itself, as uid 2000 gid 0 (setpriv where this test runs as root), with a STAND-IN
    # `vllm` that prints what it was given. In a folder of /tmp that uid may read (pytest's tmp_path is root's).
    import os
    import shutil
    import tempfile
    from pathlib import Path

    as_uid = ["setpriv", "--reuid=2000", "--regid=0", "--clear-groups"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        work.chmod(0o777)
        (work / "vllm").write_text(STANDIN_VLLM_CLI)
        (work / "vllm").chmod(0o755)
        script = work / "entrypoint.sh"
        script.write_text((REPO_ROOT / "vllm" / "nonroot-entrypoint.sh").read_text())

        def serve(**env: str) -> str:
            done = subprocess.run([*as_uid, "sh", str(script), "--model", "m"], capture_output=True, text=True,
                                  env={"PATH": f"{work}:/usr/bin:/bin", **env}, timeout=30)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        # OpenShift's arbitrary uid: no HOME, no USER (and no /home/vllm on this machine): a fresh home of its own.
        out = serve()
        home = out.split()[0].removeprefix("HOME=")
        assert home.startswith("/tmp/vllm-home.") and out.endswith("USER=vllm LOGNAME=vllm ARGS=serve --model m")
        assert Path(home).stat().st_uid == (2000 if as_uid else os.geteuid())
        shutil.rmtree(home)
        # A HOME it cannot write is replaced; what the caller sets, and a writable HOME, are kept.
        home = serve(HOME="/proc").split()[0].removeprefix("HOME=")
        assert home.startswith("/tmp/vllm-home.")
        shutil.rmtree(home)
        assert serve(HOME=folder, USER="alice") == f"HOME={folder} USER=alice LOGNAME=alice ARGS=serve --model m"


def clawmine_build_arg_rows() -> list[tuple[list[str], str]]:
    """CLAWMINE.md's build-argument table: (argument names, default column) per row."""
    text = (REPO_ROOT / "CLAWMINE.md").read_text()
    table = text[text.index("| argument | default | what it is |"):].split("\n\n", 1)[0].splitlines()[2:]
    rows = []
    for line in table:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append((re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0]), cells[1]))
    return rows


def test_clawmines_build_argument_defaults_are_the_files():
    # The doc's copy of each default is held here: a pin bumped in the manifest (and so in the file, above) fails
    # this until the doc says it too.
    defaults = DF.arg_defaults()
    rows = clawmine_build_arg_rows()
    assert len(rows) > 20
    for names, cell in rows:
        assert names and set(names) <= set(defaults), f"CLAWMINE names arguments the file lacks: {names}"
        values = [defaults[n] for n in names]
        if cell.startswith("empty"):
            assert values == [""] * len(values), (names, values)
            continue
        shown = re.findall(r"`([^`]+)`", cell)  # "abc…": a commit shown by its first digits
        if len(shown) == len(values):  # one shown value per argument, in order
            for name, v, have in zip(names, shown, values):
                assert have == v or (v.endswith("…") and have.startswith(v[:-1])), (name, v, have)
        else:
            for v in shown:
                assert any(v.removesuffix("…") in have for have in values), (names, v, values)


def test_gracectls_uv_is_the_images_uv():
    # Written once, in the file (UV_VERSION: the image's installer); pyproject's pin of gracectl's own resolver
    # (release check resolves with it for the image) is the copy held here.
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    (pinned,) = re.findall(r'"uv==([^"]+)"', pyproject)
    assert pinned == DF.arg_defaults()["UV_VERSION"]
