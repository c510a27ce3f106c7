// Finagle's zk! and zk2! addresses. Invariant: what parses names valid connect strings (one per
// ensemble) and a valid path.
#include <registry/serverset.h>

#include <cstdint>
#include <string_view>

#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto parsed : {registry::parseAnnounceAddress(text), registry::parseResolveAddress(text)}) {
    if (parsed) {
      for (const auto& ensemble : registry::ensembles(parsed->connect)) {
        FUZZ_CHECK(registry::validConnectString(ensemble));
      }
      FUZZ_CHECK(registry::validZkPath(parsed->path));
    }
  }
  registry::validConnectString(text);
  registry::validZkPath(text);
  return 0;
}
