// Bounded JSON reading: nlohmann's own (iterative) parser builds the document, and a SAX layer in
// front of it counts the depth and the keys of each open object.
#include "base/json_reader.h"

#include <set>
#include <vector>

namespace gpusleep {
namespace {

using Json = nlohmann::json;

class BoundedSax : public nlohmann::json_sax<Json> {
 public:
  BoundedSax(Json* out, std::size_t max_depth) : dom_(*out, false), max_depth_(max_depth) {}

  bool null() override { return dom_.null(); }
  bool boolean(bool v) override { return dom_.boolean(v); }
  bool number_integer(number_integer_t v) override { return dom_.number_integer(v); }
  bool number_unsigned(number_unsigned_t v) override { return dom_.number_unsigned(v); }
  bool number_float(number_float_t v, const string_t& s) override {
    return dom_.number_float(v, s);
  }
  bool string(string_t& v) override { return dom_.string(v); }
  bool binary(binary_t& v) override { return dom_.binary(v); }
  bool start_object(std::size_t n) override {
    if (!enter()) return false;
    keys_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(string_t& k) override {
    if (!keys_.back().insert(k).second) {
      error_ = "the key \"" + k.substr(0, 64) + "\" appears twice in one object";
      return false;
    }
    return dom_.key(k);
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) override { return enter() && dom_.start_array(n); }
  bool end_array() override {
    --depth_;
    return dom_.end_array();
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error_ = e.what();
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool enter() {
    if (++depth_ > max_depth_) {
      error_ = "nested deeper than " + std::to_string(max_depth_) + " levels";
      return false;
    }
    return true;
  }

  nlohmann::detail::json_sax_dom_parser<Json> dom_;
  const std::size_t max_depth_;
  std::size_t depth_ = 0;
  std::vector<std::set<std::string>> keys_;
  std::string error_;
};

}  // namespace

bool parse_json(std::string_view text, Json* out, std::string* error, std::size_t max_depth) {
  // nlohmann's reader takes a NUL byte for the end of the input and would ignore what follows.
  if (text.find('\0') != std::string_view::npos) {
    *error = "a NUL byte in the message";
    return false;
  }
  Json doc;
  BoundedSax sax(&doc, max_depth);
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &sax, Json::input_format_t::json, true, false);
  } catch (const std::exception& e) {
    *error = e.what();
    return false;
  }
  if (!ok) {
    *error = sax.error().empty() ? "not valid JSON" : sax.error();
    return false;
  }
  *out = std::move(doc);
  return true;
}

}  // namespace gpusleep
