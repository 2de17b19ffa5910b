// Tagging rules: parsing (errors name the rule and the field), first match wins, each matcher.
#include <catch2/catch.hpp>

#include <chrono>

#include "core/rules.h"
#include "core/tagger.h"

namespace gpusleep {
namespace {

class Context : public SiteContext {
 public:
  std::vector<PyFrame> frames;
  std::vector<std::string> symbols;
  bool capture = false;
  int python_reads = 0;
  int native_reads = 0;
  const std::vector<PyFrame>& python_frames() override {
    ++python_reads;
    return frames;
  }
  const std::vector<std::string>& native_symbols() override {
    ++native_reads;
    return symbols;
  }
  bool capturing() override { return capture; }
  std::shared_ptr<const CallSite> call_site() override { return nullptr; }
};

std::shared_ptr<const RuleSet> parse_ok(const std::string& text) {
  std::string error;
  auto set = RuleSet::parse(text, &error);
  INFO(error);
  REQUIRE(set != nullptr);
  return set;
}

std::string parse_error(const std::string& text) {
  std::string error;
  auto set = RuleSet::parse(text, &error);
  CHECK(set == nullptr);
  return error;
}

TEST_CASE("a bad rule set is refused with the rule and field named") {
  CHECK(parse_error("{").find("not valid JSON") == 0);
  CHECK(parse_error(R"({"rules": 3})") == "rule set: \"rules\" must be a list");
  CHECK(parse_error(R"({"rulez": []})") == "rule set: unknown field \"rulez\"");
  CHECK(parse_error(R"([{"tag": "w"}, {"name": "kv", "match": {"sise": 1}, "tag": "kv"}])") ==
        "rule 2 (\"kv\"): match: unknown field \"sise\"");
  CHECK(parse_error(R"([{"match": {"python": {"qualname": "(unclosed"}}, "tag": "w"}])")
            .find("rule 1: match.python.qualname: invalid regular expression \"(unclosed\"") == 0);
  CHECK(parse_error(R"([{"tag": "bad tag!"}])") ==
        "rule 1: tag: must be 1 to 64 characters from [A-Za-z0-9_.:-]");
  CHECK(parse_error(R"([{"match": {}}])") ==
        "rule 1: needs exactly one action: \"tag\" or \"passthrough\": true");
  CHECK(parse_error(R"([{"tag": "w", "passthrough": true}])") ==
        "rule 1: needs exactly one action: \"tag\" or \"passthrough\": true");
  CHECK(parse_error(R"([{"passthrough": true, "policy": "discard"}])") ==
        "rule 1: policy: a pass-through rule has no policy");
  CHECK(parse_error(R"([{"tag": "w", "policy": "keep"}])") ==
        "rule 1: policy: must be \"offload\" or \"discard\"");
  CHECK(parse_error(R"([{"match": {"size": {"min": "1G", "max": "1M"}}, "tag": "w"}])") ==
        "rule 1: match.size: min is greater than max");
  CHECK(parse_error(R"([{"match": {"size": {"min": -5}}, "tag": "w"}])") ==
        "rule 1: match.size.min: must be a byte count (a number, or a string such as \"512M\")");
  CHECK(parse_error(R"([{"match": {"device": "0"}}, "tag": "w"}])").find("not valid JSON") == 0);
  CHECK(parse_error(R"([{"match": {"device": "0"}, "tag": "w"}])") ==
        "rule 1: match.device: must be a device number or a list of them");
  CHECK(parse_error(R"([{"tag": "w", "policy": "offload"}, {"tag": "w", "policy": "discard"}])") ==
        "rule 2 (\"rule 2\"): policy: tag w already has policy offload in rule 1");
  CHECK(parse_error(R"({"version": 2, "rules": []})") == "rule set: version: only 1 is understood");
}

TEST_CASE("the first matching rule wins and a rule without matchers matches everything") {
  auto set = parse_ok(R"({"version": 1, "rules": [
      {"name": "big", "match": {"size": {"min": "1G"}}, "tag": "weights"},
      {"name": "rest", "tag": "other"}]})");
  const Rule* r = set->match(AllocationFacts{std::size_t{2} << 30, 0, 1, ""}, nullptr);
  REQUIRE(r != nullptr);
  CHECK(r->tag == "weights");
  r = set->match(AllocationFacts{4096, 0, 2, ""}, nullptr);
  REQUIRE(r != nullptr);
  CHECK(r->name == "rest");
}

TEST_CASE("size, device, sequence, phase and capture matchers") {
  auto set = parse_ok(R"([
      {"match": {"size": {"min": 100, "max": 200}}, "tag": "sized"},
      {"match": {"device": [1, 2]}, "tag": "dev"},
      {"match": {"sequence": {"max": 3}}, "tag": "early"},
      {"match": {"phase": "^kv$"}, "tag": "kv_cache"},
      {"match": {"capturing": true}, "tag": "cuda_graph"}])");
  Context ctx;
  auto tag = [&](std::size_t size, int device, std::uint64_t seq, const char* phase) {
    const Rule* r = set->match(AllocationFacts{size, device, seq, phase}, &ctx);
    return r ? r->tag : std::string("-");
  };
  CHECK(tag(150, 0, 10, "") == "sized");
  CHECK(tag(99, 0, 10, "") == "-");
  CHECK(tag(201, 2, 10, "") == "dev");
  CHECK(tag(201, 0, 3, "") == "early");
  CHECK(tag(201, 0, 4, "kv") == "kv_cache");
  CHECK(tag(201, 0, 4, "kv2") == "-");
  ctx.capture = true;
  CHECK(tag(201, 0, 4, "") == "cuda_graph");
}

TEST_CASE("python matchers need one frame to match every field, and every matcher to match") {
  auto set = parse_ok(R"([
      {"name": "kv", "match": {"python": {"module": "^transformers\\.cache_utils$",
                                          "qualname": "StaticLayer\\.lazy_initialization"}},
       "tag": "kv_cache"},
      {"name": "both", "match": {"python": [{"qualname": "^load$"}, {"file": "server\\.py:1[0-9]$"}]},
       "tag": "weights"}])");
  Context ctx;
  ctx.frames = {{"transformers.cache_utils", "StaticCache.__init__", "/x/cache_utils.py", 10},
                {"other", "StaticLayer.lazy_initialization", "/x/other.py", 3}};
  CHECK(set->match(AllocationFacts{1, 0, 1, ""}, &ctx) == nullptr);  // split across frames
  ctx.frames.push_back(
      {"transformers.cache_utils", "StaticLayer.lazy_initialization", "/x/cache_utils.py", 40});
  const Rule* r = set->match(AllocationFacts{1, 0, 1, ""}, &ctx);
  REQUIRE(r != nullptr);
  CHECK(r->name == "kv");

  ctx.frames = {{"__main__", "load", "/srv/server.py", 12}};
  r = set->match(AllocationFacts{1, 0, 1, ""}, &ctx);
  REQUIRE(r != nullptr);
  CHECK(r->name == "both");
  ctx.frames = {{"__main__", "load", "/srv/server.py", 22}};
  CHECK(set->match(AllocationFacts{1, 0, 1, ""}, &ctx) == nullptr);
  CHECK(set->match(AllocationFacts{1, 0, 1, ""}, nullptr) == nullptr);  // no context, no match
}

TEST_CASE("stacks are read only when a rule gets to ask for them") {
  auto set = parse_ok(R"([
      {"match": {"size": {"max": 10}}, "tag": "small"},
      {"match": {"native": "ncclCommInit"}, "passthrough": true}])");
  Context ctx;
  ctx.symbols = {"cudaMalloc", "ncclCommInitRank"};
  CHECK(set->match(AllocationFacts{5, 0, 1, ""}, &ctx)->tag == "small");
  CHECK(ctx.native_reads == 0);
  const Rule* r = set->match(AllocationFacts{50, 0, 1, ""}, &ctx);
  REQUIRE(r != nullptr);
  CHECK(r->passthrough);
  CHECK(ctx.native_reads == 1);
  CHECK(ctx.python_reads == 0);
}

TEST_CASE("the tagger applies rules first, then the phase tag, then the default") {
  Tagger tagger("default");
  tagger.set_phase_tag("phase");
  CHECK(tagger.decide(AllocationSite{1, 0, 1, 0}).tag == "phase");
  tagger.set_rules(
      parse_ok(R"([{"name": "pt", "match": {"size": {"min": 100}}, "passthrough": true},
                                {"name": "w", "match": {"phase": "^phase$", "size": {"max": 10}},
                                 "tag": "weights"}])"));
  TagDecision d = tagger.decide(AllocationSite{5, 0, 1, 0});
  CHECK(d.tag == "weights");
  CHECK(d.rule == "w");
  d = tagger.decide(AllocationSite{500, 0, 1, 0});
  CHECK(d.passthrough);
  CHECK(d.rule == "pt");
  d = tagger.decide(AllocationSite{50, 0, 1, 0});
  CHECK(d.tag == "phase");
  CHECK(d.rule.empty());
  tagger.set_phase_tag("");
  CHECK(tagger.decide(AllocationSite{5, 0, 1, 0}).tag == "default");
}

}  // namespace
}  // namespace gpusleep

namespace gpusleep {
namespace {

TEST_CASE("every shipped preset parses") {
  for (const char* name : {"pytorch", "transformers", "vllm", "sglang", "nccl"}) {
    INFO(name);
    std::shared_ptr<const RuleSet> set;
    std::string error;
    CHECK(load_rules_file(std::string(GPUSLEEP_PRESET_DIR) + "/" + name + ".json", &set, &error));
    CHECK(error.empty());
    REQUIRE(set != nullptr);
    CHECK_FALSE(set->rules().empty());
  }
}

TEST_CASE("the transformers preset tags caches, loading and capture from Python frames") {
  std::shared_ptr<const RuleSet> set;
  std::string error;
  REQUIRE(load_rules_file(std::string(GPUSLEEP_PRESET_DIR) + "/transformers.json", &set, &error));
  Context ctx;
  auto tag = [&]() {
    const Rule* r = set->match(AllocationFacts{1 << 20, 0, 1, ""}, &ctx);
    return r ? r->tag : std::string("-");
  };
  ctx.frames = {{"torch.nn.modules.module", "Module._apply", "module.py", 900},
                {"torch.nn.modules.module", "Module.to", "module.py", 1300},
                {"transformers.modeling_utils", "PreTrainedModel.to", "modeling_utils.py", 4000},
                {"__main__", "main", "server.py", 10}};
  CHECK(tag() == "weights");
  // Without a frame of transformers the preset leaves the allocation to the others loaded with
  // it (another framework's preset, or the phase and default tags).
  ctx.frames = {{"torch.nn.modules.module", "Module._apply", "module.py", 900},
                {"torch.nn.modules.module", "Module.to", "module.py", 1300},
                {"__main__", "main", "server.py", 10}};
  CHECK(tag() == "-");
  ctx.frames = {{"transformers.cache_utils", "StaticLayer.lazy_initialization", "c.py", 1},
                {"transformers.models.llama.modeling_llama", "LlamaAttention.forward", "m.py", 1}};
  CHECK(tag() == "kv_cache");
  ctx.frames = {{"transformers.models.llama.modeling_llama", "LlamaMLP.forward", "m.py", 1}};
  CHECK(tag() == "-");  // activations keep the phase or default tag
  ctx.capture = true;
  CHECK(tag() == "cuda_graph");
}

TEST_CASE("a rules file that cannot be read or is too large is refused with its name") {
  std::shared_ptr<const RuleSet> set;
  std::string error;
  CHECK_FALSE(load_rules_file("/nonexistent/rules.json", &set, &error));
  CHECK(error == "/nonexistent/rules.json: cannot be read");
}

}  // namespace

TEST_CASE(
    "a rule's pathological regular expression costs an allocation linear time, not for ever") {
  // Each pattern sends a backtracking matcher into exponential time on these subjects.
  auto set = parse_ok(R"([
      {"tag": "x", "match": {"native": "^(.|.|.|.)*!"}},
      {"tag": "y", "match": {"phase": "^(a|a?)+$!"}},
      {"tag": "z", "match": {"python": {"module": "(a*)*b", "qualname": "^(.|.|.|.)*!"}}}])");
  Context ctx;
  for (int i = 0; i < 50; ++i) {
    ctx.symbols.push_back(std::string(500, 'a') + std::to_string(i));
    ctx.frames.push_back({std::string(200, 'a') + std::to_string(i), std::string(200, 'a'),
                          "/x/" + std::to_string(i) + ".py", i});
  }
  const auto t = std::chrono::steady_clock::now();
  CHECK(set->match(AllocationFacts{1, 0, 1, std::string(64, 'a')}, &ctx) == nullptr);
  // Linear time is about a millisecond here; a backtracking matcher would not return.
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() < 5.0);
}

TEST_CASE("what a rule's patterns match is computed once per distinct frame, symbol and phase") {
  auto set = parse_ok(R"([
      {"tag": "a", "match": {"phase": "^kv$"}},
      {"tag": "b", "match": {"native": "^nccl"}},
      {"tag": "c", "match": {"python": {"module": "^vllm\\.", "qualname": "load"}}}])");
  Context ctx;
  ctx.symbols = {"cudaMalloc", "at::native::empty", "main"};
  for (int i = 0; i < 50; ++i)
    ctx.frames.push_back({"torch.m" + std::to_string(i), "f", "/t.py", i});
  CHECK(set->match(AllocationFacts{1, 0, 1, ""}, &ctx) == nullptr);
  const std::uint64_t first = set->cache_misses();
  CHECK(first == 1 + 3 + 50);
  for (int i = 0; i < 10; ++i)
    CHECK(set->match(AllocationFacts{1, 0, 2, ""}, &ctx) == nullptr);
  CHECK(set->cache_misses() == first);
  ctx.frames.push_back({"vllm.worker", "load", "/v.py", 1});
  const Rule* r = set->match(AllocationFacts{1, 0, 3, ""}, &ctx);
  REQUIRE(r != nullptr);
  CHECK(r->tag == "c");
  CHECK(set->cache_misses() == first + 1);
}

TEST_CASE("a rule set's regular expressions are bounded in size together, and in syntax") {
  std::string rules = "[";
  for (int i = 0; i < 30; ++i) {
    rules += std::string(i ? "," : "") + R"({"tag": "t", "match": {"native": "(a|b|c|d){100}"}})";
  }
  rules += "]";
  CHECK(parse_error(rules).find("too complex") != std::string::npos);
  CHECK(parse_error(R"([{"tag": "x", "match": {"native": "(a)\\1"}}])")
            .find("rule 1: match.native: invalid regular expression \"(a)\\1\": at offset 4: "
                  "backreferences are not supported") == 0);
  CHECK(parse_error(std::string(100000, '[') + std::string(100000, ']')).find("nested deeper") !=
        std::string::npos);
}

}  // namespace gpusleep
