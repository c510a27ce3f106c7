// pinghelp's Thrift side: the catalog as Thrift structs, the handler, and the threaded server.
#include "app/pinghelp_thrift.h"

#include <spdlog/spdlog.h>
#include <thrift/TOutput.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/server/TThreadedServer.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TServerSocket.h>
#include <thrift/transport/TTransportException.h>

#include <algorithm>
#include <atomic>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <climits>

namespace sidecar {

namespace json = boost::json;
namespace thrift = apache::thrift;

// A server socket that can be bound before serve() runs: TServerFramework::serve() calls
// listen() itself, on the serving thread, where a port in use could only be logged. Binding
// first on the starting thread lets pinghelp refuse to start with one line and exit 2, and
// makes port() known before anyone connects.
class ListeningServerSocket final : public thrift::transport::TServerSocket {
 public:
  using TServerSocket::TServerSocket;

  // thrift::transport::TServerTransport
  void listen() override {
    if (!listening_) {
      TServerSocket::listen();
      listening_ = true;
    }
  }

 private:
  bool listening_ = false;  // only touched before the serving thread starts, and then by it
};

namespace {

std::vector<pinghelp::MethodHelp> methodsOf(const json::array& methods) {
  std::vector<pinghelp::MethodHelp> out;
  out.reserve(methods.size());
  for (const auto& entry : methods) {
    const auto& obj = entry.as_object();
    pinghelp::MethodHelp m;
    m.name = obj.at("name").as_string();
    m.method = obj.at("method").as_string();
    m.path = obj.at("path").as_string();
    m.description = obj.at("description").as_string();
    if (const auto* response = obj.if_contains("response"); response && response->is_object()) {
      std::map<std::string, std::string> fields;
      for (const auto& [key, value] : response->as_object()) {
        fields[std::string(key)] =
            value.is_string() ? std::string(value.as_string()) : json::serialize(value);
      }
      m.__set_response(std::move(fields));
    }
    out.push_back(std::move(m));
  }
  return out;
}

// Apache Thrift reports through one global function; while start() binds, the reason travels in
// the exception instead, and the library's own lines about it would only repeat it.
std::atomic<bool> quietThriftLogs{false};

void logThrift(const char* message) {
  if (quietThriftLogs.load(std::memory_order_relaxed)) {
    return;
  }
  std::string text(message);
  std::replace(text.begin(), text.end(), '"', '\'');
  spdlog::warn("event=thrift_library message=\"{}\"", text);
}

}  // namespace

std::vector<pinghelp::MethodHelp> thriftMethodsOf(const HelpCatalog& catalog) {
  // The index, not the per-method map: it holds the methods in the order GET /help lists them.
  return methodsOf(json::parse(catalog.indexJson).at("methods").as_array());
}

PingHelpHandler::PingHelpHandler(std::vector<pinghelp::MethodHelp> methods)
    : methods_(std::move(methods)) {}

void PingHelpHandler::ping(std::string& out) { out = "pong"; }

void PingHelpHandler::help(std::vector<pinghelp::MethodHelp>& out) { out = methods_; }

void PingHelpHandler::helpFor(pinghelp::MethodHelp& out, const std::string& name) {
  auto it = std::find_if(methods_.begin(), methods_.end(),
                         [&](const pinghelp::MethodHelp& m) { return m.name == name; });
  if (it == methods_.end()) {
    pinghelp::UnknownMethod unknown;
    unknown.__set_name(name);
    throw unknown;
  }
  out = *it;
}

PinghelpThriftServer::PinghelpThriftServer(ThriftListenConfig config,
                                           std::shared_ptr<pinghelp::PingHelpIf> handler)
    : config_(std::move(config)), handler_(std::move(handler)) {}

PinghelpThriftServer::~PinghelpThriftServer() { stop(); }

std::optional<std::string> PinghelpThriftServer::start() {
  thrift::GlobalOutput.setOutputFunction(logThrift);
  socket_ = std::make_shared<ListeningServerSocket>(config_.address, config_.port);
  const int timeoutMs = static_cast<int>(
      std::clamp<std::chrono::milliseconds::rep>(config_.idleTimeout.count(), 1, INT_MAX));
  socket_->setRecvTimeout(timeoutMs);
  socket_->setSendTimeout(timeoutMs);
  quietThriftLogs = true;
  try {
    socket_->listen();
  } catch (const thrift::transport::TTransportException& e) {
    quietThriftLogs = false;
    return std::string(e.what());
  }
  quietThriftLogs = false;

  // TThreadedServer, a thread per connection with a bound on connections: pinghelp is a
  // reference service with three cheap methods, not a hot path. TNonblockingServer would need
  // libevent-dev as well (its header includes <event.h>; Debian's libthrift-dev does not depend
  // on it); TThreadPoolServer's fixed pool would let idle keep-alive clients starve the others,
  // where here each only holds its own thread, until --idle-timeout.
  auto processor = std::make_shared<pinghelp::PingHelpProcessor>(handler_);
  // Strict reads: a message must start with the 0x8001 version word, so that bytes which are
  // not a binary Thrift call are refused at once instead of being read as an old-style name.
  auto protocols = std::make_shared<thrift::protocol::TBinaryProtocolFactory>(
      /*string_limit=*/0, /*container_limit=*/0, /*strict_read=*/true, /*strict_write=*/true);
  // Framed: frames above TConfiguration's default (16,384,000 bytes, Apache Thrift's limit in
  // every language) close the connection before anything is allocated for them.
  auto framing = std::make_shared<thrift::transport::TFramedTransportFactory>();
  server_ =
      std::make_shared<thrift::server::TThreadedServer>(processor, socket_, framing, protocols);
  server_->setConcurrentClientLimit(config_.maxConnections);
  thread_ = std::thread([server = server_] {
    try {
      server->serve();
    } catch (const std::exception& e) {
      spdlog::error("event=thrift_server_failed error=\"{}\"", e.what());
    }
  });
  return std::nullopt;
}

uint16_t PinghelpThriftServer::port() const {
  return socket_ ? static_cast<uint16_t>(socket_->getPort()) : 0;
}

void PinghelpThriftServer::stop() {
  if (!thread_.joinable()) {
    return;
  }
  // Interrupts accept() and every connection's next read; serve() returns once each
  // connection's thread has ended (a call in progress still sends its reply).
  server_->stop();
  thread_.join();
}

}  // namespace sidecar
