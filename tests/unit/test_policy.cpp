// Tag policies: the built-in defaults, overrides, policy lists and tag names.
#include <catch2/catch.hpp>

#include <map>
#include <string>

#include "core/policy.h"

using namespace gpusleep;

TEST_CASE("policies default to discard for kv_cache and offload otherwise", "[policy]") {
  PolicyTable t;
  CHECK(t.for_tag("kv_cache") == Policy::kDiscard);
  CHECK(t.for_tag("weights") == Policy::kOffload);
  t.set("kv_cache", Policy::kOffload);
  CHECK(t.for_tag("kv_cache") == Policy::kOffload);
  std::map<std::string, Policy> out;
  std::string error;
  CHECK_FALSE(parse_policy_list("weights", &out, &error));
  CHECK(error.find("tag=policy") != std::string::npos);
  CHECK(valid_tag_name("cuda_graph"));
  CHECK_FALSE(valid_tag_name(""));
  CHECK_FALSE(valid_tag_name(std::string(65, 'a')));
  CHECK_FALSE(valid_tag_name("a/b"));
}
