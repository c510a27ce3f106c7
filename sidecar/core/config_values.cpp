// The value syntaxes of flags: durations, sizes, host:port.
#include <cctype>
#include <utility>

#include "core/config.h"
#include "core/text.h"

namespace sidecar {

std::string HostPort::str() const {
  if (host.find(':') != std::string::npos) {
    return "[" + host + "]:" + std::to_string(port);
  }
  return host + ":" + std::to_string(port);
}

namespace {

// "250ms" -> (250, "ms"): the leading digits as a number (none if there are none or too many),
// and what follows them.
std::pair<std::optional<uint64_t>, std::string_view> numberAndUnit(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  return {parseNumber<uint64_t>(text.substr(0, digits)), text.substr(digits)};
}

}  // namespace

std::optional<Duration> parseDuration(std::string_view text) {
  auto [number, unit] = numberAndUnit(text);
  if (!number) {
    return std::nullopt;
  }
  uint64_t factor = 0;
  if (unit == "ms") {
    factor = 1;
  } else if (unit == "s") {
    factor = 1'000;
  } else if (unit == "m") {
    factor = 60'000;
  } else {
    return std::nullopt;
  }
  if (*number > (uint64_t{1} << 40) / factor) {
    return std::nullopt;
  }
  return Duration(static_cast<Duration::rep>(*number * factor));
}

std::optional<uint64_t> parseSize(std::string_view text) {
  auto [number, unitText] = numberAndUnit(text);
  if (!number) {
    return std::nullopt;
  }
  auto unit = lower(unitText);
  unsigned shift = 0;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else if (unit == "k" || unit == "kib") {
    shift = 10;
  } else if (unit == "m" || unit == "mib") {
    shift = 20;
  } else if (unit == "g" || unit == "gib") {
    shift = 30;
  } else {
    return std::nullopt;
  }
  if (*number > (uint64_t{1} << (50 - shift))) {
    return std::nullopt;
  }
  return *number << shift;
}

std::optional<HostPort> parseHostPort(std::string_view text) {
  HostPort hp;
  std::string_view portText;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    hp.host = std::string(text.substr(1, close - 1));
    portText = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos ||
        text.substr(0, colon).find(':') != std::string_view::npos) {
      return std::nullopt;
    }
    hp.host = std::string(text.substr(0, colon));
    portText = text.substr(colon + 1);
  }
  auto port = parseNumber<uint16_t>(portText);
  if (hp.host.empty() || !port) {
    return std::nullopt;
  }
  hp.port = *port;
  return hp;
}

}  // namespace sidecar
