// sidecar: terminates mTLS for callers and proxies to the local service.
#include "config.h"
#include "server.h"

#include <iostream>

int main(int argc, char** argv, char** envp) {
  auto parsed = sidecar::parseSidecarArgs(argc, argv, envp);
  if (!parsed.config) {
    (parsed.exitCode == 0 ? std::cout : std::cerr) << parsed.message;
    return parsed.exitCode;
  }
  return sidecar::runSidecar(*parsed.config);
}
