#pragma once
// Certificate rotation: the TLS files are looked at every --tls-reload-interval (and on SIGHUP);
// when one changed, a new context is built and handed on. A broken new set keeps the old one.

#include <sys/types.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <string>
#include <variant>

#include "control/metrics.h"
#include "core/config.h"
#include "net/tls_context.h"

namespace sidecar {

class TlsReloader {
 public:
  // apply runs on ioc with each new context that built.
  TlsReloader(boost::asio::io_context& ioc, TlsFiles files, Duration interval, ControlMetrics& m,
              std::function<void(const TlsContext&)> apply);
  // The first context, built at start-up; on failure the line naming the file.
  std::variant<TlsContext, std::string> initial();
  void start() { schedule(); }
  void stop() { timer_.cancel(); }
  // Builds a new context now (SIGHUP, or a file changed).
  void reload(const char* reason);

 private:
  struct FileStamp {
    ino_t inode = 0;
    long long mtimeNs = 0;
    off_t size = 0;
    bool operator==(const FileStamp&) const = default;
  };
  static FileStamp stampOf(const std::string& path);
  std::array<FileStamp, 3> currentStamps() const;
  void schedule();

  TlsFiles files_;
  Duration interval_;
  ControlMetrics& m_;
  std::function<void(const TlsContext&)> apply_;
  boost::asio::steady_timer timer_;
  std::array<FileStamp, 3> stamps_{};
};

}  // namespace sidecar
