"""One rank of the `collectives` level: NCCL all-reduce and all-to-all through torch.distributed.

Started by test_collectives.py with torch.multiprocessing (one process per GPU); writes its findings to
OUT_DIR/rank<N>.json. Values are small integers in fp32, so every correct sum is exact.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

# Rank 1 adds 1 to its all-reduce contribution: the check must then fail (GRACECTL_PLANT_COLLECTIVE_FAULT=1).
PLANT_ENV = "GRACECTL_PLANT_COLLECTIVE_FAULT"
SIZES = (1024, 64 * 1024 * 1024)  # fp32 elements: 4 KiB (latency path) and 256 MiB (bandwidth path)


def run(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            device_id=dev)
    found: dict = {"rank": rank, "world": world, "all_reduce": [], "nccl": ".".join(map(str, torch.cuda.nccl.version()))}
    try:
        for n in SIZES:
            x = torch.full((n,), float(rank + 1), device=dev)
            if rank == 1 and os.environ.get(PLANT_ENV) == "1":
                x += 1
            dist.all_reduce(x)  # warm-up, and the value checked
            expected = world * (world + 1) / 2
            wrong = int((x != expected).sum().item())
            torch.cuda.synchronize()
            start = time.perf_counter()
            reps = 5
            for _ in range(reps):
                dist.all_reduce(torch.ones(n, device=dev))
            torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / reps
            # Bus bandwidth as nccl-tests defines it for all-reduce: bytes * 2 (world - 1) / world / time.
            bus_gbps = n * 4 * 2 * (world - 1) / world / seconds / 1e9
            found["all_reduce"].append({"elements": n, "expected": expected, "wrong_elements": wrong,
                                        "first": x[0].item(), "ms": round(seconds * 1e3, 3),
                                        "bus_gbps": round(bus_gbps, 1)})
        # all-to-all: rank r sends chunk j (values r*1000 + j) to rank j; rank r must receive s*1000 + r from s.
        chunk = 4096
        send = torch.cat([torch.full((chunk,), float(rank * 1000 + j), device=dev) for j in range(world)])
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send)
        expected = torch.cat([torch.full((chunk,), float(s * 1000 + rank), device=dev) for s in range(world)])
        found["all_to_all"] = {"elements": send.numel(), "wrong_elements": int((recv != expected).sum().item()),
                               "received_first": [recv[s * chunk].item() for s in range(world)]}
        dist.barrier()
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(found))


def main(rank: int, world: int, port: int, out_dir: str) -> None:
    """torch.multiprocessing.spawn entry point (the process index comes first)."""
    run(rank, world, port, out_dir)
