// The inbound Thrift listener's flags: where callers connect, the local Thrift service, the
// largest frame.
#include "core/config.h"
#include "core/flags.h"

namespace sidecar::flags {

std::optional<ThriftConfig> thriftFlags(const po::variables_map& vm) {
  if (!vm.count("thrift-listen")) {
    if (vm.count("thrift-upstream")) {
      throw FlagError{"--thrift-upstream needs --thrift-listen"};
    }
    return std::nullopt;
  }
  if (!vm.count("thrift-upstream")) {
    throw FlagError{"--thrift-listen needs --thrift-upstream (the local Thrift service)"};
  }
  ThriftConfig t;
  t.listen = hostPortFlag(vm, "thrift-listen");
  t.upstream = hostPortFlag(vm, "thrift-upstream");
  t.maxFrame = static_cast<std::uint32_t>(sizeFlag(vm, "thrift-max-frame", 1, 1ull << 30));
  return t;
}

}  // namespace sidecar::flags
