"""What a build actually resolved, recorded with it (the build record's "resolved"), for its SLSA provenance.

- base images: the digest BuildKit resolved each FROM to, as its plain progress prints it
  (`#5 [base 1/3] FROM 127.0.0.1:5000/testbed/runtime-base:bookworm@sha256:...`; printed for a cached step too);
- git sources: "REPO REF COMMIT" of every source a stage fetched (vllm/fetch-source.sh's .fetched-source, DeepEP's
  rev-parse), collected by the final stage into /opt/gracectl/fetched-sources.txt;
- downloads: "URL SHA256" of each file a stage downloaded (gdrcopy's .deb: /opt/gracectl/downloads.txt);
- Python distributions: every one installed in the final image (read there: name, version, wheel tags, installer,
  direct URL), each with the sha256 of the very wheel file it came from: the index's (the file of that name, version
  and tags on one of the build's indexes, with the sha256 the index publishes; for a project without a wheel, the
  sdist the installer built it from), the build's own (/wheels files: /opt/gracectl/wheels.sha256), or the base
  image's (the venv's seed pip, from its ensurepip wheel).

Anything without a digest is an error naming it: provenance never lists an input it cannot pin.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from packaging.utils import (InvalidSdistFilename, InvalidWheelFilename, canonicalize_name, parse_sdist_filename,
                             parse_wheel_filename)
from packaging.version import InvalidVersion, Version

from gracectl.adapters import docker, package_index, proc
from gracectl.errors import CommandFailedError, GraceError
from gracectl.image_ref import normalized_image

# A FROM step of BuildKit's plain progress, with the digest it resolved ("[linux/arm64 base 1/3]" with buildx).
FROM_RE = re.compile(r"^#\d+ \[(?:[a-z0-9]+/[a-z0-9/]+ )?[A-Za-z0-9._-]+ \d+/\d+\] FROM (\S+)@(sha256:[0-9a-f]{64})$")
IMAGE_FILES = ("fetched-sources.txt", "wheels.sha256", "downloads.txt")
# Run by the image's own python (stdlib only, no network): its distributions, the ensurepip wheels of its base, and
# what the final stage recorded under /opt/gracectl.
_IMAGE_SCRIPT = r"""
import glob, hashlib, json, os, sysconfig
def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
dists = []
for info in sorted(glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "*.dist-info"))):
    head = read(os.path.join(info, "METADATA")).split("\n\n", 1)[0]
    meta = dict(line.split(": ", 1) for line in head.splitlines() if line.startswith(("Name: ", "Version: ")))
    direct = read(os.path.join(info, "direct_url.json"))
    dists.append({"name": meta.get("Name", ""), "version": meta.get("Version", ""),
                  "installer": read(os.path.join(info, "INSTALLER")).strip(),
                  "tags": [l.split(":", 1)[1].strip() for l in read(os.path.join(info, "WHEEL")).splitlines()
                           if l.startswith("Tag:")],
                  "direct_url": json.loads(direct).get("url", "") if direct else ""})
bundled = {}
for pattern in ("/usr/share/python-wheels/*.whl",
                os.path.join(sysconfig.get_paths()["stdlib"], "ensurepip", "_bundled", "*.whl")):
    for path in glob.glob(pattern):
        with open(path, "rb") as f:
            bundled[os.path.basename(path)] = {"path": path, "sha256": hashlib.sha256(f.read()).hexdigest()}
try:  # the tags this interpreter installs, best first (what an installer ranks wheels by), from the venv's own pip
    from pip._vendor.packaging.tags import sys_tags
    supported = [str(t) for t in sys_tags()]
except ImportError:
    supported = []
print(json.dumps({"dists": dists, "bundled": bundled, "supported": supported,
                  "files": {n: read("/opt/gracectl/" + n) for n in %r}}))
""" % (IMAGE_FILES,)


def base_images(log_text: str) -> dict[str, str]:
    """Image reference -> the digest BuildKit resolved it to, from the build's plain progress log."""
    found: dict[str, str] = {}
    for line in log_text.splitlines():
        if m := FROM_RE.match(line.strip()):
            found[m.group(1)] = m.group(2)
    return found


def read_image(image: str, timeout: float = 600) -> dict:
    """What the image says it installed and the final stage recorded (the script above, run in the image)."""
    result = docker.run(["run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "python", image,
                         "-c", _IMAGE_SCRIPT], check=False, echo=False, timeout=timeout)
    if result.returncode != 0:
        raise CommandFailedError(f"reading the installed inputs of {image} failed (exit {result.returncode}): "
                                 f"{proc.last_line(result.stdout) or 'no output'}", returncode=result.returncode,
                                 output=result.stdout)
    try:
        return json.loads(result.stdout[result.stdout.index('{"dists"'):])
    except ValueError:
        raise CommandFailedError(f"reading the installed inputs of {image}: no JSON answer") from None


def _lines(text: str, fields: int) -> list[list[str]]:
    return [parts for parts in (line.split() for line in text.splitlines()) if len(parts) == fields]


def _wheel_matches(filename: str, name: str, version: str, tags: set[str]) -> bool:
    try:
        wname, wversion, _, wtags = parse_wheel_filename(filename)
        return (wname == canonicalize_name(name) and wversion == Version(version)
                and (not tags or {str(t) for t in wtags} == tags))
    except (InvalidWheelFilename, InvalidVersion):
        return False


def _sdist_matches(filename: str, name: str, version: str) -> bool:
    try:
        sname, sversion = parse_sdist_filename(filename)
        return sname == canonicalize_name(name) and sversion == Version(version)
    except (InvalidSdistFilename, InvalidVersion):
        return False


def python_inputs(found: dict, indexes: list[str]) -> list[dict]:
    """Every installed distribution with the wheel it came from: {"name", "version", "uri", "sha256", "from"}."""
    built = {Path(path).name: sha for sha, path in _lines(found["files"].get("wheels.sha256", ""), 2)}
    pages: dict[tuple[str, str], list[dict]] = {}

    rank = {tag: i for i, tag in enumerate(found.get("supported") or [])}

    def on_index(name: str, version: str, tags: set[str], sha: str = "", sdist: bool = False) -> dict | None:
        for index in indexes:
            if (index, name) not in pages:
                pages[index, name] = package_index.published_files(index, name)
            for f in pages[index, name]:
                matches = _sdist_matches(f["filename"], name, version) if sdist else \
                    _wheel_matches(f["filename"], name, version, tags)
                if matches and f["sha256"] and sha in ("", f["sha256"]):
                    return f
        return None

    def best_for_platform(name: str, version: str) -> dict | None:
        """The wheel of name==version an installer takes here (its best-ranked tag): for a wheel whose WHEEL file
        names other tags than its file name (NVIDIA's cusparselt: manylinux2014_sbsa inside, _aarch64 outside)."""
        ranked = []
        for index in indexes:
            for f in pages.get((index, name), []):
                if not (f["sha256"] and _wheel_matches(f["filename"], name, version, set())):
                    continue
                here = [rank[str(t)] for t in parse_wheel_filename(f["filename"])[3] if str(t) in rank]
                if here:
                    ranked.append((min(here), f))
        ranked.sort(key=lambda pair: pair[0])
        if not ranked or (len(ranked) > 1 and ranked[0][0] == ranked[1][0]
                          and ranked[0][1]["sha256"] != ranked[1][1]["sha256"]):
            return None  # none, or two different files as good: no way to say which one was installed
        return ranked[0][1]

    out, missing = [], []
    for d in found["dists"]:
        name, version, tags = d["name"], d["version"], set(d["tags"])
        entry = {"name": canonicalize_name(name), "version": version}
        if d["direct_url"].startswith("file:"):  # a wheel of /wheels: built here, or fetched by a stage
            filename = d["direct_url"].rsplit("/", 1)[-1]
            sha = built.get(filename, "")
            if not sha:
                missing.append(f"{name} {version} ({d['direct_url']}: not in /opt/gracectl/wheels.sha256)")
                continue
            f = on_index(name, version, tags, sha)  # an official wheel a stage downloaded (triton): its index URL
            out.append({**entry, "uri": f["url"] if f else d["direct_url"], "sha256": sha,
                        "from": "package index" if f else "built by this build"})
        elif d["installer"] == "pip" and (seed := next((b for fn, b in found["bundled"].items()
                                                        if _wheel_matches(fn, name, version, tags)), None)):
            # the venv's own pip/setuptools: `python -m venv` installed them from the base image's ensurepip wheel
            # (Debian rebuilds those: PyPI's file of the same name is other bytes)
            out.append({**entry, "uri": f"file://{seed['path']}", "sha256": seed["sha256"],
                        "from": "runtime base image (ensurepip)"})
        elif f := on_index(name, version, tags):
            out.append({**entry, "uri": f["url"], "sha256": f["sha256"], "from": "package index"})
        elif f := best_for_platform(name, version):
            out.append({**entry, "uri": f["url"], "sha256": f["sha256"],
                        "from": "package index (by this platform's tags: its WHEEL file names others)"})
        elif f := on_index(name, version, tags, sdist=True):  # no wheel for it: the installer built one from this
            out.append({**entry, "uri": f["url"], "sha256": f["sha256"], "from": "package index (sdist, built here)"})
        else:
            missing.append(f"{name} {version} (on none of {', '.join(indexes)} with a sha256)")
    if missing:
        raise GraceError(f"{len(missing)} installed distribution(s) have no wheel with a known sha256, so the "
                         f"provenance cannot pin them: {'; '.join(missing[:5])}")
    return out


def resolved(build_args: dict[str, str], image: str, log_text: str) -> dict:
    """The build record's "resolved": what this build of `image` read, each with its digest."""
    found = read_image(image)
    indexes = list(dict.fromkeys(u for u in (build_args.get("PIP_INDEX_URL"), build_args.get("TORCH_INDEX_URL"),
                                             build_args.get("FLASHINFER_INDEX_URL")) if u))
    return {
        "images": base_images(log_text),
        "git": [{"repo": repo, "ref": ref, "commit": commit}
                for repo, ref, commit in _lines(found["files"].get("fetched-sources.txt", ""), 3)],
        "downloads": [{"url": url, "sha256": sha} for url, sha in _lines(found["files"].get("downloads.txt", ""), 2)],
        "python": python_inputs(found, indexes),
    }
