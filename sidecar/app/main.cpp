// sidecar: terminates mTLS for callers and proxies to the local service.
#include <iostream>
#include <string_view>

#include "app/probe.h"
#include "app/resolve_cli.h"
#include "control/server.h"
#include "core/config.h"

int main(int argc, char** argv, char** envp) {
  if (argc > 1 && std::string_view(argv[1]) == "resolve") {
    return sidecar::runResolveCommand(argc - 1, argv + 1);
  }
  if (argc > 1 && std::string_view(argv[1]) == "probe") {
    return sidecar::runProbeCommand(argc - 1, argv + 1);
  }
  auto parsed = sidecar::parseSidecarArgs(argc, argv, envp);
  if (!parsed.config) {
    (parsed.exitCode == 0 ? std::cout : std::cerr) << parsed.message;
    return parsed.exitCode;
  }
  return sidecar::runSidecar(*parsed.config);
}
