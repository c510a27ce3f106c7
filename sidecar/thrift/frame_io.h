#pragma once
// Reading one framed Thrift message off any stream (a caller's TLS connection, the local
// service's socket, a member's TLS connection): the 4-byte length, then the payload, grown as
// its bytes arrive. The limits, deadlines and what a refusal means stay with the caller.

#include <boost/asio/buffer.hpp>
#include <boost/asio/read.hpp>
#include <cstdint>
#include <string>
#include <type_traits>

#include "net/io.h"
#include "thrift/frame.h"

namespace sidecar::thrift {

// Frames are read this much at a time, so memory follows the bytes that came, not a length.
inline constexpr std::size_t kReadStep = 64 * 1024;

// Reads the 4-byte length prefix into frame (which it resizes to 4). On failure frame holds the
// bytes that came (a frame cut short is one that holds some).
template <class Stream>
awaitable<error_code> readFramePrefix(Stream& stream, std::string& frame) {
  frame.resize(4);
  auto [ec, n] = co_await asio::async_read(stream, asio::buffer(frame.data(), 4), useTuple);
  if (ec) {
    frame.resize(n);
  }
  co_return ec;
}

// The length frame's prefix announces.
inline std::uint32_t frameLength(const std::string& frame) {
  return frameLength(reinterpret_cast<const unsigned char*>(frame.data()));
}

// Reads the rest of a frame whose prefix is in frame, length bytes of payload. Grown as the
// bytes arrive, not sized by the length the peer announced: a peer that announces 16 MB and
// sends nothing holds 4 bytes, not 16 MB. beforeRead() runs before each read, the frame already
// grown for it (to arm a deadline; one that returns bool may refuse the growth, and the read ends
// with no_buffer_space). On failure frame holds the bytes that came.
template <class Stream, class BeforeRead>
awaitable<error_code> readFramePayload(Stream& stream, std::string& frame, std::uint32_t length,
                                       BeforeRead beforeRead) {
  const std::size_t total = 4 + std::size_t{length};
  while (frame.size() < total) {
    const std::size_t have = frame.size();
    frame.resize(std::min(total, have + kReadStep));
    if constexpr (std::is_same_v<decltype(beforeRead()), bool>) {
      if (!beforeRead()) {
        frame.resize(have);
        co_return asio::error::no_buffer_space;
      }
    } else {
      beforeRead();
    }
    auto [ec, n] = co_await asio::async_read(
        stream, asio::buffer(frame.data() + have, frame.size() - have), useTuple);
    if (ec) {
      frame.resize(have + n);  // the bytes that came
      co_return ec;
    }
  }
  co_return error_code{};
}

}  // namespace sidecar::thrift
