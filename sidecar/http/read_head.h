#pragma once
// Reading a request head off any stream: until the buffer holds the whole head, refusing
// obsolete line folding before Beast can join the folded lines, and bounding the whole head
// (request line and fields together; Beast's own limit counts them apart). Shared by every
// handler that serves HTTP (inbound over TLS, outbound over plain TCP).

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <cstddef>

#include "http/rewrite.h"
#include "net/io.h"

namespace sidecar {

// Reads until buffer holds a whole request head, or fails: bad_obs_fold, header_limit,
// end_of_stream (the caller hung up), or the stream's error (a deadline: beast::error::timeout).
template <class Stream>
awaitable<error_code> readRequestHead(Stream& stream, boost::beast::flat_buffer& buffer,
                                      std::size_t maxHeadBytes) {
  namespace http = boost::beast::http;
  std::size_t from = 0;
  for (;;) {
    auto bytes = buffer.cdata();
    auto scan = scanHead({static_cast<const char*>(bytes.data()), bytes.size()}, from);
    if (scan.state == HeadScan::obsFold) {
      co_return http::error::bad_obs_fold;
    }
    // No byte past the limit is ever parsed.
    if (scan.state == HeadScan::complete) {
      co_return scan.resumeAt > maxHeadBytes ? error_code(http::error::header_limit)
                                             : error_code{};
    }
    if (bytes.size() >= maxHeadBytes) {
      co_return http::error::header_limit;
    }
    from = scan.resumeAt;
    auto [ec, n] = co_await stream.async_read_some(buffer.prepare(2048), useTuple);
    if (ec) {
      co_return ec == asio::error::eof ? error_code(http::error::end_of_stream) : ec;
    }
    buffer.commit(n);
  }
}

}  // namespace sidecar
