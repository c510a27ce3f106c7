// The command line and the duration and size syntaxes. Input: NUL-separated arguments.
// Invariant: parsing ends in a config or in one line saying what is wrong, never in a throw.
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  sidecar::parseDuration(text);
  sidecar::parseSize(text);
  sidecar::parseHostPort(text);
  std::vector<std::string> args{"sidecar"};
  std::size_t start = 0;
  while (start <= text.size() && args.size() < 24) {
    auto end = text.find('\0', start);
    args.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) {
      break;
    }
    start = end + 1;
  }
  for (const auto& a : args) {
    if (a.find("file") != std::string::npos || a.find("/dev") != std::string::npos) {
      return 0;  // would read from the file system
    }
  }
  std::vector<const char*> argv;
  for (const auto& a : args) {
    argv.push_back(a.c_str());
  }
  argv.push_back(nullptr);
  const char* envp[] = {nullptr};
  auto result = sidecar::parseSidecarArgs(static_cast<int>(args.size()), argv.data(), envp);
  FUZZ_CHECK(result.config.has_value() || !result.message.empty());
  if (result.exitCode == 2) {  // a wrong flag: one line naming it
    FUZZ_CHECK(!result.config.has_value());
    const auto nl = result.message.find('\n');
    FUZZ_CHECK(nl == std::string::npos || nl == result.message.size() - 1);
  }
  return 0;
}
