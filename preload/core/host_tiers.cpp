// Host tiers. The staging ring has four workers of 16 MiB each: four memcpy threads keep up with
// more than half the link, and 64 MiB pinned for the length of a sleep or wake is what a single
// copy chunk already takes.
#include "core/host_tiers.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"
#include "core/mirror.h"

namespace gpusleep {
namespace {
constexpr int kStagingWorkers = 4;
constexpr std::size_t kStagingChunk = std::size_t{16} << 20;
}  // namespace

std::unique_ptr<Stash> Stash::pageable(std::size_t bytes, HostBudget* budget) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  std::unique_ptr<Stash> s(new Stash(Tier::kPageable, bytes, budget));
  s->host_ = static_cast<char*>(p);
  if (budget != nullptr) budget->add_pageable(static_cast<long long>(bytes));
  return s;
}

std::unique_ptr<Stash> Stash::disk(std::shared_ptr<SpillFile> file, std::size_t offset,
                                   std::size_t bytes, HostBudget* budget) {
  std::unique_ptr<Stash> s(new Stash(Tier::kDisk, bytes, budget));
  s->file_ = std::move(file);
  s->offset_ = offset;
  if (budget != nullptr) budget->add_spilled(static_cast<long long>(bytes));
  return s;
}

Stash::~Stash() {
  if (host_ != nullptr) munmap(host_, bytes_);
  if (file_ != nullptr) file_->discard(offset_, bytes_);
  if (budget_ == nullptr) return;
  if (tier_ == Tier::kPageable) {
    budget_->add_pageable(-static_cast<long long>(bytes_));
  } else {
    budget_->add_spilled(-static_cast<long long>(bytes_));
  }
}

bool Stash::put(std::size_t offset, const char* data, std::size_t n, std::string* error) {
  if (tier_ == Tier::kDisk) return file_->write(offset_ + offset, data, n, error);
  std::memcpy(host_ + offset, data, n);
  return true;
}

bool Stash::get(std::size_t offset, char* data, std::size_t n, std::string* error) {
  if (tier_ == Tier::kDisk) return file_->read(offset_ + offset, data, n, error);
  std::memcpy(data, host_ + offset, n);
  return true;
}

namespace {
std::size_t budget_limit(const Options& options) {
  return resolve_budget(options.host_budget, host_headroom_bytes());
}
}  // namespace

HostTiers::HostTiers(Driver& driver, const Options& options)
    : budget_(options.host_budget_ledger, budget_limit(options), options.host_budget.set),
      pageable_(options.pageable),
      staging_(driver, kStagingWorkers, kStagingChunk, [d = &driver] { d->relax_capture_mode(); }) {
  if (!options.spill_dir.empty()) {
    if (check_spill_dir(options.spill_dir, &spill_problem_)) {
      spill_dir_ = options.spill_dir;
    } else {
      GS_WARN("%s; no disk tier", spill_problem_.c_str());
    }
  }
}

bool HostTiers::pageable_room(std::size_t bytes, std::size_t planned) const {
  const std::size_t headroom = host_headroom_bytes();
  return headroom > kPageableReserve && headroom - kPageableReserve >= planned + bytes;
}

}  // namespace gpusleep
