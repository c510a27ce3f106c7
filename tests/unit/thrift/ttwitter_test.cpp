// TTwitter's RequestHeader and ResponseHeader: ours read what Apache Thrift's generated code (from
// proto/ttwitter.thrift) writes, and it reads what ours writes; hostile bytes are refused.
#include "thrift/ttwitter.h"

#include <doctest/doctest.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <ttwitter/ttwitter_types.h>

#include <memory>
#include <string>

namespace sidecar::thrift::ttwitter {
namespace {

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::TMemoryBuffer;

template <class T>
std::string serialize(const T& value) {
  auto buffer = std::make_shared<TMemoryBuffer>();
  TBinaryProtocol protocol(buffer);
  value.write(&protocol);
  return buffer->getBufferAsString();
}

template <class T>
T deserialize(const std::string& bytes) {
  auto buffer = std::make_shared<TMemoryBuffer>(
      reinterpret_cast<std::uint8_t*>(const_cast<char*>(bytes.data())),
      static_cast<std::uint32_t>(bytes.size()));
  TBinaryProtocol protocol(buffer);
  T value;
  value.read(&protocol);
  return value;
}

sidecar::ttwitter::RequestHeader finagleHeader() {
  sidecar::ttwitter::RequestHeader h;
  h.trace_id = -7;  // ids are unsigned to us, i64 on the wire
  h.span_id = 42;
  h.__set_parent_span_id(41);
  h.__set_sampled(true);
  sidecar::ttwitter::ClientId id;
  id.name = "web-frontend";
  h.__set_client_id(id);
  h.__set_flags(1);
  sidecar::ttwitter::RequestContext deadline;
  deadline.key = "com.twitter.finagle.Deadline";
  deadline.value = std::string("\0\1\2\3\4\5\6\7\0\1\2\3\4\5\6\7", 16);
  h.__set_contexts({deadline});
  h.__set_dest("/s/pinghelp");
  sidecar::ttwitter::Delegation d;
  d.src = "/s";
  d.dst = "/zk";
  h.__set_delegations({d});
  h.__set_trace_id_high(9);
  return h;
}

TEST_CASE("a RequestHeader written by Apache Thrift is read whole, up to the call after it") {
  const auto bytes = serialize(finagleHeader());
  const std::string call = "\x80\x01\x00\x01 the call";
  RequestHeader h;
  const auto n = readRequestHeader(bytes + call, h);
  REQUIRE(n);
  CHECK(*n == bytes.size());
  CHECK(h.context.traceId == static_cast<std::uint64_t>(-7));
  CHECK(h.context.spanId == 42);
  CHECK(h.context.parentId == 41);
  CHECK(h.context.traceIdHigh == 9);
  CHECK(h.context.sampled == std::optional<bool>(true));
  CHECK(h.context.debug);
  CHECK(h.flags == 1);
  CHECK(h.clientId == std::optional<std::string>("web-frontend"));
  CHECK(h.dest == "/s/pinghelp");
  REQUIRE(h.contexts.size() == 1);
  CHECK(h.contexts[0].first == "com.twitter.finagle.Deadline");
  CHECK(h.contexts[0].second.size() == 16);
  REQUIRE(h.delegations.size() == 1);
  CHECK(h.delegations[0] == std::pair<std::string, std::string>("/s", "/zk"));
}

TEST_CASE("a RequestHeader with only the ids, and one with fields we do not know") {
  sidecar::ttwitter::RequestHeader minimal;
  minimal.trace_id = 1;
  minimal.span_id = 2;
  RequestHeader h;
  CHECK(readRequestHeader(serialize(minimal), h) == serialize(minimal).size());
  CHECK(!h.context.sampled);
  CHECK(!h.clientId);
  CHECK(h.context.valid());
  // Field 4 (a struct), field 30 (a map), and field 1 with another type: all skipped.
  const std::string unknown = std::string("\x0c\x00\x04\x08\x00\x01\x00\x00\x00\x05\x00", 11) +
                              std::string("\x0d\x00\x1e\x0b\x0b\x00\x00\x00\x00", 9) +
                              std::string("\x0b\x00\x01\x00\x00\x00\x01x", 8) + '\0';
  RequestHeader u;
  CHECK(readRequestHeader(unknown, u) == unknown.size());
  CHECK(u.context.traceId == 0);
}

TEST_CASE("what we write, Apache Thrift reads back") {
  RequestHeader h;
  h.context.traceId = 0xfedcba9876543210u;
  h.context.spanId = 5;
  h.context.parentId = 4;
  h.context.traceIdHigh = 3;
  h.context.sampled = false;
  h.context.debug = true;
  h.clientId = "pinghelp";
  h.contexts = {{"k", "v"}};
  h.delegations = {{"/a", "/b"}};
  h.dest = "/s/x";
  std::string out;
  writeRequestHeader(out, h);
  const auto back = deserialize<sidecar::ttwitter::RequestHeader>(out);
  CHECK(static_cast<std::uint64_t>(back.trace_id) == 0xfedcba9876543210u);
  CHECK(back.span_id == 5);
  CHECK(back.parent_span_id == 4);
  CHECK(back.trace_id_high == 3);
  CHECK(back.__isset.sampled);
  CHECK(!back.sampled);
  CHECK(back.flags == 1);
  CHECK(back.client_id.name == "pinghelp");
  CHECK(back.contexts.at(0).key == "k");
  CHECK(back.delegations.at(0).dst == "/b");
  CHECK(back.dest == "/s/x");

  RequestHeader idsOnly;
  idsOnly.context.traceId = 1;
  idsOnly.context.spanId = 1;
  std::string small;
  writeRequestHeader(small, idsOnly);
  CHECK(small.size() == 2 * 11 + 1);  // two i64 fields and the stop
}

TEST_CASE("contexts past kMaxEntries are walked, not kept") {
  sidecar::ttwitter::RequestHeader h;
  std::vector<sidecar::ttwitter::RequestContext> many(kMaxEntries + 10);
  h.__set_contexts(many);
  RequestHeader out;
  const auto bytes = serialize(h);
  CHECK(readRequestHeader(bytes, out) == bytes.size());
  CHECK(out.contexts.size() == kMaxEntries);
}

TEST_CASE("hostile RequestHeaders are refused: cut short, lengths past the end, too deep") {
  const auto whole = serialize(finagleHeader());
  for (std::size_t cut = 0; cut < whole.size(); ++cut) {
    RequestHeader h;
    CHECK_FALSE(readRequestHeader(whole.substr(0, cut), h));
  }
  RequestHeader h;
  // client_id's name announces 2^31 bytes.
  CHECK_FALSE(readRequestHeader(std::string("\x0c\x00\x06\x0b\x00\x01\x7f\xff\xff\xff", 10), h));
  // contexts announces more elements than there are bytes.
  CHECK_FALSE(readRequestHeader(std::string("\x0f\x00\x08\x0c\x10\x00\x00\x00\x00", 9), h));
  // An unknown field nesting structs past kMaxDepth.
  std::string deep;
  for (unsigned i = 0; i < kMaxDepth + 2; ++i) {
    deep += std::string("\x0c\x00\x63", 3);
  }
  deep += std::string(kMaxDepth + 3, '\0');
  CHECK_FALSE(readRequestHeader(deep, h));
  // An unknown type code.
  CHECK_FALSE(readRequestHeader(std::string("\x11\x00\x01\x00", 4), h));
}

TEST_CASE("a ResponseHeader's size, with or without contexts") {
  CHECK(responseHeaderSize(std::string(1, kEmptyResponseHeader)) == 1);
  sidecar::ttwitter::ResponseHeader r;
  sidecar::ttwitter::ResponseContext c;
  c.key = "k";
  r.__set_contexts({c});
  const auto bytes = serialize(r);
  CHECK(responseHeaderSize(bytes + "\x80\x01") == bytes.size());
  CHECK_FALSE(responseHeaderSize(bytes.substr(0, bytes.size() - 1)));
  CHECK_FALSE(responseHeaderSize(""));
}

TEST_CASE("the probe and its REPLY, as Finagle's client and server write them") {
  const auto probe = probeFrame(-3);
  const auto header = parseHeader(std::string_view(probe).substr(4));
  REQUIRE(header);
  CHECK(header->type == MessageType::call);
  CHECK(header->name == kFinagleProbe);
  CHECK(header->seqid == -3);
  CHECK(holdsOneMessage(std::string_view(probe).substr(4), *header));
  const auto reply = probeReplyFrame(*header);
  CHECK(replyType(std::string_view(reply).substr(4), *header) == MessageType::reply);
  CHECK(reply.size() == probe.size());
}

TEST_CASE("headers go in and out right after the frame's length, which follows") {
  std::string frame = std::string("\0\0\0\2ab", 6);
  insertAfterPrefix(frame, "xyz");
  CHECK(frame == std::string("\0\0\0\5xyzab", 9));
  eraseAfterPrefix(frame, 3);
  CHECK(frame == std::string("\0\0\0\2ab", 6));
}

}  // namespace
}  // namespace sidecar::thrift::ttwitter
