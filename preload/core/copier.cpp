// Chunked multi-stream copies. Chunks alternate between streams so that one slow call does not
// leave the copy engines idle; streams are created once per context and kept.
#include "core/copier.h"

#include <algorithm>

namespace gpusleep {

Copier::Copier(Driver& driver, int streams_per_context, std::size_t chunk_bytes)
    : driver_(driver),
      streams_per_context_(std::max(1, streams_per_context)),
      chunk_(std::max<std::size_t>(chunk_bytes, 1)) {}

Copier::~Copier() {
  for (auto& [ctx, cs] : contexts_) {
    if (driver_.set_context(ctx) != kDrvOk) continue;
    for (Stream s : cs.streams)
      driver_.stream_destroy(s);
  }
}

DrvStatus Copier::issue(Context ctx, Direction direction, void* host, DevicePtr dev,
                        std::size_t bytes) {
  DrvStatus rc = driver_.set_context(ctx);
  ContextStreams& cs = contexts_[ctx];
  while (rc == kDrvOk && cs.streams.size() < static_cast<std::size_t>(streams_per_context_)) {
    Stream s = nullptr;
    rc = driver_.stream_create(&s);
    if (rc == kDrvOk) {
      cs.streams.push_back(s);
      cs.since_fence.push_back(0);
    }
  }
  if (cs.streams.empty() && rc == kDrvOk) rc = kDrvNotSupported;
  auto* h = static_cast<char*>(host);
  for (std::size_t off = 0; rc == kDrvOk && off < bytes; off += chunk_) {
    std::size_t n = std::min(chunk_, bytes - off);
    std::size_t k = cs.next++ % cs.streams.size();
    Stream s = cs.streams[k];
    cs.since_fence[k] = 1;
    rc = direction == Direction::kToHost ? driver_.copy_to_host(h + off, dev + off, n, s)
                                         : driver_.copy_to_device(dev + off, h + off, n, s);
    cs.used = true;
  }
  if (rc != kDrvOk && first_error_ == kDrvOk) first_error_ = rc;
  return rc;
}

DrvStatus Copier::fence(Fence* out) {
  out->clear();
  // The streams are marked as fenced only once every event is recorded: after a failure, the
  // next fence still covers all of them.
  for (auto& [ctx, cs] : contexts_) {
    for (std::size_t k = 0; k < cs.streams.size(); ++k) {
      if (!cs.since_fence[k]) continue;
      Event e = nullptr;
      DrvStatus rc = driver_.set_context(ctx);
      if (rc == kDrvOk) rc = driver_.event_record(cs.streams[k], &e);
      if (rc != kDrvOk) return rc;
      out->emplace_back(ctx, e);
    }
  }
  for (auto& [ctx, cs] : contexts_)
    std::fill(cs.since_fence.begin(), cs.since_fence.end(), 0);
  return kDrvOk;
}

DrvStatus Copier::wait(Fence* fence) {
  DrvStatus result = kDrvOk;
  for (auto& [ctx, e] : *fence) {
    driver_.set_context(ctx);
    DrvStatus rc = driver_.event_synchronize(e);
    if (result == kDrvOk) result = rc;
    driver_.event_destroy(e);
  }
  fence->clear();
  return result;
}

void Copier::drop(Fence* fence) {
  for (auto& [ctx, e] : *fence) {
    driver_.set_context(ctx);
    driver_.event_destroy(e);
  }
  fence->clear();
}

DrvStatus Copier::wait() {
  DrvStatus result = first_error_;
  for (auto& [ctx, cs] : contexts_) {
    if (!cs.used) continue;
    cs.used = false;
    std::fill(cs.since_fence.begin(), cs.since_fence.end(), 0);
    DrvStatus rc = driver_.set_context(ctx);
    for (Stream s : cs.streams) {
      if (rc == kDrvOk) rc = driver_.stream_synchronize(s);
    }
    if (result == kDrvOk) result = rc;
  }
  first_error_ = kDrvOk;
  return result;
}

}  // namespace gpusleep
