// Reading one flag's value, with the error line that names it (see flags.h).
#include "core/flags.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <system_error>

#include "core/text.h"

namespace sidecar::flags {

namespace fs = std::filesystem;

// An error line quotes what the user gave; control bytes in it must not break the line.
std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

bool readable(const std::string& path) { return std::ifstream(path).good(); }

std::string need(const po::variables_map& vm, const char* name) {
  if (!vm.count(name)) {
    throw FlagError{std::string("--") + name + " is required"};
  }
  return vm[name].as<std::string>();
}

// "60m", "2s", "250ms": the largest unit that is exact.
std::string durationText(Duration d) {
  const auto ms = d.count();
  if (ms % 60'000 == 0) {
    return std::to_string(ms / 60'000) + "m";
  }
  if (ms % 1'000 == 0) {
    return std::to_string(ms / 1'000) + "s";
  }
  return std::to_string(ms) + "ms";
}

// "1MiB", "1KiB", "100": the largest unit that is exact.
std::string sizeText(uint64_t n) {
  if (n != 0 && n % (1u << 30) == 0) {
    return std::to_string(n >> 30) + "GiB";
  }
  if (n != 0 && n % (1u << 20) == 0) {
    return std::to_string(n >> 20) + "MiB";
  }
  if (n != 0 && n % (1u << 10) == 0) {
    return std::to_string(n >> 10) + "KiB";
  }
  return std::to_string(n);
}

// Every duration must be positive: a zero deadline fails everything it guards, and a zero period
// spins. A flag whose consumer cannot take any length passes a maximum.
Duration durationFlag(const po::variables_map& vm, const char* name, std::optional<Duration> max) {
  auto text = vm[name].as<std::string>();
  auto d = parseDuration(text);
  if (!d) {
    throw FlagError{std::string("--") + name + ": '" + text +
                    "' is not a duration (use e.g. 250ms, 5s, 1m)"};
  }
  if (max && (d->count() <= 0 || *d > *max)) {
    throw FlagError{std::string("--") + name + ": '" + text + "' is not a duration from 1ms to " +
                    durationText(*max)};
  }
  if (d->count() <= 0) {
    throw FlagError{std::string("--") + name + ": '" + text + "' is too short (at least 1ms)"};
  }
  return *d;
}

uint64_t sizeFlag(const po::variables_map& vm, const char* name) {
  auto text = vm[name].as<std::string>();
  auto n = parseSize(text);
  if (!n) {
    throw FlagError{std::string("--") + name + ": '" + text +
                    "' is not a size (use e.g. 65536, 64KiB, 1MiB, 1GiB)"};
  }
  return *n;
}

uint64_t sizeFlag(const po::variables_map& vm, const char* name, uint64_t min, uint64_t max) {
  auto n = sizeFlag(vm, name);
  if (n < min || n > max) {
    throw FlagError{std::string("--") + name + ": '" + vm[name].as<std::string>() +
                    "' is not a size from " + sizeText(min) + " to " + sizeText(max)};
  }
  return n;
}

// Counts are read as text: Boost.ProgramOptions reads "-1" into an unsigned as its largest value
// (lexical_cast wraps), so "--rise -1" meant "never announce". Digits only, within [min, max].
uint64_t countFlag(const po::variables_map& vm, const char* name, uint64_t min, uint64_t max) {
  auto text = vm[name].as<std::string>();
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) {
    return std::isdigit(c) != 0;
  });
  auto n = digits ? parseNumber<uint64_t>(text) : std::nullopt;
  if (!n || *n < min || *n > max) {
    throw FlagError{std::string("--") + name + ": '" + text + "' is not a whole number from " +
                    std::to_string(min) + " to " + std::to_string(max)};
  }
  return *n;
}

// Hosts, paths and identities go into request lines, JSON and logs: no spaces or control bytes.
bool hasSpaceOrControl(std::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](unsigned char c) { return c <= 0x20 || c == 0x7f; });
}

HostPort hostPortFlag(const po::variables_map& vm, const char* name) {
  auto text = vm[name].as<std::string>();
  auto hp = parseHostPort(text);
  if (!hp) {
    throw FlagError{std::string("--") + name + ": '" + text + "' is not host:port"};
  }
  return *hp;
}

std::string_view fileKind(fs::file_type type) {
  switch (type) {
    case fs::file_type::directory:
      return "a directory";
    case fs::file_type::fifo:
      return "a pipe";
    case fs::file_type::socket:
      return "a socket";
    case fs::file_type::block:
    case fs::file_type::character:
      return "a device";
    default:
      return "not a file";
  }
}

// A directory opens as an ifstream and fails only when OpenSSL reads it ("PEM lib"), and a named
// pipe blocks the open; the TLS files are also read again on every reload. So: a regular file
// (a symbolic link to one, as Kubernetes mounts secrets, is fine) that we may read.
void checkRegularReadable(const char* name, const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (!ec && st.type() != fs::file_type::regular && st.type() != fs::file_type::not_found) {
    throw FlagError{std::string("--") + name + ": '" + path +
                    "' is not a regular readable file (it is " + std::string(fileKind(st.type())) +
                    ")"};
  }
  if (ec || st.type() != fs::file_type::regular || !readable(path)) {
    throw FlagError{std::string("--") + name + ": cannot read file '" + path + "'"};
  }
}

std::string fileFlag(const po::variables_map& vm, const char* name) {
  auto path = need(vm, name);
  checkRegularReadable(name, path);
  return path;
}

}  // namespace sidecar::flags
