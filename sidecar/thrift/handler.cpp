// The inbound Thrift handler and its session: handshake, identity, then frame by frame to the
// local Thrift service and back, answering Finagle's probe and the local service's failures
// with TApplicationExceptions of our own.
#include "thrift/handler.h"

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <string>

#include "net/access_log.h"
#include "net/caller_session.h"
#include "net/first_byte_wait.h"
#include "net/log_limiter.h"
#include "net/tls_context.h"
#include "net/tls_stream.h"
#include "thrift/frame.h"
#include "thrift/frame_io.h"
#include "thrift/ttwitter.h"
#include "upstream/connector.h"

namespace sidecar {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kKeptBuffer = 64 * 1024;
// A refused caller's first frame is read only this far: enough for its call's name and seqid.
constexpr std::size_t kRefusedFrameBytes = 4096;
// After its refusal, what is left of its frame is read away (so that the refusal is not lost to
// a reset) up to this many bytes or kCloseNotifyDeadline.
constexpr std::size_t kRefusedDiscardBytes = 256 * 1024;

// How a forwarded call ended, for its metrics and its access-log line.
enum class CallResult { reply, exception, oneway, localError };
constexpr std::string_view resultName(CallResult r) {
  switch (r) {
    case CallResult::reply:
      return "reply";
    case CallResult::exception:
      return "exception";
    case CallResult::oneway:
      return "oneway";
    case CallResult::localError:
      return "local_error";
  }
  return "unknown";
}

// One caller's connection: the mTLS prelude (net/caller_session.h), then its calls, frame by
// frame.
class ThriftSession final : public CallerTlsSession {
 public:
  ThriftSession(ThriftHandler& handler, TcpSocket socket, std::shared_ptr<asio::ssl::context> tls,
                Clock::time_point handshakeDeadline)
      : CallerTlsSession(handler.worker(), Budget::thrift, std::move(socket), std::move(tls),
                         handshakeDeadline),
        handler_(handler),
        shared_(handler.shared()),
        m_(*handler.shared().metrics) {
    idleWithoutRead_ = false;  // idle inside readFramePrefix's read
  }

  ~ThriftSession() {
    releaseFrameBytes();
    error_code ignored;
    upstream_.socket().close(ignored);
  }

  awaitable<void> run() {
    const auto caller = co_await prelude(
        shared_.allowList,
        {"thrift_handshake_failed", handler_.logLimiter(ThriftLogEvent::handshakeFailed)},
        [this](std::optional<HandshakeFailure> failure, Clock::duration) {
          m_.handshake(failure).Increment();
        });
    if (!caller) {
      co_return;
    }
    identity_ = caller->peer.identity;
    if (!caller->allowed) {
      co_await refuse();
    } else {
      co_await serveCalls();
    }
    co_await closeTls();
  }

 private:
  // The frame bytes this session holds are given back to its worker's --thrift-max-buffered.
  void releaseFrameBytes() {
    handler_.buffered() -= charged_;
    charged_ = 0;
  }

  // Charges frame_'s growth to the worker's budget; false when it would go past it. A frame's
  // first step (kReadStep) always fits: small calls are never refused for big ones.
  bool chargeFrameBytes() {
    const std::size_t want = frame_.size();
    if (want <= charged_) {
      return true;
    }
    const std::size_t more = want - charged_;
    if (want > thrift::kReadStep + 4 && handler_.buffered() + more > shared_.maxBuffered) {
      return false;
    }
    handler_.buffered() += more;
    charged_ = want;
    return true;
  }

  // What is left of a frame the caller is still sending is read away (up to
  // kRefusedDiscardBytes or kCloseNotifyDeadline) before the connection closes, so that the
  // answer written before it is not lost to a reset.
  awaitable<void> readAway(std::size_t left) {
    left = std::min(left, kRefusedDiscardBytes);
    stream_.lowest_layer().expires_after(kCloseNotifyDeadline);
    std::string scratch;
    while (left > 0) {
      scratch.resize(std::min(left, kKeptBuffer));
      auto [ec, got] = co_await stream_.async_read_some(asio::buffer(scratch), useTuple);
      if (ec) {
        break;
      }
      left -= std::min(left, got);
    }
  }

  // A caller whose identity is not allowed, refused right after its handshake: its first frame
  // is read only as far as its call's name and seqid (kRefusedFrameBytes), never buffered whole,
  // and a CALL gets an INTERNAL_ERROR saying why. The connection then closes.
  awaitable<void> refuse() {
    m_.callsRefused->Increment();
    logWithin(handler_.logLimiter(ThriftLogEvent::identityRefused), spdlog::level::info,
              "event=identity_refused peer={} identity={} listener=thrift", clientIp_,
              identityForLog_);
    auto& lowest = stream_.lowest_layer();
    lowest.expires_after(shared_.limits.idleTimeout);
    if (co_await thrift::readFramePrefix(stream_, frame_)) {
      co_return;
    }
    const std::size_t length = thrift::frameLength(frame_);
    const std::size_t head = std::min(length, kRefusedFrameBytes);
    frame_.resize(4 + head);
    auto [ec, n] =
        co_await asio::async_read(stream_, asio::buffer(frame_.data() + 4, head), useTuple);
    if (ec) {
      co_return;
    }
    callStart_ = Clock::now();
    const auto header = thrift::parseHeader(std::string_view(frame_).substr(4));
    if (!header || header->type != thrift::MessageType::call) {
      co_return;  // nothing to answer
    }
    if (!co_await writeLocal(thrift::exceptionFrame(*header, thrift::AppError::internalError,
                                                    "caller identity not allowed"))) {
      co_return;
    }
    logCall(*header, "refused");
    co_await readAway(length - head);
  }

  // Calls of an allowed caller, one at a time, until it leaves, breaks the protocol or the
  // worker drains.
  awaitable<void> serveCalls() {
    while (!worker_.draining()) {
      if (!co_await readFrame()) {
        break;
      }
      callStart_ = Clock::now();
      answerBytes_ = 0;
      if (upgraded_ && !stripRequestHeader()) {
        break;
      }
      const auto header = thrift::parseHeader(std::string_view(frame_).substr(4));
      if (!header || (header->type != thrift::MessageType::call &&
                      header->type != thrift::MessageType::oneway)) {
        m_.framesNotThrift->Increment();
        logWithin(handler_.logLimiter(ThriftLogEvent::badFrame), spdlog::level::info,
                  "event=thrift_not_thrift peer={} identity={}", clientIp_, identityForLog_);
        break;
      }
      if (!thrift::holdsOneMessage(std::string_view(frame_).substr(4), *header)) {
        // The local service would answer a second message in the frame with a second reply,
        // which the next caller on that pooled connection would read as its own.
        m_.framesMalformed->Increment();
        logWithin(handler_.logLimiter(ThriftLogEvent::badFrame), spdlog::level::info,
                  "event=thrift_malformed_frame peer={} identity={} method={} seqid={}", clientIp_,
                  identityForLog_, methodLogField(header->name), header->seqid);
        if (header->type == thrift::MessageType::call) {
          co_await writeLocal(thrift::exceptionFrame(*header, thrift::AppError::protocolError,
                                                     thrift::kNotOneMessage));
        }
        logCall(*header, "malformed");
        break;
      }
      if (header->type == thrift::MessageType::call && header->name == thrift::kFinagleProbe) {
        if (!co_await answerProbe(*header)) {
          break;
        }
        continue;
      }
      slot_ = handler_.methodSlots().slotOf(header->name);
      m_.methods.calls.add(shard_, slot_);
      if (upgraded_) {
        m_.clients.requests.add(shard_, clientSlot_);
      }
      if (shared_.tracer) {
        startSpan();
      }
      const bool goOn = co_await forward(*header);
      finishCall(*header);
      if (!goOn) {
        break;
      }
    }
  }

  // Finagle's TTwitter upgrade probe, answered as a Finagle server does: a REPLY (an empty
  // struct), after which each call comes with a RequestHeader and each reply goes with a
  // ResponseHeader. Only in the binary protocol, the only one TTwitter's headers are written in:
  // a compact probe is refused, and its client falls back to plain Thrift.
  awaitable<bool> answerProbe(const thrift::MessageHeader& probe) {
    m_.probes->Increment();
    if (probe.protocol != thrift::Protocol::binary) {
      const bool written = co_await writeLocal(thrift::exceptionFrame(
          probe, thrift::AppError::unknownMethod, "Unknown method " + probe.name));
      logCall(probe, "probe");
      co_return written;
    }
    const bool written = co_await writeLocal(thrift::ttwitter::probeReplyFrame(probe));
    upgraded_ = true;  // (the probe's own reply has no ResponseHeader)
    logCall(probe, "upgraded");
    co_return written;
  }

  // On an upgraded connection: reads the RequestHeader before the call in frame_ into ttwitter_
  // and takes it out, so that the local service gets the plain call. False (counted, logged)
  // when it cannot be read: as Finagle's server, whose header read fails the connection, we
  // close it, since without the header's end there is no call to answer.
  bool stripRequestHeader() {
    ttwitter_ = {};
    const auto payload = std::string_view(frame_).substr(4);
    const auto n = thrift::ttwitter::readRequestHeader(payload, ttwitter_);
    if (!n || *n == payload.size()) {
      m_.ttwitterMalformed->Increment();
      logWithin(handler_.logLimiter(ThriftLogEvent::badRequestHeader), spdlog::level::info,
                "event=thrift_bad_request_header peer={} identity={} length={}", clientIp_,
                identityForLog_, payload.size());
      return false;
    }
    thrift::ttwitter::eraseAfterPrefix(frame_, *n);
    m_.ttwitterCalls->Increment();
    clientSlot_ = handler_.clientSlots().slotOf(ttwitter_.clientId.value_or(std::string()));
    return true;
  }

  // The call's server span: the caller's trace (TTwitter's header; none on a plain connection)
  // joined, and its span id shared when the caller sent one, as Finagle's server does.
  void startSpan() {
    const trace::Context in = upgraded_ ? ttwitter_.context : trace::Context{};
    span_ = shared_.tracer->join(in);
    spanShared_ = in.valid();
    spanStartUs_ = trace::nowMicros();
  }

  void reportSpan(const thrift::MessageHeader& call) {
    if (!shared_.tracer || !span_.isSampled()) {
      return;
    }
    auto s = trace::makeSpan(trace::Kind::server, span_, call.name, spanStartUs_,
                             trace::nowMicros() - spanStartUs_);
    s.remoteIp = clientIp_;
    s.shared = spanShared_;
    s.tags.emplace_back("thrift.method", trace::tagValue(call.name));
    s.tags.emplace_back("thrift.result", resultName(result_));
    s.tags.emplace_back("peer.identity", identity_);
    if (upgraded_ && ttwitter_.clientId) {
      s.tags.emplace_back("thrift.client_id", *ttwitter_.clientId);
    }
    if (result_ == CallResult::exception || result_ == CallResult::localError) {
      s.tags.emplace_back("error", resultName(result_));
    }
    shared_.tracer->report(std::move(s));
  }

  // Reads the next whole frame, length prefix included, into frame_; false when the connection
  // is to close (the caller left, went idle too long, or sent a frame over --thrift-max-frame).
  awaitable<bool> readFrame() {
    auto& lowest = stream_.lowest_layer();
    lowest.expires_after(shared_.limits.idleTimeout);
    // A large call's or reply's buffer is not kept while the connection waits.
    if (frame_.capacity() > kKeptBuffer) {
      std::string().swap(frame_);
    }
    releaseFrameBytes();
    if (reply_.capacity() > kKeptBuffer) {
      std::string().swap(reply_);
    }
    setIdle(true);
    auto ec = co_await thrift::readFramePrefix(stream_, frame_);
    setIdle(false);
    if (ec) {
      // (Cancelled by a drain or an eviction while the caller was between calls: not the
      // caller's fault, whatever bytes of the next length had come.)
      if (!frame_.empty() && ec != asio::error::operation_aborted) {
        cutShort(frame_.size(), 4, ec);
      }
      co_return false;
    }
    const auto length = thrift::frameLength(frame_);
    if (length > shared_.maxFrame) {
      m_.framesTooLarge->Increment();
      logWithin(handler_.logLimiter(ThriftLogEvent::badFrame), spdlog::level::info,
                "event=thrift_frame_too_large peer={} identity={} length={} max={}", clientIp_,
                identityForLog_, length, shared_.maxFrame);
      co_return false;
    }
    if (length == 0) {
      m_.framesNotThrift->Increment();
      co_return false;
    }
    const std::size_t total = 4 + std::size_t{length};
    const auto rec = co_await thrift::readFramePayload(stream_, frame_, length, [&] {
      lowest.expires_after(shared_.limits.idleTimeout);
      return chargeFrameBytes();
    });
    if (rec == asio::error::no_buffer_space) {
      co_await refuseOverloaded(total);
      co_return false;
    }
    if (rec) {
      cutShort(frame_.size(), total, rec);
      co_return false;
    }
    co_return true;
  }

  // The worker holds --thrift-max-buffered of callers' frames already: this call is refused
  // (INTERNAL_ERROR saying so, when its header came whole) and its connection closes, rather
  // than the sidecar's memory growing with every large frame at once.
  awaitable<void> refuseOverloaded(std::size_t total) {
    m_.framesOverloaded->Increment();
    logWithin(handler_.logLimiter(ThriftLogEvent::badFrame), spdlog::level::warn,
              "event=thrift_overloaded peer={} identity={} length={} buffered={} max={}", clientIp_,
              identityForLog_, total - 4, handler_.buffered(), shared_.maxBuffered);
    const std::size_t have = frame_.size();
    const auto header = thrift::parseHeader(std::string_view(frame_).substr(4));
    releaseFrameBytes();
    std::string().swap(frame_);
    if (header && header->type == thrift::MessageType::call) {
      callStart_ = Clock::now();
      if (co_await writeLocal(thrift::exceptionFrame(
              *header, thrift::AppError::internalError,
              "the sidecar holds --thrift-max-buffered of frames now; try again"))) {
        co_await readAway(total - have);
      }
    }
  }

  // Counts the call forwarded last under its method, once its answer (if any) went out.
  void finishCall(const thrift::MessageHeader& call) {
    auto& methods = m_.methods;
    using Methods = ThriftMethodMetrics;
    switch (result_) {
      case CallResult::reply:
        methods.replies.add(shard_, slot_);
        break;
      case CallResult::exception:
        methods.exceptions.add(shard_, Methods::exceptionSeries(slot_, Methods::fromService));
        break;
      case CallResult::localError:
        if (call.type != thrift::MessageType::oneway) {  // a ONEWAY call gets no exception
          methods.exceptions.add(shard_, Methods::exceptionSeries(slot_, Methods::fromSidecar));
        }
        break;
      case CallResult::oneway:
        break;
    }
    methods.duration.observe(shard_, slot_,
                             std::chrono::duration<double>(Clock::now() - callStart_).count());
    if (upgraded_ &&
        (result_ == CallResult::exception ||
         (result_ == CallResult::localError && call.type != thrift::MessageType::oneway))) {
      m_.clients.failures.add(shard_, clientSlot_);
    }
    reportSpan(call);
    logCall(call, resultName(result_));
  }

  // The call's access-log line, once it is answered (a ONEWAY call: forwarded or failed).
  void logCall(const thrift::MessageHeader& call, std::string_view result) {
    auto* log = worker_.accessLog();
    if (!log) {
      return;
    }
    const auto micros =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - callStart_).count();
    log->line(
        "listener=thrift identity={} method={} seqid={} type={} result={} req_bytes={} "
        "resp_bytes={} duration_us={}",
        identityForLog_, methodLogField(call.name), call.seqid,
        call.type == thrift::MessageType::oneway ? "oneway" : "call", result, frame_.size(),
        answerBytes_, static_cast<int64_t>(micros));
  }

  // A frame the caller began and did not finish: the connection ended, or was silent past the
  // idle deadline, inside it.
  void cutShort(std::size_t got, std::size_t expected, error_code ec) {
    m_.framesCutShort->Increment();
    logWithin(handler_.logLimiter(ThriftLogEvent::badFrame), spdlog::level::info,
              "event=thrift_frame_cut_short peer={} identity={} got={} expected={} reason=\"{}\"",
              clientIp_, identityForLog_, got, expected, ec.message());
  }

  // Writes a whole frame to the caller; on an upgraded connection with a ResponseHeader (an
  // empty one) before its message, as a TTwitter client reads every reply.
  awaitable<bool> writeLocal(const std::string& bytes) {
    if (upgraded_) {
      std::string framed = bytes;
      thrift::ttwitter::insertAfterPrefix(framed, {&thrift::ttwitter::kEmptyResponseHeader, 1});
      co_return co_await writeRaw(framed);
    }
    co_return co_await writeRaw(bytes);
  }

  awaitable<bool> writeRaw(const std::string& bytes) {
    stream_.lowest_layer().expires_after(shared_.limits.idleTimeout);
    auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(bytes), useTuple);
    answerBytes_ = n;
    co_return !ec;
  }

  // Sends frame_ to the local service and relays its reply; when the local service fails, the
  // caller gets an INTERNAL_ERROR with its call's name and seqid. False when the caller's
  // connection is to close.
  awaitable<bool> forward(const thrift::MessageHeader& header) {
    const auto& local = shared_.local;
    error_code ignored;
    upstream_.socket().close(ignored);
    // One caller identity per pooled connection, as on --listen.
    if (auto idle = handler_.pool().take(local, identity_)) {
      upstream_.socket() = std::move(*idle);
    } else {
      auto ec = co_await connectPlain(upstream_, local, shared_.limits.upstreamConnectTimeout);
      if (ec) {
        m_.localConnect->Increment();
        co_return co_await localFailure(
            header, "cannot connect to the local Thrift service: " + ec.message());
      }
    }
    upstream_.expires_after(shared_.limits.upstreamTimeout);
    auto [wec, wn] = co_await asio::async_write(upstream_, asio::buffer(frame_), useTuple);
    if (wec) {
      co_return co_await brokenLocal(header, wec, "sending the call");
    }
    if (header.type == thrift::MessageType::oneway) {
      // Not pooled: a service may answer a ONEWAY-typed message anyway (Apache Thrift's
      // dispatcher does for an unknown name, or a two-way method), and that answer would be read
      // as the next caller's reply.
      m_.callsOneway->Increment();
      result_ = CallResult::oneway;
      upstream_.socket().close(ignored);
      co_return true;
    }
    const auto rec = co_await thrift::readFramePrefix(upstream_, reply_);
    if (rec) {
      co_return co_await brokenLocal(header, rec, "waiting for the reply");
    }
    const auto length = thrift::frameLength(reply_);
    if (length > shared_.maxFrame || length == 0) {
      m_.localBroken->Increment();
      co_return co_await localFailure(header, "the local Thrift service's reply frame of " +
                                                  std::to_string(length) +
                                                  " bytes is over --thrift-max-frame or empty");
    }
    const auto bec = co_await thrift::readFramePayload(upstream_, reply_, length, [] {});
    if (bec) {
      co_return co_await brokenLocal(header, bec, "reading the reply");
    }
    // The reply must be this call's: a connection out of step with its calls (a reply to a
    // call that was not waited for) is closed, and the caller told, never handed another's.
    const auto reply = thrift::replyType(std::string_view(reply_).substr(4), header);
    if (!reply) {
      m_.localBroken->Increment();
      co_return co_await localFailure(header,
                                      "the local Thrift service's reply is not this call's");
    }
    upstream_.expires_never();
    handler_.pool().giveBack(local, std::move(upstream_.socket()), identity_);
    m_.callsReplied->Increment();
    result_ = *reply == thrift::MessageType::exception ? CallResult::exception : CallResult::reply;
    co_return co_await writeLocal(reply_);
  }

  awaitable<bool> brokenLocal(const thrift::MessageHeader& header, error_code ec,
                              const char* during) {
    const bool timedOut = ec == boost::beast::error::timeout;
    (timedOut ? m_.localTimeout : m_.localBroken)->Increment();
    // Built apart from the co_await: GCC 12 destroys a conditional temporary in a co_await
    // expression that was never constructed (free(): invalid pointer).
    std::string why =
        timedOut ? "the local Thrift service timed out " : "the local Thrift service failed ";
    why += during;
    if (!timedOut) {
      why += ": " + ec.message();
    }
    co_return co_await localFailure(header, std::move(why));
  }

  awaitable<bool> localFailure(const thrift::MessageHeader& header, std::string why) {
    error_code ignored;
    upstream_.socket().close(ignored);
    upstream_.expires_never();
    m_.callsLocalError->Increment();
    result_ = CallResult::localError;
    logWithin(handler_.logLimiter(ThriftLogEvent::localFailed), spdlog::level::warn,
              "event=thrift_local_failed identity={} method={} seqid={} reason=\"{}\"",
              identityForLog_, methodLogField(header.name), header.seqid, escapeForLog(why));
    if (header.type == thrift::MessageType::oneway) {
      co_return true;  // nobody waits for an answer
    }
    co_return co_await writeLocal(
        thrift::exceptionFrame(header, thrift::AppError::internalError, why));
  }

  ThriftHandler& handler_;
  const ThriftShared& shared_;
  ThriftMetrics& m_;
  std::string frame_;        // the call, length prefix included
  std::size_t charged_ = 0;  // of frame_'s bytes, those counted in handler_.buffered()
  std::string reply_;        // the local service's reply, length prefix included
  std::string identity_;  // the caller's; its pooled connections to the local service are its own
  const unsigned shard_ = worker_.index();
  // The call being forwarded: its method's slot, when it was read whole, how it ended.
  std::size_t slot_ = ThriftMethodTable::kOther;
  Clock::time_point callStart_;
  std::size_t answerBytes_ = 0;  // the bytes written to the caller for it
  CallResult result_ = CallResult::reply;
  // TTwitter: whether the caller upgraded (its probe answered REPLY), the last call's header,
  // and its client id's slot.
  bool upgraded_ = false;
  thrift::ttwitter::RequestHeader ttwitter_;
  std::size_t clientSlot_ = ThriftMethodTable::kOther;
  // The call's server span, when tracing is on.
  trace::Context span_;
  bool spanShared_ = false;
  std::int64_t spanStartUs_ = 0;
};

awaitable<void> serveThrift(ThriftHandler& handler, TcpSocket socket,
                            std::shared_ptr<asio::ssl::context> tls,
                            Clock::time_point handshakeDeadline) {
  ThriftSession session(handler, std::move(socket), std::move(tls), handshakeDeadline);
  co_await session.run();
}

}  // namespace

ThriftHandler::ThriftHandler(Worker& worker, const ThriftShared& shared,
                             std::shared_ptr<asio::ssl::context> tls)
    : worker_(worker),
      shared_(shared),
      tls_(std::move(tls)),
      pool_(PoolSettings{shared.limits.upstreamIdleTimeout, shared.limits.upstreamMaxIdle, nullptr,
                         nullptr, nullptr}),
      methodSlots_(shared.metrics->methods.table),
      clientSlots_(shared.metrics->clients.table) {}

void ThriftHandler::accepted(TcpSocket socket) {
  FirstByteWait<ThriftHandler>::start(*this, std::move(socket));
}

void ThriftHandler::waitStarted() { shared_.metrics->connections->Increment(); }

void ThriftHandler::firstByte(TcpSocket socket, Clock::time_point handshakeDeadline) {
  asio::co_spawn(worker_.ioc(), serveThrift(*this, std::move(socket), tls_, handshakeDeadline),
                 asio::detached);
}

void ThriftHandler::setTls(std::shared_ptr<asio::ssl::context> ctx) {
  asio::post(worker_.ioc(), [this, ctx = std::move(ctx)]() mutable { tls_ = std::move(ctx); });
}

}  // namespace sidecar
