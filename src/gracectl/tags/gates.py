"""The promotion gates, pure: the smoke gate (the LATEST smoke record of the digest passed) and the
performance gate (no benchmark median slower than the current image's beyond a limit, on the same GPU
model), and the bench figures' absolute floors (--floor). tags.moves fetches the records and applies them to
promote and rollback --to alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gracectl.errors import UsageError
from gracectl.tags.history import short

DEFAULT_MAX_REGRESSION = 0.05  # 5 %: a candidate's median may be this much slower than the current one
# The figures a floor can hold the MoE GEMM rows to: the FLOP ratio to a dense cuBLAS matmul (meaningful where
# the GEMMs are compute-bound, ~2048 tokens and up) and the achieved HBM bandwidth over the GPU's peak
# (meaningful where they are memory-bound: decode sizes). The promotion gate's median_ms comparison already
# covers both on one GPU model (for fixed shapes both are proportional to 1 / median_ms).
GATE_FIGURES = ("ratio_vs_dense", "ratio_vs_hbm_peak")


@dataclass(frozen=True)
class BenchRow:
    name: str
    current_ms: float
    candidate_ms: float

    @property
    def change(self) -> float:
        """Relative change of the median: +0.10 = the candidate is 10 % slower."""
        return (self.candidate_ms - self.current_ms) / self.current_ms


@dataclass(frozen=True)
class BenchComparison:
    gpu: str
    rows: tuple[BenchRow, ...]
    max_regression: float
    note: str = ""  # why nothing was compared

    @property
    def compared(self) -> bool:
        return bool(self.rows)

    @property
    def regressions(self) -> list[BenchRow]:
        return [r for r in self.rows if r.change > self.max_regression]


def check_max_regression(value: float) -> float:
    """A benchmark threshold (a fraction: 0.05 = 5 %) must be a finite number in [0, 10]."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 10:
        raise UsageError(f"--max-regression must be a number of percent from 0 to 1000, got {value * 100!r}")
    return float(value)


def _gpu(record: dict) -> str:
    return str((record.get("gpu") or {}).get("name") or "")


def _timing(record: dict) -> str:
    """What a bench record's median_ms measures (bench_moe.py's TIMING; records before schema 2 say nothing:
    eager calls from Python, the host's launch path included)."""
    return str(record.get("timing") or "eager (launch path included)")


def _medians(record: dict) -> dict[str, float]:
    out = {}
    for r in record.get("results") or []:
        value = r.get("median_ms")
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 and r.get("name"):
            out[r["name"]] = float(value)
    return out


def compare_bench(candidate: dict, current: dict, max_regression: float = DEFAULT_MAX_REGRESSION
                  ) -> BenchComparison:
    """Compare two bench records by result name (lower median_ms is better); only on the same GPU model."""
    gpu_new, gpu_old = _gpu(candidate), _gpu(current)
    if not gpu_new or gpu_new != gpu_old:
        return BenchComparison(gpu_new, (), max_regression,
                               f"not compared: different GPU models ({gpu_new or '?'} vs {gpu_old or '?'})")
    if _timing(candidate) != _timing(current):
        return BenchComparison(gpu_new, (), max_regression,
                               f"not compared: the medians are timed differently ({_timing(candidate)} vs "
                               f"{_timing(current)})")
    new, old = _medians(candidate), _medians(current)
    rows = tuple(BenchRow(name, old[name], new[name]) for name in sorted(new.keys() & old.keys()))
    return BenchComparison(gpu_new, rows, max_regression, "" if rows else "not compared: no result in common")


def bench_gate(candidate_records: list[dict], current_records: list[dict],
               max_regression: float = DEFAULT_MAX_REGRESSION) -> list[BenchComparison]:
    """One comparison per GPU model that both images were benchmarked on (the latest record of each)."""
    latest_new = {_gpu(r): r for r in candidate_records if _gpu(r)}
    latest_old = {_gpu(r): r for r in current_records if _gpu(r)}
    return [compare_bench(latest_new[g], latest_old[g], max_regression) for g in sorted(latest_new.keys()
                                                                                        & latest_old.keys())]


def smoke_passed(record: dict) -> bool:
    return record.get("passed") is True


def gate_findings(smoke: list[dict], comparisons: list[BenchComparison], candidate: str) -> list[str]:
    """What stops a move: the LATEST smoke record of the digest did not pass (a failed re-run counts), or a
    benchmark is slower beyond the limit."""
    findings = []
    if not smoke:
        findings.append(f"no passing smoke record for {short(candidate)} (it was never smoke-tested)")
    elif not smoke_passed(smoke[-1]):
        findings.append(f"no passing smoke record for {short(candidate)}: its latest smoke record (of {len(smoke)}) "
                        "did not pass")
    for c in comparisons:
        for r in c.regressions:
            findings.append(f"{r.name} on {c.gpu} is {r.change:+.1%} slower ({r.current_ms:.3f} -> "
                            f"{r.candidate_ms:.3f} ms; limit {c.max_regression:.0%})")
    return findings


def parse_floor(item: str) -> tuple[str, float]:
    """`--floor FIGURE[@TOKENS]=VALUE` -> ("FIGURE" or "FIGURE@TOKENS", VALUE). With @TOKENS the floor holds only
    the rows of that token count (e.g. ratio_vs_hbm_peak@16: decode size, where the GEMMs are memory-bound)."""
    key, _, value = item.partition("=")
    figure, at, tokens = key.partition("@")
    try:
        floor = float(value)
    except ValueError:
        raise UsageError(f"--floor {item!r}: write FIGURE[@TOKENS]=NUMBER") from None
    if figure not in GATE_FIGURES or not 0 < floor < 10 or (at and not tokens.isdigit()):
        raise UsageError(f"--floor {item!r}: FIGURE is one of {', '.join(GATE_FIGURES)}, @TOKENS a token count, "
                         "the floor above 0")
    return key, floor


def row_tokens(name: str) -> int | None:
    """The token count of a result row named ..._tokens<N>."""
    _, sep, tail = name.rpartition("_tokens")
    return int(tail) if sep and tail.isdigit() else None


def figure_findings(record: dict, floors: dict[str, float], *, name_prefix: str = "moe_") -> list[str]:
    """What falls below a floor: {figure or figure@tokens: floor} over GATE_FIGURES, for each result row whose
    name starts with name_prefix (and is of that token count) and carries that figure; a row without it, such as
    routing, is not judged. Not passed either: a row in scope that bench_moe.py REFUSED (its accuracy outside
    vLLM's tolerance, its figures withheld); a floor no row carries; a record whose median_ms is not the GPU's
    time (no `timing`: an eager record from before schema 2, whose figures at decode sizes are the host's launch
    path)."""
    for key in floors:
        parse_floor(f"{key}={floors[key]}")
    findings = []
    if floors and not record.get("timing"):
        findings.append("the bench record does not say its median_ms is GPU time (no `timing`: an eager record "
                        "from before schema 2, launch-bound at decode sizes): its figures cannot be held to a floor")
    for key, floor in floors.items():
        figure, _, tokens = key.partition("@")
        scope = [r for r in record.get("results") or [] if str(r.get("name", "")).startswith(name_prefix)
                 and (not tokens or row_tokens(str(r.get("name", ""))) == int(tokens))]
        refused = [r for r in scope if r.get("refused")]
        rows = [r for r in scope if isinstance(r.get(figure), (int, float))]
        if not rows and not refused:
            findings.append(f"no {name_prefix}* result{' of ' + tokens + ' tokens' if tokens else ''} carries "
                            f"{figure}: the floor {floor} cannot be checked")
        findings += [f"{r['name']}: refused by the bench ({r['refused']}), so {key} {floor} is not shown"
                     for r in refused]
        findings += [f"{r['name']}: {figure} {r[figure]} below the floor {floor}" for r in rows if r[figure] < floor]
    return findings
