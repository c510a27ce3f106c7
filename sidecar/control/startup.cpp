// Start-up checks: descriptor limits, key file permissions, addresses.
#include "control/startup.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>

namespace sidecar {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

std::size_t resolveMaxConnections(std::size_t asked) {
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    rlimit raised = nofile;
    raised.rlim_cur = nofile.rlim_max == RLIM_INFINITY ? 1'048'576 : nofile.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      nofile = raised;
    }
  }
  const std::size_t fds = nofile.rlim_cur == RLIM_INFINITY ? 1'048'576 : nofile.rlim_cur;
  const std::size_t fit = fds > 128 ? (fds - 64) / 2 : 32;
  if (asked == 0) {
    return fit;
  }
  if (asked > fit) {
    spdlog::warn(
        "event=limit_too_high max_connections={} descriptor_limit={} reason=\"each "
        "connection may need two descriptors; expect accept failures past {}\"",
        asked, fds, fit);
  }
  return asked;
}

void warnIfReadableByOthers(const std::string& keyFile) {
  struct stat st {};
  if (::stat(keyFile.c_str(), &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH))) {
    spdlog::warn(
        "event=key_file_permissions file={} mode={:o} reason=\"readable by other users; "
        "chmod 600 (or 640 with a dedicated group)\"",
        keyFile, st.st_mode & 0777);
  }
}

std::optional<tcp::endpoint> resolveOne(asio::io_context& ioc, const HostPort& hp) {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(hp.host, ec);
  if (!ec) {
    return tcp::endpoint(address, hp.port);
  }
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(hp.host, std::to_string(hp.port), ec);
  if (ec || results.empty()) {
    return std::nullopt;
  }
  return results.begin()->endpoint();
}

std::string primaryAddress() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return "127.0.0.1";
  }
  std::string v4, v6;
  for (auto* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) {
      continue;
    }
    char buf[INET6_ADDRSTRLEN] = {};
    if (i->ifa_addr->sa_family == AF_INET && v4.empty()) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof(buf));
      v4 = buf;
    } else if (i->ifa_addr->sa_family == AF_INET6 && v6.empty()) {
      auto* a6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
      if (!IN6_IS_ADDR_LINKLOCAL(&a6->sin6_addr)) {
        inet_ntop(AF_INET6, &a6->sin6_addr, buf, sizeof(buf));
        v6 = buf;
      }
    }
  }
  freeifaddrs(list);
  return !v4.empty() ? v4 : !v6.empty() ? v6 : "127.0.0.1";
}

}  // namespace sidecar
