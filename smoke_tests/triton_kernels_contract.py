"""What vLLM needs from triton_kernels (derived from vLLM's own source), how vLLM picks the package, and the
stale copies for the planted-fault runs.

vLLM catches a failed `from triton_kernels... import ...` and only LOGS "Failed to import Triton kernels",
then serves MoE models on a slower path (vLLM issues 39664, 36004): so the image must be checked here,
name by name, or a broken triton_kernels goes unnoticed until someone measures throughput.

The contract is read from vLLM's *.py files with `ast` (never imported), so it follows vLLM's version and
its triton_kernels "generations" (vllm/utils/import_utils.py:get_triton_kernels_version()). Stdlib only:
this file runs inside the image and gracectl loads it by path before any build (no `from __future__
import annotations`: with string annotations, @dataclass needs the module in sys.modules).
"""

import ast
import importlib
import importlib.util
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

VENDORED = "vllm.third_party.triton_kernels"
# The generations vLLM's get_triton_kernels_version() returns ("3.8": matmul_ogs renamed matmul; "3.5.1":
# before tensor.SparseMatrix). A vLLM comparing against another one fails derive_contract loudly.
GENERATIONS = ("3.5.1", "3.6", "3.8")
# A contract JSON file (Contract.to_dict) or a vLLM package folder: used where vLLM is not installed.
CONTRACT_ENV = "GRACECTL_TK_CONTRACT"
# Set to 1 to run the suite against a stale (3.5-era, no SparseMatrix) copy of the image's triton_kernels.
PLANT_STALE_ENV = "GRACECTL_PLANT_STALE_TRITON_KERNELS"
# Set to 1 to run it against a copy whose Hopper MXFP4 upcast reads every weight scale one exponent too high
# (each MXFP4 weight doubled inside matmul_ogs): the MXFP4 kernels and upstream levels must then fail.
PLANT_MX_SCALE_ENV = "GRACECTL_PLANT_MX_SCALE_OFF_BY_ONE"

_ANY = frozenset(GENERATIONS)
_NEVER: frozenset[str] = frozenset()
# vLLM's own detection functions: their imports probe which triton_kernels is there, they require nothing.
_PROBES = {"import_triton_kernels", "has_triton_kernels", "get_triton_kernels_version"}
# ROCm rule: the image is CUDA-only, so code that runs only on ROCm is no part of its contract. Files named
# for ROCm/AITER (platforms/rocm.py, _aiter_ops.py, rocm_aiter_fused_moe.py ...) are skipped, and so are
# branches whose condition is ROCm-only: it calls/names something with one of these words (is_rocm(),
# on_gfx950()) or reads a flag this file sets True only inside such a branch (0.19.0's
# use_legacy_triton_kernels, which guards the removed triton_kernels.routing). Their else branches stay:
# `if is_rocm(): A else: B` requires B. (vLLM keys its ROCm code by platform, never by generation.)
_ROCM_WORDS = ("rocm", "aiter", "gfx")
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclass(frozen=True)
class Need:
    """One name vLLM imports: `from triton_kernels.<module> import <name>`; name "" is the module itself."""
    module: str                              # relative to triton_kernels ("" the package)
    name: str
    generations: tuple[str, ...] | None      # None: any generation
    optional: bool                           # imported where vLLM falls back quietly (except ImportError)
    where: tuple[str, ...]                   # "vllm/<file>.py:<line>"

    @property
    def dotted(self) -> str:
        return ".".join(p for p in ("triton_kernels", self.module, self.name) if p)


@dataclass(frozen=True)
class Contract:
    needs: tuple[Need, ...]

    def to_dict(self) -> dict:
        return {"schema": 1, "generations": list(GENERATIONS),
                "needs": [{"module": n.module, "name": n.name,
                           "generations": list(n.generations) if n.generations is not None else None,
                           "optional": n.optional, "where": list(n.where)} for n in self.needs]}

    @classmethod
    def from_dict(cls, data: dict) -> "Contract":
        if data.get("schema") != 1:
            raise ValueError(f"unknown triton_kernels contract schema {data.get('schema')!r}")
        return cls(tuple(Need(d["module"], d["name"],
                              tuple(d["generations"]) if d["generations"] is not None else None,
                              bool(d["optional"]), tuple(d["where"])) for d in data["needs"]))


def _tk_module(dotted: str | None) -> str | None:
    """"triton_kernels.a.b" (or the vendored spelling) -> "a.b"; the package itself -> ""; else None."""
    for prefix in ("triton_kernels", VENDORED):
        if dotted == prefix or (dotted or "").startswith(prefix + "."):
            return dotted[len(prefix) + 1:]
    return None


def _leaf_name(node: ast.AST) -> str:
    node = node.func if isinstance(node, ast.Call) else node
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _is_version(node: ast.AST) -> bool:
    """`triton_kernels_version` (any name ending so) or a call of get_triton_kernels_version()."""
    return (isinstance(node, ast.Name) and node.id.endswith("triton_kernels_version")) or (
        isinstance(node, ast.Call) and _leaf_name(node) == "get_triton_kernels_version")


def _literals(node: ast.AST) -> frozenset[str]:
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    values = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
    if unknown := values - _ANY:
        raise ValueError(f"vLLM compares its triton_kernels version with {sorted(unknown)}, this contract "
                         f"knows {list(GENERATIONS)}: update GENERATIONS and tree_generation")
    return frozenset(values)


# vLLM's own generation markers: a module whose absence means that generation, or (module, name).
_MARKERS = {"matmul_ogs": "3.8", ("tensor", "SparseMatrix"): "3.5.1"}


def _exits(stmts: list) -> bool:
    return bool(stmts) and isinstance(stmts[-1], (ast.Return, ast.Raise))


class _File:
    """One vLLM file: its triton_kernels imports, each with the generations it runs under on CUDA (the empty
    set: never) and whether vLLM tolerates its failure, and the names it uses (for private functions)."""

    def __init__(self, tree: ast.Module, rel: str):
        self.rel, self.flags = rel, {}
        # Pass 1 finds the flags (names set True only under some generations, or only on ROCm: 0.19.0's
        # use_legacy_triton_kernels); pass 2 reads the imports with them.
        for _ in range(2):
            self.imports, self.uses, self.true_sets = [], [], []
            self._walk(tree.body, _ANY, False, None)
            self.flags = {}
            for name in {n for n, _ in self.true_sets}:
                cond = frozenset().union(*[c for n, c in self.true_sets if n == name])
                if cond != _ANY:
                    self.flags[name] = cond

    def _branches(self, test: ast.AST) -> tuple[frozenset, frozenset]:
        """Generations under which `test` is (true, false). A test that says nothing: (any, any)."""
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            t, f = self._branches(test.operand)
            return f, t
        if isinstance(test, ast.BoolOp):
            ts, fs = zip(*map(self._branches, test.values))
            union, inter = frozenset().union, frozenset(_ANY).intersection
            return (inter(*ts), union(*fs)) if isinstance(test.op, ast.And) else (union(*ts), inter(*fs))
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            left, op, right = test.left, test.ops[0], test.comparators[0]
            if _is_version(right) and isinstance(op, (ast.Eq, ast.NotEq)):
                left, right = right, left
            if _is_version(left) and isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                s = _literals(right)
                return (s, _ANY - s) if isinstance(op, (ast.Eq, ast.In)) else (_ANY - s, s)
        if isinstance(test, ast.Name) and test.id in self.flags:
            # vLLM sets such a flag wherever its condition holds (the marker's except, the ROCm branch).
            return self.flags[test.id], _ANY - self.flags[test.id]
        if any(w in _leaf_name(n).lower() for n in ast.walk(test) for w in _ROCM_WORDS):
            return _NEVER, _ANY
        return _ANY, _ANY

    def _markers(self, stmts: list) -> frozenset:
        """Generations in which an import in `stmts` fails by vLLM's own definition (_MARKERS)."""
        found = set()
        for n in (n for st in stmts for n in ast.walk(st)):
            if isinstance(n, ast.Import):
                found.update(_MARKERS.get(_tk_module(a.name), "") for a in n.names)
            elif isinstance(n, ast.ImportFrom) and (m := _tk_module(n.module)) is not None:
                found.add(_MARKERS.get(m, ""))
                found.update(_MARKERS.get((m, a.name), "") for a in n.names)
        return frozenset(found - {""})

    def _walk(self, stmts, cond, optional, func):
        for st in stmts:
            for expr in (c for c in ast.iter_child_nodes(st) if isinstance(c, ast.expr)):
                self.uses += [(n.id, cond, func) for n in ast.walk(expr)
                              if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
            if isinstance(st, ast.Assign) and isinstance(st.value, ast.Constant) and st.value.value is True:
                self.true_sets += [(t.id, cond) for t in st.targets if isinstance(t, ast.Name)]
            elif isinstance(st, ast.Import):
                for alias in st.names:
                    if (m := _tk_module(alias.name)):          # `import triton_kernels` alone: the package
                        self.imports.append((m, "", cond, optional, func, st.lineno))
            elif isinstance(st, ast.ImportFrom) and not st.level and (m := _tk_module(st.module)) is not None:
                self.imports += [(m, a.name if a.name != "*" else "", cond, optional, func, st.lineno)
                                 for a in st.names]
            elif isinstance(st, ast.If):
                t, f = self._branches(st.test)
                self._walk(st.body, cond & t, optional, func)
                self._walk(st.orelse, cond & f, optional, func)
                # After `if X: ... return`, the rest of the block runs only where X is false.
                cond = cond & (f if _exits(st.body) else _ANY) & (t if _exits(st.orelse) else _ANY)
            elif isinstance(st, ast.Try) or type(st).__name__ == "TryStar":
                # vLLM tolerates a failure here unless the handler re-raises or logs an error ...
                catches = [h for h in st.handlers if h.type is None or _IMPORT_ERRORS & {
                    _leaf_name(e) for e in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type])}]
                fatal = any(isinstance(n, ast.Raise) or (isinstance(n, ast.Call) and _leaf_name(n) in
                            ("error", "exception", "critical")) for h in catches for n in ast.walk(h))
                swallow, markers = bool(catches) and not fatal, self._markers(st.body)
                # ... and a tolerated try of a marker (0.25.0's `try: from triton_kernels.tensor import
                # SparseMatrix except ImportError: legacy = True`) is vLLM's version test: an if/else.
                body_cond = cond - markers if swallow and markers else cond
                self._walk(st.body, body_cond, optional or (swallow and not markers), func)
                for h in st.handlers:   # a fallback import is one alternative: not required by itself
                    self._walk(h.body, cond & markers if markers else cond, optional or h in catches, func)
                self._walk(st.orelse + st.finalbody, cond, optional, func)
            elif isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if st.name not in _PROBES:
                    self._walk(st.body, cond, optional, func or st.name)
            elif isinstance(st, ast.ClassDef):
                self._walk(st.body, cond, optional, f"{st.name}.")  # methods: never a private-function key
            else:  # for/while/with/match: their bodies run under the same condition
                for field in ("body", "orelse", "finalbody"):
                    self._walk(getattr(st, field, []), cond, optional, func)
                for case in getattr(st, "cases", []):
                    self._walk(case.body, cond, optional, func)


def _function_conditions(f: _File, local: set[str]) -> dict[str, frozenset]:
    """A private function used only in its own file (`local`) runs under the union of its use sites'
    generations (0.34.0's _patch_make_bitmatrix_metadata() is called only under "3.6"). Other functions
    may be called from anywhere: any generation."""
    conds = {name: _NEVER for name in local}
    for _ in range(len(conds) + 1):  # least fixed point over the in-file use graph
        new = {name: frozenset().union(*[c & conds.get(caller, _ANY) for used, c, caller in f.uses
                                         if used == name]) for name in conds}
        if new == conds:
            break
        conds = new
    return conds


def derive_contract(vllm_pkg: Path) -> Contract:
    """Every triton_kernels import in the vLLM package folder `vllm_pkg` (vllm-X/vllm), read with ast."""
    vllm_pkg = Path(vllm_pkg)
    texts = {}
    for path in sorted(vllm_pkg.rglob("*.py")):
        rel = path.relative_to(vllm_pkg)
        if "third_party" in rel.parts or any(w in part.lower() for part in rel.parts for w in _ROCM_WORDS):
            continue  # the vendored triton_kernels itself; ROCm-only modules (see _ROCM_WORDS)
        texts[f"{vllm_pkg.name}/{rel.as_posix()}"] = path.read_text(encoding="utf-8", errors="replace")
    found: dict[tuple, set[str]] = {}
    for rel, text in texts.items():
        if "triton_kernels" not in text:
            continue
        f = _File(ast.parse(text, rel), rel)
        own = {func for *_, func, _ in f.imports if func and func.startswith("_")}
        local = {name for name in own if any(name == used for used, _, _ in f.uses)
                 and not any(name in other for r, other in texts.items() if r != rel)}
        funcs = _function_conditions(f, local)
        for module, name, cond, optional, func, line in f.imports:
            cond = cond & funcs.get(func, _ANY)
            if cond:  # the empty set: ROCm-only, or a branch no generation reaches
                gens = None if cond == _ANY else tuple(g for g in GENERATIONS if g in cond)
                found.setdefault((module, name, gens, optional), set()).add(f"{rel}:{line}")
    by_line = lambda w: (w.rsplit(":", 1)[0], int(w.rsplit(":", 1)[1]))  # noqa: E731
    return Contract(tuple(Need(*key, tuple(sorted(where, key=by_line))) for key, where in
                          sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or (), kv[0][3]))))


def required(contract: Contract, generation: str) -> dict[str, list[str]]:
    """Module -> names vLLM cannot do without on a triton_kernels of `generation` ([]: the module itself).
    What another entry implies is left out: `from triton_kernels.a import b` where module a.b is required
    (importing it makes b an attribute of a), and package a itself where a.b is."""
    if generation not in GENERATIONS:
        raise ValueError(f"unknown triton_kernels generation {generation!r} (known: {list(GENERATIONS)})")
    out: dict[str, set[str]] = {}
    for n in contract.needs:
        if not n.optional and (n.generations is None or generation in n.generations):
            out.setdefault(n.module, set()).update([n.name] if n.name else [])
    dotted = lambda m, x: ".".join(p for p in (m, x) if p)  # noqa: E731
    names = {m: sorted(x for x in xs if dotted(m, x) not in out) for m, xs in sorted(out.items())}
    return {m: xs for m, xs in names.items() if xs or not any(o.startswith(dotted(m, "") + ".") for o in out)}


def _module_file(tk_dir: Path, module: str) -> Path | None:
    base = tk_dir.joinpath(*module.split(".")) if module else tk_dir
    for candidate in (base.with_name(base.name + ".py") if module else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _top_level_names(path: Path) -> set[str] | None:
    """Names a module defines at its top level (inside top-level if/try too); None: a `*` import."""
    names: set[str] = set()
    def visit(stmts):
        for st in stmts:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(st.name)
            elif isinstance(st, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for t in st.targets if isinstance(st, ast.Assign) else [st.target]:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(st, (ast.Import, ast.ImportFrom)):
                if any(a.name == "*" for a in st.names):
                    return True
                names.update(a.asname or a.name.split(".")[0] for a in st.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                if not isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    if visit(getattr(st, field, [])):
                        return True
        return False
    tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), str(path))
    return None if visit(tree.body) else names


def _defines(tk_dir: Path, module: str, name: str) -> bool:
    file = _module_file(tk_dir, module)
    names = _top_level_names(file) if file else set()
    return names is None or name in names or _module_file(tk_dir, f"{module}.{name}" if module else name) is not None


def tree_generation(tk_dir: Path) -> str:
    """vLLM's get_triton_kernels_version() applied to the package folder, without importing it."""
    if _module_file(Path(tk_dir), "matmul_ogs") is None:
        return "3.8"
    return "3.6" if _defines(Path(tk_dir), "tensor", "SparseMatrix") else "3.5.1"


def missing_in_tree(tk_dir: Path, needed: dict[str, list[str]]) -> list[str]:
    """What the triton_kernels package folder `tk_dir` lacks of `needed` (required()'s dict), read with ast."""
    tk_dir, problems = Path(tk_dir), []
    for module, names in needed.items():
        dotted = ".".join(p for p in ("triton_kernels", module) if p)
        file = _module_file(tk_dir, module)
        if file is None:
            rel = module.replace(".", "/")
            problems.append(f"{dotted} (no {rel}.py or {rel}/__init__.py)")
            continue
        problems += [f"{dotted}.{name} ({file.relative_to(tk_dir).as_posix()} defines no {name})"
                     for name in names if not _defines(tk_dir, module, name)]
    return problems


def installed_vllm_dir() -> Path | None:
    """The installed vllm package's folder, found without importing vllm (None: not installed)."""
    spec = importlib.util.find_spec("vllm")
    return Path(spec.origin).parent if spec is not None and spec.origin is not None else None


def installed_contract() -> Contract:
    """The contract of the installed vLLM; where there is none, the one CONTRACT_ENV names."""
    if (pkg := installed_vllm_dir()) is not None:
        return derive_contract(pkg)
    if not (value := os.environ.get(CONTRACT_ENV)):
        raise RuntimeError(f"vLLM is not installed and ${CONTRACT_ENV} is not set: nothing to derive the "
                           f"triton_kernels contract from (set it to a contract JSON file or a vLLM package folder)")
    path = Path(value)
    return derive_contract(path) if path.is_dir() else Contract.from_dict(json.loads(path.read_text()))


def vllm_installed() -> bool:
    """vLLM is importable as a regular package (a folder named vllm/ in the working directory, such as this
    repository's vllm/ with its Dockerfile, is only a namespace package and does not count)."""
    return installed_vllm_dir() is not None


def load_triton_kernels() -> ModuleType:
    """The triton_kernels module vLLM would use: vLLM's own import_triton_kernels() when vLLM is installed
    (a top-level package wins, else vllm.third_party.triton_kernels is aliased), else a plain import."""
    if vllm_installed():
        from vllm.utils.import_utils import import_triton_kernels

        import_triton_kernels()
        if "triton_kernels" not in sys.modules:
            raise ImportError("vLLM found no triton_kernels: neither a top-level package nor " + VENDORED)
        return sys.modules["triton_kernels"]
    import triton_kernels

    return triton_kernels


def loaded_mode(module: ModuleType) -> str:
    """"vendored" for vLLM's copy (aliased into sys.modules, its __name__ stays the vendored one),
    "site-packages" for a top-level package (site-packages or PYTHONPATH)."""
    return "vendored" if module.__name__ == VENDORED else "site-packages"


def package_dir(module: ModuleType) -> Path:
    return Path(module.__file__).resolve().parent


def contract_problems(contract: Contract | None = None) -> list[str]:
    """Every name the contract (default: installed_contract()) requires of the loaded triton_kernels'
    generation that cannot be imported, as vLLM imports it (`triton_kernels.<module>`)."""
    contract = contract or installed_contract()
    try:
        generation = tree_generation(package_dir(load_triton_kernels()))
    except Exception as exc:
        return [f"triton_kernels cannot be loaded: {type(exc).__name__}: {exc}"]
    problems = []
    for module_name, names in required(contract, generation).items():
        full = ".".join(p for p in ("triton_kernels", module_name) if p)
        try:
            module = importlib.import_module(full)
        except Exception as exc:  # any import-time failure is what vLLM would hit
            problems.append(f"import {full} failed: {type(exc).__name__}: {exc}")
            continue
        # A name may be a submodule not imported yet (`from triton_kernels.a import submodule`).
        problems += [f"{full}.{name} is missing" for name in names if not hasattr(module, name) and not (
                     hasattr(module, "__path__") and importlib.util.find_spec(f"{full}.{name}"))]
    return problems


def find_installed_package() -> Path:
    """Folder of the image's triton_kernels (top-level first, as vLLM), found without importing it."""
    for name in ("triton_kernels", VENDORED):
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # vllm not installed
            spec = None
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0])
    raise FileNotFoundError("no triton_kernels package (top-level or vendored) to copy")


# The class with its decorators, up to the next top-level line (decorator lines matched without DOTALL:
# a DOTALL `@.*` would run from the file's first decorator and delete every class before SparseMatrix).
_SPARSE_MATRIX_CLASS = re.compile(r"^(?:@[^\n]*\n)*class SparseMatrix\b.*?(?=^\S|\Z)", re.M | re.S)


def make_stale_copy(source: Path, dest_root: Path) -> Path:
    """Copy the package `source` to dest_root/triton_kernels and delete class SparseMatrix from its
    tensor.py, as in a triton_kernels from before Triton 3.6. Returns dest_root (to put on sys.path)."""
    dest = dest_root / "triton_kernels"
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    tensor_py = dest / "tensor.py"
    text, n = _SPARSE_MATRIX_CLASS.subn("", tensor_py.read_text())
    if n != 1:
        raise RuntimeError(f"expected one `class SparseMatrix` in {source / 'tensor.py'}, found {n}")
    tensor_py.write_text(text)
    return dest_root


def make_patched_copy(source: Path, dest_root: Path, file: str, anchor: str, replacement: str,
                      count: int = 1) -> Path:
    """Copy the package `source` to dest_root/triton_kernels with `anchor` (exactly `count` times in `file`)
    replaced. Returns dest_root (to put on sys.path)."""
    return make_edited_copy(source, dest_root, file, ((anchor, replacement, count),))


def make_edited_copy(source: Path, dest_root: Path, file: str, edits) -> Path:
    """make_patched_copy with several (anchor, replacement, count) edits of one file, each anchor found exactly
    `count` times before any is applied."""
    dest = dest_root / "triton_kernels"
    text = (source / file).read_text()
    for anchor, _, count in edits:
        if text.count(anchor) != count:
            raise RuntimeError(f"expected {'one' if count == 1 else count} {anchor.strip()!r} in {source / file}, "
                               f"found {text.count(anchor)}")
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for anchor, replacement, _ in edits:
        text = text.replace(anchor, replacement)
    (dest / file).write_text(text)
    return dest_root


# The planted MX-scale fault: in the Hopper MXFP4 -> bf16 upcast that matmul_ogs runs on each weight tile, the
# scale bytes (e8m0 exponents) are raised by one before use.
MX_SCALE_FILE = "tensor_details/layout_details/hopper_value.py"
_MX_SCALE_ANCHOR = "    # upcast scale to bfloat16\n"
_MX_SCALE_FAULT = "    scale = (scale + 1).to(scale.dtype)  # PLANTED FAULT (gracectl smoke): one exponent too high\n"
# The planted router fault: topk's softmax over the selected logits runs at temperature 1/1.5.
TOPK_FILE = "topk_details/_topk_forward.py"
_TOPK_ANCHOR = "tl.softmax(y_values.to(tl.float32), dim=1"
_TOPK_FAULT = "tl.softmax(y_values.to(tl.float32) * 1.5, dim=1"  # PLANTED FAULT


# The planted FP4 decode fault, inside the PTX of the Hopper MXFP4 -> bf16 upcast: the mask that keeps sign,
# exponent and mantissa bits of the first of each four e2m1 values drops the mantissa bit, so 0.5, 1.5, 3 and 6
# of a quarter of the weights decode as 0, 1, 2 and 4 (scales untouched).
_FP4_DECODE_ANCHOR = "and.b32 $0, $4, 0b10000001110000001000000111000000;"
_FP4_DECODE_FAULT = "and.b32 $0, $4, 0b10000001100000001000000110000000; // PLANTED FAULT: mantissa bit dropped"


def make_fp4_decode_fault_copy(source: Path, dest_root: Path) -> Path:
    return make_patched_copy(source, dest_root, MX_SCALE_FILE, _FP4_DECODE_ANCHOR, _FP4_DECODE_FAULT)


def make_mx_scale_fault_copy(source: Path, dest_root: Path) -> Path:
    return make_patched_copy(source, dest_root, MX_SCALE_FILE, _MX_SCALE_ANCHOR, _MX_SCALE_ANCHOR + _MX_SCALE_FAULT)


def make_topk_fault_copy(source: Path, dest_root: Path) -> Path:
    return make_patched_copy(source, dest_root, TOPK_FILE, _TOPK_ANCHOR, _TOPK_FAULT)


# The planted tie-break fault: topk keys each logit with its expert id so that on equal logits the LOWER id wins
# ("stable top-k tie-breaks to value with smaller index"); the copy keys with the id itself, so the HIGHER id
# wins, and sorts its output ascending again (experts still in ascending id order: only tied picks change).
_TIE_EDITS = (("    return N_EXPTS_PAD - indx\n", "    return indx  # PLANTED FAULT: ties go to the higher id\n", 2),
              ("acc = tl.sort(acc, dim=1, descending=True)",
               "acc = tl.sort(acc, dim=1, descending=False)  # PLANTED FAULT (ids are keys now)", 1))
# The planted clamp fault, in the fused path only (_swiglu_fn, which matmul_ogs's FusedActivation runs): the
# limit is one lower (gpt-oss: 7.0 -> 6.0); the standalone swiglu kernel keeps the right one.
SWIGLU_FILE = "swiglu_details/_swiglu.py"
_CLAMP_ANCHOR = "    return compute_swiglu(gelu, linear, 1.0, alpha, limit)\n"
_CLAMP_FAULT = "    return compute_swiglu(gelu, linear, 1.0, alpha, limit - 1.0)  # PLANTED FAULT: limit 7 -> 6\n"
# The planted alpha fault, in compute_swiglu: the code the fused epilogue and the standalone kernel share, so
# upstream's test_fused_act (fused against unfused) cancels it.
_ALPHA_ANCHOR = "    s = gelu / (1 + tl.exp(-alpha * gelu))\n"
_ALPHA_FAULT = "    s = gelu / (1 + tl.exp(-(alpha * 0.94) * gelu))  # PLANTED FAULT: alpha x 0.94\n"


def make_topk_tie_fault_copy(source: Path, dest_root: Path) -> Path:
    return make_edited_copy(source, dest_root, TOPK_FILE, _TIE_EDITS)


def make_swiglu_clamp_fault_copy(source: Path, dest_root: Path) -> Path:
    return make_patched_copy(source, dest_root, SWIGLU_FILE, _CLAMP_ANCHOR, _CLAMP_FAULT)


def make_swiglu_alpha_fault_copy(source: Path, dest_root: Path) -> Path:
    return make_patched_copy(source, dest_root, SWIGLU_FILE, _ALPHA_ANCHOR, _ALPHA_FAULT)


PLANT_TOPK_ENV = "GRACECTL_PLANT_TOPK_SOFTMAX_FAULT"
# Set to 1 to run against a copy whose Hopper MXFP4 upcast decodes e2m1 values wrongly (an in-kernel fault):
# the MXFP4 kernels tests and the upstream level must then fail.
PLANT_FP4_DECODE_ENV = "GRACECTL_PLANT_FP4_DECODE_FAULT"
PLANT_TOPK_TIE_ENV = "GRACECTL_PLANT_TOPK_TIE_FLIPPED"
PLANT_SWIGLU_CLAMP_ENV = "GRACECTL_PLANT_FUSED_SWIGLU_CLAMP"
PLANT_SWIGLU_ALPHA_ENV = "GRACECTL_PLANT_SWIGLU_ALPHA"


@dataclass(frozen=True)
class Plant:
    """One planted fault: what it is, how its faulty copy of triton_kernels is made, and the smoke levels that
    must FAIL with it. The claim is tested, not trusted: smoke_tests/plant_check.py runs each claimed level
    clean and planted and requires a test that passed clean to fail planted (MEASUREMENTS.md has the last run)."""
    what: str
    make_copy: object  # (source package dir, dest root) -> dest root
    caught_by: tuple[str, ...]


# Planted-fault switches (env var -> Plant), for conftest.py and plant_check.py.
PLANTED_FAULTS = {
    PLANT_STALE_ENV: Plant("stale triton_kernels without SparseMatrix", make_stale_copy, ("imports",)),
    PLANT_MX_SCALE_ENV: Plant("triton_kernels whose Hopper MXFP4 upcast is one scale exponent off",
                              make_mx_scale_fault_copy, ("kernels", "upstream")),
    PLANT_TOPK_ENV: Plant("triton_kernels whose topk softmax runs at temperature 1/1.5", make_topk_fault_copy,
                          ("kernels", "upstream")),
    PLANT_FP4_DECODE_ENV: Plant("triton_kernels whose Hopper MXFP4 upcast drops the e2m1 mantissa bit of every "
                                "fourth value", make_fp4_decode_fault_copy, ("kernels", "upstream")),
    PLANT_TOPK_TIE_ENV: Plant("triton_kernels whose topk gives a tie at the top-k boundary to the higher expert id",
                              make_topk_tie_fault_copy, ("kernels",)),
    PLANT_SWIGLU_CLAMP_ENV: Plant("triton_kernels whose fused SwiGLU clamps at limit - 1 (gpt-oss: 6.0, not 7.0)",
                                  make_swiglu_clamp_fault_copy, ("kernels",)),
    PLANT_SWIGLU_ALPHA_ENV: Plant("triton_kernels whose SwiGLU (shared by the fused and standalone paths) uses "
                                  "alpha x 0.94", make_swiglu_alpha_fault_copy, ("kernels",)),
}
