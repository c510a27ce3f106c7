// The Thrift frame and message-header reader, and the exception replies the sidecar writes.
// Invariants: the length prefix reads as big-endian; a header that parses names bytes of the
// payload; an exception reply to any call (the parsed one, and one made from the input) is a
// whole frame whose header parses back to the call's protocol, name and seqid, type EXCEPTION;
// the one-message walk reads only the payload, and a whole message is whole at one length only.
#include <thrift/frame.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz.h"

namespace {

using sidecar::thrift::AppError;
using sidecar::thrift::MessageHeader;
using sidecar::thrift::MessageType;
using sidecar::thrift::Protocol;

void checkExceptionFrame(const MessageHeader& call, AppError type, std::string_view message) {
  const auto out = sidecar::thrift::exceptionFrame(call, type, message);
  FUZZ_CHECK(out.size() > 4);
  const auto length =
      sidecar::thrift::frameLength(reinterpret_cast<const unsigned char*>(out.data()));
  FUZZ_CHECK(length == out.size() - 4);
  FUZZ_CHECK(out.back() == '\0');  // the struct's field stop
  const auto back = sidecar::thrift::parseHeader(std::string_view(out).substr(4));
  FUZZ_CHECK(back.has_value());
  FUZZ_CHECK(back->protocol == call.protocol);
  FUZZ_CHECK(back->type == MessageType::exception);
  FUZZ_CHECK(back->name == call.name);
  FUZZ_CHECK(back->seqid == call.seqid);
  FUZZ_CHECK(out.find(message) != std::string::npos);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (size >= 4) {
    const std::uint32_t want = (std::uint32_t{data[0]} << 24) | (std::uint32_t{data[1]} << 16) |
                               (std::uint32_t{data[2]} << 8) | std::uint32_t{data[3]};
    FUZZ_CHECK(sidecar::thrift::frameLength(data) == want);
  }
  // The input as a frame's payload, as the handler reads it.
  if (const auto h = sidecar::thrift::parseHeader(in)) {
    FUZZ_CHECK(h->name.size() <= size);
    FUZZ_CHECK(in.find(h->name) != std::string_view::npos);
    const auto t = static_cast<unsigned>(h->type);
    FUZZ_CHECK(t >= 1 && t <= 4);
    FUZZ_CHECK(h->protocol == (data[0] == 0x80 ? Protocol::binary : Protocol::compact));
    checkExceptionFrame(*h, AppError::unknownMethod, "Unknown method " + h->name);
    // The walk stays inside the payload (ASan would see it), and a message that is whole stops
    // being whole with any byte after it.
    FUZZ_CHECK(h->headerSize <= size);
    if (sidecar::thrift::holdsOneMessage(in, *h)) {
      FUZZ_CHECK(!sidecar::thrift::holdsOneMessage(std::string(in) + '\0', *h));
      FUZZ_CHECK(!sidecar::thrift::holdsOneMessage(in.substr(0, size - 1), *h));
    }
  }
  // A call made from the input: any name bytes, any seqid (negative ones too), either protocol.
  if (size >= 5) {
    MessageHeader call;
    call.protocol = (data[0] & 1) ? Protocol::compact : Protocol::binary;
    std::int32_t seqid;
    std::memcpy(&seqid, data + 1, sizeof seqid);
    call.seqid = seqid;
    const auto rest = in.substr(5);
    const auto split = rest.size() / 2;
    call.name.assign(rest.substr(0, split));
    checkExceptionFrame(call, AppError::internalError, rest.substr(split));
  }
  return 0;
}
