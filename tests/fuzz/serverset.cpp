// The serverset member decoder (lenient) and encoder (exact). Invariant: a member we accept
// encodes to JSON that decodes to the same member.
#include <registry/serverset.h>

#include <cstdint>
#include <string_view>

#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded =
      registry::decodeServiceInstance(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!decoded.instance) {
    FUZZ_CHECK(!decoded.error.empty());
    return 0;
  }
  const auto once = registry::encodeServiceInstance(*decoded.instance);
  auto again = registry::decodeServiceInstance(once);
  FUZZ_CHECK(again.instance.has_value());
  FUZZ_CHECK(registry::encodeServiceInstance(*again.instance) == once);
  return 0;
}
