"""Level `collectives` (2+ GPUs): NCCL all-reduce and all-to-all across every visible GPU through
torch.distributed, one process per GPU, as vLLM's tensor parallelism uses them.

The container must share IPC with the host (gracectl smoke runs it with --ipc=host): NCCL's intra-node
transports use /dev/shm, which docker's default of 64 MB starves. NVLink SHARP (NVLS) stays off
(NCCL_NVLS_ENABLE=0) on shared machines: it allocates multicast objects other jobs on the node may hold.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.collectives

TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nccl_all_reduce_and_all_to_all_across_all_gpus(gpu):
    import torch
    import torch.multiprocessing as mp

    import collectives_worker

    world = torch.cuda.device_count()
    if world < 2:
        pytest.skip(f"needs 2 or more GPUs for collectives, this container sees {world} "
                    f"({torch.cuda.get_device_name(0)})")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    with tempfile.TemporaryDirectory() as out:
        ctx = mp.spawn(collectives_worker.main, args=(world, _free_port(), out), nprocs=world, join=False)
        deadline = TIMEOUT_S
        while not ctx.join(timeout=5):
            deadline -= 5
            if deadline <= 0:
                for p in ctx.processes:
                    p.kill()
                pytest.fail(f"NCCL collectives across {world} GPUs did not finish within {TIMEOUT_S} s "
                            "(a hang: shared memory or peer access blocked?)", pytrace=False)
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]
    for r in ranks:
        for ar in r["all_reduce"]:
            print(f"rank {r['rank']}: all_reduce {ar['elements']} fp32: {ar['ms']} ms, bus {ar['bus_gbps']} GB/s")
    print(f"NCCL {ranks[0]['nccl']}, {world} x {torch.cuda.get_device_name(0)}, "
          f"NCCL_NVLS_ENABLE={os.environ['NCCL_NVLS_ENABLE']}")
    wrong = [f"rank {r['rank']}: all_reduce of {ar['elements']} gave {ar['first']} (expected {ar['expected']}) "
             f"in {ar['wrong_elements']} elements" for r in ranks for ar in r["all_reduce"] if ar["wrong_elements"]]
    wrong += [f"rank {r['rank']}: all_to_all received {r['all_to_all']['received_first']} "
              f"({r['all_to_all']['wrong_elements']} wrong elements)" for r in ranks if r["all_to_all"]["wrong_elements"]]
    assert not wrong, "NCCL collectives gave wrong sums: " + "; ".join(wrong)
