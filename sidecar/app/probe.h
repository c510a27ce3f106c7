#pragma once
// `sidecar probe URL [--timeout 2s] [--method GET|POST]`: one plain HTTP/1.1 request, exit 0 on
// a 2xx. The image has no curl; its HEALTHCHECK, compose and Kubernetes' exec probes use this.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sidecar {

struct ProbeUrl {
  std::string host;  // a name, an IPv4 address, or an IPv6 address without its brackets
  uint16_t port = 80;
  std::string target = "/";  // path and query, as sent on the request line
};

// "http://host[:port][/path[?query]]"; nullopt for any other scheme, an empty host or a bad port.
std::optional<ProbeUrl> parseProbeUrl(std::string_view text);

// /health on the admin listener the sidecar would bind for adminListen (--admin-listen's form,
// host:port): a wildcard address (0.0.0.0, ::) is asked on loopback. nullopt when it is not
// host:port or its port is 0 (nothing to ask).
std::optional<ProbeUrl> adminHealthUrl(std::string_view adminListen);

int runProbeCommand(int argc, const char* const* argv);

}  // namespace sidecar
