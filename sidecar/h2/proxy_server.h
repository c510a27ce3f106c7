#pragma once
// The server side of HTTP/2 for every listener that proxies it: each caller stream is a request
// whose head is collected and bounded here, then handed to the listener (dispatch()), which sends
// it on (a stream on a client Session: bind(); or its own exchange), and whose answer streams back
// within the caller's window. The same rules for every listener: answers of ours from the local
// reply table (as gRPC errors to gRPC callers), deadlines (the answer's head, grpc-timeout, a
// stream that moves nothing), the request's body acknowledged only as the other side takes it.
// The inbound listener (inbound/h2_session.cpp) and the outbound one (outbound/h2_session.cpp)
// derive from it and add what is theirs: routing, identity, metrics, the access log.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "core/config.h"
#include "h2/pipe.h"
#include "h2/session.h"
#include "net/deadline_socket.h"
#include "net/io.h"
#include "trace/context.h"

namespace sidecar::h2 {

class ProxyServer;

// The listener's own HTTP/1.1 exchange for a stream (h2/http1_relay.h), while it runs: the
// caller's reset cancels it, and the stream's sweep expires its deadlines.
struct Http1Leg {
  virtual void cancel() = 0;
  virtual void expireIfDue(std::chrono::steady_clock::time_point now) = 0;

 protected:
  ~Http1Leg() = default;
};

// One caller stream: its request, its answer, and the other side it is bound to.
struct ProxyStream final : std::enable_shared_from_this<ProxyStream> {
  using Clock = std::chrono::steady_clock;

  // The caller's end.
  struct Down final : StreamEnd {
    ProxyStream& s;
    explicit Down(ProxyStream& st) : s(st) {}
    void header(std::string_view name, std::string_view value) override;
    void headersEnd(bool endStream) override;
    void data(const std::uint8_t* p, std::size_t n) override;
    void dataEnd() override;
    void closed(std::uint32_t error) override;
    ssize_t readBody(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) override;
    // The answer is whole before the request: the rest of the request is not wanted (as Envoy
    // ends such a request). The caller is asked to stop sending it; the other side's stream,
    // answered already, is reset with NO_ERROR when the caller's closes.
    bool answerEnded() override;
  };
  // The other side's end, when it is an HTTP/2 stream (bind()).
  struct Up final : StreamEnd {
    ProxyStream& s;
    explicit Up(ProxyStream& st) : s(st) {}
    void header(std::string_view name, std::string_view value) override;
    void headersEnd(bool endStream) override;
    void data(const std::uint8_t* p, std::size_t n) override;
    void dataEnd() override;
    void closed(std::uint32_t error) override;
    ssize_t readBody(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) override;
    void headSent() override { s.headSent = true; }
  };

  ProxyStream(ProxyServer& srv, std::int32_t streamId, IoExecutor ex);

  // The request's body moved (bytes, its end): whoever sends it on goes on.
  void requestMoved();
  // The answer's body moved: the caller's side sends it.
  void responseMoved();
  // Wakes an exchange of the listener's own waiting on the pipes (waitSignal()).
  void signal();
  awaitable<void> waitSignal();
  ssize_t readResponse(std::uint8_t* buf, std::size_t length, std::uint32_t* flags);

  ProxyServer* server;  // none once the caller's stream closed
  std::int32_t id;
  Down down{*this};
  Up up{*this};
  // The request.
  std::string method, path, authority, contentType, grpcTimeout;
  Fields fields;  // regular fields, in order
  std::size_t headBytes = 0;
  bool headTooLarge = false;
  bool headEnded = false;
  bool discardRequest = false;  // the rest of the request is dropped as it comes
  bool grpc = false;
  Pipe request;
  bool headSent = false;   // the request's HEADERS went to the other side (an h2 stream)
  bool bodyTaken = false;  // and some of its body, or its end
  Fields upRequest;        // that HEADERS, kept while bound: a refused stream is sent again
  std::uint8_t resends = 0;
  // The answer.
  Fields upHead;
  std::size_t upHeadBytes = 0;
  bool upHeadDone = false;
  bool responseStarted = false;
  bool answeredLocally = false;
  unsigned status = 0;
  std::optional<unsigned> grpcStatus;
  Pipe response;
  std::uint64_t responseBytes = 0;
  // The other side: an HTTP/2 stream (bind()), or the listener's own exchange (h1).
  Session* upSession = nullptr;
  std::int32_t upId = 0;
  std::shared_ptr<ProxyStream> upHold;  // while that stream is open
  Http1Leg* h1 = nullptr;               // while the exchange runs
  bool cancelled = false;
  bool pendingCounted = false;
  bool finished = false;
  SteadyTimer wake;
  bool signalled = false;
  // Time.
  Clock::time_point start;
  Clock::time_point lastMove{};
  Clock::time_point headDeadline = Clock::time_point::max();  // the answer's head, by then
  Clock::time_point callDeadline = Clock::time_point::max();  // grpc-timeout
  double upstreamSeconds = -1;
  std::size_t slot = 0;  // the listener's own (the outbound route's metrics series)
  // Tracing, with --zipkin-url only: the stream's span (server inbound, client outbound).
  trace::Context span;
  bool spanShared = false;
};

class ProxyServer : public Session {
 public:
  using Clock = std::chrono::steady_clock;

  struct Limits {
    std::size_t maxHeadBytes = 64 * 1024;
    Duration headTimeout{30'000};  // the answer's head, from the request's dispatch
    // The request's own head, from its first HEADERS frame (CONTINUATIONs that never end).
    Duration requestHeadTimeout{10'000};
  };

  // How many times a request the other side refused (UpEnd::refused) is sent again: a burst sent
  // on a new connection before its SETTINGS came may be refused in part, and so may its resend on
  // another new connection.
  static constexpr std::uint8_t kMaxResends = 3;
  // The most of a request's body kept for sending it again (a stream's first window's worth): a
  // stream refused after more of its body went out fails.
  static constexpr std::size_t kKeptBody = 64 * 1024;

  ProxyServer(IoExecutor ex, const Settings& settings, const Limits& limits);
  // Streams still open (the worker stops mid-connection) are told before streams_ goes.
  ~ProxyServer() override;

  StreamEnd* streamOpened(std::int32_t id) override;
  bool idle() const { return streams_.empty(); }

  // The listener's hooks.
  virtual void dispatch(ProxyStream& s) = 0;  // the request's head is complete
  virtual void finish(ProxyStream& s) = 0;    // once, when the caller's stream closes
  virtual void countLocalReply(unsigned status) = 0;
  // How the other side's stream ended when it closed with nothing of the answer yet.
  enum class UpEnd : std::uint8_t {
    failed,   // some of the request may have been acted on
    notSent,  // its HEADERS never went out: the connection never came
    // REFUSED_STREAM (or a GOAWAY that left it out) before any of it was taken, or its HEADERS
    // still queued, on a connection that goes away...
    goneAway,
    // ... or from one that still takes streams (more streams than its SETTINGS allow were in
    // flight before they came, say): the same upstream may take it again.
    refused,
  };
  // Another try (resend(), or a new bind()), or our answer.
  virtual void upFailed(ProxyStream& s, UpEnd end);
  virtual void streamOpenedOrClosed(bool) {}  // true: a stream opened; false: one closed
  virtual void answerBegan(ProxyStream&) {}   // the other side's answer head went to the caller

  // What listeners call.
  // Sends the request on as a stream of up (head: its fields, pseudo-headers first); false
  // when up cannot take it.
  bool bind(ProxyStream& s, Session& up, Fields head);
  // Sends the request bound before again, as a new stream of up, after upFailed() said nothing
  // of it was taken; false when up cannot take it.
  bool resend(ProxyStream& s, Session& up);
  // Our answer (kLocalReplies' status and text, or body when given); a reset when the answer
  // has started. The request's body is dropped as it comes.
  void localReply(ProxyStream& s, unsigned status, std::string_view body = {});
  void startResponse(ProxyStream& s, Fields head, bool endStream);
  void cancelUpstream(ProxyStream& s);
  // Deadlines: the answer's head, grpc-timeout, a stream with nothing moving for 5 minutes.
  void sweep(Clock::time_point now);
  std::shared_ptr<ProxyStream> hold(ProxyStream& s) { return s.shared_from_this(); }
  const Limits& limits() const { return limits_; }

  // A stream's time runs from its dispatch: grpc-timeout shortens the answer's deadline.
  void startClock(ProxyStream& s);

 private:
  friend struct ProxyStream;
  void streamClosed(ProxyStream& s, std::uint32_t error);

  Limits limits_;
  std::unordered_map<std::int32_t, std::shared_ptr<ProxyStream>> streams_;
  IoExecutor ex_;
};

// An HTTP/1.1 answer's fields that mean nothing (or are forbidden) in HTTP/2 (RFC 9113 8.2.2).
bool connectionSpecific(std::string_view name);
// The request's :path, :authority and Host can be forwarded as a request line and Host.
bool requestTargetOk(const ProxyStream& s);

}  // namespace sidecar::h2
