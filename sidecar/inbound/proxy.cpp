// Accepts mTLS connections and proxies their requests to the local service, streaming bodies.
#include "inbound/proxy.h"

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <malloc.h>

#include <cerrno>

#include "http/relay.h"
#include "http/rewrite.h"
#include "net/tls_context.h"
#include "net/tls_stream.h"

namespace sidecar {

namespace http = beast::http;
namespace ssl = asio::ssl;
template <class T>
using awaitable = asio::awaitable<T, IoExecutor>;
using boost::system::error_code;

namespace {

constexpr auto useTuple = asio::as_tuple(asio::use_awaitable_t<IoExecutor>{});
using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A request target in an access-log field: quotes and control bytes escaped.
std::string escapeForLog(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}
constexpr std::size_t kShrinkAbove = 8 * 1024;
constexpr std::size_t kUpstreamMaxHead = 64 * 1024;
constexpr std::chrono::milliseconds kCloseNotifyDeadline{500};

// The answers the sidecar writes itself, serialized once.
const std::string& cannedResponse(unsigned status) {
  struct Canned {
    unsigned status;
    const char* body;
  };
  static constexpr Canned kCanned[] = {{400, "bad request\n"},
                                       {403, "caller identity not allowed\n"},
                                       {408, "request head timeout\n"},
                                       {413, "request body too large\n"},
                                       {417, "expectation not supported\n"},
                                       {431, "request head too large\n"},
                                       {502, "local service unavailable\n"},
                                       {503, "local service overloaded\n"},
                                       {504, "local service timed out\n"},
                                       {500, "internal error\n"}};
  static const auto table = [] {
    std::vector<std::pair<unsigned, std::string>> t;
    for (const auto& c : kCanned) {
      std::string body = c.body;
      auto reason = http::obsolete_reason(http::int_to_status(c.status));
      t.emplace_back(c.status, "HTTP/1.1 " + std::to_string(c.status) + " " + std::string(reason) +
                                   "\r\nContent-Type: text/plain\r\nContent-Length: " +
                                   std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
                                   body);
    }
    return t;
  }();
  for (const auto& [s, text] : table) {
    if (s == status) {
      return text;
    }
  }
  return table.back().second;
}

unsigned statusForReadError(const error_code& ec) {
  if (ec == http::error::header_limit) {
    return 431;
  }
  if (ec == http::error::body_limit) {
    return 413;
  }
  if (ec == beast::error::timeout) {
    return 408;
  }
  return 400;
}

// A request body that cannot be read as its framing says (not one that merely broke off).
bool isMalformedBody(const error_code& ec) {
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) {
    return false;
  }
  // Every other error of Beast's HTTP category is a framing violation (or an overflowing line).
  return ec.category() == http::make_error_code(http::error::bad_chunk).category();
}

bool isIdempotent(http::verb v) {
  switch (v) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::options:
    case http::verb::put:
    case http::verb::delete_:
    case http::verb::trace:
      return true;
    default:
      return false;
  }
}

// What a pooled connection holds while nobody reads it: nothing (it may serve the next request),
// end-of-file (the local service closed it), or bytes no request asked for.
enum class PooledState { clean, closed, unsolicited };
PooledState pooledState(TcpSocket& s) {
  char c = 0;
  ssize_t n = ::recv(s.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) {
    return PooledState::unsolicited;
  }
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? PooledState::clean
                                                            : PooledState::closed;
}

bool looksStale(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::eof;
}

void shrinkIfLarge(beast::flat_buffer& b) {
  if (b.size() == 0 && b.capacity() > kShrinkAbove) {
    b.shrink_to_fit();
  }
}

struct RelayResult {
  error_code readError;
  error_code writeError;
  uint64_t bytes = 0;  // body bytes written out
};

// Beast's documented relay: parse a chunk of body into buf, serialize it out, until done. The
// serializer re-frames the body (Content-Length or chunked) exactly as the parser understood it.
template <bool isRequest, class In, class Out>
awaitable<RelayResult> relayBody(In& in, beast::flat_buffer& inBuffer,
                                 http::parser<isRequest, http::buffer_body>& p, Out& out,
                                 http::serializer<isRequest, http::buffer_body>& sr, char* buf,
                                 std::size_t bufSize, Duration inTimeout, Duration outTimeout) {
  // Beast sizes each read by the buffer's free capacity (512 bytes at least): without room, a
  // body would move 512 bytes per system call.
  inBuffer.reserve(bufSize);
  RelayResult r;
  do {
    std::size_t chunk = 0;
    if (!p.is_done()) {
      offerRelayBuffer(p, buf, bufSize);
      beast::get_lowest_layer(in).expires_after(inTimeout);
      auto [ec, n] = co_await http::async_read_some(in, inBuffer, p, useTuple);
      if (ec == http::error::need_buffer) {
        ec = {};
      }
      if (ec) {
        r.readError = ec;
        co_return r;
      }
      chunk = takeParsedPiece(p, buf, bufSize);
    } else {
      p.get().body().data = nullptr;
      p.get().body().size = 0;
      p.get().body().more = false;
    }
    beast::get_lowest_layer(out).expires_after(outTimeout);
    auto [ec, n] = co_await http::async_write(out, sr, useTuple);
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      r.writeError = ec;
      co_return r;
    }
    r.bytes += chunk;
  } while (!p.is_done() && !sr.is_done());
  co_return r;
}

template <class Body>
void markNoBody(Body& body) {
  body.data = nullptr;
  body.size = 0;
  body.more = false;
}

// A relay buffer borrowed from the worker for as long as one body streams.
class RelayBuffer {
 public:
  explicit RelayBuffer(Worker& w) : worker_(w), buffer_(w.takeRelayBuffer()) {}
  ~RelayBuffer() { worker_.returnRelayBuffer(std::move(buffer_)); }
  RelayBuffer(const RelayBuffer&) = delete;
  RelayBuffer& operator=(const RelayBuffer&) = delete;
  char* get() { return buffer_.get(); }

 private:
  Worker& worker_;
  std::unique_ptr<char[]> buffer_;
};

class InboundSession final : public TrackedSession {
 public:
  InboundSession(Worker& worker, TcpSocket socket, std::shared_ptr<ssl::context> tls,
                 Clock::time_point handshakeDeadline)
      : handshakeDeadline_(handshakeDeadline),
        worker_(worker),
        shared_(worker.shared()),
        m_(*worker.shared().metrics),
        shard_(worker.index()),
        tls_(std::move(tls)),
        stream_(std::move(socket), *tls_),
        upstream_(worker.ioc().get_executor()) {
    // Bounds what a caller can make us hold: a head, plus a relay's worth of body (a chunk-size
    // line with an endless extension fills it and is refused).
    buffer_.max_size(shared_.limits.maxHeadBytes + Worker::kRelayBufferSize + 4096);
    worker_.sessionStarted(*this);
  }

  ~InboundSession() {
    shared_.connections->open.fetch_sub(1, std::memory_order_relaxed);
    m_.connectionsOpen.sub(shard_, 0);
    worker_.sessionEnded(*this);
  }

  void expireIfDue(Clock::time_point now) override {
    beast::get_lowest_layer(stream_).expireIfDue(now);
    upstream_.expireIfDue(now);
    // Still idle a sweep later: give the TLS record buffers back. Busy keep-alive connections,
    // idle only between requests, keep theirs and do not churn the allocator.
    if (idle_ && ++idleSweeps_ == 2) {
      stream_.releaseBuffers();
      std::string().swap(out_);
      if (buffer_.size() == 0) {
        buffer_.shrink_to_fit();
      }
      if (upBuffer_.size() == 0) {
        upBuffer_.shrink_to_fit();
      }
    }
  }

  // Idle between requests, or not yet through its handshake (a caller that is not a caller yet,
  // and may never be): either may make room for a new connection at --max-connections.
  bool closeIfIdle() override {
    if (idle_ || handshaking_) {
      beast::get_lowest_layer(stream_).cancel();
      idle_ = false;  // once is enough: the operation completes with operation_aborted
      handshaking_ = false;
      evicted_ = true;
      return true;
    }
    return false;
  }

  awaitable<void> run() {
    auto& lowest = beast::get_lowest_layer(stream_);
    error_code ignored;
    auto remote = lowest.socket().remote_endpoint(ignored);
    clientIp_ = remote.address().to_string();

    // The deadline runs from the accept: the wait for the first byte took part of it.
    lowest.expires_at(handshakeDeadline_);
    const auto handshakeStart = Clock::now();
    handshaking_ = true;
    auto [ec] = co_await stream_.async_handshake(useTuple);
    handshaking_ = false;
    if (evicted_) {
      co_return;  // counted as an eviction by the worker
    }
    m_.handshakeDuration.observe(shard_, 0, secondsSince(handshakeStart));
    if (ec) {
      auto why = classifyHandshakeFailure(ec, SSL_get_verify_result(stream_.native_handle()));
      m_.handshakes.add(shard_, 1 + static_cast<std::size_t>(why));
      logEvent(LogEvent::handshakeFailed, spdlog::level::info,
               "event=handshake_failed peer={} reason={} detail=\"{}\"", clientIp_,
               handshakeFailureName(why), ec.message());
      if (why != HandshakeFailure::Timeout) {
        co_await lingeringClose();
      }
      co_return;
    }
    m_.handshakes.add(shard_, 0);
    peer_ = peerIdentityFromCert(SSL_get0_peer_certificate(stream_.native_handle()));
    allowed_ = !peer_.unusable && shared_.allowList.allows(peer_.identity);
    // A URI SAN may hold spaces, '=' and quotes: in a log line it is one quoted value, never
    // fields of its own. Formatted once, for every line this connection writes.
    identityForLog_ = peer_.identity.empty() ? "-" : "\"" + escapeForLog(peer_.identity) + "\"";

    // Between requests a connection holds no coroutine frame but this one and lends no buffer:
    // the wait is for readability, and the read happens once there is something to read.
    // (No co_await on the right of ||: GCC 12 ran it here even when the left side was true.)
    for (;;) {
      if (buffer_.size() == 0) {
        const bool more = co_await awaitRequest();
        if (!more) {
          break;
        }
      }
      const bool keepAlive = co_await serveOne();
      if (!keepAlive) {
        break;
      }
    }
    if (lowest.socket().is_open()) {
      lowest.expires_after(kCloseNotifyDeadline);
      co_await stream_.async_shutdown(useTuple);
    }
  }

 private:
  // One line for a data-path event, within the worker's budget for that event.
  template <class... Args>
  void logEvent(LogEvent e, spdlog::level::level_enum level, fmt::format_string<Args...> format,
                Args&&... args) {
    std::uint64_t suppressed = 0;
    if (!spdlog::should_log(level) || !worker_.logLimiter(e).allow(Clock::now(), suppressed)) {
      return;
    }
    if (suppressed == 0) {
      spdlog::log(level, format, std::forward<Args>(args)...);
    } else {
      spdlog::log(level, "{} suppressed={}", fmt::format(format, std::forward<Args>(args)...),
                  suppressed);
    }
  }

  // Waits for the first bytes of the next request; false when the connection is to close.
  // The idle deadline applies; the head deadline starts with the first byte.
  awaitable<bool> awaitRequest() {
    auto& lowest = beast::get_lowest_layer(stream_);
    shrinkIfLarge(buffer_);
    lowest.expires_after(shared_.limits.idleTimeout);
    for (;;) {
      if (worker_.draining()) {
        co_return false;
      }
      idle_ = true;
      idleSweeps_ = 0;
      auto [ec] = co_await stream_.async_wait_readable(useTuple);
      idle_ = false;
      if (ec) {
        co_return false;
      }
      std::size_t n = 0;
      const auto got = stream_.read_some_now(buffer_.prepare(2048), n);
      if (got == TlsStream::ReadNow::wouldBlock) {
        continue;  // part of a record: wait for the rest
      }
      if (got == TlsStream::ReadNow::useAsync) {  // end of stream, an error, or a write first
        auto [aec, an] = co_await stream_.async_read_some(buffer_.prepare(2048), useTuple);
        if (aec) {
          co_return false;
        }
        buffer_.commit(an);
        co_return true;
      }
      buffer_.commit(n);
      co_return true;
    }
  }

  // Serves one request; false when the caller's connection is to close.
  awaitable<bool> serveOne() {
    auto& lowest = beast::get_lowest_layer(stream_);
    requestStart_ = Clock::now();
    method_ = ProxyMetrics::kMethods.size() - 1;
    target_.clear();

    http::request_parser<http::buffer_body> req;
    req.header_limit(static_cast<std::uint32_t>(shared_.limits.maxHeadBytes));
    if (shared_.limits.maxBodyBytes) {
      req.body_limit(shared_.limits.maxBodyBytes);
    } else {
      req.body_limit(boost::none);
    }
    lowest.expires_after(shared_.limits.headTimeout);
    error_code ec = co_await awaitHeadEnd();
    if (ec == http::error::bad_obs_fold) {
      logEvent(LogEvent::badRequest, spdlog::level::info,
               "event=bad_request peer={} identity={} status=400 reason=\"obsolete line "
               "folding\"",
               clientIp_, identityForLog_);
      co_await replyLocal(400);
      co_return false;
    }
    if (!ec) {
      // The whole head is buffered (awaitHeadEnd), so it parses here, with no operation to run
      // and complete.
      const std::size_t used = req.put(buffer_.data(), ec);
      buffer_.consume(used);
    }
    if (ec) {
      if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
          ec == ssl::error::stream_truncated) {
        co_return false;  // the caller hung up mid-head
      }
      unsigned status = statusForReadError(ec);
      logEvent(LogEvent::badRequest, spdlog::level::info,
               "event=bad_request peer={} identity={} status={} reason=\"{}\"", clientIp_,
               identityForLog_, status, ec.message());
      co_await replyLocal(status);
      co_return false;
    }
    auto& msg = req.get();
    method_ = methodIndex(msg.method());
    if (shared_.accessLog) {
      target_ = msg.target();
    }
    auto why = checkRequestHead(msg.base());
    if (why.empty() && shared_.limits.underscoreHeaders != UnderscoreHeaders::allow) {
      const bool drop = shared_.limits.underscoreHeaders == UnderscoreHeaders::drop;
      if (auto n = underscoreHeaders(msg.base(), drop)) {
        m_.underscoreHeaders->Increment(static_cast<double>(n));
        if (!drop) {
          why = "header name with '_' (--headers-with-underscores reject)";
        }
      }
    }
    if (!why.empty()) {
      logEvent(LogEvent::badRequest, spdlog::level::info,
               "event=bad_request peer={} identity={} status=400 reason=\"{}\"", clientIp_,
               identityForLog_, why);
      co_await replyLocal(400);
      co_return false;
    }
    if (!allowed_) {
      m_.identityRefused->Increment();
      if (peer_.unusable) {
        m_.identityUnusable->Increment();
      }
      logEvent(LogEvent::identityRefused, spdlog::level::info,
               "event=identity_refused peer={} identity={}", clientIp_, identityForLog_);
      co_await replyLocal(403);
      co_return false;
    }
    const bool clientKeepAlive = msg.keep_alive();
    const unsigned clientVersion = msg.version();
    const bool isHead = msg.method() == http::verb::head;
    if (auto expect = msg.find(http::field::expect); expect != msg.end()) {
      if (!beast::iequals(expect->value(), "100-continue")) {
        co_await replyLocal(417);
        co_return false;
      }
      // We answer 100 Continue ourselves, so the local service never has to.
      msg.erase(http::field::expect);
      if (clientVersion == 11 && !req.is_done()) {
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        lowest.expires_after(shared_.limits.idleTimeout);
        auto [wec, wn] = co_await asio::async_write(stream_, asio::buffer(kContinue), useTuple);
        if (wec) {
          co_return false;
        }
      }
    }
    rewriteRequestHead(msg.base(),
                       ForwardContext{clientIp_, peer_.xfcc, shared_.upstreamAuthority});
    co_return co_await forward(req, clientKeepAlive, clientVersion, isHead);
  }

  // After a refused handshake the caller has often sent more (its request): closing with those
  // bytes unread would send a reset that can overtake our alert, and the caller would see
  // "connection reset" instead of "certificate required". Half-close, discard what arrives for a
  // moment, then close.
  awaitable<void> lingeringClose() {
    auto& lowest = beast::get_lowest_layer(stream_);
    error_code ec;
    lowest.socket().shutdown(TcpSocket::shutdown_send, ec);
    lowest.expires_after(kCloseNotifyDeadline);
    char discard[512];
    while (!ec) {
      auto [rec, n] = co_await lowest.socket().async_read_some(asio::buffer(discard), useTuple);
      ec = rec;
    }
  }

  // Reads until buffer_ holds a whole request head (or as much as --max-head-bytes allows),
  // and refuses obsolete line folding before Beast can join the folded lines.
  awaitable<error_code> awaitHeadEnd() {
    std::size_t from = 0;
    for (;;) {
      auto bytes = buffer_.cdata();
      auto scan = scanHead({static_cast<const char*>(bytes.data()), bytes.size()}, from);
      if (scan.state == HeadScan::obsFold) {
        co_return http::error::bad_obs_fold;
      }
      // --max-head-size bounds the whole head, request line and fields together (Beast's own
      // limit counts them apart), and no byte past it is ever parsed.
      if (scan.state == HeadScan::complete) {
        co_return scan.resumeAt > shared_.limits.maxHeadBytes ? error_code(http::error::header_limit)
                                                              : error_code{};
      }
      if (bytes.size() >= shared_.limits.maxHeadBytes) {
        co_return http::error::header_limit;
      }
      from = scan.resumeAt;
      auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(2048), useTuple);
      if (ec) {
        co_return ec == asio::error::eof ? error_code(http::error::end_of_stream) : ec;
      }
      buffer_.commit(n);
    }
  }

  awaitable<error_code> connectUpstream() {
    auto& s = upstream_.socket();
    error_code ignored;
    s.close(ignored);
    upstream_.expires_after(shared_.limits.upstreamConnectTimeout);
    auto [ec] = co_await s.async_connect(shared_.upstream, useTuple);
    if (ec == asio::error::operation_aborted && upstream_.timedOut()) {
      ec = beast::error::timeout;
    }
    if (!ec) {
      m_.upstreamConnectsTotal->Increment();
      s.set_option(tcp::no_delay(true), ignored);
    }
    co_return ec;
  }

  // The connection to the local service is the session's for one request: back to the pool
  // when it can serve another, closed otherwise.
  struct UpstreamLease {
    DeadlineSocket& s;
    ~UpstreamLease() {
      error_code ignored;
      s.socket().close(ignored);
      s.expires_never();
    }
  };

  // Sends the request to the local service and its answer back; false when the caller's
  // connection is to close.
  awaitable<bool> forward(http::request_parser<http::buffer_body>& req, bool clientKeepAlive,
                          unsigned clientVersion, bool isHead) {
    if (worker_.pending() >= worker_.pendingLimit()) {
      // Overload: a fast answer the caller can retry elsewhere, not a queue that grows.
      logEvent(LogEvent::overloaded, spdlog::level::info, "event=overloaded peer={} pending={}",
               clientIp_, worker_.pending());
      co_await replyLocal(503);
      co_return false;
    }
    m_.pending.add(shard_, 0);
    PendingGuard pendingGuard{m_, shard_, worker_.pending()};
    upstreamSeconds_ = -1;
    auto& msg = req.get();
    const bool hasBody = !req.is_done();
    // A request we still hold whole may go out again if a pooled connection turns out stale.
    const bool replayable = !hasBody && isIdempotent(msg.method());
    if (!hasBody) {
      markNoBody(msg.body());
    }
    UpstreamLease lease{upstream_};
    auto& up = upstream_;
    std::optional<http::response_parser<http::buffer_body>> res;
    std::optional<RelayBuffer> relay;
    error_code ec;
    for (int attempt = 0; attempt < 2; ++attempt) {
      error_code ignored;
      up.socket().close(ignored);
      if (auto idle = worker_.pool().takeIdle()) {
        up.socket() = std::move(*idle);
      }
      // Every reused connection is looked at before it carries a request, whatever the method:
      // bytes the local service wrote after its last answer (a second response after a 204, a
      // body after a HEAD answer) would otherwise be read as this caller's answer, and this
      // caller's answer would go to the next one.
      while (up.socket().is_open()) {
        const auto state = pooledState(up.socket());
        if (state == PooledState::clean) {
          break;
        }
        (state == PooledState::closed ? m_.upstreamStaleRetries : m_.upstreamUnsolicited)
            ->Increment();
        up.socket().close(ignored);
        if (auto idle = worker_.pool().takeIdle()) {
          up.socket() = std::move(*idle);
        }
      }
      const bool reused = up.socket().is_open();
      if (!up.socket().is_open()) {
        auto cec = co_await connectUpstream();
        if (cec) {
          m_.upstreamConnectErrors->Increment();
          logEvent(LogEvent::upstreamConnectFailed, spdlog::level::warn,
                   "event=upstream_connect_failed upstream={} reason=\"{}\"",
                   shared_.upstream.address().to_string(), cec.message());
          co_await replyLocal(cec == beast::error::timeout ? 504 : 502);
          co_return false;
        }
      }
      http::request_serializer<http::buffer_body> sr{msg};
      up.expires_after(shared_.limits.upstreamTimeout);
      const auto upstreamStart = Clock::now();
      if (!hasBody) {
        out_.clear();
        appendHead(out_, msg.base());
        auto [wec, wn] = co_await asio::async_write(up, asio::buffer(out_), useTuple);
        ec = wec;
      } else {
        auto [wec, wn] = co_await http::async_write_header(up, sr, useTuple);
        ec = wec;
        if (!ec) {
          relay.emplace(worker_);
          auto r = co_await relayBody(stream_, buffer_, req, up, sr, relay->get(),
                                      Worker::kRelayBufferSize, shared_.limits.idleTimeout,
                                      shared_.limits.upstreamTimeout);
          requestBytes_ = r.bytes;
          if (r.readError) {
            // The caller's body broke off, was malformed or grew past the limit; the upstream
            // leg is unusable either way.
            if (r.readError == http::error::body_limit) {
              logEvent(LogEvent::badRequest, spdlog::level::info,
                       "event=bad_request peer={} identity={} status=413", clientIp_,
                       identityForLog_);
              co_await replyLocal(413);
            } else if (isMalformedBody(r.readError)) {
              logEvent(LogEvent::badRequest, spdlog::level::info,
                       "event=bad_request peer={} identity={} status=400 reason=\"{}\"", clientIp_,
                       identityForLog_, r.readError.message());
              co_await replyLocal(400);
            }
            co_return false;
          }
          ec = r.writeError;
        }
      }
      if (!ec) {
        upBuffer_.clear();
        // One deadline for the final answer: interim 1xx answers (dropped; we wait for the final
        // one) do not extend it, or a 102 every second would hold a request forever.
        up.expires_after(shared_.limits.upstreamTimeout);
        do {
          res.emplace();
          res->header_limit(kUpstreamMaxHead);
          res->body_limit(boost::none);
          if (isHead) {
            res->skip(true);
          }
          auto [rec, rn] = co_await http::async_read_header(up, upBuffer_, *res, useTuple);
          ec = rec;
        } while (!ec && res->get().result_int() / 100 == 1);
      }
      if (!ec) {
        upstreamSeconds_ = secondsSince(upstreamStart);
        m_.upstreamDuration.observe(shard_, 0, upstreamSeconds_);
        break;
      }
      if (attempt == 0 && reused && replayable && looksStale(ec)) {
        m_.upstreamStaleRetries->Increment();
        continue;
      }
      break;
    }
    if (ec) {
      const bool slow = ec == beast::error::timeout;
      if (slow) {
        m_.upstreamTimeouts->Increment();
      }
      logEvent(LogEvent::upstreamFailed, spdlog::level::warn,
               "event=upstream_failed identity={} status={} reason=\"{}\"", identityForLog_,
               slow ? 504 : 502, ec.message());
      co_await replyLocal(slow ? 504 : 502);
      co_return false;
    }

    auto& rmsg = res->get();
    bool upstreamReusable = rmsg.keep_alive();
    bool keepAlive = clientKeepAlive && !worker_.draining();
    if (!res->is_done() && res->need_eof()) {
      // A body that ends when the local service closes: chunk it for HTTP/1.1 callers.
      upstreamReusable = false;
      if (clientVersion == 11) {
        rmsg.chunked(true);
      } else {
        keepAlive = false;
      }
    } else if (clientVersion == 10 && rmsg.chunked()) {
      rmsg.chunked(false);
      keepAlive = false;
    }
    rewriteResponseHead(rmsg.base(), clientVersion, keepAlive);
    const unsigned status = rmsg.result_int();

    auto& lowest = beast::get_lowest_layer(stream_);
    http::response_serializer<http::buffer_body> rs{rmsg};
    if (!relay) {
      relay.emplace(worker_);
    }
    // Body bytes that came with the head go out in the same write as the head: for the common
    // small answer, one TLS record and one system call instead of two. Parsing them needs no read.
    uint64_t firstPiece = 0;
    if (!res->is_done() && upBuffer_.size() > 0) {
      rmsg.body().data = relay->get();
      rmsg.body().size = Worker::kRelayBufferSize;
      error_code rec;
      upBuffer_.consume(res->put(upBuffer_.data(), rec));
      if (rec && rec != http::error::need_buffer && rec != http::error::need_more) {
        logEvent(LogEvent::upstreamBodyFailed, spdlog::level::warn,
                 "event=upstream_body_failed identity={} reason=\"{}\"", identityForLog_,
                 rec.message());
        co_await replyLocal(502);
        co_return false;
      }
      firstPiece = Worker::kRelayBufferSize - rmsg.body().size;
      rmsg.body().data = firstPiece ? relay->get() : nullptr;
      rmsg.body().size = firstPiece;
      rmsg.body().more = !res->is_done();
    } else if (res->is_done()) {
      markNoBody(rmsg.body());
    }
    lowest.expires_after(shared_.limits.idleTimeout);
    // A HEAD, 204 or 304 answer has no body whatever its head says: with Transfer-Encoding:
    // chunked the serializer would add a last chunk ("0\r\n\r\n") that the caller then reads
    // as the start of its next answer.
    const bool bodiless = isHead || status == 204 || status == 304;
    if (status == 204 || status == 304) {
      // RFC 9112 forbids Transfer-Encoding on a 204 (and it means nothing on a 304); readers
      // such as Python's http.client then wait for chunks that never come.
      rmsg.erase(http::field::transfer_encoding);
      if (status == 204) {
        rmsg.erase(http::field::content_length);
      }
    }
    if (res->is_done() && (bodiless || !rmsg.chunked())) {
      // The whole answer is in hand and needs no framing of ours: head and body in one write.
      out_.clear();
      appendHead(out_, rmsg.base());
      out_.append(relay->get(), firstPiece);
      auto [wec, wn] = co_await asio::async_write(stream_, asio::buffer(out_), useTuple);
      if (wec) {
        co_return false;
      }
    } else if (res->is_done() || firstPiece) {
      auto [wec, wn] = co_await http::async_write(stream_, rs, useTuple);
      if (wec && wec != http::error::need_buffer) {
        co_return false;
      }
    } else {
      auto [wec, wn] = co_await http::async_write_header(stream_, rs, useTuple);
      if (wec) {
        co_return false;
      }
    }
    if (res->is_done()) {
      finishRequest(status, firstPiece);
    } else {
      auto r = co_await relayBody(up, upBuffer_, *res, stream_, rs, relay->get(),
                                  Worker::kRelayBufferSize, shared_.limits.upstreamTimeout,
                                  shared_.limits.idleTimeout);
      finishRequest(status, firstPiece + r.bytes);
      if (r.readError || r.writeError) {
        if (r.readError) {
          logEvent(LogEvent::upstreamBodyFailed, spdlog::level::warn,
                   "event=upstream_body_failed identity={} reason=\"{}\"", identityForLog_,
                   r.readError.message());
        }
        co_return false;
      }
    }
    if (upBuffer_.size() != 0) {
      // Bytes past the end of the answer (a body after a bodiless answer, a body longer than
      // its Content-Length): the connection is out of step with its requests; never reuse it.
      m_.upstreamUnsolicited->Increment();
      upBuffer_.clear();
    } else if (upstreamReusable) {
      worker_.pool().giveBack(std::move(up.socket()));
    }
    shrinkIfLarge(upBuffer_);
    co_return keepAlive;
  }

  static std::size_t methodIndex(http::verb v) {
    switch (v) {
      case http::verb::get:
        return 0;
      case http::verb::head:
        return 1;
      case http::verb::post:
        return 2;
      case http::verb::put:
        return 3;
      case http::verb::delete_:
        return 4;
      case http::verb::patch:
        return 5;
      case http::verb::options:
        return 6;
      default:
        return 7;
    }
  }

  // Counts the answer (and writes the access log line) once its head went out.
  void finishRequest(unsigned status, uint64_t responseBytes) {
    const double seconds = secondsSince(requestStart_);
    m_.requests.add(shard_, ProxyMetrics::requestSeries(method_, status));
    m_.requestDuration.observe(shard_, 0, seconds);
    m_.receivedBytes.add(shard_, 0, requestBytes_);
    m_.sentBytes.add(shard_, 0, responseBytes);
    if (shared_.accessLog) {
      shared_.accessLog->info(
          "identity={} method={} path=\"{}\" status={} req_bytes={} resp_bytes={} "
          "duration_us={} upstream_us={}",
          identityForLog_, ProxyMetrics::kMethods[method_],
          escapeForLog(target_), status, requestBytes_, responseBytes,
          static_cast<int64_t>(seconds * 1e6),
          upstreamSeconds_ < 0 ? -1 : static_cast<int64_t>(upstreamSeconds_ * 1e6));
    }
    requestBytes_ = 0;
  }

  awaitable<void> replyLocal(unsigned status) {
    m_.localReply(status).Increment();
    finishRequest(status, 0);
    const auto& bytes = cannedResponse(status);
    beast::get_lowest_layer(stream_).expires_after(shared_.limits.idleTimeout);
    co_await asio::async_write(stream_, asio::buffer(bytes), useTuple);
  }

  struct PendingGuard {
    ProxyMetrics& m;
    unsigned shard;
    std::size_t& pending;
    PendingGuard(ProxyMetrics& metrics, unsigned s, std::size_t& p)
        : m(metrics), shard(s), pending(p) {
      ++pending;
    }
    ~PendingGuard() {
      --pending;
      m.pending.sub(shard, 0);
    }
    PendingGuard(const PendingGuard&) = delete;
    PendingGuard& operator=(const PendingGuard&) = delete;
  };

  Clock::time_point handshakeDeadline_;
  Worker& worker_;
  const ProxyShared& shared_;
  ProxyMetrics& m_;
  unsigned shard_;
  std::shared_ptr<ssl::context> tls_;
  TlsStream stream_;
  beast::flat_buffer buffer_;    // the caller's bytes read ahead of the parser
  DeadlineSocket upstream_;      // the connection to the local service, while a request uses it
  beast::flat_buffer upBuffer_;  // the local service's bytes read ahead of the parser
  std::string out_;              // a serialized head (and small body) on its way out
  PeerIdentity peer_;
  std::string identityForLog_ = "-";  // peer_.identity quoted and escaped, or "-"
  std::string clientIp_;
  bool allowed_ = false;
  bool idle_ = false;
  bool handshaking_ = false;
  bool evicted_ = false;
  unsigned idleSweeps_ = 0;  // sweeps seen while idle_
  Clock::time_point requestStart_{};
  std::size_t method_ = 7;
  uint64_t requestBytes_ = 0;
  double upstreamSeconds_ = -1;
  std::string target_;  // kept only for the access log
};

awaitable<void> serveConnection(Worker& worker, TcpSocket socket,
                                std::shared_ptr<ssl::context> tls,
                                Clock::time_point handshakeDeadline) {
  InboundSession session(worker, std::move(socket), std::move(tls), handshakeDeadline);
  co_await session.run();
}

// A connection accepted but silent. As nginx does, it gets no TLS state, no buffer and no
// coroutine frame until its first byte arrives: a socket, a deadline and a place in the worker's
// list (about 200 bytes, instead of the tens of KiB a TLS session costs), so a flood of
// connections that never send a ClientHello costs little. The oldest are evicted first at
// --max-connections, like idle keep-alive connections.
class FirstByteWait final : public TrackedSession {
 public:
  ~FirstByteWait() { worker_.sessionEnded(*this); }

  static void start(Worker& worker, TcpSocket socket) {
    std::unique_ptr<FirstByteWait> self(new FirstByteWait(worker, std::move(socket)));
    auto& s = self->socket_;
    // The pending wait owns the object: it goes when the wait completes, however it ends, or
    // with the worker's io_context if that is destroyed first.
    s.async_wait(TcpSocket::wait_read,
                 [self = std::move(self)](error_code ec) { self->onReadable(ec); });
  }

  bool closeIfIdle() override {
    if (closing_) {
      return false;
    }
    closing_ = true;
    error_code ignored;
    socket_.cancel(ignored);
    return true;
  }

  void expireIfDue(Clock::time_point now) override {
    if (!closing_ && now >= deadline_) {
      closing_ = timedOut_ = true;
      error_code ignored;
      socket_.cancel(ignored);
    }
  }

 private:
  FirstByteWait(Worker& worker, TcpSocket socket)
      : worker_(worker),
        socket_(std::move(socket)),
        deadline_(Clock::now() + worker.shared().limits.handshakeTimeout) {
    auto& m = *worker_.shared().metrics;
    m.connectionsTotal.add(worker_.index(), 0);
    m.connectionsOpen.add(worker_.index(), 0);
    worker_.sessionStarted(*this);
  }

  void onReadable(error_code ec) {
    if (!ec && !closing_ && !worker_.draining()) {
      // The session takes the connection over, with what is left of the handshake deadline.
      asio::co_spawn(worker_.ioc(),
                     serveConnection(worker_, std::move(socket_), worker_.tls(), deadline_),
                     asio::detached);
      return;
    }
    auto& m = *worker_.shared().metrics;
    if (timedOut_) {
      m.handshakes.add(worker_.index(), 1 + static_cast<std::size_t>(HandshakeFailure::Timeout));
    }
    error_code ignored;
    socket_.close(ignored);
    worker_.shared().connections->open.fetch_sub(1, std::memory_order_relaxed);
    m.connectionsOpen.sub(worker_.index(), 0);
  }

  Worker& worker_;
  TcpSocket socket_;
  Clock::time_point deadline_;
  bool closing_ = false;
  bool timedOut_ = false;
};

}  // namespace

std::optional<TcpSocket> UpstreamPool::takeIdle() {
  const auto now = std::chrono::steady_clock::now();
  while (!idle_.empty()) {
    Idle item = std::move(idle_.back());
    idle_.pop_back();
    shared_.metrics->upstreamPoolIdle->Decrement();
    if (now - item.since < shared_.limits.upstreamIdleTimeout) {
      return std::move(item.socket);
    }
  }
  return std::nullopt;
}

void UpstreamPool::giveBack(TcpSocket socket) {
  const auto now = std::chrono::steady_clock::now();
  // The oldest sit at the front; drop those past their idle time so they do not linger.
  std::size_t expired = 0;
  while (expired < idle_.size() &&
         now - idle_[expired].since >= shared_.limits.upstreamIdleTimeout) {
    ++expired;
  }
  for (std::size_t i = 0; i < expired; ++i) {
    idle_.pop_front();
  }
  if (expired) {
    shared_.metrics->upstreamPoolIdle->Decrement(static_cast<double>(expired));
  }
  if (idle_.size() >= shared_.limits.upstreamMaxIdle) {
    return;
  }
  idle_.push_back(Idle{std::move(socket), now});
  shared_.metrics->upstreamPoolIdle->Increment();
}

void UpstreamPool::sweep() {
  // A connection the local service closed would otherwise sit in CLOSE-WAIT until the pool is
  // next used, and one past its idle time would stay open: both go now.
  const auto now = std::chrono::steady_clock::now();
  const auto before = idle_.size();
  std::erase_if(idle_, [&](Idle& item) {
    if (now - item.since >= shared_.limits.upstreamIdleTimeout) {
      return true;
    }
    const auto state = pooledState(item.socket);
    if (state != PooledState::clean) {
      (state == PooledState::closed ? shared_.metrics->upstreamStaleRetries
                                    : shared_.metrics->upstreamUnsolicited)
          ->Increment();
    }
    return state != PooledState::clean;
  });
  if (idle_.size() != before) {
    shared_.metrics->upstreamPoolIdle->Decrement(static_cast<double>(before - idle_.size()));
  }
}

void UpstreamPool::clear() {
  shared_.metrics->upstreamPoolIdle->Decrement(static_cast<double>(idle_.size()));
  idle_.clear();
}

Worker::Worker(const ProxyShared& shared, unsigned index, unsigned workers)
    : shared_(shared),
      index_(index),
      ioc_(std::make_unique<asio::io_context>(1)),
      acceptor_(std::in_place, *ioc_),
      pool_(*ioc_, shared),
      pendingLimit_(std::max<std::size_t>(1, (shared.limits.maxPending + workers - 1) / workers)) {}

Worker::~Worker() {
  stop();
  sweepTimer_.reset();
  acceptor_.reset();
  pool_.clear();
  ioc_.reset();
}

void Worker::listen(const tcp::endpoint& endpoint) {
  acceptor_->open(endpoint.protocol());
  acceptor_->set_option(tcp::acceptor::reuse_address(true));
  acceptor_->set_option(asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true));
  acceptor_->bind(endpoint);
  acceptor_->listen(asio::socket_base::max_listen_connections);
}

void Worker::start(std::shared_ptr<asio::ssl::context> tls) {
  tls_ = std::move(tls);
  accept();
  sweepTimer_.emplace(*ioc_);
  sweep();
  thread_ = std::thread([this] {
    spdlog::debug("event=worker_started worker={}", index_);
    ioc_->run();
  });
}

void Worker::setTls(std::shared_ptr<asio::ssl::context> ctx) {
  asio::post(*ioc_, [this, ctx = std::move(ctx)]() mutable { tls_ = std::move(ctx); });
}

void Worker::drain(std::function<void()> onDrained) {
  asio::post(*ioc_, [this, cb = std::move(onDrained)]() mutable {
    draining_ = true;
    onDrained_ = std::move(cb);
    error_code ignored;
    acceptor_->close(ignored);
    for (auto& s : sessions_) {
      s.closeIfIdle();
    }
    if (sessionCount_ == 0) {
      std::exchange(onDrained_, {})();
    }
  });
}

void Worker::stop() {
  ioc_->stop();
  if (thread_.joinable()) {
    thread_.join();
  }
}

std::unique_ptr<char[]> Worker::takeRelayBuffer() {
  if (freeRelayBuffers_.empty()) {
    return std::make_unique_for_overwrite<char[]>(kRelayBufferSize);
  }
  auto b = std::move(freeRelayBuffers_.back());
  freeRelayBuffers_.pop_back();
  return b;
}

void Worker::returnRelayBuffer(std::unique_ptr<char[]> buffer) {
  if (buffer && freeRelayBuffers_.size() < 64) {
    freeRelayBuffers_.push_back(std::move(buffer));
  }
}

void Worker::sessionStarted(TrackedSession& s) {
  sessions_.push_back(s);
  ++sessionCount_;
}

void Worker::sessionEnded(TrackedSession& s) {
  s.unlink();
  --sessionCount_;
  if (draining_ && sessionCount_ == 0 && onDrained_) {
    std::exchange(onDrained_, {})();
  }
}

// One timer per worker instead of one per connection: a deadline is a time stamp, and setting it
// on the request path costs no timer operation, no system call and no cancelled wait.
void Worker::sweep() {
  sweepTimer_->expires_after(kSweepPeriod);
  sweepTimer_->async_wait([this](error_code ec) {
    if (ec) {
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    for (auto& s : sessions_) {
      s.expireIfDue(now);
    }
    if (++sweeps_ % kPoolSweepEvery == 0) {
      pool_.sweep();
      if (index_ == 0) {
        trimAfterFlood();
      }
    }
    sweep();
  });
}

// After a flood of connections ends, glibc keeps the freed memory in its arenas (one per
// thread), fragmented, and the process stays at its peak size. Once a second, worker 0 looks at
// how many connections are open across all workers; when that fell well below the peak since the
// last trim, malloc_trim hands the free pages back (it walks every arena, a few milliseconds
// after a flood of thousands of connections, and nothing in steady state).
void Worker::trimAfterFlood() {
  const std::size_t open = shared_.connections->open.load(std::memory_order_relaxed);
  peakOpen_ = std::max(peakOpen_, open);
  // Only once the count has settled (no longer falling), so that one trim comes after the
  // last of the flood's connections is gone, not one per second while they go.
  const bool settled = open + kTrimSettled >= lastOpen_;
  lastOpen_ = open;
  if (settled && peakOpen_ >= open + kTrimAfterDrop) {
    ::malloc_trim(0);
    shared_.metrics->memoryTrims->Increment();
    peakOpen_ = open;
  }
}

bool Worker::evictIdle() {
  for (auto& s : sessions_) {  // oldest first
    if (s.closeIfIdle()) {
      return true;
    }
  }
  return false;
}

void Worker::accept() {
  asio::co_spawn(
      *ioc_,
      [this]() -> awaitable<void> {
        SteadyTimer backoff(*ioc_);
        for (;;) {
          auto [ec, socket] = co_await acceptor_->async_accept(useTuple);
          if (ec) {
            if (!acceptor_->is_open() || ec == asio::error::operation_aborted) {
              co_return;
            }
            // Out of descriptors or memory: say so (within the line budget), and give the
            // connections time to close.
            std::uint64_t suppressed = 0;
            if (logLimiter(LogEvent::acceptFailed).allow(Clock::now(), suppressed)) {
              spdlog::warn("event=accept_failed worker={} reason=\"{}\"{}", index_, ec.message(),
                           suppressed ? fmt::format(" suppressed={}", suppressed) : "");
            }
            backoff.expires_after(std::chrono::milliseconds(50));
            co_await backoff.async_wait(useTuple);
            continue;
          }
          // At the limit, an idle keep-alive connection makes room for a new caller (as nginx
          // does); with none idle, the new connection is closed at once.
          auto& open = shared_.connections->open;
          if (open.fetch_add(1, std::memory_order_relaxed) >= shared_.limits.maxConnections) {
            if (evictIdle()) {
              shared_.metrics->connectionsEvicted->Increment();
            } else {
              open.fetch_sub(1, std::memory_order_relaxed);
              shared_.metrics->connectionsRefused->Increment();
              if (!refusalLogged_) {  // once per burst, not once per connection
                spdlog::warn("event=connection_refused worker={} reason=max_connections limit={}",
                             index_, shared_.limits.maxConnections);
                refusalLogged_ = true;
              }
              error_code ignored;
              socket.set_option(asio::socket_base::linger(true, 0), ignored);  // RST, no TIME_WAIT
              socket.close(ignored);
              continue;
            }
          }
          refusalLogged_ = false;
          error_code ignored;
          socket.set_option(tcp::no_delay(true), ignored);
          FirstByteWait::start(*this, std::move(socket));
        }
      },
      asio::detached);
}

}  // namespace sidecar
