// The CLI's output: aligned tables, byte sizes and durations, the one-line summaries of replies,
// and "?" for a field of an unexpected type rather than a crash.
#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "cli/format.h"

using namespace gpusleep::cli;
using gpusleep::protocol::Json;

TEST_CASE("a table aligns its columns two spaces apart and trims trailing blanks", "[format]") {
  Table t({"PID", "TAG", "CMD"});
  t.add({"7", "weights", ""});
  t.add({"12345", "kv", "python serve.py"});
  CHECK(t.render() ==
        "PID    TAG      CMD\n"
        "7      weights\n"
        "12345  kv       python serve.py\n");
  CHECK(t.render("  ") ==
        "  PID    TAG      CMD\n"
        "  7      weights\n"
        "  12345  kv       python serve.py\n");
}

TEST_CASE("byte sizes print in powers of 1024 and non-numbers as a dash", "[format]") {
  CHECK(bytes_text(Json(0)) == "0 B");
  CHECK(bytes_text(Json(512)) == "512 B");
  CHECK(bytes_text(Json(1023)) == "1023 B");
  CHECK(bytes_text(Json(1024)) == "1.00 KiB");
  CHECK(bytes_text(Json(2u << 20)) == "2.00 MiB");
  CHECK(bytes_text(Json(std::size_t{3} << 29)) == "1.50 GiB");
  CHECK(bytes_text(Json(std::size_t{16} << 30)) == "16.00 GiB");
  CHECK(bytes_text(Json(std::size_t{5} << 40)) == "5.00 TiB");
  CHECK(bytes_text(Json(std::size_t{2048} << 40)) == "2048.00 TiB");
  CHECK(bytes_text(Json(nullptr)) == "-");
  CHECK(bytes_text(Json("4096")) == "-");
  CHECK(bytes_text(Json(1.5)) == "-");
}

TEST_CASE("durations print in milliseconds with one decimal", "[format]") {
  CHECK(ms_text(Json(301.25)) == "301.2 ms");
  CHECK(ms_text(Json(0)) == "0.0 ms");
  CHECK(ms_text(Json(nullptr)) == "-");
  CHECK(ms_text(Json("fast")) == "-");
}

TEST_CASE("a sleep summary names each tag's policy, regions and bytes, the time and the rate",
          "[format]") {
  Json r = {{"tags", Json::array({{{"tag", "weights"},
                                   {"policy", "offload"},
                                   {"regions", 3},
                                   {"bytes", std::size_t{16} << 30}},
                                  {{"tag", "kv_cache"},
                                   {"policy", "discard"},
                                   {"regions", 1},
                                   {"bytes", std::size_t{32} << 30}}})},
            {"duration_ms", 320.04},
            {"copied_bytes", std::size_t{16} << 30},
            {"copy_gbps", 53.64},
            {"noop", Json::array({"scratch"})}};
  CHECK(format_sleep_wake(42, "slept", r) ==
        "pid 42: slept weights (offload, 3 regions, 16.00 GiB), kv_cache (discard, 1 region, "
        "32.00 GiB) in 320.0 ms; copied 16.00 GiB at 53.6 GB/s; already asleep: scratch\n");
}

TEST_CASE("a sleep or wake with nothing to do lists the tags already in that state", "[format]") {
  Json r = {{"tags", Json::array()}, {"noop", Json::array({"weights", 5})}};
  CHECK(format_sleep_wake(9, "woke", r) == "pid 9: nothing to do (already awake: weights, ?)\n");
  CHECK(format_sleep_wake(9, "slept", Json::object()) == "pid 9: nothing to do\n");
}

TEST_CASE("status shows devices, one row per tag, unsleepable memory, peers and the gate",
          "[format]") {
  Json r = {
      {"process", {{"cmdline", "python serve.py"}}},
      {"managing", true},
      {"phase_tag", nullptr},
      {"default_tag", "default"},
      {"devices", Json::array({{{"device", 0},
                                {"free_bytes", std::size_t{100} << 30},
                                {"total_bytes", std::size_t{140} << 30}}})},
      {"tags", Json::array({{{"tag", "weights"},
                             {"policy", "offload"},
                             {"state", "asleep"},
                             {"regions", 2},
                             {"resident_bytes", 0},
                             {"asleep_bytes", 4u << 20},
                             {"mirror_bytes", 4u << 20},
                             {"last_sleep_ms", 12.34},
                             {"last_wake_ms", nullptr}}})},
      {"unsleepable", Json::array({{{"bytes", 2u << 20}, {"allocations", 1}, {"reason", "ipc"}},
                                   {{"bytes", 0}, {"allocations", 0}, {"reason", "none"}}})},
      {"peers", Json::array({{{"accessor", 1}, {"owner", 0}}})},
      {"gate",
       {{"mode", "wait"},
        {"closed", true},
        {"waiting", 1},
        {"waits", 3},
        {"longest_wait_ms", 5.0}}}};
  CHECK(format_status(42, r) ==
        "pid 42  python serve.py\n"
        "  phase tag: none (default tag: default)\n"
        "  device 0: 100.00 GiB free of 140.00 GiB\n"
        "  TAG      POLICY   STATE   REGIONS  RESIDENT  ASLEEP    MIRROR    PAGEABLE  ON DISK  "
        "LAST SLEEP  LAST WAKE\n"
        "  weights  offload  asleep  2        0 B       4.00 MiB  4.00 MiB  -         -        "
        "12.3 ms     -\n"
        "  cannot sleep: 2.00 MiB in 1 allocations, ipc\n"
        "  peer access: device 1 uses device 0's regions\n"
        "  gate (wait): closed, 1 threads waiting; 3 calls waited, the longest 5.0 ms\n");
}

TEST_CASE("status of a process that manages nothing says so", "[format]") {
  CHECK(format_status(3, {{"managing", false}}) ==
        "pid 3\n  not managing memory (disabled, or no CUDA driver)\n");
  CHECK(format_status(3, {{"managing", "yes"}}) ==
        "pid 3\n  not managing memory (disabled, or no CUDA driver)\n");
}

TEST_CASE("fields of an unexpected type print as ? and never throw", "[format]") {
  Json r = {{"managing", true},
            {"phase_tag", 7},
            {"tags", Json::array({{{"tag", 5},
                                   {"policy", Json::array()},
                                   {"state", "awake"},
                                   {"regions", "many"},
                                   {"resident_bytes", "lots"}}})}};
  const std::string out = format_status(1, r);
  CHECK(out ==
        "pid 1\n"
        "  phase tag: 7 (default tag: ?)\n"
        "  TAG  POLICY  STATE  REGIONS  RESIDENT  ASLEEP  MIRROR  PAGEABLE  ON DISK  LAST SLEEP  "
        "LAST WAKE\n"
        "  5    []      awake  ?        -         -       -       -         -        -           "
        "-\n"
        "  not managed (passed through): ? allocations, -\n");
  CHECK(format_error(1, {{"code", nullptr}}) == "pid 1: error ?: ?\n");
  CHECK(format_retag(1, {{"regions", "x"}, {"bytes", 4096}, {"tag", "weights"}}) ==
        "pid 1: retagged ? regions (4.00 KiB) weights\n");
  CHECK(format_policy(
            1, {{"policies", {{"kv_cache", 1}, {"weights", "offload"}}}, {"default", "offload"}}) ==
        "pid 1: kv_cache=? weights=offload (other tags: offload)\n");
  CHECK_NOTHROW(format_regions(1, {{"regions", "none"}}));
  CHECK_NOTHROW(format_ps({{1, 0, Json("not an object")}}));
}

TEST_CASE("regions list each region with its call site and stacks, or groups by call site",
          "[format]") {
  Json listed = {
      {"regions", Json::array({{{"id", 1},
                                {"address", "0x7f0000000000"},
                                {"mapped_bytes", 2u << 20},
                                {"device", 0},
                                {"tag", "weights"},
                                {"state", "awake"},
                                {"policy", "offload"},
                                {"mirror_bytes", nullptr},
                                {"call_site", "model.py:10"},
                                {"rule", "weights-rule"},
                                {"python_stack", Json::array({"model.py:10 load", 3})}}})}};
  CHECK(format_regions(5, listed) ==
        "pid 5\n"
        "  ID  ADDRESS         SIZE      DEV  TAG      STATE  POLICY   MIRROR  CALL SITE\n"
        "  1   0x7f0000000000  2.00 MiB  0    weights  awake  offload  -       model.py:10\n"
        "  region 1 (tag weights, rule weights-rule):\n"
        "    py  model.py:10 load\n"
        "    py  ?\n");
  Json grouped = {{"groups", Json::array({{{"regions", 4},
                                           {"bytes", 8u << 20},
                                           {"tags", {{"kv_cache", 3}, {"weights", 1}}},
                                           {"call_site", "cache.py:7"}}})}};
  CHECK(format_regions(5, grouped) ==
        "pid 5\n"
        "  REGIONS  BYTES     TAGS                  CALL SITE\n"
        "  4        8.00 MiB  kv_cache=3,weights=1  cache.py:7\n");
  CHECK(format_regions(5, {{"regions", Json::array()}}) == "pid 5\n  no regions\n");
  CHECK(format_regions(5, {{"groups", Json::array()}}) == "pid 5\n  no regions\n");
}

TEST_CASE("ps prints one row per process with its parent, devices and totals", "[format]") {
  std::vector<PsRow> rows = {
      {100,
       99,
       {{"devices", Json::array({{{"device", 0}}, {{"device", 1}}})},
        {"totals", {{"regions", 3}, {"resident_bytes", 1024}, {"asleep_bytes", 0}}},
        {"process", {{"cmdline", "python train.py"}}}}},
      {7, 0, Json::object()}};
  CHECK(format_ps(rows) ==
        "PID  PPID  DEVICES  REGIONS  RESIDENT  ASLEEP  COMMAND\n"
        "100  99    0,1      3        1.00 KiB  0 B     python train.py\n"
        "7    ?     -        ?        -         -       ?\n");
}

TEST_CASE("status and ps show a sleep or wake in flight with its progress", "[format]") {
  Json sleeping = {{"managing", true},
                   {"default_tag", "default"},
                   {"operation",
                    {{"op", "sleep"},
                     {"tags", Json::array({"weights", "kv_cache"})},
                     {"regions", 3},
                     {"total_bytes", 32u << 20},
                     {"done_bytes", 12u << 20},
                     {"elapsed_ms", 412.0},
                     {"waiting_for_memory", false}}},
                   {"tags", Json::array()}};
  CHECK(format_status(9, sleeping)
            .find("  now: sleeping weights, kv_cache: 12.00 MiB of 32.00 MiB, 0.4 s so far\n") !=
        std::string::npos);
  Json waiting = {{"op", "wake"},         {"tags", Json::array({"weights"})},
                  {"total_bytes", 4096u}, {"done_bytes", 0u},
                  {"elapsed_ms", 2500.0}, {"waiting_for_memory", true}};
  CHECK(format_status(9, {{"managing", true}, {"operation", waiting}})
            .find("  now: waking weights: 0 B of 4.00 KiB, 2.5 s so far, waiting for device "
                  "memory\n") != std::string::npos);
  CHECK(format_status(9, {{"managing", true}, {"operation", nullptr}}).find("now:") ==
        std::string::npos);
  std::vector<PsRow> rows = {
      {100, 99, sleeping},
      {101, 99, {{"operation", nullptr}, {"totals", {{"regions", 1}}}}},
      {102, 99, {{"operation", {{"op", "wake"}, {"total_bytes", 0u}, {"done_bytes", 0u}}}}}};
  CHECK(format_ps(rows) ==
        "PID  PPID  DEVICES  REGIONS  RESIDENT  ASLEEP  NOW           COMMAND\n"
        "100  99    -        ?        -         -       sleeping 37%  ?\n"
        "101  99    -        1        -         -       -             ?\n"
        "102  99    -        ?        -         -       waking        ?\n");
}

TEST_CASE("tag, rules and error replies print one line each", "[format]") {
  CHECK(format_tag(
            2, {{"effective_tag", "kv_cache"}, {"phase_tag", "kv_cache"}, {"previous", nullptr}}) ==
        "pid 2: new allocations are tagged kv_cache (phase tag: kv_cache, was: none)\n");
  CHECK(format_error(2, {{"code", "unknown_tag"}, {"message", "no tag nosuch"}}) ==
        "pid 2: error unknown_tag: no tag nosuch\n");
  CHECK(format_rules(2, {{"rules", Json::array()}}) == "pid 2: no tagging rules\n");
  CHECK(
      format_rules(
          2, {{"file", "/etc/r.json"},
              {"rules",
               Json::array(
                   {{{"name", "kv"}, {"action", "tag"}, {"tag", "kv_cache"}, {"policy", "discard"}},
                    {{"name", "skip"}, {"action", "passthrough"}}})}}) ==
      "pid 2: 2 tagging rules (file /etc/r.json)\n"
      "  #  NAME  ACTION\n"
      "  1  kv    tag kv_cache (discard)\n"
      "  2  skip  pass through\n");
}
