"""A Python program written like an inference server, knowing nothing of gpusleep: it allocates
device memory through the CUDA runtime (loaded with ctypes) from functions named like a server's
loaders. Commands on stdin, one line answered each ("OK ..." or "ERR ..."), "READY" first:
  weights NAME BYTES     Model.load_weights allocates (the GIL released around the call, as
                         PyTorch does; "gil weights ..." keeps the GIL, as CuPy does)
  kv NAME BYTES          KVCache.__init__ allocates
  scratch NAME BYTES     run_step allocates
  shared NAME BYTES      share_with_peer allocates, then asks for a legacy IPC handle
  pitch NAME WIDTH ROWS  cudaMallocPitch (a native call site: the runtime's cudaMallocPitch)
  check NAME             copy back and compare with what was written
  refill NAME            write its contents again (as a server reloads its weights)
  free NAME
"""
import ctypes
import sys

RT_NOGIL = ctypes.CDLL("libcudart.so.13")   # releases the GIL during each call
RT_GIL = ctypes.PyDLL("libcudart.so.13")    # keeps it
BUFFERS = {}


def malloc(rt, name, size, fill):
    ptr = ctypes.c_void_p()
    rc = rt.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(size))
    if rc != 0:
        raise RuntimeError(f"cudaMalloc {rc}")
    if RT_NOGIL.cudaMemset(ptr, ctypes.c_int(fill), ctypes.c_size_t(size)) != 0:
        raise RuntimeError("cudaMemset")
    BUFFERS[name] = (ptr, size, fill)
    return ptr


class Model:
    def load_weights(self, rt, name, size):
        return malloc(rt, name, size, 0x57)


class KVCache:
    def __init__(self, rt, name, size):
        self.ptr = malloc(rt, name, size, 0x4B)


def run_step(rt, name, size):
    return malloc(rt, name, size, 0x53)


def share_with_peer(rt, name, size):
    ptr = malloc(rt, name, size, 0x49)
    handle = ctypes.create_string_buffer(64)
    return RT_NOGIL.cudaIpcGetMemHandle(handle, ptr)


def check(name):
    ptr, size, fill = BUFFERS[name]
    host = ctypes.create_string_buffer(size)
    if RT_NOGIL.cudaMemcpy(host, ptr, ctypes.c_size_t(size), 2) != 0:  # device to host
        return "ERR copy"
    return "OK" if host.raw == bytes([fill]) * size else "ERR mismatch"


def main():
    model = Model()
    print("READY", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        rt = RT_NOGIL
        if words[0] == "gil":
            rt, words = RT_GIL, words[1:]
        cmd = words[0]
        try:
            if cmd == "exit":
                return
            if cmd == "weights":
                model.load_weights(rt, words[1], int(words[2]))
            elif cmd == "kv":
                KVCache(rt, words[1], int(words[2]))
            elif cmd == "scratch":
                run_step(rt, words[1], int(words[2]))
            elif cmd == "pitch":
                ptr, pitch = ctypes.c_void_p(), ctypes.c_size_t()
                rc = rt.cudaMallocPitch(ctypes.byref(ptr), ctypes.byref(pitch),
                                        ctypes.c_size_t(int(words[2])), ctypes.c_size_t(int(words[3])))
                if rc != 0:
                    raise RuntimeError(f"cudaMallocPitch {rc}")
                BUFFERS[words[1]] = (ptr, 0, 0)
            elif cmd == "shared":
                print(f"OK ipc {share_with_peer(rt, words[1], int(words[2]))}", flush=True)
                continue
            elif cmd == "check":
                print(check(words[1]), flush=True)
                continue
            elif cmd == "refill":
                ptr, size, fill = BUFFERS[words[1]]
                if RT_NOGIL.cudaMemset(ptr, ctypes.c_int(fill), ctypes.c_size_t(size)) != 0:
                    raise RuntimeError("cudaMemset")
            elif cmd == "free":
                RT_NOGIL.cudaFree(BUFFERS.pop(words[1])[0])
            else:
                print(f"ERR unknown command {cmd}", flush=True)
                continue
            print("OK", flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the test
            print(f"ERR {e}", flush=True)


if __name__ == "__main__":
    main()
