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

int runProbeCommand(int argc, const char* const* argv);

}  // namespace sidecar
