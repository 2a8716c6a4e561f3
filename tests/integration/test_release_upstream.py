"""`gracectl release new/check` against the REAL upstream: vLLM's sdists and the wheels they pin on PyPI, uv's
resolver, and the real triton_kernels trees the test bed's Triton repository serves (the ones vLLM's own wheels
vendor). Caches live in the test bed's state folder (upstream/), shared with .ci/run's `release check`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gracectl.adapters.package_index import PackageIndex
from gracectl.errors import ReleaseCheckError
from gracectl.releases.manifest import release_names, releases_dir
from gracectl.pipeline.stages import Params
from gracectl.releases.train import check_before_build
from gracectl.releases.train import Choices, contract_module, derive
from gracectl.testbed.mirror_file import REAL
from gracectl.testbed.standins import commit_tree
from gracectl.testbed.upstream import PYPI_SIMPLE, upstream_cache
from index_standins import serve, standin_index

pytestmark = pytest.mark.integration


def gracectl(bed, *args: str, releases: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRACECTL_UPSTREAM_CACHE": str(upstream_cache(bed.root))}
    if releases:
        env["GRACECTL_RELEASES_DIR"] = str(releases)
    return subprocess.run([sys.executable, "-m", "gracectl", *args], capture_output=True, text=True, env=env,
                          timeout=1800)


@pytest.fixture(scope="module")
def index(bed) -> PackageIndex:
    return PackageIndex(PYPI_SIMPLE, upstream_cache(bed.root))


@pytest.fixture
def releases_copy(tmp_path) -> Path:
    dest = tmp_path / "releases"
    shutil.copytree(releases_dir(), dest)
    return dest


@pytest.fixture(scope="module")
def mirror(bed, tmp_path_factory) -> str:
    """The test bed's real-stack mirror (its git mirrors of Triton, FlashMLA, ...) with the Python indexes
    pointed at PyPI itself, not at the test bed's caching proxy: uv then reads wheel metadata with range requests
    (~50 MB), where the proxy (no PEP 658 files, no ranges) fetches and keeps every wheel whole: ~8 GB of CUDA
    wheels for 0.25/0.34 on a fresh machine, measured. The builds keep using the proxy."""
    proxy = r'= "http://127\.0\.0\.1:\d+/index"'
    text = re.sub(proxy, '= "https://pypi.org/simple"', bed.mirror_for(REAL).read_text())
    path = tmp_path_factory.mktemp("mirror") / "mirror-pypi.toml"
    path.write_text(text)
    return str(path)


def offline(bed, mirror: str, *args: str, releases: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`release check ... --offline` through the same mirror as `checked_online`, so from the cache it filled
    (the cache is per index)."""
    return gracectl(bed, "release", "check", *args, "--offline", "--mirror", mirror, releases=releases)


@pytest.fixture(scope="module")
def checked_online(bed, mirror) -> subprocess.CompletedProcess[str]:
    """The CI gate, run once: every manifest in releases/ re-derived from upstream (pins, pairing, resolution).
    It fills the upstream cache the --offline checks read (a fresh machine has nothing else there)."""
    return gracectl(bed, "release", "check", "--mirror", mirror)


def test_every_shipped_manifest_is_what_its_release_says(checked_online):
    done = checked_online
    assert done.returncode == 0, done.stdout + done.stderr
    for name in release_names():
        assert re.search(rf"^{re.escape(name)}: \d+ checks, 0 failed$", done.stdout, re.M), name
    assert done.stdout.count("ok       pairing.") == len(release_names())
    assert done.stdout.count("ok       resolve") == len(release_names())
    # Each fallback resolves exactly its tfa manifest's set: resolved once (~13 s saved per release).
    fallbacks = [n for n in release_names() if not n.endswith("-tfa")]
    assert done.stdout.count("(the same requirement set as v") == len(fallbacks)
    for name in fallbacks:
        assert re.search(rf"^{re.escape(name)}: \d+ checks.*\n(?:  .*\n)*? +ok +resolve .*\(the same requirement set as "
                         rf"{re.escape(name)}-tfa: its resolution reused\)$", done.stdout, re.M), name


def test_a_planted_drift_fails_naming_the_pin_and_its_origin(bed, mirror, checked_online, releases_copy):
    path = releases_copy / "v0.25.0-tfa.toml"
    path.write_text(path.read_text().replace('ref = "a6ec2ba7bd0a7dff98b3f4d3e6b52b159c48d78b"',
                                             'ref = "' + "0" * 40 + '"'))
    done = offline(bed, mirror, "v0.25.0-tfa", "v0.25.0", "--no-resolve", releases=releases_copy)
    assert done.returncode == ReleaseCheckError.exit_code, done.stdout + done.stderr
    drift = [line for line in done.stdout.splitlines() if "DRIFT" in line]
    # The fallback extends the tfa manifest: both carry the planted pin.
    assert len(drift) == 2 and all("sources.flashmla.ref" in line for line in drift)
    assert "upstream a6ec2ba7bd0a7dff98b3f4d3e6b52b159c48d78b (cmake/external_projects/flashmla.cmake:22)" in drift[0]
    assert done.stderr.strip().splitlines()[-1].startswith("error: 2 release(s) differ from upstream")


def stale_tree(bed, tmp_path: Path) -> Path:
    """The real v3.6.0 triton_kernels with class SparseMatrix removed (a 3.5-era tree, vLLM issue 36004)."""
    tree = upstream_cache(bed.root) / "triton_kernels" / "vllm-0.19.0-vendored" / "triton_kernels"
    assert tree.is_dir(), "`gracectl testbed up` extracts it from the vLLM 0.19.0 wheel"
    return contract_module().make_stale_copy(tree, tmp_path / "stale") / "triton_kernels"


def test_a_known_bad_pairing_is_refused_before_any_build_with_the_missing_names(bed, mirror, checked_online,
                                                                               tmp_path):
    stale = stale_tree(bed, tmp_path)
    done = offline(bed, mirror, "v0.19.0-tfa", "--no-resolve", "--triton-kernels-tree", f"v3.6.0={stale}")
    assert done.returncode == ReleaseCheckError.exit_code, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if "pairing.site-packages" in line)
    assert line.lstrip().startswith("FAIL") and "triton_kernels.tensor.SparseMatrix" in line
    assert "Failed to import Triton kernels" in line


def test_the_plan_stage_refuses_that_pairing_from_the_sites_git_mirror(bed, tmp_path):
    """The same refusal in the pipeline, with the tree fetched through a mirror as on a site (a git repository
    whose v3.6.0 tag holds the stale tree): the plan stage fails, so build never starts."""
    stale = stale_tree(bed, tmp_path)
    work = tmp_path / "work" / "python" / "triton_kernels"
    shutil.copytree(stale, work / "triton_kernels")
    bare = tmp_path / "triton.git"
    commit_tree(bare, tmp_path / "work", "stale triton_kernels", tag="v3.6.0")
    mirror = tmp_path / "mirror.toml"
    mirror.write_text(f'[repos]\n"https://github.com/triton-lang/triton.git" = "file://{bare}"\n')
    params = Params(release="v0.19.0-tfa", mirror=str(mirror), upstream_cache=str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    shutil.copytree(upstream_cache(bed.root) / "sdist", tmp_path / "cache" / "sdist")  # sdist from the cache
    shutil.copytree(upstream_cache(bed.root) / "index", tmp_path / "cache" / "index")
    with pytest.raises(ReleaseCheckError, match=r"pairing.site-packages v3.6.0: .*missing triton_kernels\.tensor\.SparseMatrix"):
        check_before_build(params.release, vllm_ref=params.vllm_ref, mirror_file=params.mirror,
                           upstream_cache=params.upstream_cache)  # as the plan stage calls it


def test_release_0_34_0_pins_are_what_its_files_say(index):
    """Every pin `release new 0.34.0` derives is on the line of the release's own file that its origin names;
    the facts the issue found by hand are among them."""
    d = derive(index, "0.34.0", Choices())
    checked = 0
    for path, origin in d.provenance.items():
        file, _, line = origin.partition(":")
        # The values a file line holds (repo, env and subdir sit on other lines of the same block; the base
        # image tags and package names are built from CUDA_VERSION's line, checked through cuda.version).
        if not line.isdigit() or not path.endswith((".ref", "torch.version", ".torchvision", ".torchaudio",
                                                     "flashinfer.version", "python.version", "cuda.version")):
            continue
        text = (d.sdist / file).read_text().splitlines()[int(line) - 1]
        assert str(_value(d.data, path)) in text, f"{path} = {_value(d.data, path)} is not on {origin}: {text!r}"
        checked += 1
    assert checked >= 15
    src = d.data["sources"]
    assert d.data["torch"]["version"] == "2.14.0" and d.data["torch"]["cuda_build_on_index"] is True
    assert d.data["flashinfer"]["version"] == "0.7.3" and d.data["flashinfer"]["jit_cache_index_url"] == ""
    assert d.data["cuda"]["version"] == "13.0" and d.data["base"]["runtime"]["tag"] == "13.0.3-base-ubuntu24.04"
    assert src["cmake"]["cutlass"]["ref"] == "v4.7.1" and "qutlass" not in src["cmake"]
    assert {"deepgemm", "deepselect", "flashkda", "fmha_sm100", "tml_fa4", "triton_kernels"} <= set(src["cmake"])
    assert "deepgemm" not in src  # fetched by vLLM's cmake now, no wheel of its own
    assert src["cmake"]["triton_kernels"]["ref"] == "v3.5.1"  # what vLLM vendors...
    assert src["triton"]["ref"] == "v3.8.0" and src["triton_kernels"]["ref"] == "v3.8.0"  # ...and what its torch runs
    assert "torch-2.14.0" in d.provenance["sources.triton.ref"]
    assert "Requires-Dist: triton~=3.8.0" in d.provenance["sources.triton.ref"]


def _value(data: dict, path: str):
    for part in path.split("."):
        data = data[part]
    return data


def test_release_new_0_34_0_refuses_what_cannot_build_and_writes_nothing(bed, mirror, releases_copy):
    done = gracectl(bed, "release", "new", "0.34.0", "--mirror", mirror, releases=releases_copy)
    assert done.returncode == ReleaseCheckError.exit_code, done.stdout + done.stderr
    assert "no version of flashinfer-python==0.7.3" in done.stdout
    assert "--override NAME==VERSION" in done.stdout
    assert not list(releases_copy.glob("v0.34.0*"))
    # The documented way out resolves; the tfa's triton_kernels v3.8.0 (the Triton 3.8 that torch 2.14 brings)
    # is in no wheel, so the test bed's mirror cannot serve it: refused, naming the way to give it.
    done = gracectl(bed, "release", "new", "0.34.0", "--override", "flashinfer-python==0.7.4", "--reason",
                    "the index lacks 0.7.3", "--mirror", mirror, "--print",
                    releases=releases_copy)
    assert done.returncode == ReleaseCheckError.exit_code, done.stdout + done.stderr
    # The override resolves; what then does not is a runtime extra of 0.34.0's own final image (its
    # runai-model-streamer[s3,gcs,azure]>=0.17.1: the index has no runai-model-streamer-azure 0.17.1), named.
    assert "pairing.vendored v3.5.1" in done.stdout and "flashinfer-python" not in done.stdout.split("FAIL     resolve")[-1][:300]
    assert "runai-model-streamer-azure==0.17.1" in done.stdout
    assert "cannot fetch triton_kernels v3.8.0" in done.stdout and "--triton-kernels-tree v3.8.0=DIR" in done.stdout
    assert '"python.overrides.flashinfer-python" = "override: the index lacks 0.7.3"' in done.stdout
    assert not list(releases_copy.glob("v0.34.0*"))


def test_release_new_writes_what_is_committed(bed, mirror, releases_copy):
    """`release new 0.25.0` from scratch gives exactly the committed manifests (the ones CI builds)."""
    for name in ("v0.25.0-tfa", "v0.25.0"):
        (releases_copy / f"{name}.toml").unlink()
    done = gracectl(bed, "release", "new", "0.25.0", "--mirror", mirror, releases=releases_copy)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("v0.25.0-tfa", "v0.25.0"):
        written = (releases_copy / f"{name}.toml").read_text()
        assert written == (releases_dir() / f"{name}.toml").read_text(), name


def test_offline_check_needs_only_the_cache(bed, mirror, checked_online):
    done = offline(bed, mirror, "v0.19.0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped  resolve" in done.stdout and "offline" in done.stdout


@pytest.mark.parametrize("version", ["0.19.0", "0.25.0"])
def test_every_install_of_upstreams_final_image_is_installed_or_excluded_with_a_reason(index, version):
    """The release's own docker/Dockerfile, from its sdist on the index: every install of its final image (pip, apt,
    DeepEP + NVSHMEM, gdrcopy) has its entry in the shipped manifest: installed, covered, or excluded with a
    reason, and what upstream installs is what the entry says."""
    from gracectl.releases.manifest import load_release
    from gracectl.releases.final_stage import final_stage_installs

    installs = final_stage_installs(index.sdist("vllm", version))
    m = load_release(f"v{version}-tfa")
    for item in installs:
        key = item.key.replace("requirements/", "requirements-").removesuffix(".txt")
        extra = m.runtime_extras.get(key)
        assert extra, f"{item.spec} ({item.origin}) has no entry in v{version}-tfa"
        assert extra.kind == item.kind and (extra.upstream == item.spec or item.kind in ("build", "download"))
        assert extra.install or extra.covered or len(extra.excluded) > 40
    assert len(m.runtime_extras) == len(installs)
    assert m.runtime_extras["deepep"].ref == "73b6ea4" and m.runtime_extras["deepep"].nvshmem == "3.3.24"


def test_an_upstream_install_the_manifest_drops_fails_release_check(bed, mirror, checked_online, releases_copy):
    path = releases_copy / "v0.19.0-tfa.toml"
    text = path.read_text()
    block = text[text.index("[runtime_extras.timm]"):]
    path.write_text(text.replace(block[:block.index("\n\n") + 2], ""))
    done = offline(bed, mirror, "v0.19.0-tfa", "--no-resolve", releases=releases_copy)
    assert done.returncode == ReleaseCheckError.exit_code, done.stdout + done.stderr
    drift = [line for line in done.stdout.splitlines() if "DRIFT" in line]
    assert len(drift) == 1 and "runtime_extras.timm" in drift[0], drift
    assert "timm>=1.0.17 (pip, docker/Dockerfile:646); the manifest neither installs nor excludes it" in drift[0]


def test_release_new_0_27_1_derives_nccl_and_resolves_through_the_mirrored_extra_index(bed, mirror, tmp_path):
    """0.27.1's requirements/cuda.txt adds FlashInfer's wheel site (flashinfer-cubin is no longer on PyPI) and its
    versions.json sets NCCL_VERSION: `release new` names the index, resolves through the site's mapping of it,
    says what to do when the index cannot be reached, and derives the NCCL pin and the recipe."""
    root = standin_index(tmp_path / "flashinfer-whl", "flashinfer-cubin", "0.6.16.post3")
    with serve(root) as url:
        mapped, dead = tmp_path / "mapped.toml", tmp_path / "dead.toml"
        text = Path(mirror).read_text()
        line = '"https://flashinfer.ai/whl/" = "{}"\n'
        mapped.write_text(text.replace("[indexes]\n", "[indexes]\n" + line.format(url), 1))
        dead.write_text(text.replace("[indexes]\n", "[indexes]\n" + line.format("http://127.0.0.1:9/"), 1))
        done = gracectl(bed, "release", "new", "0.27.1", "--print", "--mirror", str(mapped))
        out = done.stdout + done.stderr
        assert re.search(r"v0\.27\.1-tfa: ok +resolve +\d+ packages resolve", out), out[-3000:]
        assert 'extra_index_urls = ["https://flashinfer.ai/whl/"]' in out
        assert 'nccl_version = "2.30.7"' in out and '"recipe.nccl_version" = "docker/versions.json:' in out
        assert 'build_requirements = ["requirements/build/cuda.txt"]' in out and 'rust_toolchain = "1.95"' in out
        unreachable = gracectl(bed, "release", "new", "0.27.1", "--print", "--mirror", str(dead))
        assert unreachable.returncode == ReleaseCheckError.exit_code
        assert "an index cannot be reached: map it to the site's mirror" in unreachable.stdout, unreachable.stdout[-2000:]


def test_release_new_pins_the_base_images_by_digest_through_the_mirror(bed, mirror, registry, oci_image, tmp_path):
    """The site's mirror holds copies of the CUDA bases (same manifests, so upstream's digests): `release new` writes
    each base's digest read there; where the mirror's bases are STAND-INs (the test bed's) it pins by tag and says so."""
    text = Path(mirror).read_text()
    images = re.findall(r'(?m)^"(nvcr\.io/[^"]+)" = "[^"]*"$', text)
    assert images, "the test bed's mirror maps no CUDA base"
    digests = {}
    for n, upstream in enumerate(sorted(images)):
        there = f"{registry}/site-mirror/cuda:{upstream.rsplit(':', 1)[1]}"
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", oci_image(f"base {n}"), f"docker://{there}"],
                       check=True, capture_output=True)
        inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{there}"], check=True,
                                   capture_output=True, text=True).stdout
        digests[upstream] = json.loads(inspected)["Digest"]
        text = re.sub(rf'(?m)^"{re.escape(upstream)}" = "[^"]*"$', f'"{upstream}" = "{there}"', text)
    site = tmp_path / "site.toml"
    site.write_text(text.replace("standin_images = true", "standin_images = false"))
    done = gracectl(bed, "release", "new", "0.25.0", "--print", "--mirror", str(site))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    for upstream, digest in digests.items():
        if "-0.25" in upstream or "13.0.2" in upstream:
            assert f'digest = "{digest}"' in done.stdout
    assert '"base.runtime.digest" = "resolved through the mirror: ' in done.stdout
    standin = gracectl(bed, "release", "new", "0.25.0", "--print", "--mirror", mirror)
    assert "pinned by tag only (digest not resolved: the mirror's" in standin.stdout
    assert 'digest = ""' in standin.stdout


def test_the_prefetch_is_checked_against_the_real_pinned_flashinfer_wheel(index):
    """vllm/flashinfer-prefetch.py's imports against the REAL flashinfer-python wheels (read by HTTP ranges): 0.19.0's
    FlashInfer 0.6.6 has them; 0.25.0's 0.6.13 has no download_trtllm_headers, so a manifest that would run the
    prefetch with that pin is refused before a build (0.25.0's own recipe does not run it)."""
    from gracectl.releases.manifest import load_release
    from gracectl.releases.train import _build_imports_line

    assert _build_imports_line(load_release("v0.19.0-tfa"), index).status == "ok"
    m = load_release("v0.25.0-tfa")
    assert not m.recipe.flashinfer_prefetch and _build_imports_line(m, index).status == "ok"
    planted = m.model_copy(update={"recipe": m.recipe.model_copy(update={"flashinfer_prefetch": True})})
    line = _build_imports_line(planted, index)
    assert line.status == "FAIL" and "flashinfer.jit.cubin_loader.download_trtllm_headers" in line.text
    assert "flashinfer_python-0.6.13" in line.text


def stage_roots(dockerfile: str) -> dict[str, str]:
    """Each stage of a Dockerfile -> the image ARG its FROM chain starts at (e.g. BUILD_BASE_IMAGE)."""
    bases = dict((name, base) for base, name in re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)\s+AS\s+(\S+)\s*$",
                                                           dockerfile, flags=re.M | re.I))

    def root(name: str) -> str:
        base = bases[name]
        return root(base) if base in bases else base.strip("${}")
    return {name: root(name) for name in bases}


@pytest.mark.parametrize("version", ["0.19.0", "0.25.0"])
def test_stages_named_as_upstreams_are_on_the_same_side_as_upstreams(index, version):
    """The release's own docker/Dockerfile, from its sdist: a stage of ours named as one of upstream's is built on
    the same kind of base there (the devel build base or the runtime base), so `base` and `vllm-base` mean here what
    they mean upstream."""
    from gracectl.checkout import DOCKERFILE

    side = {"BUILD_BASE_IMAGE": "devel", "FINAL_BASE_IMAGE": "runtime", "RUNTIME_BASE_IMAGE": "runtime"}
    upstream = stage_roots((index.sdist("vllm", version) / "docker" / "Dockerfile").read_text())
    ours = stage_roots(DOCKERFILE.read_text())
    shared = set(upstream) & set(ours)
    assert {"base", "vllm-base", "build", "vllm-openai"} <= shared, sorted(upstream)
    if version == "0.25.0":
        assert {"rust-build", "vllm-openai-nonroot"} <= shared
    assert {name: side[ours[name]] for name in shared} == {name: side[upstream[name]] for name in shared}
    assert side[ours["base"]] == "devel" and side[ours["vllm-base"]] == "runtime"
