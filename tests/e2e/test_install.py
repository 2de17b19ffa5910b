"""End to end, `cmake --install`: the stable layout (PREFIX/lib/libgpusleep.so, bin/gpusleep,
share/gpusleep/presets), a package config that find_package(gpusleep) reads, and the Python
package that finds the library, the CLI and the presets of its prefix; the installed CLI runs a
program under the installed library with nothing but its own location to go by."""
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from harness import EmulatedCase, only_result  # noqa: E402

CMAKE = os.environ.get("GPUSLEEP_TEST_CMAKE", "cmake")
BUILD_DIR = os.environ["GPUSLEEP_TEST_BUILD_DIR"]

CONSUMER = """cmake_minimum_required(VERSION 3.22)
project(consumer NONE)
find_package(gpusleep 0.1 REQUIRED)
file(GENERATE OUTPUT found.txt CONTENT
"${GPUSLEEP_LIBRARY}\\n${GPUSLEEP_CLI}\\n${GPUSLEEP_PRESET_DIR}\\n$<TARGET_FILE:gpusleep::gpusleep>\\n$<TARGET_FILE:gpusleep::cli>\\n")
"""


class Install(EmulatedCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.prefix = os.path.join(cls.dir.name, "prefix")
        subprocess.run([CMAKE, "--install", BUILD_DIR, "--prefix", cls.prefix], check=True,
                       capture_output=True)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def path(self, *parts):
        return os.path.join(self.prefix, *parts)

    def python_dir(self):
        lib = self.path("lib")
        found = [os.path.join(lib, d, "site-packages") for d in os.listdir(lib)
                 if d.startswith("python3")]
        self.assertEqual(len(found), 1, os.listdir(lib))
        return found[0]

    def test_files_land_in_the_documented_layout(self):
        for rel in ("lib/libgpusleep.so", "bin/gpusleep", "share/gpusleep/presets/vllm.json",
                    "lib/cmake/gpusleep/gpusleepConfig.cmake",
                    "lib/cmake/gpusleep/gpusleepConfigVersion.cmake"):
            self.assertTrue(os.path.isfile(self.path(rel)), rel)
        pkg = os.path.join(self.python_dir(), "gpusleep")
        for name in ("__init__.py", "client.py", "compat.py", "_install.py"):
            self.assertTrue(os.path.isfile(os.path.join(pkg, name)), name)

    def test_find_package_gives_the_library_cli_and_presets(self):
        src = os.path.join(self.dir.name, "consumer")
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "CMakeLists.txt"), "w") as f:
            f.write(CONSUMER)
        out = os.path.join(self.dir.name, "consumer-build")
        p = subprocess.run([CMAKE, "-S", src, "-B", out, f"-DCMAKE_PREFIX_PATH={self.prefix}"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(out, "found.txt")) as f:
            lines = f.read().split("\n")[:5]
        lib, cli, presets = self.path("lib", "libgpusleep.so"), self.path("bin", "gpusleep"), \
            self.path("share", "gpusleep", "presets")
        self.assertEqual([os.path.realpath(x) for x in lines],
                         [os.path.realpath(x) for x in (lib, cli, presets, lib, cli)])

    def test_the_installed_python_package_finds_its_prefix(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("GPUSLEEP_LIBRARY", "GPUSLEEP_PRESET_DIR")}
        env["PYTHONPATH"] = self.python_dir()
        code = ("import gpusleep; print(gpusleep.__file__); print(gpusleep.library_path()); "
                "print(gpusleep.cli_path()); print(gpusleep.preset_path('vllm'))")
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           cwd=self.dir.name)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = p.stdout.split("\n")[:4]
        real = os.path.realpath
        self.assertTrue(real(got[0]).startswith(real(self.python_dir())), got[0])
        self.assertEqual(got[1:], [real(self.path("lib", "libgpusleep.so")),
                                   real(self.path("bin", "gpusleep")),
                                   real(self.path("share", "gpusleep", "presets", "vllm.json"))])

    def test_the_installed_cli_runs_a_program_under_the_installed_library(self):
        self.cli_path = self.path("bin", "gpusleep")
        self.env.pop("GPUSLEEP_LIBRARY", None)
        printed = subprocess.run([self.cli_path, "--print-library"], env=self.env,
                                 capture_output=True, text=True, check=True).stdout.strip()
        self.assertEqual(printed, os.path.realpath(self.path("lib", "libgpusleep.so")))
        h = self.start(extra=["--preset", "pytorch"])
        h.send("alloc a 2097152 1")
        _, out, _ = self.cli("status", "--pid", str(h.pid))
        self.assertTrue(only_result(out)["managing"])
        _, out, _ = self.cli("rules", "--pid", str(h.pid))
        self.assertEqual(os.path.realpath(only_result(out)["file"]),
                         os.path.realpath(self.path("share", "gpusleep", "presets",
                                                    "pytorch.json")))


if __name__ == "__main__":
    unittest.main()
