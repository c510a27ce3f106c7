// pinghelp's gRPC side: the calls answered from the catalog, and the h2c server around them.
#include "app/pinghelp_grpc.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <cstring>
#include <map>
#include <unordered_set>

#include "h2/grpc.h"
#include "h2/grpc_frame.h"
#include "h2/session.h"
#include "net/deadline_socket.h"

namespace sidecar {

namespace {

// gRPC status codes we answer with.
constexpr unsigned kOk = 0;
constexpr unsigned kInvalidArgument = 3;
constexpr unsigned kNotFound = 5;
constexpr unsigned kResourceExhausted = 8;
constexpr unsigned kUnimplemented = 12;
constexpr unsigned kInternal = 13;

// Field 1, a string, of a request message (HelpRequest.method, HealthCheckRequest.service);
// empty when absent. Other fields are skipped, as protobuf's own parsers do for unknown fields.
std::optional<std::string> stringField1(std::string_view payload, GrpcAnswer& error) {
  h2::ProtoReader reader(payload);
  h2::ProtoReader::Field f;
  std::string value;
  while (reader.next(f)) {
    if (f.number != 1) {
      continue;
    }
    if (f.wireType != 2) {
      error = {kInternal, "field 1 is not length-delimited", {}};
      return std::nullopt;
    }
    value = f.bytes;  // a repeated non-repeated field: the last one wins, as in protobuf
  }
  if (reader.failed()) {
    error = {kInternal, "malformed protobuf message", {}};
    return std::nullopt;
  }
  if (!h2::validUtf8(value)) {
    error = {kInvalidArgument, "field 1 is not UTF-8", {}};
    return std::nullopt;
  }
  return value;
}

GrpcAnswer replyWith(std::uint32_t field, std::string_view text) {
  GrpcAnswer a;
  h2::protoString(a.reply, field, text);
  return a;
}

}  // namespace

const char* grpcMethodLabel(std::string_view path) {
  if (path == "/pinghelp.PingHelp/Ping") {
    return "ping";
  }
  if (path == "/pinghelp.PingHelp/Help") {
    return "help";
  }
  return path == "/grpc.health.v1.Health/Check" ? "check" : "other";
}

GrpcAnswer answerPinghelpCall(std::string_view path, std::string_view body,
                              const HelpCatalog& catalog) {
  const bool ping = path == "/pinghelp.PingHelp/Ping";
  const bool help = path == "/pinghelp.PingHelp/Help";
  const bool health = path == "/grpc.health.v1.Health/Check";
  if (!ping && !help && !health) {
    return {kUnimplemented, "unknown method " + std::string(path), {}};
  }
  const auto message = h2::unaryMessage(body);
  switch (message.error) {
    case h2::MessageError::none:
      break;
    case h2::MessageError::compressed:
      return {kUnimplemented, "compressed messages are not supported", {}};
    case h2::MessageError::empty:
      return {kInternal, "a unary call needs one request message", {}};
    default:
      return {kInternal, "malformed gRPC message framing", {}};
  }
  GrpcAnswer error;
  const auto name = stringField1(message.payload, error);
  if (!name) {
    return error;
  }
  if (ping) {
    return replyWith(1, "pong");  // PingReply.message; PingRequest's fields are ignored
  }
  if (health) {
    if (!name->empty() && *name != "pinghelp.PingHelp") {
      return {kNotFound, "unknown service", {}};  // as grpc.health.v1 says
    }
    GrpcAnswer a;
    h2::protoVarintField(a.reply, 1, 1);  // HealthCheckResponse.status = SERVING
    return a;
  }
  if (name->empty()) {
    return replyWith(1, catalog.indexJson);  // HelpReply.json, as GET /help
  }
  const auto it = catalog.methodJson.find(*name);
  if (it == catalog.methodJson.end()) {
    return {kNotFound, "no method named " + *name, {}};
  }
  return replyWith(1, it->second);
}

// ---- the server ------------------------------------------------------------------------------

// Named, not anonymous: PinghelpGrpcServer::Impl (of a class with linkage) holds them.
namespace grpc_server {

using Clock = std::chrono::steady_clock;

class GrpcConnection;

// One call: its request gathered, then its answer (head, one message, trailers).
struct GrpcCall final : h2::StreamEnd {
  GrpcCall(GrpcConnection& conn, std::int32_t streamId) : c(conn), id(streamId) {}

  void header(std::string_view name, std::string_view value) override {
    if (headEnded) {
      return;  // the request's trailers say nothing a unary call needs
    }
    if (name == ":method") {
      method = value;
    } else if (name == ":path") {
      path = value;
    } else if (name == "content-type") {
      contentType = value;
    }
  }
  void headersEnd(bool endStream) override;
  void data(const std::uint8_t* p, std::size_t n) override;
  void dataEnd() override;
  void closed(std::uint32_t) override;
  ssize_t readBody(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) override;
  // Answered: nothing more of the request is read (the caller is asked to stop sending it).
  bool answerEnded() override { return true; }

  GrpcConnection& c;
  std::int32_t id;
  Clock::time_point opened = Clock::now();
  std::string method, path, contentType, body;
  bool headEnded = false;
  bool answered = false;
  std::string reply;  // the framed reply message
  std::size_t replySent = 0;
};

}  // namespace grpc_server

using grpc_server::GrpcConnection;

class PinghelpGrpcServer::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::io_context& ioc, GrpcListenConfig config, const HelpCatalog& catalog)
      : ioc_(ioc), config_(config), catalog_(catalog), acceptor_(ioc), sweep_(ioc) {}

  awaitable<void> accept();
  awaitable<void> sweep();
  void stop();

  asio::io_context& ioc_;
  GrpcListenConfig config_;
  const HelpCatalog& catalog_;
  TcpAcceptor acceptor_;
  SteadyTimer sweep_;
  std::unordered_set<std::shared_ptr<GrpcConnection>> conns_;
  bool stopped_ = false;
};

namespace grpc_server {

class GrpcConnection final : public h2::Session,
                             public std::enable_shared_from_this<GrpcConnection> {
 public:
  GrpcConnection(PinghelpGrpcServer::Impl& server, TcpSocket socket)
      : h2::Session(Role::server, server.ioc_.get_executor(), h2::Settings{}),
        server_(&server),
        socket_(std::move(socket)) {}
  // Calls still open are told before calls_ goes (Session's destructor comes after).
  ~GrpcConnection() override { closeAll(); }

  h2::StreamEnd* streamOpened(std::int32_t id) override {
    auto& call = calls_[id];
    call = std::make_unique<GrpcCall>(*this, id);
    return call.get();
  }

  awaitable<void> serve() {
    auto self = shared_from_this();
    const auto idle = server_->config_.idleTimeout;
    co_await Session::run(socket_, idle, idle);
    error_code ignored;
    socket_.socket().close(ignored);
    if (server_) {
      server_->conns_.erase(self);
    }
  }

  // The sweep: the socket's deadlines, and calls whose request never ended.
  void sweep(Clock::time_point now) {
    socket_.expireIfDue(now);
    for (auto& [id, call] : calls_) {
      if (!call->answered && now - call->opened > server_->config_.idleTimeout) {
        call->answered = true;
        reset(id, NGHTTP2_CANCEL);
      }
    }
  }
  void close() {
    server_ = nullptr;
    error_code ignored;
    socket_.socket().close(ignored);
  }

  void answer(GrpcCall& call);
  void answerHttp(GrpcCall& call, const char* status) {
    call.answered = true;
    respond(call.id, {{":status", status}}, false);
  }
  void answerStatus(GrpcCall& call, unsigned status, std::string_view message) {
    call.answered = true;
    count(call, status);
    // Trailers-Only: the status in the one HEADERS frame that ends the stream.
    respond(call.id,
            {{":status", "200"},
             {"content-type", "application/grpc"},
             {"grpc-status", std::to_string(status)},
             {"grpc-message", h2::grpcMessageText(message)}},
            false);
  }
  void count(const GrpcCall& call, unsigned status) {
    if (server_ && server_->config_.answered) {
      server_->config_.answered(grpcMethodLabel(call.path), status);
    }
  }
  std::size_t maxRequest() const { return server_ ? server_->config_.maxRequest : 0; }
  void forget(std::int32_t id) { calls_.erase(id); }

 private:
  PinghelpGrpcServer::Impl* server_;  // none once the server stopped
  DeadlineSocket socket_;
  std::map<std::int32_t, std::unique_ptr<GrpcCall>> calls_;
};

void GrpcCall::headersEnd(bool endStream) {
  if (!headEnded) {
    headEnded = true;
    if (method != "POST") {
      c.answerHttp(*this, "405");
    } else if (!h2::isGrpc(contentType)) {
      c.answerHttp(*this, "415");  // gRPC's protocol: not gRPC, not answered as gRPC
    }
  }
  if (endStream) {
    c.answer(*this);  // the request's end (its head alone, or its trailers)
  }
}

void GrpcCall::data(const std::uint8_t* p, std::size_t n) {
  c.consume(id, n);  // held here, not in the window: the bound below is ours
  if (answered) {
    return;
  }
  if (body.size() + n > c.maxRequest() + 5) {
    c.answerStatus(*this, kResourceExhausted, "request message too large");
    return;
  }
  body.append(reinterpret_cast<const char*>(p), n);
}

void GrpcCall::dataEnd() { c.answer(*this); }

void GrpcCall::closed(std::uint32_t) { c.forget(id); }  // last: this call is gone after

ssize_t GrpcCall::readBody(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) {
  const std::size_t n = std::min(length, reply.size() - replySent);
  std::memcpy(buf, reply.data() + replySent, n);
  replySent += n;
  if (replySent == reply.size()) {
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    c.trailers(id, {{"grpc-status", "0"}});
  }
  return static_cast<ssize_t>(n);
}

void GrpcConnection::answer(GrpcCall& call) {
  if (call.answered || !server_) {
    return;
  }
  auto a = answerPinghelpCall(call.path, call.body, server_->catalog_);
  call.body.clear();
  if (a.status != kOk) {
    answerStatus(call, a.status, a.message);
    return;
  }
  call.answered = true;
  count(call, kOk);
  call.reply = h2::grpcMessage(a.reply);
  respond(call.id, {{":status", "200"}, {"content-type", "application/grpc"}}, true);
}

}  // namespace grpc_server

awaitable<void> PinghelpGrpcServer::Impl::accept() {
  auto self = shared_from_this();
  while (!stopped_) {
    auto [ec, socket] = co_await acceptor_.async_accept(useTuple);
    if (stopped_) {
      break;
    }
    if (ec) {
      // Out of descriptors, say: a moment, rather than a loop that spins.
      SteadyTimer pause(ioc_);
      pause.expires_after(std::chrono::milliseconds(50));
      co_await pause.async_wait(useTuple);
      continue;
    }
    if (conns_.size() >= config_.maxConnections) {
      spdlog::warn("event=grpc_connection_refused reason=max_connections");
      continue;  // the socket closes as it goes
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto conn = std::make_shared<GrpcConnection>(*this, std::move(socket));
    conns_.insert(conn);
    asio::co_spawn(ioc_, conn->serve(), asio::detached);
  }
}

awaitable<void> PinghelpGrpcServer::Impl::sweep() {
  auto self = shared_from_this();
  while (!stopped_) {
    sweep_.expires_after(std::chrono::milliseconds(250));
    co_await sweep_.async_wait(useTuple);
    const auto now = std::chrono::steady_clock::now();
    // A copy: a sweep may end a connection, which leaves the set.
    const auto conns = conns_;
    for (const auto& c : conns) {
      c->sweep(now);
    }
  }
}

void PinghelpGrpcServer::Impl::stop() {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  sweep_.cancel();
  for (const auto& c : conns_) {
    c->close();
  }
  conns_.clear();
}

PinghelpGrpcServer::PinghelpGrpcServer(asio::io_context& ioc, GrpcListenConfig config,
                                       const HelpCatalog& catalog)
    : impl_(std::make_shared<Impl>(ioc, config, catalog)) {}

PinghelpGrpcServer::~PinghelpGrpcServer() { stop(); }

std::optional<std::string> PinghelpGrpcServer::listen() {
  error_code ec;
  auto& a = impl_->acceptor_;
  a.open(impl_->config_.endpoint.protocol(), ec);
  if (!ec) {
    a.set_option(tcp::acceptor::reuse_address(true), ec);
  }
  if (!ec) {
    a.bind(impl_->config_.endpoint, ec);
  }
  if (!ec) {
    a.listen(asio::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return ec.message();
  }
  return std::nullopt;
}

std::uint16_t PinghelpGrpcServer::port() const {
  error_code ec;
  return impl_->acceptor_.local_endpoint(ec).port();
}

void PinghelpGrpcServer::start() {
  asio::co_spawn(impl_->ioc_, impl_->accept(), asio::detached);
  asio::co_spawn(impl_->ioc_, impl_->sweep(), asio::detached);
}

void PinghelpGrpcServer::stop() { impl_->stop(); }

}  // namespace sidecar
