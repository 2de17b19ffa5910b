"""The test suite's small transformers server (tests/gpu/transformers_server.py), started after
--pad-gib GiB of other tensors have been allocated, so that a library that pins host mirrors has
as much to pin as a server holding a large model. Commands as that server's."""
import os
import runpy
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
GPU_TESTS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "gpu")


def main():
    pad = float(sys.argv[sys.argv.index("--pad-gib") + 1]) if "--pad-gib" in sys.argv else 0
    hold = []
    left = int(pad * (1 << 30))
    while left > 0:
        n = min(left, 1 << 30)
        hold.append(torch.ones(n // 2, dtype=torch.bfloat16, device="cuda"))
        left -= n
    torch.cuda.synchronize()
    sys.path.insert(0, GPU_TESTS)
    sys.argv = [os.path.join(GPU_TESTS, "transformers_server.py")]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
