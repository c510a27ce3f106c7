// Finagle's zk! and zk2! addresses. Invariant: what parses names a valid connect string and path.
#include "fuzz.h"

#include <registry/serverset.h>

#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto parsed : {registry::parseAnnounceAddress(text), registry::parseResolveAddress(text)}) {
    if (parsed) {
      FUZZ_CHECK(registry::validConnectString(parsed->connect));
      FUZZ_CHECK(registry::validZkPath(parsed->path));
    }
  }
  registry::validConnectString(text);
  registry::validZkPath(text);
  return 0;
}
