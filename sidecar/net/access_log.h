#pragma once
// The access log: one line per answered request. Each worker formats its lines into its own
// buffer and hands the buffer to a writer thread when it holds 16 KiB, and on its sweep (every
// 100 ms): one lock and one write(2) per batch of lines instead of a wake-up of the writer and a
// write per line, and the request path never waits on the disk. As Envoy's file access logs (a
// buffer per worker, flushed by a thread) and nginx's `access_log ... buffer=`.

#include <fmt/format.h>
#include <prometheus/counter.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <ctime>
#include <deque>
#include <iterator>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace sidecar {

class AccessLog {
 public:
  // A worker hands its lines over once they reach this size, or at its next sweep.
  static constexpr std::size_t kBatchBytes = 16 * 1024;
  // Lines handed over and not yet written beyond this are dropped (and counted in `dropped`)
  // rather than a request slowed or memory grown: a stalled disk or a full pipe.
  static constexpr std::size_t kMaxQueuedBytes = 4 * 1024 * 1024;

  // "-" for stdout, else a file, created if missing and appended to. Throws std::system_error
  // when it cannot be opened. dropped may be null.
  AccessLog(const std::string& where, prometheus::Counter* dropped);
  // Writes every line handed over, then stops the writer.
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // One worker's lines; used on that worker's thread only.
  class Buffer {
   public:
    explicit Buffer(AccessLog& log) : log_(log) {}
    ~Buffer() { flush(); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    // Appends "ts=<local time, microseconds> " and the formatted fields as one line.
    template <class... Args>
    void line(fmt::format_string<Args...> format, Args&&... args) {
      stamp();
      fmt::format_to(std::back_inserter(text_), format, std::forward<Args>(args)...);
      text_.push_back('\n');
      ++lines_;
      if (text_.size() >= kBatchBytes) {
        flush();
      }
    }
    // Hands the buffered lines to the writer.
    void flush();

   private:
    void stamp();

    AccessLog& log_;
    std::string text_;
    std::size_t lines_ = 0;
    std::time_t second_ = -1;  // the second prefix_ and zone_ were made for
    std::string prefix_;       // "ts=2026-11-27T19:56:39"
    std::string zone_;         // "+00:00"
  };

 private:
  void take(std::string text, std::size_t lines);
  void run();
  void write(const std::string& text);

  int fd_ = -1;
  bool ownsFd_ = false;
  bool pipe_ = false;  // writes of at most PIPE_BUF bytes, cut at line ends, stay whole lines
  prometheus::Counter* dropped_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::string> queue_;
  std::size_t queuedBytes_ = 0;
  bool stopping_ = false;
  bool writeFailed_ = false;  // logged once
  std::thread writer_;
};

// A value in a log field: quotes and backslashes escaped, control bytes as \xNN. Request targets
// and certificate identities come from callers: escaped, they cannot forge fields or lines.
std::string escapeForLog(std::string_view s);

// An identity as one log field: quoted and escaped, or "-" when there is none.
std::string identityLogField(std::string_view identity);

// A Thrift method name as one log field: quoted and escaped, cut to 256 bytes with "..." after
// (callers choose names up to a frame long).
std::string methodLogField(std::string_view name);

}  // namespace sidecar
