// Thrift frame and message-header parsing, and the exception replies the sidecar writes.
#include "thrift/frame.h"

#include <doctest/doctest.h>

#include <string>

namespace sidecar::thrift {
namespace {

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string binaryMessage(std::uint32_t type, const std::string& name, std::int32_t seqid) {
  return be32(0x80010000u | type) + be32(static_cast<std::uint32_t>(name.size())) + name +
         be32(static_cast<std::uint32_t>(seqid)) + std::string(1, '\0');
}

TEST_CASE("frameLength reads 4 bytes big-endian, unsigned") {
  const unsigned char a[] = {0, 0, 0, 44};
  CHECK(frameLength(a) == 44);
  const unsigned char b[] = {0x80, 0, 0, 1};
  CHECK(frameLength(b) == 0x80000001u);
}

TEST_CASE("a strict binary CALL: name, type and seqid, negative seqid kept") {
  auto h = parseHeader(binaryMessage(1, "ping", -7));
  REQUIRE(h);
  CHECK(h->protocol == Protocol::binary);
  CHECK(h->type == MessageType::call);
  CHECK(h->name == "ping");
  CHECK(h->seqid == -7);
  auto o = parseHeader(binaryMessage(4, "fire", 3));
  REQUIRE(o);
  CHECK(o->type == MessageType::oneway);
}

TEST_CASE("Finagle's probe is a 44-byte frame with seqid 0") {
  const std::string payload = binaryMessage(1, std::string(kFinagleProbe), 0);
  CHECK(payload.size() + 4 == 44);
  auto h = parseHeader(payload);
  REQUIRE(h);
  CHECK(h->name == kFinagleProbe);
  CHECK(h->seqid == 0);
}

TEST_CASE("what is not a Thrift message header") {
  CHECK_FALSE(parseHeader(""));
  CHECK_FALSE(parseHeader("GET / HTTP/1.1\r\n\r\n"));
  CHECK_FALSE(parseHeader(binaryMessage(9, "ping", 1)));                     // unknown type
  CHECK_FALSE(parseHeader(be32(0x80020001u) + be32(4) + "ping" + be32(1)));  // version 2
  CHECK_FALSE(parseHeader(be32(0x80010001u) + be32(100) + "ping"));          // name cut short
  CHECK_FALSE(parseHeader(be32(0x80010001u) + be32(4) + "ping"));            // no seqid
  CHECK_FALSE(parseHeader(be32(0x80010001u) + be32(0xffffffffu) + "ping" + be32(1)));
  CHECK_FALSE(parseHeader(std::string("\x82\x21\xff\xff\xff\xff\xff\xff", 8)));  // long varint
}

TEST_CASE("a compact CALL") {
  // 0x82, version 1 | CALL << 5, seqid 300 as a varint, name length, name.
  const std::string payload =
      std::string("\x82\x21\xac\x02\x04", 5) + "ping" + std::string(1, '\0');
  auto h = parseHeader(payload);
  REQUIRE(h);
  CHECK(h->protocol == Protocol::compact);
  CHECK(h->type == MessageType::call);
  CHECK(h->name == "ping");
  CHECK(h->seqid == 300);
}

TEST_CASE("the binary exception reply: frame, version word, name, seqid, struct") {
  MessageHeader call{Protocol::binary, MessageType::call, "ping", -3};
  const auto out = exceptionFrame(call, AppError::internalError, "why");
  const std::string expected = be32(0x80010003u) + be32(4) + "ping" + be32(0xfffffffdu) +
                               std::string("\x0b\x00\x01", 3) + be32(3) + "why" +
                               std::string("\x08\x00\x02", 3) + be32(6) + std::string(1, '\0');
  CHECK(out == be32(static_cast<std::uint32_t>(expected.size())) + expected);
  auto h = parseHeader(std::string_view(out).substr(4));
  REQUIRE(h);
  CHECK(h->type == MessageType::exception);
  CHECK(h->seqid == -3);
}

TEST_CASE("the compact exception reply reads back with its seqid and name") {
  MessageHeader call{Protocol::compact, MessageType::call, "ping", 300};
  const auto out = exceptionFrame(call, AppError::unknownMethod, "m");
  auto h = parseHeader(std::string_view(out).substr(4));
  REQUIRE(h);
  CHECK(h->protocol == Protocol::compact);
  CHECK(h->type == MessageType::exception);
  CHECK(h->name == "ping");
  CHECK(h->seqid == 300);
  // The struct: message (field 1, binary), type 1 (field 2, i32, zigzag 2), stop.
  CHECK(out.substr(out.size() - 6) == std::string("\x18\x01m\x15\x02\x00", 6));
}

}  // namespace
}  // namespace sidecar::thrift
