// The requests of the commands that read or change a process's settings, checked before anything
// is sent.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cli/cli.h"

namespace gpusleep::cli {

// `retag TAG` with exactly one of --id N[,N...], --range START-END, --call-site REGEX.
Json retag_request(const std::string& tag, const std::optional<std::string>& ids,
                   const std::optional<std::string>& range,
                   const std::optional<std::string>& call_site);

// `rules [show | set FILE | reload | clear]`.
Json rules_request(const std::vector<std::string>& args);

// The pids of the PID.rules.json files `gpusleep run` wrote into the runtime directory `dir`.
std::vector<int> rules_file_pids(const std::string& dir);

}  // namespace gpusleep::cli
