// Thrift frame and message-header parsing, and the exception replies the sidecar writes.
#include "thrift/frame.h"

#include <doctest/doctest.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include <memory>
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

// --- one message per frame: the walk, against Apache Thrift's own encoders --------------------

using apache::thrift::protocol::TProtocol;
using apache::thrift::protocol::TType;
using apache::thrift::transport::TMemoryBuffer;

// A message whose struct has a field of every type Apache Thrift 0.17 writes, containers of
// structs and bools, an empty map and a nested struct `depth` levels deep, written by Apache
// Thrift's own protocol P.
template <class P>
std::string everyTypeMessage(MessageType type, const std::string& name, std::int32_t seqid,
                             int depth = 3) {
  auto buffer = std::make_shared<TMemoryBuffer>();
  P p(buffer);
  p.writeMessageBegin(name, static_cast<apache::thrift::protocol::TMessageType>(type), seqid);
  p.writeStructBegin("args");
  p.writeFieldBegin("b", apache::thrift::protocol::T_BOOL, 1);
  p.writeBool(true);
  p.writeFieldEnd();
  p.writeFieldBegin("f", apache::thrift::protocol::T_BOOL, 2);
  p.writeBool(false);
  p.writeFieldEnd();
  p.writeFieldBegin("y", apache::thrift::protocol::T_BYTE, 3);
  p.writeByte(-1);
  p.writeFieldEnd();
  p.writeFieldBegin("s", apache::thrift::protocol::T_I16, 4);
  p.writeI16(-300);
  p.writeFieldEnd();
  p.writeFieldBegin("i", apache::thrift::protocol::T_I32, 40);  // a long field-id jump
  p.writeI32(1 << 30);
  p.writeFieldEnd();
  p.writeFieldBegin("l", apache::thrift::protocol::T_I64, 5);
  p.writeI64(-(std::int64_t{1} << 60));
  p.writeFieldEnd();
  p.writeFieldBegin("d", apache::thrift::protocol::T_DOUBLE, 6);
  p.writeDouble(3.5);
  p.writeFieldEnd();
  p.writeFieldBegin("str", apache::thrift::protocol::T_STRING, 7);
  p.writeString(std::string(300, 'x'));
  p.writeFieldEnd();
  p.writeFieldBegin("bools", apache::thrift::protocol::T_LIST, 8);
  p.writeListBegin(apache::thrift::protocol::T_BOOL, 3);
  p.writeBool(true);
  p.writeBool(false);
  p.writeBool(true);
  p.writeListEnd();
  p.writeFieldEnd();
  p.writeFieldBegin("ints", apache::thrift::protocol::T_SET, 9);
  p.writeSetBegin(apache::thrift::protocol::T_I32, 20);  // over 14: the long list header
  for (int i = 0; i < 20; ++i) {
    p.writeI32(i * 1000);
  }
  p.writeSetEnd();
  p.writeFieldEnd();
  p.writeFieldBegin("m", apache::thrift::protocol::T_MAP, 10);
  p.writeMapBegin(apache::thrift::protocol::T_STRING, apache::thrift::protocol::T_STRUCT, 2);
  for (int i = 0; i < 2; ++i) {
    p.writeString("k" + std::to_string(i));
    p.writeStructBegin("v");
    p.writeFieldBegin("x", apache::thrift::protocol::T_I64, 1);
    p.writeI64(i);
    p.writeFieldEnd();
    p.writeFieldStop();
    p.writeStructEnd();
  }
  p.writeMapEnd();
  p.writeFieldEnd();
  p.writeFieldBegin("empty", apache::thrift::protocol::T_MAP, 11);
  p.writeMapBegin(apache::thrift::protocol::T_I32, apache::thrift::protocol::T_I32, 0);
  p.writeMapEnd();
  p.writeFieldEnd();
  for (int i = 0; i < depth; ++i) {
    p.writeFieldBegin("nested", apache::thrift::protocol::T_STRUCT, 12);
    p.writeStructBegin("n");
  }
  for (int i = 0; i < depth; ++i) {
    p.writeFieldStop();
    p.writeStructEnd();
    p.writeFieldEnd();
  }
  p.writeFieldStop();
  p.writeStructEnd();
  p.writeMessageEnd();
  return buffer->getBufferAsString();
}

template <class P>
void checkWalk(Protocol protocol) {
  const auto msg = everyTypeMessage<P>(MessageType::call, "method", 77);
  const auto h = parseHeader(msg);
  REQUIRE(h);
  CHECK(h->protocol == protocol);
  CHECK(holdsOneMessage(msg, *h));
  // A second message after it, or one stray byte: not one message.
  CHECK_FALSE(holdsOneMessage(msg + msg, *h));
  CHECK_FALSE(holdsOneMessage(msg + std::string(1, '\0'), *h));
  // Cut anywhere after the header: not a whole message.
  for (std::size_t n = h->headerSize; n < msg.size(); ++n) {
    INFO("cut at " << n);
    CHECK_FALSE(holdsOneMessage(msg.substr(0, n), *h));
  }
  // Nested as deep as Apache Thrift reads, and one level deeper.
  const auto deep = everyTypeMessage<P>(MessageType::call, "m", 1, kMaxDepth - 1);
  CHECK(holdsOneMessage(deep, *parseHeader(deep)));
  const auto tooDeep = everyTypeMessage<P>(MessageType::call, "m", 1, kMaxDepth);
  CHECK_FALSE(holdsOneMessage(tooDeep, *parseHeader(tooDeep)));
}

TEST_CASE("holdsOneMessage walks every type Apache Thrift's binary protocol writes") {
  checkWalk<apache::thrift::protocol::TBinaryProtocol>(Protocol::binary);
}

TEST_CASE("holdsOneMessage walks every type Apache Thrift's compact protocol writes") {
  checkWalk<apache::thrift::protocol::TCompactProtocol>(Protocol::compact);
}

TEST_CASE("holdsOneMessage refuses what no encoder writes") {
  const std::string head = be32(0x80010001u) + be32(1) + "m" + be32(1);
  const auto h = parseHeader(head + std::string(1, '\0'));
  REQUIRE(h);
  CHECK(holdsOneMessage(head + std::string(1, '\0'), *h));
  CHECK_FALSE(holdsOneMessage(head, *h));                                       // no stop
  CHECK_FALSE(holdsOneMessage(head + std::string("\x01\x00\x01\x00", 4), *h));  // VOID field
  CHECK_FALSE(holdsOneMessage(head + std::string("\x11\x00\x01\x00", 4), *h));  // type 17
  // A list announcing 2^31 elements in a few bytes is refused before any element is walked.
  CHECK_FALSE(
      holdsOneMessage(head + std::string("\x0f\x00\x01\x08", 4) + be32(0x7fffffffu) + "\0", *h));
  // A string longer than what is left.
  CHECK_FALSE(holdsOneMessage(head + std::string("\x0b\x00\x01", 3) + be32(10) + "abc\0", *h));
}

TEST_CASE("replyType: only this call's REPLY or EXCEPTION, one message, same protocol") {
  const MessageHeader call{Protocol::binary, MessageType::call, "method", 77};
  using Binary = apache::thrift::protocol::TBinaryProtocol;
  const auto reply = everyTypeMessage<Binary>(MessageType::reply, "method", 77);
  CHECK(replyType(reply, call) == MessageType::reply);
  CHECK(replyType(everyTypeMessage<Binary>(MessageType::exception, "method", 77), call) ==
        MessageType::exception);
  CHECK_FALSE(replyType(everyTypeMessage<Binary>(MessageType::call, "method", 77), call));
  CHECK_FALSE(replyType(everyTypeMessage<Binary>(MessageType::oneway, "method", 77), call));
  CHECK_FALSE(replyType(everyTypeMessage<Binary>(MessageType::reply, "method", 78), call));
  CHECK_FALSE(replyType(everyTypeMessage<Binary>(MessageType::reply, "other", 77), call));
  CHECK_FALSE(replyType(reply + reply, call));
  CHECK_FALSE(replyType(everyTypeMessage<apache::thrift::protocol::TCompactProtocol>(
                            MessageType::reply, "method", 77),
                        call));
  // The sidecar's own exception replies are whole messages.
  for (const auto protocol : {Protocol::binary, Protocol::compact}) {
    const MessageHeader c{protocol, MessageType::call, "ping", -5};
    const auto out = exceptionFrame(c, AppError::protocolError, kNotOneMessage);
    CHECK(replyType(std::string_view(out).substr(4), c) == MessageType::exception);
  }
}

}  // namespace
}  // namespace sidecar::thrift
