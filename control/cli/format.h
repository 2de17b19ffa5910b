// Human-readable output of the CLI: tables and one-line summaries of replies.
#pragma once

#include <string>
#include <vector>

#include "protocol/protocol.h"

namespace gpusleep::cli {

// Left-aligned columns, two spaces apart.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string render(const std::string& indent = "") const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string bytes_text(const protocol::Json& v);  // "16.00 GiB" (or "-" for null)
std::string ms_text(const protocol::Json& v);     // "301.2 ms" (or "-")

// One block per reply, for a process `pid`. Each ends with a newline.
std::string format_status(int pid, const protocol::Json& result);
std::string format_regions(int pid, const protocol::Json& result);
std::string format_sleep_wake(int pid, const char* verb, const protocol::Json& result);
std::string format_tag(int pid, const protocol::Json& result);
std::string format_policy(int pid, const protocol::Json& result);
std::string format_rules(int pid, const protocol::Json& result);
std::string format_retag(int pid, const protocol::Json& result);
std::string format_error(int pid, const protocol::Json& error);
// One line of `gpusleep ps`: a process, its parent, and its status.
struct PsRow {
  int pid;
  int ppid;  // 0: unknown
  protocol::Json status;
};
// PID, PPID, DEVICES, REGIONS, RESIDENT, ASLEEP, COMMAND (the whole command line).
std::string format_ps(const std::vector<PsRow>& rows);

}  // namespace gpusleep::cli
