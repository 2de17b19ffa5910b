// doctor: memory left in `default` grouped by call site, a tag guessed from the frames' names,
// and the rules file that tags it.
#include "cli/doctor.h"

#include <catch2/catch.hpp>

#include "core/rules.h"

using gpusleep::cli::doctor;
using gpusleep::protocol::Json;

namespace {

constexpr std::uint64_t kGiB = 1ull << 30;

Json region(std::uint64_t bytes, const std::string& tag, Json stack, Json rule = nullptr) {
  std::string site =
      stack.empty() ? "libtorch_cuda.so+0x1a2b (c10::cuda::malloc)" : stack[0].get<std::string>();
  return Json{{"size", bytes}, {"mapped_bytes", bytes}, {"tag", tag},
              {"rule", rule},  {"call_site", site},     {"python_stack", stack}};
}

// The stacks `transformers serve` allocates from with continuous batching.
Json serve_regions() {
  Json paged = {"torch.utils._device:__torch_function__ (/t/_device.py:103)",
                "transformers.generation.continuous_batching.cache:PagedAttentionCache.__init__ "
                "(/t/cache.py:240)",
                "transformers.generation.continuous_batching.continuous_api:"
                "ContinuousBatchingManager._run_generation_loop (/t/continuous_api.py:1034)"};
  Json ios = {
      "transformers.generation.continuous_batching.input_outputs:"
      "ContinuousBatchingIOs._setup_static_tensors (/t/input_outputs.py:185)",
      "transformers.generation.continuous_batching.input_outputs:"
      "ContinuousBatchingIOs.__init__ (/t/input_outputs.py:110)",
      "transformers.generation.continuous_batching.continuous_api:"
      "ContinuousBatchProcessor.__init__ (/t/continuous_api.py:288)"};
  Json weights = {"torch.nn.modules.module:Module._apply (/t/module.py:942)",
                  "myserver.engine:Engine.load_checkpoint (/srv/engine.py:12)",
                  "__main__:main (/srv/main.py:3)"};
  Json graph = {"torch.cuda.graphs:CUDAGraph.capture_end (/t/graphs.py:90)",
                "myserver.runner:Runner.capture_decode (/srv/runner.py:40)"};
  Json nothing = {"myserver.engine:Engine.step (/srv/engine.py:80)",
                  "__main__:main (/srv/main.py:9)"};
  Json tagged = {"transformers.modeling_utils:PreTrainedModel.from_pretrained (/t/m.py:1)"};
  Json list = Json::array();
  list.push_back(region(38 * kGiB, "default", paged));
  for (int i = 0; i < 4; ++i)
    list.push_back(region(7 * kGiB, "default", ios));
  list.push_back(region(2 * kGiB, "default", weights));
  list.push_back(region(kGiB, "default", graph));
  list.push_back(region(3 * kGiB, "default", nothing));
  list.push_back(region(32ull << 20, "default", Json{"myserver.io:Buffers.grow (/srv/io.py:5)"}));
  list.push_back(region(2 * kGiB, "weights", tagged, "model loading"));  // a rule tagged it
  list.push_back(region(kGiB, "default", Json::array()));                // no Python frames
  return Json{{"regions", list}};
}

Json status() {
  return Json{
      {"unsleepable",
       Json::array({Json{{"kind", "passthrough"}, {"allocations", 2}, {"bytes", 64ull << 20}}})}};
}

}  // namespace

TEST_CASE("doctor groups default memory by the call site whose name says what it is") {
  auto report = doctor(42, serve_regions(), status());
  INFO(report.text);
  CHECK(report.default_bytes ==
        38 * kGiB + 28 * kGiB + 2 * kGiB + kGiB + 3 * kGiB + (32ull << 20) + kGiB);
  const auto& rules = report.rules["rules"];
  REQUIRE(rules.size() == 3);  // largest first, one per call site with a guess
  CHECK(rules[0]["tag"] == "kv_cache");
  CHECK(rules[0]["match"]["python"]["module"] ==
        "^transformers\\.generation\\.continuous_batching\\.cache$");
  CHECK(rules[0]["match"]["python"]["qualname"] == "^PagedAttentionCache\\.__init__$");
  CHECK(rules[1]["tag"] == "weights");  // past PyTorch's own frames
  CHECK(rules[1]["match"]["python"]["qualname"] == "^Engine\\.load_checkpoint$");
  CHECK(rules[2]["tag"] == "cuda_graph");
  CHECK(rules[2]["match"]["python"]["qualname"] == "^Runner\\.capture_decode$");
  // No frame of the static tensors, of Engine.step or of the native site names what they hold.
  CHECK(report.unguessed_bytes == 28 * kGiB + 3 * kGiB + kGiB);
  const std::string& t = report.text;
  CHECK(t.find("pid 42: 73.03 GiB of 75.03 GiB (97%) in default") == 0);
  CHECK(t.find("28.00 GiB  4        -           transformers.generation.continuous_batching."
               "input_outputs:ContinuousBatchingIOs._setup_static_tensors") != std::string::npos);
  CHECK(t.find("and 32.00 MiB in 1 smaller call sites") != std::string::npos);
  CHECK(t.find("cannot sleep: 64.00 MiB (passthrough)") != std::string::npos);
  CHECK(t.find("gpusleep retag kv_cache --pid 42 --call-site 'PagedAttentionCache\\.__init__'") !=
        std::string::npos);
  CHECK(t.find("from_pretrained") == std::string::npos);  // tagged by a rule: not doctor's business
}

TEST_CASE("doctor's rules file is one the library accepts") {
  auto report = doctor(42, serve_regions(), status());
  std::string error;
  auto set = gpusleep::RuleSet::parse(report.rules.dump(), &error);
  REQUIRE(set);
  CHECK(error.empty());
  CHECK(set->rules().size() == 3);
  CHECK(set->rules()[0].name ==
        "doctor: transformers.generation.continuous_batching.cache:PagedAttentionCache.__init__");
}

TEST_CASE("doctor says so when nothing large is left in default") {
  Json regions = {{"regions", Json::array({region(kGiB, "weights", Json::array(), "w"),
                                           region(2 << 20, "default", Json::array())})}};
  auto report = doctor(7, regions, Json::object(), {.min_bytes = 64ull << 20});
  CHECK(report.rules["rules"].empty());
  CHECK(report.text.find("no call site holds 64.00 MiB or more there") != std::string::npos);
  CHECK(report.text.find("rules first") == std::string::npos);
}

TEST_CASE("doctor survives replies with missing or mistyped fields") {
  for (const Json& regions :
       {Json(), Json::object(), Json{{"regions", 3}}, Json{{"regions", Json::array({1, "x"})}},
        Json{{"regions",
              Json::array({Json{{"tag", "default"},
                                {"size", -5},
                                {"python_stack", Json::array({7, "no colon here"})}}})}}}) {
    auto report = doctor(1, regions, Json{{"unsleepable", "none"}});
    CHECK(report.rules["rules"].empty());
    CHECK(report.default_bytes == 0);
  }
}
