#pragma once
// Thrift's framed transport as the sidecar sees it: a 4-byte big-endian length, then a message
// whose header (strict binary 0x8001000T or compact 0x82: type, name, seqid) is read without
// decoding the arguments; and the TApplicationException replies the sidecar writes itself.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sidecar::thrift {

enum class MessageType : std::uint8_t { call = 1, reply = 2, exception = 3, oneway = 4 };
enum class Protocol : std::uint8_t { binary, compact };

// TApplicationException's types the sidecar sends.
enum class AppError : std::int32_t { unknownMethod = 1, internalError = 6, protocolError = 7 };

// The caller's method name for Finagle's TTwitter upgrade probe.
inline constexpr std::string_view kFinagleProbe = "__can__finagle__trace__v3__";
// The PROTOCOL_ERROR's message for a call whose frame holds more (or less) than one message.
inline constexpr std::string_view kNotOneMessage =
    "the frame does not hold exactly one whole Thrift message";
// Apache Thrift's default largest frame.
inline constexpr std::uint32_t kDefaultMaxFrame = 16'384'000;

struct MessageHeader {
  Protocol protocol = Protocol::binary;
  MessageType type = MessageType::call;
  std::string name;
  std::int32_t seqid = 0;
  std::uint32_t headerSize = 0;  // where the message's struct starts in the payload
};

// How deep structs and containers may nest in a message we walk (Apache Thrift's default
// recursion limit).
inline constexpr unsigned kMaxDepth = 64;

// The frame's length from its 4-byte prefix (big-endian, read as unsigned).
std::uint32_t frameLength(const unsigned char* prefix);

// The header of the message in payload (the frame without its length); none if payload is not a
// strict binary or compact message of a known type with a whole header.
std::optional<MessageHeader> parseHeader(std::string_view payload);

// True when payload (a frame without its length) holds exactly one message, the one header was
// parsed from: its struct walked to its stop field as the protocol's skip() does (every field
// type of Apache Thrift 0.17, plus UUID), nested at most kMaxDepth deep, with no byte left over.
// Bytes after the message would be read by the service as a second message and answered as one,
// and that answer would reach whoever next uses the connection.
bool holdsOneMessage(std::string_view payload, const MessageHeader& header);

// Where the binary-protocol value of field type `type` that starts at payload[at] ends, walked as
// holdsOneMessage walks (nested at most kMaxDepth - depth deep); none when it is cut short or
// not a value. For readers of structs of our own (thrift/ttwitter.h) that skip unknown fields.
std::optional<std::size_t> skipBinaryValue(std::string_view payload, std::size_t at, unsigned type,
                                           unsigned depth);

// The reply's type when payload (the local service's or a member's reply frame, without its
// length) answers call: one REPLY or EXCEPTION message with the call's protocol, name and seqid,
// and nothing after it. None otherwise: a CALL or ONEWAY, another call's reply, or a frame with
// a second message in it are never relayed.
std::optional<MessageType> replyType(std::string_view payload, const MessageHeader& call);

// A whole frame (length prefix included) holding an EXCEPTION reply to call: a
// TApplicationException {1: message, 2: type}, in the call's protocol, with its name and seqid.
std::string exceptionFrame(const MessageHeader& call, AppError type, std::string_view message);

}  // namespace sidecar::thrift
