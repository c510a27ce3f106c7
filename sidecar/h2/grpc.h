#pragma once
// What the sidecar needs of gRPC's HTTP/2 mapping: telling a gRPC call, its grpc-timeout, and the
// answer of ours a gRPC caller reads (HTTP 200, the status in grpc-status, trailers only).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "h2/session.h"

namespace sidecar::h2 {

// content-type application/grpc, alone or with a subtype (+proto, +json, ;...).
inline bool isGrpc(std::string_view contentType) {
  constexpr std::string_view kGrpc = "application/grpc";
  if (contentType.size() < kGrpc.size()) {
    return false;
  }
  for (std::size_t i = 0; i < kGrpc.size(); ++i) {
    char c = contentType[i];
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
    if (c != kGrpc[i]) {
      return false;
    }
  }
  return contentType.size() == kGrpc.size() || contentType[kGrpc.size()] == '+' ||
         contentType[kGrpc.size()] == ';';
}

// grpc-timeout: 1 to 8 digits and a unit (H, M, S, m, u, n); none when malformed, or longer
// than a year (no deadline: 99999999H would overflow the clock, and means none).
inline std::optional<std::chrono::nanoseconds> parseGrpcTimeout(std::string_view v) {
  if (v.size() < 2 || v.size() > 9) {
    return std::nullopt;
  }
  std::int64_t n = 0;
  for (std::size_t i = 0; i + 1 < v.size(); ++i) {
    if (v[i] < '0' || v[i] > '9') {
      return std::nullopt;
    }
    n = n * 10 + (v[i] - '0');
  }
  using namespace std::chrono;
  constexpr std::int64_t kYearSeconds = 366LL * 24 * 3600;
  switch (v.back()) {
    case 'H':
      return n > kYearSeconds / 3600 ? std::nullopt
                                     : std::optional(duration_cast<nanoseconds>(hours(n)));
    case 'M':
      return n > kYearSeconds / 60 ? std::nullopt
                                   : std::optional(duration_cast<nanoseconds>(minutes(n)));
    case 'S':
      return n > kYearSeconds ? std::nullopt
                              : std::optional(duration_cast<nanoseconds>(seconds(n)));
    case 'm':
      return duration_cast<nanoseconds>(milliseconds(n));
    case 'u':
      return duration_cast<nanoseconds>(microseconds(n));
    case 'n':
      return nanoseconds(n);
    default:
      return std::nullopt;
  }
}

// The gRPC status a caller reads for an answer of ours with this HTTP status (docs/http2.md).
constexpr unsigned grpcStatusFor(unsigned httpStatus) {
  switch (httpStatus) {
    case 403:
      return 7;  // PERMISSION_DENIED
    case 504:
    case 408:
      return 4;  // DEADLINE_EXCEEDED
    case 413:
    case 431:
      return 8;  // RESOURCE_EXHAUSTED
    case 404:
      return 12;  // UNIMPLEMENTED: no route to the service (gRPC's mapping of 404)
    case 400:
    case 500:
      return 13;  // INTERNAL
    default:
      return 14;  // UNAVAILABLE: 502, 503
  }
}

// grpc-status of a head or trailers, when it holds one (0 to 16; 17 stands for anything else).
inline std::optional<unsigned> grpcStatusOf(const Fields& fields) {
  for (const auto& f : fields) {
    if (f.name == "grpc-status") {
      unsigned v = 0;
      if (f.value.empty() || f.value.size() > 2) {
        return 17;
      }
      for (char c : f.value) {
        if (c < '0' || c > '9') {
          return 17;
        }
        v = v * 10 + static_cast<unsigned>(c - '0');
      }
      return v <= 16 ? v : 17;
    }
  }
  return std::nullopt;
}

}  // namespace sidecar::h2
