"""A Python program that allocates device memory (through the CUDA runtime, loaded with ctypes)
from functions that live in modules named like vLLM's, SGLang's and transformers' own, at the
call sites where those servers allocate their weights, KV caches, graph buffers and shared
all-reduce buffers. The functions are real Python functions: their frames carry the module's
__name__ and the function's qualified name, as the servers' frames do. Commands on stdin, one
line answered each ("OK ..." or "ERR ..."), "READY" first:
  alloc SITE NAME BYTES    call the function SITE ("module:Class.method") which allocates
  check NAME               copy back and compare with what was written
"""
import ctypes
import sys

RT = ctypes.CDLL("libcudart.so.13")
BUFFERS = {}

# module -> the classes and functions it defines; each function allocates through `_alloc`.
SERVER_MODULES = {
    "vllm.v1.worker.gpu_model_runner": ["GPUModelRunner.load_model",
                                        "GPUModelRunner.initialize_kv_cache",
                                        "GPUModelRunner.capture_model",
                                        "GPUModelRunner.execute_model"],
    "vllm.v1.worker.gpu.attn_utils": ["init_kv_cache"],
    "vllm.model_executor.model_loader.default_loader": ["DefaultModelLoader.load_weights"],
    "vllm.distributed.device_communicators.custom_all_reduce": ["CustomAllreduce.create_shared_buffer"],
    "sglang.srt.model_executor.model_runner": ["ModelRunner.load_model", "ModelRunner.forward"],
    "sglang.srt.mem_cache.memory_pool": ["MHATokenToKVPool._create_buffers",
                                         "TokenToKVPoolAllocator.__init__"],
    "sglang.srt.model_executor.runner.decode_cuda_graph_runner": ["DecodeCudaGraphRunner.capture"],
    "sglang.srt.distributed.device_communicators.custom_all_reduce": ["CustomAllreduce.create_shared_buffer"],
    "transformers.modeling_utils": ["PreTrainedModel.from_pretrained"],
    "transformers.generation.continuous_batching.cache": ["PagedAttentionCache.__init__"],
    "transformers.generation.continuous_batching.input_outputs": [
        "ContinuousBatchingIOs._setup_static_tensors"],
    "transformers.generation.continuous_batching.continuous_api": [
        "ContinuousBatchProcessor._generation_step"],
    "torch.nn.modules.linear": ["Linear.__init__"],
}
SITES = {}


def _alloc(name, size, share):
    ptr = ctypes.c_void_p()
    if RT.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(size)) != 0:
        raise RuntimeError("cudaMalloc")
    fill = len(BUFFERS) % 200 + 17
    if RT.cudaMemset(ptr, ctypes.c_int(fill), ctypes.c_size_t(size)) != 0:
        raise RuntimeError("cudaMemset")
    BUFFERS[name] = (ptr, size, fill)
    if share:  # what the all-reduce's create_shared_buffer does next
        handle = ctypes.create_string_buffer(64)
        return f"ipc {RT.cudaIpcGetMemHandle(handle, ptr)}"
    return ""


def _define(module, qualnames):
    """Defines the functions in a module object of that name, so that their frames' globals
    carry it, and records each under "module:qualname"."""
    namespace = {"__name__": module, "_alloc": _alloc}
    classes = {}
    source = []
    for q in qualnames:
        owner, _, func = q.rpartition(".")
        share = "create_shared_buffer" in func
        body = f"    return _alloc(name, size, {share})\n"
        if owner:
            classes.setdefault(owner, []).append(f"    def {func}(self, name, size):\n    " + body)
        else:
            source.append(f"def {func}(name, size):\n" + body)
    for owner, methods in classes.items():
        source.append(f"class {owner}:\n" + "".join(methods))
    exec(compile("\n".join(source), f"<{module}>", "exec"), namespace)
    for q in qualnames:
        owner, _, func = q.rpartition(".")
        cls = namespace.get(owner)
        SITES[f"{module}:{q}"] = getattr(cls.__new__(cls), func) if owner else namespace[func]


def check(name):
    ptr, size, fill = BUFFERS[name]
    host = ctypes.create_string_buffer(size)
    if RT.cudaMemcpy(host, ptr, ctypes.c_size_t(size), 2) != 0:
        return "ERR copy"
    return "OK" if host.raw == bytes([fill]) * size else "ERR mismatch"


def main():
    for module, qualnames in SERVER_MODULES.items():
        _define(module, qualnames)
    print("READY", flush=True)
    for line in sys.stdin:
        words = line.split()
        try:
            if words[0] == "alloc":
                print(f"OK {SITES[words[1]](words[2], int(words[3]))}".rstrip(), flush=True)
            elif words[0] == "check":
                print(check(words[1]), flush=True)
            elif words[0] == "exit":
                return
            else:
                print(f"ERR unknown command {words[0]}", flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the test
            print(f"ERR {e}", flush=True)


if __name__ == "__main__":
    main()
