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
    if (keep_) {
      if (off_ <= keep_) {
        return n;  // kept for rewind()
      }
      keep_ = 0;
    }
    if (off_ == buf_.size()) {
      erased_ += buf_.size();
      buf_.clear();
      off_ = 0;
    } else if (off_ > 32 * 1024) {
      erased_ += off_;
      buf_.erase(0, off_);
      off_ = 0;
    }
    return n;
  }
  // Keeps what the reader takes from the start of the body, while it is at most limit bytes, so
  // that rewind() can give it again (a request sent again after its stream was refused).
  void keep(std::size_t limit) {
    if (erased_ == 0 && off_ == 0) {
      keep_ = limit;
    }
  }
  // The reader reads from the start again: false when what it took was not kept.
  bool rewind() {
    if (!keep_ && (erased_ != 0 || off_ != 0)) {
      return false;
    }
    off_ = 0;
    return true;
  }
  bool rewindable() const { return keep_ || (erased_ == 0 && off_ == 0); }
  // No rewind() any more (the other side answered): what was taken is let go.
  void forget() {
    if (keep_) {
      keep_ = 0;
      erased_ += off_;
      buf_.erase(0, off_);
      off_ = 0;
    }
  }
  // Of the bytes taken since the last call, those never taken before (not given again by
  // rewind()): what the producer's window may grow by.
  std::size_t newlyTaken() {
    const std::uint64_t at = erased_ + off_;
    const std::uint64_t n = at > acked_ ? at - acked_ : 0;
    acked_ += n;
    return static_cast<std::size_t>(n);
  }
  // Drops what is unread; returns how much of it was never taken (what the producer's window may
  // grow by; bytes given again by rewind() were counted when first taken).
  std::size_t discard() {
    const std::uint64_t end = erased_ + buf_.size();
    const std::uint64_t from = std::max<std::uint64_t>(acked_, erased_ + off_);
    const std::size_t n = static_cast<std::size_t>(end > from ? end - from : 0);
    acked_ = std::max(acked_, end);
    erased_ += buf_.size();
    buf_.clear();
    off_ = 0;
    keep_ = 0;
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
  std::size_t keep_ = 0;      // keeping what is taken while off_ is at most this
  std::uint64_t erased_ = 0;  // bytes taken and let go before buf_'s start
  std::uint64_t acked_ = 0;   // bytes newlyTaken() reported
  std::uint64_t total_ = 0;
  bool ended_ = false;
};

}  // namespace sidecar::h2
