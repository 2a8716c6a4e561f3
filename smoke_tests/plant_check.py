"""Test the planted-fault claims: each Plant in triton_kernels_contract.PLANTED_FAULTS names the smoke levels that
must fail with its faulty copy of triton_kernels (`caught_by`); this runs them and says whether they do.

For every level involved, the level runs once clean and once per plant (one pytest process each, `--jobs` of
them at a time; on one GPU keep it at 2). A plant is CAUGHT by a level when a test that passed clean fails (or
errors) planted; the failing tests' messages carry the error figures. Verdicts:
  caught                     claimed and caught
  ESCAPED                    claimed, but every test that passed clean passed planted too
  caught, NOT CLAIMED        not claimed, yet caught (with --all): the claim list is out of date
  not caught (not claimed)   (with --all) the escape the list admits
  UNPROVEN                   no test of the level passed clean (no GPU, a broken environment): nothing is shown
Exit 0 when every claimed pair is caught and nothing unclaimed is caught; 1 otherwise.

    python plant_check.py [--levels kernels,upstream] [--plants ENV,...] [--all[=ENV,...]] [--jobs 2] [--json FILE]
                          [-- extra pytest args, e.g. --expect-json FILE]

Stdlib only; the verdict logic is checked on CPU by gracectl's unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import triton_kernels_contract as tkc
import upstream_selection as sel

HERE = Path(__file__).resolve().parent
FAILED = ("failed", "error")


def judge(claimed: bool, clean: dict[str, dict], planted: dict[str, dict]) -> dict:
    """The verdict of one (plant, level) from the per-test results ({node id: {"outcome", "message"}}) of the
    level's clean and planted runs."""
    passed_clean = [name for name, r in clean.items() if r["outcome"] == "passed"]
    caught = [name for name in passed_clean if planted.get(name, {}).get("outcome") in FAILED]
    if not passed_clean:
        verdict, ok = "UNPROVEN", False
    elif caught:
        verdict, ok = ("caught", True) if claimed else ("caught, NOT CLAIMED", False)
    else:
        verdict, ok = ("ESCAPED", False) if claimed else ("not caught (not claimed)", True)
    return {"claimed": claimed, "verdict": verdict, "ok": ok, "passed_clean": len(passed_clean),
            "caught": {name: planted[name]["message"] for name in caught}}


def plan(plants: dict, levels: list[str], every_level: set[str] | None = None) -> list[tuple[str, str]]:
    """(plant env, level) pairs to run: the claimed ones among `levels`, and for the plants in every_level ("*":
    all) the unclaimed levels too; the claimed pairs first, then the rest level by level (a run cut short has
    judged the claims first)."""
    every_level = every_level or set()
    claimed = [(env, level) for env, p in plants.items() for level in levels if level in p.caught_by]
    rest = [(env, level) for level in levels for env, p in plants.items()
            if ("*" in every_level or env in every_level) and level not in p.caught_by]
    return claimed + rest


def run_level(level: str, plant_env: str | None, pytest_args: list[str], out_dir: Path) -> dict:
    """One pytest run of the level (planted when plant_env is set): {"results", "exit", "seconds", "tail"}."""
    junit = out_dir / f"{level}-{plant_env or 'clean'}.xml"
    env = {k: v for k, v in os.environ.items() if k not in tkc.PLANTED_FAULTS}
    if plant_env:
        env[plant_env] = "1"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", level, "-q", f"--junitxml={junit}",
                           *pytest_args], cwd=HERE, env=env, capture_output=True, text=True)
    return {"results": sel.count_junit(str(junit)) if junit.exists() else {}, "exit": done.returncode,
            "seconds": round(time.monotonic() - started), "tail": (done.stdout + done.stderr)[-600:]}


def format_table(rows: list[dict]) -> str:
    lines = ["plant | level | claimed | verdict | caught by (message)"]
    for r in rows:
        first = next(iter(r["caught"].items()), ("-", ""))
        more = f" (+{len(r['caught']) - 1} more)" if len(r["caught"]) > 1 else ""
        lines.append(f"{r['plant']} | {r['level']} | {'yes' if r['claimed'] else 'no'} | {r['verdict']} | "
                     f"{first[0]}{more}: {first[1][:220]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", default="imports,kernels,upstream")
    p.add_argument("--plants", default=",".join(tkc.PLANTED_FAULTS), help="plant switches (env names)")
    p.add_argument("--all", nargs="?", const="*", default="",
                   help="also run these plants (comma-separated env names; none given: every plant) on the levels "
                        "they do not claim, to show what those levels miss")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--json", help="write the table here")
    args = p.parse_args(argv)
    levels = [lv for lv in args.levels.split(",") if lv]
    plants = {env: tkc.PLANTED_FAULTS[env] for env in args.plants.split(",") if env}
    pairs = plan(plants, levels, {e for e in args.all.split(",") if e})
    needed = sorted({level for _, level in pairs}, key=levels.index)
    out_dir = Path(tempfile.mkdtemp(prefix="plant-check-"))
    rows: list[dict] = []

    def write_json(clean):
        if args.json:  # after every row: a run cut short by a time limit still leaves what it judged
            Path(args.json).write_text(json.dumps({"clean": {lv: {k: v for k, v in r.items() if k != "tail"}
                                                             for lv, r in clean.items()}, "rows": rows}, indent=2))

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        clean = dict(zip(needed, pool.map(lambda lv: run_level(lv, None, extra, out_dir), needed)))
        for level, run in clean.items():
            print(f"clean {level}: exit {run['exit']} in {run['seconds']} s, "
                  f"{sum(r['outcome'] == 'passed' for r in run['results'].values())} passed", flush=True)
        futures = {pool.submit(run_level, level, env, extra, out_dir): (env, level) for env, level in pairs}
        print(format_table([]), flush=True)
        for future in as_completed(futures):
            env, level = futures[future]
            run = future.result()
            row = {"plant": env, "level": level, "what": plants[env].what, "seconds": run["seconds"],
                   **judge(level in plants[env].caught_by, clean[level]["results"], run["results"])}
            if not run["results"]:
                row["tail"] = run["tail"]
            rows.append(row)
            print(format_table([row]).splitlines()[1], flush=True)
            write_json(clean)
    rows.sort(key=lambda r: pairs.index((r["plant"], r["level"])))
    print(format_table(rows))
    write_json(clean)
    bad = [r for r in rows if not r["ok"]]
    for r in bad:
        print(f"NOT AS CLAIMED: {r['plant']} on {r['level']}: {r['verdict']}{' | ' + r['tail'] if 'tail' in r else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
