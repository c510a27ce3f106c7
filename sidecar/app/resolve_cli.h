#pragma once
// `sidecar resolve zk2!host:port!/path[!endpoint] [--watch]`: prints a serverset's members.

namespace sidecar {

int runResolveCommand(int argc, const char* const* argv);

}  // namespace sidecar
