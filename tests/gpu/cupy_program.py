"""A CuPy program that knows nothing of gpusleep: arrays from CuPy's default memory pool (which
gets its memory from the CUDA runtime the CuPy package loads itself), a matrix product and a
reduction. Answers over stdin after "READY bytes=N":
  verify   recompute from the arrays; compare inputs and result with host references
  exit
"""
import sys

import cupy as cp
import numpy as np


def main():
    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    rng = cp.random.default_rng(2024)
    n = 4096
    a = rng.standard_normal((n, n), dtype=cp.float32)
    b = rng.standard_normal((n, n), dtype=cp.float32)
    filler_elems = int(gib * (1 << 30)) // 4 - 2 * n * n
    filler = cp.arange(max(filler_elems, 1), dtype=cp.float32) * 0.5
    c = a @ b
    cp.cuda.Device().synchronize()
    ref = {"a": cp.asnumpy(a), "b": cp.asnumpy(b), "c": cp.asnumpy(c),
           "filler_sum": float(cp.asnumpy(filler[::4097].sum()))}
    print(f"READY bytes={a.nbytes + b.nbytes + c.nbytes + filler.nbytes}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "exit":
            print("OK exit", flush=True)
            return
        if cmd != "verify":
            print("ERR unknown command", flush=True)
            continue
        c2 = a @ b
        ok_inputs = np.array_equal(cp.asnumpy(a), ref["a"]) and np.array_equal(cp.asnumpy(b), ref["b"])
        ok_filler = float(cp.asnumpy(filler[::4097].sum())) == ref["filler_sum"]
        ok_out = np.array_equal(cp.asnumpy(c2), ref["c"]) and np.array_equal(cp.asnumpy(c), ref["c"])
        print(f"OK verify inputs={'match' if ok_inputs and ok_filler else 'differs'} "
              f"output={'match' if ok_out else 'differs'}", flush=True)


if __name__ == "__main__":
    main()
