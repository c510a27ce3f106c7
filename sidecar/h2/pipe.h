#pragma once
// One direction of a proxied stream's body: bytes a producer received and its reader has not
// taken yet, with the end of the body and its trailers. Bounded by flow control, not here: the
// producer's peer may send only what its window allows, and a window opens as the reader takes
// (h2/session.h: consume()); an HTTP/1.1 producer stops reading at kHigh.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "h2/session.h"

namespace sidecar::h2 {

class Pipe {
 public:
  // An HTTP/1.1 producer waits while this much is unread.
  static constexpr std::size_t kHigh = 64 * 1024;

  void push(const std::uint8_t* p, std::size_t n) {
    buf_.append(reinterpret_cast<const char*>(p), n);
    total_ += n;
  }
  void push(const char* p, std::size_t n) { push(reinterpret_cast<const std::uint8_t*>(p), n); }
  std::size_t take(std::uint8_t* out, std::size_t max) {
    const std::size_t n = std::min(max, size());
    std::memcpy(out, buf_.data() + off_, n);
    off_ += n;
    if (off_ == buf_.size()) {
      buf_.clear();
      off_ = 0;
    } else if (off_ > 32 * 1024) {
      buf_.erase(0, off_);
      off_ = 0;
    }
    return n;
  }
  // Drops what is unread; returns how much that was.
  std::size_t discard() {
    const std::size_t n = size();
    buf_.clear();
    off_ = 0;
    return n;
  }
  std::size_t size() const { return buf_.size() - off_; }
  bool empty() const { return size() == 0; }
  void end() { ended_ = true; }
  bool ended() const { return ended_; }
  bool drained() const { return ended_ && empty(); }
  std::uint64_t total() const { return total_; }  // bytes pushed in all
  Fields trailers;

 private:
  std::string buf_;
  std::size_t off_ = 0;
  std::uint64_t total_ = 0;
  bool ended_ = false;
};

}  // namespace sidecar::h2
