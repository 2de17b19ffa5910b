"""End to end, the shipped presets loaded together in the order `--preset auto` loads them (nccl,
the servers' presets, pytorch): a Python program allocating from functions in modules named
like vLLM's, SGLang's and transformers' (server_stacks.py) runs under the real library over the
emulated driver; each allocation gets the tag and rule its framework's preset gives it, the
all-reduce buffers stay with the CUDA allocator and can be shared with legacy IPC, and sleeping
the KV cache frees exactly the KV caches of all three."""
import json
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "control", "python"))
from harness import EmulatedCase, Host  # noqa: E402
import gpusleep_client as gs  # noqa: E402
from test_emulated import MiB  # noqa: E402

PRESETS = os.path.join(HERE, "..", "..", "control", "presets")
SERVER_STACKS = os.path.join(HERE, "server_stacks.py")
ORDER = ["nccl", "sglang", "transformers", "vllm", "pytorch"]

# site, the tag and the rule that must decide it (None: no rule, the default tag).
EXPECTED = [
    ("vllm.v1.worker.gpu_model_runner:GPUModelRunner.load_model", "weights", "vllm model loading (runner)"),
    ("vllm.model_executor.model_loader.default_loader:DefaultModelLoader.load_weights", "weights",
     "vllm model loading"),
    ("vllm.v1.worker.gpu_model_runner:GPUModelRunner.initialize_kv_cache", "kv_cache", "vllm kv cache"),
    ("vllm.v1.worker.gpu.attn_utils:init_kv_cache", "kv_cache", "vllm kv cache"),
    ("vllm.v1.worker.gpu_model_runner:GPUModelRunner.capture_model", "cuda_graph",
     "vllm graph capture (runner)"),
    ("vllm.v1.worker.gpu_model_runner:GPUModelRunner.execute_model", "default", None),
    ("sglang.srt.model_executor.model_runner:ModelRunner.load_model", "weights",
     "sglang model loading (runner)"),
    ("sglang.srt.mem_cache.memory_pool:MHATokenToKVPool._create_buffers", "kv_cache", "sglang kv pools"),
    ("sglang.srt.mem_cache.memory_pool:TokenToKVPoolAllocator.__init__", "default", None),
    ("sglang.srt.model_executor.runner.decode_cuda_graph_runner:DecodeCudaGraphRunner.capture",
     "cuda_graph", "sglang graph runners"),
    ("sglang.srt.model_executor.model_runner:ModelRunner.forward", "default", None),
    ("transformers.modeling_utils:PreTrainedModel.from_pretrained", "weights", "model loading"),
    ("transformers.generation.continuous_batching.cache:PagedAttentionCache.__init__", "kv_cache",
     "continuous batching caches"),
    ("transformers.generation.continuous_batching.input_outputs:ContinuousBatchingIOs._setup_static_tensors",
     "kv_cache", "continuous batching caches"),
    ("transformers.generation.continuous_batching.continuous_api:ContinuousBatchProcessor._generation_step",
     "default", None),
    ("torch.nn.modules.linear:Linear.__init__", "weights", "module construction"),
]
SHARED = ["vllm.distributed.device_communicators.custom_all_reduce:CustomAllreduce.create_shared_buffer",
          "sglang.srt.distributed.device_communicators.custom_all_reduce:CustomAllreduce.create_shared_buffer"]


def union_rules():
    rules = []
    for name in ORDER:
        with open(os.path.join(PRESETS, name + ".json")) as f:
            rules += json.load(f)["rules"]
    return {"version": 1, "rules": rules}


class PresetsTogether(EmulatedCase):
    def setUp(self):
        super().setUp()
        self.env["GPUSLEEP_RUNTIME_DIR"] = self.run_dir
        os.environ["GPUSLEEP_RUNTIME_DIR"] = self.run_dir

    def test_the_union_tags_each_servers_call_sites_as_its_preset_does(self):
        h = Host(self.cli_path, [sys.executable, SERVER_STACKS], self.env,
                 extra=["--preset", "auto"])
        self.hosts.append(h)
        h.expect("READY", timeout=60)
        for i, (site, _, _) in enumerate(EXPECTED):
            h.send(f"alloc {site} b{i} {2 * MiB}")
        for i, site in enumerate(SHARED):
            self.assertEqual(h.send(f"alloc {site} s{i} {2 * MiB}"), "OK ipc 0")
        for _ in range(100):  # the library opens its socket at the first allocation
            if os.path.exists(self.socket_of(h)):
                break
            time.sleep(0.05)
        proc = gs.connect(pid=h.pid, timeout=30)
        # `--preset auto` loads every preset in this order.
        self.assertEqual([r["name"] for r in proc.rules()["rules"]],
                         [r.get("name") for r in union_rules()["rules"]])
        regions = proc.regions(stacks=True)["regions"]
        by_site = {}
        for r in regions:
            sites = [f.split(" ")[0] for f in r["python_stack"]]
            (site,) = [s for s, _, _ in EXPECTED if s in sites]
            by_site[site] = (r["tag"], r["rule"])
        self.assertEqual(by_site, {s: (t, rule) for s, t, rule in EXPECTED})
        status = proc.status()
        unsleepable = {u["kind"]: u for u in status["unsleepable"]}
        self.assertEqual(unsleepable["passthrough"]["allocations"], len(SHARED))
        # The KV caches of all three frameworks, and nothing else, are freed by a KV sleep.
        kv = sum(1 for _, t, _ in EXPECTED if t == "kv_cache") * 2 * MiB
        free_before = self.free()
        self.assertEqual(proc.sleep(["kv_cache"])["bytes"], kv)
        self.assertEqual(self.free() - free_before, kv)
        proc.wake(["kv_cache"])
        proc.sleep()
        proc.wake()
        for i, (_, tag, _) in enumerate(EXPECTED):
            if tag != "kv_cache":
                self.assertEqual(h.send(f"check b{i}"), "OK", EXPECTED[i])
        for i in range(len(SHARED)):
            self.assertEqual(h.send(f"check s{i}"), "OK")


    def test_doctor_names_untagged_memory_by_call_site_and_its_rules_tag_it(self):
        h = Host(self.cli_path, [sys.executable, SERVER_STACKS], self.env,
                 extra=["--preset", "none"])
        self.hosts.append(h)
        h.expect("READY", timeout=60)
        sizes = {"transformers.generation.continuous_batching.cache:PagedAttentionCache.__init__": 8,
                 "vllm.v1.worker.gpu_model_runner:GPUModelRunner.load_model": 6,
                 "sglang.srt.model_executor.runner.decode_cuda_graph_runner:DecodeCudaGraphRunner.capture": 4,
                 "sglang.srt.model_executor.model_runner:ModelRunner.forward": 2}
        for i, (site, mib) in enumerate(sizes.items()):
            h.send(f"alloc {site} d{i} {mib * MiB}")
        for _ in range(100):
            if os.path.exists(self.socket_of(h)):
                break
            time.sleep(0.05)
        _, out, _ = self.cli("doctor", "--pid", str(h.pid), "--min-mib", "1")
        (result,) = [p["result"] for p in out["processes"]]
        self.assertEqual(result["default_bytes"], 20 * MiB)
        self.assertEqual(result["unguessed_bytes"], 2 * MiB)  # ModelRunner.forward says nothing
        got = [(r["match"]["python"]["qualname"], r["tag"]) for r in result["rules"]["rules"]]
        self.assertEqual(got, [("^PagedAttentionCache\\.__init__$", "kv_cache"),
                               ("^GPUModelRunner\\.load_model$", "weights"),
                               ("^DecodeCudaGraphRunner\\.capture$", "cuda_graph")])
        self.assertIn("8.00 MiB", result["report"])
        # Its rules tag the next allocations from those call sites.
        rules_path = os.path.join(self.tmp.name, "doctor.json")
        with open(rules_path, "w") as f:
            json.dump(result["rules"], f)
        self.cli("rules", "set", rules_path, "--pid", str(h.pid))
        for i, site in enumerate(sizes):
            h.send(f"alloc {site} e{i} {2 * MiB}")
        _, out, _ = self.cli("regions", "--pid", str(h.pid))
        (regions,) = [p["result"]["regions"] for p in out["processes"]]
        self.assertEqual(sorted(r["tag"] for r in regions[len(sizes):]),
                         ["cuda_graph", "default", "kv_cache", "weights"])


if __name__ == "__main__":
    unittest.main()
