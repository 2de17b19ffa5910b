#!/usr/bin/env bash
# Builds the wheel (scripts/build-wheel.sh), installs it in a fresh virtual environment, and runs
# end-to-end tests against what it installed: the `gpusleep` command on the environment's PATH,
# the library and presets it finds inside the package, and the Python package, over the emulated
# driver and test programs of the build tree ${BUILD_DIR:-build} (scripts/build.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/${BUILD_DIR:-build}
for f in "$build/fake/libcuda.so.1" "$build/tests/e2e/emulated_host"; do
  [ -e "$f" ] || { echo "test-wheel: $f is missing: run scripts/build.sh first" >&2; exit 1; }
done
wheel=$(scripts/build-wheel.sh build-wheel/dist | tail -1 | cut -d' ' -f1)
echo "wheel: $wheel"
venv=$root/build-wheel/test-venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --no-index "$wheel"

cd /tmp  # nothing of the source tree on the path
"$venv/bin/python" - "$venv" <<'PY'
import os, subprocess, sys
import gpusleep
venv = os.path.realpath(sys.argv[1])
where = os.path.dirname(os.path.realpath(gpusleep.__file__))
assert where.startswith(venv), f"gpusleep imported from {where}, not from {venv}"
lib, cli = gpusleep.library_path(), gpusleep.cli_path()
assert lib == os.path.join(where, "lib", "libgpusleep.so"), lib
assert cli == os.path.join(where, "bin", "gpusleep"), cli
assert gpusleep.preset_path("vllm").startswith(where), gpusleep.preset_path("vllm")
out = subprocess.run([os.path.join(venv, "bin", "gpusleep"), "--help"], capture_output=True,
                     text=True, check=True).stdout
assert "gpusleep" in out, out
printed = subprocess.run([os.path.join(venv, "bin", "gpusleep"), "--print-library"],
                         capture_output=True, text=True, check=True).stdout.strip()
assert printed == lib, f"gpusleep --print-library says {printed}, the package {lib}"
print("installed:", where)
PY
unset GPUSLEEP_LIBRARY GPUSLEEP_PRESET_DIR
export GPUSLEEP_TEST_INSTALLED=1 GPUSLEEP_TEST_CLI=$venv/bin/gpusleep \
  GPUSLEEP_TEST_FAKE_DIR=$build/fake GPUSLEEP_TEST_HOST=$build/tests/e2e/emulated_host \
  GPUSLEEP_TEST_DRIVER_HOST=$build/tests/e2e/driver_host
e2e=$root/tests/e2e
"$venv/bin/python" "$e2e/test_python_api.py"
"$venv/bin/python" "$e2e/test_python_docs.py"
"$venv/bin/python" "$e2e/test_emulated.py" \
  Emulated.test_offload_sleep_releases_memory_faults_touches_and_wake_restores \
  Emulated.test_wake_with_memory_held_elsewhere_fails_whole_then_succeeds \
  Emulated.test_all_processes_sleep_and_wake_in_parallel
"$venv/bin/python" "$e2e/test_tagging.py" \
  Tagging.test_run_with_a_preset_loads_its_rules_and_an_unknown_preset_is_refused \
  Tagging.test_the_client_finds_processes_and_reports_failures
"$venv/bin/python" "$e2e/test_driver_paths.py" \
  DriverPaths.test_memory_allocated_through_each_resolver_sleeps_and_wakes
echo "test-wheel: the installed wheel passed"
