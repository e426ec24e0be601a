"""A state every E-th chunk, measured again on top of the faster output pass (chapter 11, section 7)

    python examples/triton_states_every_again.py results/kernels/states-every-again.json  # on a GPU

An experiment, not kept: retnet_ref/kernels/states_every.py is commit e67a428's kernels (pass 1
storing the state before every E-th chunk in a forward without gradients, pass 2 computing a group
of E chunks per program) with the output pass's tile of v loaded before its loop, as the kept
kernels now do, and the recursion's tile chosen by the kept states_tile. At 65,536 tokens (8 heads ×
128, bfloat16, tile height 64), T = 16384, 4096, 65536, 1024: the kept forward (under no_grad)
against E = 1, 2, 4; the largest difference of each from the kept one's outputs and final state,
then three rounds of CUDA-graph replays (bench.graphed_seconds: a median of 15 single replays after
3 warm-up calls, each from an idle GPU with a cold L2), all in one process.
"""
import json
import statistics
import sys

import torch

from retnet_ref import bench
from retnet_ref.decay import gamma_schedule
from retnet_ref.kernels import chunkwise as kept
from retnet_ref.kernels import states_every

states_every.states_tile = kept.states_tile
TOKENS, HEADS, WIDTH, C, ROUNDS = 65536, 8, 128, 64, 3


def main(out: str) -> None:
    timer = bench.Timer(torch.device("cuda"), warmup=3, repeats=15)
    rows = []
    for T in (16384, 4096, 65536, 1024):
        shape = (TOKENS // T, HEADS, T, WIDTH)
        generator = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(shape, dtype=torch.bfloat16, device="cuda", generator=generator)
                   for _ in range(3))
        gamma = gamma_schedule(HEADS)
        forms = {"main": lambda: kept.chunkwise_retention(q, k, v, gamma, C)}
        for E in (1, 2, 4):
            forms[f"E={E}"] = (lambda E=E: states_every.chunkwise_retention(q, k, v, gamma, C,
                                                                            states_every=E))
        with torch.no_grad():
            o_kept, R_kept = forms["main"]()
            for name, form in forms.items():
                o, R = form()
                rows.append({"T": T, "form": name,
                             "max_abs_o": (o.float() - o_kept.float()).abs().max().item(),
                             "max_abs_R": (R - R_kept).abs().max().item()})
        times = {name: [] for name in forms}
        for _ in range(ROUNDS):
            for name, form in forms.items():
                def call(form=form):
                    with torch.no_grad():
                        return form()
                times[name].append(1e3 * bench.graphed_seconds(call, timer)["seconds"])
        rows += [{"T": T, "form": name, "rounds_ms": ms, "ms": statistics.median(ms)}
                 for name, ms in times.items()]
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
