#pragma once
// Finagle's TTwitter protocol (upgraded Thrift), the parts the sidecar reads and writes: after a
// caller's __can__finagle__trace__v3__ probe is answered with a REPLY, each call's frame holds a
// RequestHeader struct before the plain message, and each reply's frame a ResponseHeader before
// the plain reply; both in the binary protocol whatever the message's. The structs are those of
// proto/ttwitter.thrift; fields we do not know are skipped, never kept.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "thrift/frame.h"
#include "trace/context.h"

namespace sidecar::thrift::ttwitter {

// Entries of contexts and delegations kept from one header; more are walked and dropped, so a
// caller cannot make a header cost more than its bytes.
inline constexpr std::size_t kMaxEntries = 64;

struct RequestHeader {
  // trace_id_high, trace_id, span_id, parent_span_id; sampled; flags bit 0 as debug.
  trace::Context context;
  std::int64_t flags = 0;
  std::optional<std::string> clientId;  // client_id.name
  std::string dest;
  std::vector<std::pair<std::string, std::string>> contexts;     // key, value (e.g. the deadline)
  std::vector<std::pair<std::string, std::string>> delegations;  // src, dst (the Dtab)
};

// Reads the RequestHeader at the start of payload (a call's frame without its length) into out;
// the bytes it takes, or none when it is not a whole struct (cut short, a field of the wrong
// type, nested deeper than kMaxDepth).
std::optional<std::size_t> readRequestHeader(std::string_view payload, RequestHeader& out);

// Appends header as a RequestHeader struct (fields 1, 2 always; the others when set).
void writeRequestHeader(std::string& out, const RequestHeader& header);

// The bytes the ResponseHeader at the start of payload (a reply's frame without its length)
// takes, walked, its contexts not kept; none when it is not a whole struct.
std::optional<std::size_t> responseHeaderSize(std::string_view payload);

// The empty ResponseHeader the sidecar writes before each reply: the struct's stop field alone.
inline constexpr char kEmptyResponseHeader = '\0';

// A whole frame (length prefix included) answering the probe call as a Finagle server does: a
// REPLY named like it, with its seqid, holding an empty struct.
std::string probeReplyFrame(const MessageHeader& probe);

// A whole frame holding the probe, as a Finagle client sends it: a binary CALL with empty args.
std::string probeFrame(std::int32_t seqid);

// Puts `header` (bytes) between the 4-byte length prefix and the payload of the whole frame in
// frame, and fixes the prefix.
void insertAfterPrefix(std::string& frame, std::string_view header);
// Takes n bytes out right after the 4-byte length prefix of the whole frame in frame, and fixes
// the prefix.
void eraseAfterPrefix(std::string& frame, std::size_t n);

}  // namespace sidecar::thrift::ttwitter
