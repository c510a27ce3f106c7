// pinghelp's help files. Invariant: an accepted file serializes to JSON that is accepted again,
// under the same name, unchanged.
#include <cstdint>
#include <string_view>

#include "app/help.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = sidecar::parseHelpMethod(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!m.error.empty()) {
    FUZZ_CHECK(m.name.empty());
    return 0;
  }
  auto again = sidecar::parseHelpMethod(m.json);
  FUZZ_CHECK(again.error.empty());
  FUZZ_CHECK(again.name == m.name);
  FUZZ_CHECK(again.json == m.json);
  return 0;
}
