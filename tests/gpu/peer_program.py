"""One process on two GPUs with peer access, written without gpusleep in mind (CuPy): a buffer on
device 1, peer access enabled from device 0, and a kernel on device 0 that reads the buffer
across the link.

stdout "READY bytes=N", then one line per command on stdin:
  verify   run the kernel on device 0 over device 1's buffer and compare its checksum with the one
           device 1 computed over its own memory at start: "OK verify match checksum=C"
  exit
"""
import sys

import cupy as cp

CHECKSUM = cp.RawKernel(r"""
extern "C" __global__ void checksum(const unsigned long long* p, unsigned long long n,
                                    unsigned long long* out) {
  unsigned long long sum = 0;
  for (unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)gridDim.x * blockDim.x)
    sum += p[i] * (i | 1);
  atomicAdd(out, sum);
}
""", "checksum")


def checksum(buffer, device):
    with cp.cuda.Device(device):
        out = cp.zeros(1, dtype=cp.uint64)
        CHECKSUM((264,), (256,), (buffer, cp.uint64(buffer.size), out))
        cp.cuda.Device(device).synchronize()
        return int(out.get()[0])


def main():
    if cp.cuda.runtime.getDeviceCount() < 2:
        print("ERR needs two GPUs", flush=True)
        return 1
    if not cp.cuda.runtime.deviceCanAccessPeer(0, 1):
        print("ERR device 0 cannot access device 1", flush=True)
        return 1
    n = (2 << 30) // 8
    with cp.cuda.Device(1):
        owned = cp.arange(n, dtype=cp.uint64) * cp.uint64(0x9E3779B97F4A7C15)
    reference = checksum(owned, 1)
    with cp.cuda.Device(0):
        cp.cuda.runtime.deviceEnablePeerAccess(1)
    if checksum(owned, 0) != reference:
        print("ERR the peer read differs before any sleep", flush=True)
        return 1
    print(f"READY bytes={owned.nbytes}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "verify":
            value = checksum(owned, 0)
            print(f"OK verify {'match' if value == reference else 'differs'} checksum={value}",
                  flush=True)
        elif command == "exit":
            break
        elif command:
            print(f"ERR unknown command {command}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
