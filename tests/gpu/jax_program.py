"""A JAX program that knows nothing of gpusleep, with XLA's default preallocation: parameters, a
jitted step, results kept on the device. Answers over stdin after "READY bytes=N":
  verify   rerun the step; compare parameters and results with host references
  exit
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np


def main():
    key = jax.random.PRNGKey(7)
    k1, k2, k3 = jax.random.split(key, 3)
    n = 4096
    w1 = jax.random.normal(k1, (n, n), dtype=jnp.float32) / n**0.5
    w2 = jax.random.normal(k2, (n, n), dtype=jnp.float32) / n**0.5
    x = jax.random.normal(k3, (256, n), dtype=jnp.float32)
    big = jnp.arange(1 << 28, dtype=jnp.float32)  # 1 GiB kept alive on the device

    @jax.jit
    def step(x, w1, w2):
        return jnp.tanh(jnp.tanh(x @ w1) @ w2)

    y = step(x, w1, w2).block_until_ready()
    ref = {"w1": np.asarray(w1), "w2": np.asarray(w2), "y": np.asarray(y),
           "big": float(np.asarray(big[::65537]).sum())}
    print(f"READY bytes={w1.nbytes + w2.nbytes + x.nbytes + big.nbytes} "
          f"backend={jax.default_backend()}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "exit":
            print("OK exit", flush=True)
            return
        if cmd != "verify":
            print("ERR unknown command", flush=True)
            continue
        y2 = step(x, w1, w2).block_until_ready()
        ok_in = (np.array_equal(np.asarray(w1), ref["w1"]) and np.array_equal(np.asarray(w2), ref["w2"])
                 and float(np.asarray(big[::65537]).sum()) == ref["big"])
        ok_out = np.array_equal(np.asarray(y2), ref["y"]) and np.array_equal(np.asarray(y), ref["y"])
        print(f"OK verify inputs={'match' if ok_in else 'differs'} "
              f"output={'match' if ok_out else 'differs'}", flush=True)


if __name__ == "__main__":
    main()
