#pragma once
// The answers the sidecar writes itself (not the local service): one table of status, body and
// metric label, serialized once. The metrics, the error pages and the docs all read this table.

#include <array>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <string>
#include <string_view>

namespace sidecar {

struct LocalReply {
  unsigned status;
  std::string_view body;
};

// Every status the sidecar can answer with itself; the last entry answers anything else.
inline constexpr std::array<LocalReply, 10> kLocalReplies{{
    {400, "bad request\n"},
    {403, "caller identity not allowed\n"},
    {408, "request head timeout\n"},
    {413, "request body too large\n"},
    {417, "expectation not supported\n"},
    {431, "request head too large\n"},
    {502, "local service unavailable\n"},
    {503, "local service overloaded\n"},
    {504, "local service timed out\n"},
    {500, "internal error\n"},
}};

// The entry's index for status (that of 500 when the status is not in the table).
constexpr std::size_t localReplyIndex(unsigned status) {
  for (std::size_t i = 0; i < kLocalReplies.size(); ++i) {
    if (kLocalReplies[i].status == status) {
      return i;
    }
  }
  return kLocalReplies.size() - 1;
}

// The whole answer on the wire: status line, Content-Type, Content-Length, Connection: close.
const std::string& localReplyBytes(unsigned status);

// An answer of ours that names what it is about (a service the local service called): the same
// framing as the table's, with its own body. Made per answer, on error paths only.
std::string localReplyNaming(unsigned status, std::string_view body);

// The status that answers a failed read of a request head: 431 too large, 408 too slow, 400
// malformed.
unsigned statusForReadError(const boost::system::error_code& ec);

// A body that cannot be read as its framing says (not one that merely broke off).
bool isMalformedBody(const boost::system::error_code& ec);

}  // namespace sidecar
