"""End to end over the emulated driver, for programs that reach the driver without the dynamic
CUDA runtime: the real libgpusleep.so preloaded into driver_host, which loads libcuda itself and
finds its functions with cuGetProcAddress (either ABI), dlsym, or the runtime's
cudaGetDriverEntryPointByVersion; slept and woken by the real CLI from another process."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import EmulatedCase, Host, fake_free_bytes, only_result  # noqa: E402
from test_emulated import MiB  # noqa: E402

DRIVER_HOST = os.environ["GPUSLEEP_TEST_DRIVER_HOST"]
MODES = ("getproc", "getproc_v1", "dlsym", "runtime")
LIB = "libgpusleep.so"
DRIVER = "libcuda.so.1"


class DriverPaths(EmulatedCase):
    def start_driver_host(self, mode, env=None):
        h = Host(self.cli_path, [DRIVER_HOST, mode], env or self.env)
        self.hosts.append(h)
        h.expect("READY", timeout=30)
        return h

    def whois(self, h, mode, api, abi, version=13000, flags=0):
        name = abi if mode == "dlsym" else api
        return h.send(f"whois {name} {version} {flags}").split()[1]

    def test_each_resolver_hands_out_wrappers_for_the_table_only(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                h = self.start_driver_host(mode)
                self.assertEqual(self.whois(h, mode, "cuMemAlloc", "cuMemAlloc_v2"), LIB)
                self.assertEqual(self.whois(h, mode, "cuMemFree", "cuMemFree_v2"), LIB)
                self.assertEqual(self.whois(h, mode, "cuMemAllocPitch", "cuMemAllocPitch_v2"), LIB)
                self.assertEqual(self.whois(h, mode, "cuCtxEnablePeerAccess",
                                            "cuCtxEnablePeerAccess"), LIB)
                self.assertEqual(self.whois(h, mode, "cuMemAllocAsync", "cuMemAllocAsync_ptsz",
                                            flags=2), LIB)
                # Everything outside the table comes straight from the driver.
                self.assertEqual(self.whois(h, mode, "cuDeviceGetName", "cuDeviceGetName"), DRIVER)
                self.assertEqual(self.whois(h, mode, "cuGetExportTable", "cuGetExportTable"), DRIVER)
                self.assertEqual(self.whois(h, mode, "cuMemGetInfo", "cuMemGetInfo_v2"), DRIVER)
                # GPU work is wrapped, to pass the gate, in both stream variants.
                self.assertEqual(self.whois(h, mode, "cuMemcpyDtoH", "cuMemcpyDtoH_v2"), LIB)
                self.assertEqual(self.whois(h, mode, "cuLaunchKernel", "cuLaunchKernel"), LIB)
                self.assertEqual(self.whois(h, mode, "cuGraphLaunch", "cuGraphLaunch_ptsz",
                                            flags=2), LIB)
                if mode != "dlsym":
                    # An ABI older than the table's (32-bit cuMemAlloc) is not substituted.
                    self.assertEqual(self.whois(h, mode, "cuMemAlloc", "", version=3010), DRIVER)
                    # cuGetProcAddress asked for itself gives the wrapper of the ABI asked for.
                    self.assertEqual(self.whois(h, mode, "cuGetProcAddress", "", 13000), LIB)
                    self.assertEqual(self.whois(h, mode, "cuGetProcAddress", "", 11030), LIB)
                h.close()

    def test_memory_allocated_through_each_resolver_sleeps_and_wakes(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                h = self.start_driver_host(mode)
                baseline = self.free()
                h.send("alloc a 33554432 11")
                pitch = int(h.send("pitch p 1000 300 12").split()[1])
                self.assertEqual(pitch, 1024)
                _, regions, _ = self.cli("regions", "--pid", str(h.pid))
                self.assertEqual(len(only_result(regions)["regions"]), 2)
                self.assertLess(self.free(), baseline)
                _, out, _ = self.cli("sleep", "--pid", str(h.pid))
                self.assertEqual(only_result(out)["copied_bytes"], 32 * MiB + 1024 * 300)  # 4 KiB pages
                self.assertEqual(self.free(), baseline)  # every byte released, seen from outside
                self.cli("wake", "--pid", str(h.pid))
                self.assertEqual(h.send("check a"), "OK")
                self.assertEqual(h.send("check p"), "OK")
                h.send("free a")
                h.send("free p")
                self.assertEqual(self.free(), baseline)
                _, regions, _ = self.cli("regions", "--pid", str(h.pid))
                self.assertEqual(only_result(regions)["regions"], [])
                h.close()

    def unsleepable(self, h):
        _, status, _ = self.cli("status", "--pid", str(h.pid))
        return {u["kind"]: (u["allocations"], u["bytes"]) for u in only_result(status)["unsleepable"]}

    def test_the_programs_own_virtual_memory_sleeps_and_wakes_behind_its_handle(self):
        h = self.start_driver_host("dlsym")
        baseline = self.free()
        h.send("vmm v 16777216")
        _, regions, _ = self.cli("regions", "--pid", str(h.pid))
        (region,) = only_result(regions)["regions"]
        self.assertTrue(region["adopted"])
        self.assertEqual(self.unsleepable(h)["application_vmm"], (0, 0))
        _, out, _ = self.cli("sleep", "--pid", str(h.pid))
        self.assertEqual(only_result(out)["bytes"], 16 * MiB)
        self.assertEqual(self.free(), baseline)  # released, seen from outside
        self.assertEqual(h.send("kernel 0 v"), "OK 0")
        self.assertEqual(h.send("vmmaccess v"), "OK 800")  # refused while asleep, no fault
        self.cli("wake", "--pid", str(h.pid))
        self.assertEqual(h.send("check v"), "OK")
        self.assertEqual(h.send("retain v"), "OK same")  # the program's handle value holds
        # Released while mapped: the mapping alone keeps it, across a cycle too.
        h.send("vmmrelease v")
        self.cli("sleep", "--pid", str(h.pid))
        self.assertEqual(self.free(), baseline)
        self.cli("wake", "--pid", str(h.pid))
        self.assertEqual(h.send("check v"), "OK")
        h.send("vmmunmap v")
        self.assertEqual(self.free(), baseline)  # nothing leaked
        _, regions, _ = self.cli("regions", "--pid", str(h.pid))
        self.assertEqual(only_result(regions)["regions"], [])

    def test_unmapping_asleep_program_memory_leaves_it_released(self):
        h = self.start_driver_host("getproc")
        baseline = self.free()
        h.send("vmm v 8388608")
        self.cli("sleep", "--pid", str(h.pid))
        h.send("vmmrelease v")
        h.send("vmmunmap v")
        self.assertEqual(self.free(), baseline)
        _, regions, _ = self.cli("regions", "--pid", str(h.pid))
        self.assertEqual(only_result(regions)["regions"], [])
        _, out, _ = self.cli("wake", "--pid", str(h.pid))
        self.assertEqual(only_result(out)["bytes"], 0)

    def test_memory_that_cannot_sleep_is_reported_and_left_working(self):
        h = self.start_driver_host("getproc", env=dict(self.env, GPUSLEEP_LOG_LEVEL="info"))
        h.send("alloc a 4194304 3")
        h.send("async s 8388608 4")
        h.send("vmm shared 16777216")
        self.assertEqual(h.send("export shared"), "OK 0")  # another process may map it now
        u = self.unsleepable(h)
        self.assertEqual(u["stream_ordered"], (1, 8 * MiB))
        self.assertEqual(u["application_vmm"], (1, 16 * MiB))
        self.assertEqual(u["passthrough"], (0, 0))
        self.assertIn("exported to another process", h.stderr())
        _, out, _ = self.cli("sleep", "--pid", str(h.pid))
        self.assertEqual(only_result(out)["bytes"], 4 * MiB)  # only the region
        self.assertEqual(h.send("kernel 0 shared"), "OK 1")
        self.cli("wake", "--pid", str(h.pid))
        for name in ("a", "s", "shared"):
            self.assertEqual(h.send(f"check {name}"), "OK")
        h.send("vmmrelease shared")
        self.assertEqual(self.unsleepable(h)["application_vmm"], (1, 16 * MiB))  # still mapped
        h.send("vmmunmap shared")
        h.send("freeasync s")
        u = self.unsleepable(h)
        self.assertEqual(u["application_vmm"], (0, 0))
        self.assertEqual(u["stream_ordered"], (0, 0))

    def test_legacy_ipc_on_sleepable_memory_is_refused_clearly(self):
        h = self.start_driver_host("getproc")
        h.send("alloc a 4194304 3")
        h.send("async s 4194304 4")
        self.assertEqual(h.send("ipc a"), "OK 801")  # CUDA_ERROR_NOT_SUPPORTED
        self.assertIn("legacy IPC", h.stderr())
        self.assertIn("pass-through rule", h.stderr())
        self.assertEqual(h.send("ipc s"), "OK 0")  # memory the library does not manage: driver's
        self.assertEqual(h.send("check a"), "OK")

    def test_peer_access_covers_regions_and_is_granted_again_after_wake(self):
        env = dict(self.env, FAKECUDA_DEVICES="2")
        h = self.start_driver_host("getproc", env=env)
        h.send("device 1")
        h.send("alloc before 4194304 5")
        self.assertEqual(h.send("kernel 0 before"), "OK 0")  # no peer access yet
        h.send("device 0")
        h.send("peer 1")
        self.assertEqual(h.send("kernel 0 before"), "OK 1")  # granted to the existing region
        h.send("device 1")
        h.send("alloc after 4194304 6")
        self.assertEqual(h.send("kernel 0 after"), "OK 1")  # and to new ones
        self.assertEqual(h.send("kernel 1 after"), "OK 1")
        _, status, _ = self.cli("status", "--pid", str(h.pid), env=env)
        self.assertEqual(only_result(status)["peers"], [{"accessor": 0, "owner": 1}])
        self.cli("sleep", "--pid", str(h.pid), env=env)
        self.assertEqual(h.send("kernel 0 before"), "OK 0")
        self.cli("wake", "--pid", str(h.pid), env=env)
        self.assertEqual(h.send("kernel 0 before"), "OK 1")  # re-granted after wake
        self.assertEqual(h.send("kernel 0 after"), "OK 1")
        self.assertEqual(h.send("check before"), "OK")
        self.assertEqual(h.send("check after"), "OK")

    def test_one_process_per_device_sleeps_and_wakes_with_all(self):
        # As a tensor-parallel server runs: one process per GPU, all slept and woken at once.
        env = dict(self.env, FAKECUDA_DEVICES="2")
        hosts = []
        for device in (0, 1):
            h = self.start_driver_host("getproc", env=env)
            h.send(f"device {device}")
            h.send(f"alloc w{device} {(8 + 4 * device) * MiB} {device + 3}")
            hosts.append(h)
        awake = [fake_free_bytes(self.smi, env, d) for d in (0, 1)]
        _, out, _ = self.cli("sleep", "--all", env=env)
        by_pid = {r["pid"]: r for r in out["processes"]}
        self.assertEqual([by_pid[h.pid]["result"]["bytes"] for h in hosts], [8 * MiB, 12 * MiB])
        self.assertEqual([fake_free_bytes(self.smi, env, d) - awake[d] for d in (0, 1)],
                         [8 * MiB, 12 * MiB])
        _, status, _ = self.cli("status", "--pid", str(hosts[1].pid), env=env)
        self.assertEqual([d["device"] for d in only_result(status)["devices"]], [1])
        self.cli("wake", "--all", env=env)
        self.assertEqual([fake_free_bytes(self.smi, env, d) for d in (0, 1)], awake)
        for device, h in enumerate(hosts):
            self.assertEqual(h.send(f"check w{device}"), "OK")
            self.assertEqual(h.send(f"launch w{device}"), "OK launch 0")


if __name__ == "__main__":
    unittest.main()
