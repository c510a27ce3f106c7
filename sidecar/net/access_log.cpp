// The access log's writer thread, the workers' batches, and the escaping of caller-controlled
// values in log lines.
#include "net/access_log.h"

#include <fcntl.h>
#include <limits.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <vector>

namespace sidecar {

AccessLog::AccessLog(const std::string& where, prometheus::Counter* dropped) : dropped_(dropped) {
  if (where == "-") {
    fd_ = STDOUT_FILENO;
  } else {
    fd_ = ::open(where.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd_ < 0) {
      throw std::system_error(errno, std::generic_category(), "cannot open");
    }
    ownsFd_ = true;
  }
  struct stat st {};
  pipe_ = ::fstat(fd_, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
  writer_ = std::thread([this] { run(); });
}

AccessLog::~AccessLog() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  writer_.join();
  if (ownsFd_) {
    ::close(fd_);
  }
}

void AccessLog::Buffer::flush() {
  if (lines_ == 0) {
    return;
  }
  // An exact-size copy, so that the queue's bound counts the memory it holds (a swapped-out
  // buffer would carry 16 KiB of capacity for one line); the worker keeps its buffer.
  log_.take(std::string(text_), lines_);
  text_.clear();
  lines_ = 0;
}

// The time stamp as spdlog's "%Y-%m-%dT%H:%M:%S.%f%z" wrote it (local time, microseconds, a
// "+hh:mm" offset), with the calendar part made once a second.
void AccessLog::Buffer::stamp() {
  const auto now = std::chrono::system_clock::now();
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  const std::time_t second = static_cast<std::time_t>(micros / 1'000'000);
  if (second != second_) {
    std::tm tm{};
    ::localtime_r(&second, &tm);
    prefix_ = fmt::format("ts={:04}-{:02}-{:02}T{:02}:{:02}:{:02}", tm.tm_year + 1900,
                          tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    const long offset = tm.tm_gmtoff / 60;
    const long magnitude = offset < 0 ? -offset : offset;
    zone_ = fmt::format("{}{:02}:{:02}", offset < 0 ? '-' : '+', magnitude / 60, magnitude % 60);
    second_ = second;
  }
  text_ += prefix_;
  fmt::format_to(std::back_inserter(text_), ".{:06}", micros % 1'000'000);
  text_ += zone_;
  text_.push_back(' ');
}

void AccessLog::take(std::string text, std::size_t lines) {
  {
    std::lock_guard lock(mutex_);
    if (queuedBytes_ + text.size() <= kMaxQueuedBytes) {
      queuedBytes_ += text.size();
      queue_.push_back(std::move(text));
      lines = 0;
    }
  }
  if (lines == 0) {
    wake_.notify_one();
  } else if (dropped_) {
    dropped_->Increment(static_cast<double>(lines));
  }
}

void AccessLog::run() {
  std::vector<std::string> batches;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) {
        return;  // stopping, and everything handed over is written
      }
      for (auto& b : queue_) {
        batches.push_back(std::move(b));
      }
      queue_.clear();
    }
    for (auto& b : batches) {
      write(b);
      const std::size_t size = b.size();
      std::string().swap(b);  // freed now, not after the whole set
      std::lock_guard lock(mutex_);
      queuedBytes_ -= size;
    }
    batches.clear();
  }
}

// Whole lines only: to a pipe (a container's log collector) a write of more than PIPE_BUF bytes
// may be split by another writer's (the sidecar's own log, with `--access-log -`). So at most
// PIPE_BUF bytes at a time, cut at a line's end; a single line longer than that (a long request
// target) goes in one write of its own, which the kernel keeps whole unless the pipe fills.
void AccessLog::write(const std::string& text) {
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t n = text.size() - at;
    if (pipe_ && n > PIPE_BUF) {
      const auto end = text.rfind('\n', at + PIPE_BUF - 1);
      if (end != std::string::npos && end >= at) {
        n = end + 1 - at;
      } else {
        const auto lineEnd = text.find('\n', at);
        n = (lineEnd == std::string::npos ? text.size() : lineEnd + 1) - at;
      }
    }
    const ssize_t w = ::write(fd_, text.data() + at, n);
    const int error = w < 0 ? errno : EIO;
    if (w < 0 && error == EINTR) {
      continue;
    }
    if (w <= 0) {
      if (dropped_) {
        const auto lost =
            std::count(text.begin() + static_cast<std::ptrdiff_t>(at), text.end(), '\n');
        dropped_->Increment(static_cast<double>(lost));
      }
      if (!writeFailed_) {
        writeFailed_ = true;
        spdlog::warn("event=access_log_write_failed reason=\"{}\"",
                     std::system_category().message(error));
      }
      return;
    }
    at += static_cast<std::size_t>(w);
  }
  writeFailed_ = false;  // the next failure is logged again
}

std::string escapeForLog(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

std::string identityLogField(std::string_view identity) {
  return identity.empty() ? "-" : "\"" + escapeForLog(identity) + "\"";
}

std::string methodLogField(std::string_view name) {
  constexpr std::size_t kLogged = 256;
  std::string out = "\"" + escapeForLog(name.substr(0, kLogged)) + "\"";
  if (name.size() > kLogged) {
    out += "...";
  }
  return out;
}

}  // namespace sidecar
