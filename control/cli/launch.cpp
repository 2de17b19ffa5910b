// `gpusleep run` and what it needs: the library's path, the presets' files, and one rules file
// made of several presets.
#include "cli/launch.h"

#include <dirent.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "cli/cli.h"
#include "protocol/protocol.h"
#include "protocol/runtime_dir.h"

namespace gpusleep::cli {
namespace {

std::string exe_dir() {
  char exe[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "";
  std::string path(exe, static_cast<std::size_t>(n));
  return path.substr(0, path.find_last_of('/'));
}

std::string real_path(const std::string& path) {
  char real[PATH_MAX];
  return ::realpath(path.c_str(), real) ? std::string(real) : path;
}

// Directories that may hold the shipped presets, most specific first.
std::vector<std::string> preset_dirs() {
  std::vector<std::string> dirs;
  if (const char* d = std::getenv("GPUSLEEP_PRESET_DIR"); d && *d) dirs.push_back(d);
  const std::string dir = exe_dir();
  if (!dir.empty()) {
    dirs.push_back(dir + "/share/gpusleep/presets");
    dirs.push_back(dir + "/../share/gpusleep/presets");
  }
  dirs.push_back(GPUSLEEP_SOURCE_PRESET_DIR);
  return dirs;
}

std::vector<std::string> json_names(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) {
      names.push_back(name.substr(0, name.size() - 5));
    }
  }
  ::closedir(d);
  return names;
}

std::string preset_path(const std::string& name) {
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
      throw UsageError("a preset name is letters, digits, '_' and '-': '" + name + "'");
    }
  }
  std::string looked;
  for (const std::string& d : preset_dirs()) {
    std::string candidate = d + "/" + name + ".json";
    if (::access(candidate.c_str(), R_OK) == 0) return real_path(candidate);
    looked += (looked.empty() ? "" : ", ") + d;
  }
  std::string known;
  for (const std::string& n : auto_presets())
    known += (known.empty() ? "" : ", ") + n;
  throw UsageError("no preset '" + name + "' (known: " + known + ", auto, none; looked in " +
                   looked + ")");
}

// One rules file holding the rules of `paths` in order, written to the runtime directory as
// PID.rules.json (this process becomes the program, so the pid names it; `gpusleep ps` removes
// the files of processes that are gone).
std::string merged_rules(const std::vector<std::string>& names,
                         const std::vector<std::string>& paths) {
  protocol::Json rules = protocol::Json::array();
  std::string list;
  for (std::size_t i = 0; i < paths.size(); ++i) {
    protocol::Json preset = protocol::Json::parse(read_small_file(paths[i]), nullptr, false);
    if (preset.is_discarded() || !preset.contains("rules") || !preset["rules"].is_array()) {
      throw std::runtime_error("preset " + paths[i] + " is not a rules file");
    }
    for (const auto& r : preset["rules"])
      rules.push_back(r);
    list += (list.empty() ? "" : ", ") + names[i];
  }
  const std::string dir = default_runtime_dir();
  std::string error;
  if (!ensure_private_dir(dir, true, &error)) throw std::runtime_error(error);
  const std::string path = dir + "/" + std::to_string(::getpid()) + ".rules.json";
  std::ofstream out(path, std::ios::trunc);
  out << protocol::Json{{"version", 1},
                        {"comment", "the rules of the presets " + list + ", in this order"},
                        {"rules", rules}}
             .dump(2)
      << "\n";
  if (!out) throw std::runtime_error("cannot write " + path);
  return path;
}

// The rules file of the given presets ("" for none).
std::string rules_for(std::vector<std::string> presets) {
  if (std::find(presets.begin(), presets.end(), "none") != presets.end()) {
    if (presets.size() > 1) throw UsageError("--preset none goes alone");
    return "";
  }
  std::vector<std::string> names;
  for (const std::string& p : presets) {
    if (p != "auto") {
      names.push_back(p);
      continue;
    }
    for (const std::string& a : auto_presets())
      names.push_back(a);
  }
  std::vector<std::string> paths;
  for (const std::string& n : names)
    paths.push_back(preset_path(n));
  if (paths.empty()) return "";
  if (paths.size() == 1) return paths[0];
  return merged_rules(names, paths);
}

}  // namespace

std::string read_small_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path + ": " + strerror(errno));
  std::string text(1u << 20, '\0');
  f.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (f.gcount() == static_cast<std::streamsize>(text.size())) {
    throw std::runtime_error(path + " is larger than 1 MiB");
  }
  text.resize(static_cast<std::size_t>(f.gcount()));
  return text;
}

std::string find_library(std::string* looked) {
  if (const char* lib = std::getenv("GPUSLEEP_LIBRARY"); lib && *lib) {
    if (looked) *looked = "GPUSLEEP_LIBRARY=" + std::string(lib);
    return ::access(lib, R_OK) == 0 ? real_path(lib) : "";
  }
  const std::string dir = exe_dir();
  std::string tried;
  for (const char* rel : {"/lib/libgpusleep.so", "/../lib/libgpusleep.so"}) {
    std::string candidate = dir + rel;
    if (::access(candidate.c_str(), R_OK) == 0) return real_path(candidate);
    tried += (tried.empty() ? "" : ", ") + candidate;
  }
  if (looked) *looked = tried;
  return "";
}

int print_library() {
  std::string looked;
  std::string lib = find_library(&looked);
  if (lib.empty()) {
    std::fprintf(stderr,
                 "gpusleep: libgpusleep.so not found (looked at %s); set GPUSLEEP_LIBRARY to its "
                 "path\n",
                 looked.c_str());
    return kExitFailed;
  }
  std::printf("%s\n", lib.c_str());
  return kExitOk;
}

std::vector<std::string> auto_presets() {
  std::vector<std::string> names;
  for (const std::string& d : preset_dirs()) {
    names = json_names(d);
    if (!names.empty()) break;
  }
  auto rank = [](const std::string& n) { return n == "nccl" ? 0 : n == "pytorch" ? 2 : 1; };
  std::sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
    return rank(a) != rank(b) ? rank(a) < rank(b) : a < b;
  });
  return names;
}

bool is_python_command(const std::string& argv0) {
  const std::string base = argv0.substr(argv0.find_last_of('/') + 1);
  if (base.rfind("python", 0) == 0) return true;
  std::string path = argv0;
  if (argv0.find('/') == std::string::npos) {
    path.clear();
    const char* env = std::getenv("PATH");
    std::string dirs = env ? env : "/usr/local/bin:/usr/bin:/bin";
    for (std::size_t start = 0; start <= dirs.size();) {
      std::size_t end = dirs.find(':', start);
      if (end == std::string::npos) end = dirs.size();
      std::string candidate = dirs.substr(start, end - start) + "/" + argv0;
      if (::access(candidate.c_str(), X_OK) == 0) {
        path = candidate;
        break;
      }
      start = end + 1;
    }
  }
  std::ifstream f(path, std::ios::binary);
  char head[256] = {};
  f.read(head, sizeof head - 1);
  std::string first(head, static_cast<std::size_t>(f.gcount()));
  first = first.substr(0, first.find('\n'));
  return first.rfind("#!", 0) == 0 && first.find("python") != std::string::npos;
}

int run(const RunOptions& o) {
  if (o.command.empty()) throw UsageError("run needs a command: gpusleep run [OPTIONS] -- CMD");
  if (!o.presets.empty() && o.rules_file) throw UsageError("give --preset or --rules, not both");
  std::string lib = find_library();
  if (lib.empty()) return print_library();
  // Python programs get every preset unless told otherwise (docs/tagging.md, "Presets"): a rule
  // that matches no module of the program costs nothing, and one that does tags its memory.
  std::vector<std::string> presets = o.presets;
  const char* env_rules = std::getenv("GPUSLEEP_RULES");
  if (presets.empty() && !o.rules_file && !(env_rules && *env_rules) &&
      is_python_command(o.command[0])) {
    presets.push_back("auto");
  }
  std::string rules = rules_for(presets);
  if (o.rules_file) {
    char real[PATH_MAX];
    if (::realpath(o.rules_file->c_str(), real) == nullptr) {
      throw std::runtime_error("cannot read " + *o.rules_file + ": " + strerror(errno));
    }
    rules = real;
  }
  const char* old = std::getenv("LD_PRELOAD");
  std::string preload = lib + (old && *old ? ":" + std::string(old) : "");
  setenv("LD_PRELOAD", preload.c_str(), 1);
  if (o.tag) setenv("GPUSLEEP_DEFAULT_TAG", o.tag->c_str(), 1);
  if (o.policy) setenv("GPUSLEEP_POLICY", o.policy->c_str(), 1);
  if (o.log_level) setenv("GPUSLEEP_LOG_LEVEL", o.log_level->c_str(), 1);
  if (!rules.empty()) setenv("GPUSLEEP_RULES", rules.c_str(), 1);
  std::vector<char*> argv;
  for (const auto& s : o.command)
    argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  std::fprintf(stderr, "gpusleep: cannot run %s: %s\n", argv[0], strerror(errno));
  return 127;
}

}  // namespace gpusleep::cli
