// pinghelp: the reference local service behind the sidecar.
#include <metrics/metrics.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/signal_set.hpp>
#include <boost/program_options.hpp>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <variant>

#include "app/command_line.h"
#include "app/pinghelp.h"
#include "app/pinghelp_grpc.h"
#include "app/pinghelp_thrift.h"

namespace po = boost::program_options;

namespace {

po::options_description pinghelpFlags() {
  po::options_description desc(
      "pinghelp: the reference local service (GET /ping, GET /help, GET /help/<method>; and\n"
      "ping(), help(), helpFor(name) over Thrift with --thrift-listen; pinghelp.PingHelp/Ping and\n"
      "/Help over gRPC with --grpc-listen)\n\n"
      "Usage: pinghelp [flags]\n\nFlags");
  desc.add_options()("help,h", "print this help and exit")("version", "print the version and exit")(
      "listen", po::value<std::string>()->default_value("127.0.0.1:8080"), "host:port to serve on")(
      "help-dir", po::value<std::string>()->default_value(PINGHELP_DEFAULT_HELP_DIR),
      "folder of *.json method descriptions (when not given and the default is not installed: "
      "the source tree's proto/help, for runs from the build tree)")(
      "idle-timeout", po::value<std::string>()->default_value("60s"),
      "close keep-alive connections idle this long (HTTP, Thrift and gRPC)")(
      "thrift-listen", po::value<std::string>(),
      "IP:port to serve ping(), help(), helpFor() on as framed, binary Thrift (off when not "
      "given)")(
      "grpc-listen", po::value<std::string>(),
      "IP:port to serve proto/pinghelp.proto's PingHelp and grpc.health.v1.Health on, as gRPC "
      "over h2c with prior knowledge (off when not given)");
  return desc;
}

struct Options {
  sidecar::HostPort listen;
  std::optional<sidecar::HostPort> thriftListen;
  std::optional<sidecar::HostPort> grpcListen;
  sidecar::Duration idle;
  sidecar::HelpCatalog catalog;
};

// --thrift-listen's or --grpc-listen's IP:port (not a host name: the servers bind it as it is).
std::variant<std::optional<sidecar::HostPort>, int> ipPortOf(const po::variables_map& vm,
                                                             const char* flag) {
  if (!vm.count(flag)) {
    return std::nullopt;
  }
  const auto& text = vm[flag].as<std::string>();
  auto ipPort = sidecar::parseHostPort(text);
  boost::system::error_code notAnAddress;
  if (ipPort) {
    boost::asio::ip::make_address(ipPort->host, notAnAddress);
  }
  if (!ipPort || notAnAddress) {
    std::cerr << "pinghelp: --" << flag << ": '" << text << "' is not IP:port\n";
    return 2;
  }
  return ipPort;
}

// The help files --help-dir names; when it is not given and the default is not installed, the
// build tree's own sources.
std::variant<sidecar::HelpCatalog, int> catalogOf(const po::variables_map& vm) {
  std::string helpDir = vm["help-dir"].as<std::string>();
  std::error_code fsError;
  if (vm["help-dir"].defaulted() && !std::filesystem::is_directory(helpDir, fsError) &&
      std::filesystem::is_directory(PINGHELP_SOURCE_HELP_DIR, fsError)) {
    helpDir = PINGHELP_SOURCE_HELP_DIR;
  }
  auto loaded = sidecar::loadHelpCatalog(helpDir);
  if (auto* error = std::get_if<std::string>(&loaded)) {
    std::cerr << "pinghelp: " << *error << "\n";
    return 2;
  }
  return std::get<sidecar::HelpCatalog>(std::move(loaded));
}

// The flags, checked, and the help files loaded; or the exit code when there is nothing to
// serve.
std::variant<Options, int> readOptions(int argc, const char* const* argv) {
  const auto desc = pinghelpFlags();
  po::variables_map vm;
  if (auto done = sidecar::parseCommandLine("pinghelp", argc, argv, desc, nullptr, vm)) {
    return *done;
  }
  if (vm.count("version")) {
    std::cout << "pinghelp " SIDECAR_VERSION "\n";  // the project's version, as sidecar's
    return 0;
  }
  auto listen = sidecar::parseHostPort(vm["listen"].as<std::string>());
  if (!listen) {
    std::cerr << "pinghelp: --listen: '" << vm["listen"].as<std::string>()
              << "' is not host:port\n";
    return 2;
  }
  auto thriftListen = ipPortOf(vm, "thrift-listen");
  if (const int* exitCode = std::get_if<int>(&thriftListen)) {
    return *exitCode;
  }
  auto grpcListen = ipPortOf(vm, "grpc-listen");
  if (const int* exitCode = std::get_if<int>(&grpcListen)) {
    return *exitCode;
  }
  auto idle = sidecar::parseDuration(vm["idle-timeout"].as<std::string>());
  if (!idle) {
    std::cerr << "pinghelp: --idle-timeout: '" << vm["idle-timeout"].as<std::string>()
              << "' is not a duration (use e.g. 250ms, 5s, 1m)\n";
    return 2;
  }
  auto catalog = catalogOf(vm);
  if (const int* exitCode = std::get_if<int>(&catalog)) {
    return *exitCode;
  }
  return Options{*listen, std::get<0>(thriftListen), std::get<0>(grpcListen), *idle,
                 std::get<sidecar::HelpCatalog>(std::move(catalog))};
}

// pinghelp_requests_total: requests by method of the service (ping, help, metrics, other) and
// status class; handles made once.
class RequestCounters {
 public:
  explicit RequestCounters(prometheus::Registry& registry) {
    auto& family = prometheus::BuildCounter()
                       .Name("pinghelp_requests_total")
                       .Help("Requests answered by pinghelp, by service method and status class.")
                       .Register(registry);
    for (const char* method : {"ping", "help", "metrics", "other"}) {
      for (unsigned cls = 1; cls <= 5; ++cls) {
        counters_[{method, cls}] =
            &family.Add({{"method", method}, {"code", std::to_string(cls) + "xx"}});
      }
    }
  }
  static const char* methodOf(std::string_view target) {
    target = target.substr(0, target.find('?'));
    if (target == "/ping") {
      return "ping";
    }
    if (target == "/help" || target.starts_with("/help/")) {
      return "help";
    }
    return target == "/metrics" ? "metrics" : "other";
  }
  void count(const char* method, unsigned status) {
    counters_[{method, std::clamp(status / 100, 1u, 5u)}]->Increment();
  }

 private:
  std::map<std::pair<std::string, unsigned>, prometheus::Counter*> counters_;
};

// The Thrift server on --thrift-listen, started; or the exit code when it cannot be.
std::variant<std::unique_ptr<sidecar::PinghelpThriftServer>, int> startThrift(Options& options) {
  auto server = std::make_unique<sidecar::PinghelpThriftServer>(
      sidecar::ThriftListenConfig{.address = options.thriftListen->host,
                                  .port = options.thriftListen->port,
                                  .idleTimeout = options.idle},
      std::make_shared<sidecar::PingHelpHandler>(sidecar::thriftMethodsOf(options.catalog)));
  if (auto error = server->start()) {
    std::cerr << "pinghelp: --thrift-listen " << options.thriftListen->str() << ": " << *error
              << "\n";
    return 2;
  }
  options.thriftListen->port = server->port();
  return server;
}

// The gRPC server on --grpc-listen, listening; or the exit code when it cannot be. Its calls are
// counted in pinghelp_grpc_requests_total: 4 methods by 17 statuses at most.
std::variant<std::unique_ptr<sidecar::PinghelpGrpcServer>, int> startGrpc(
    boost::asio::io_context& ioc, Options& options, prometheus::Registry& registry) {
  auto& family = prometheus::BuildCounter()
                     .Name("pinghelp_grpc_requests_total")
                     .Help("gRPC calls answered by pinghelp, by method and grpc-status.")
                     .Register(registry);
  auto& at = *options.grpcListen;
  sidecar::GrpcListenConfig config;
  config.endpoint = {boost::asio::ip::make_address(at.host), at.port};
  config.idleTimeout = options.idle;
  config.answered = [&family](const char* method, unsigned status) {
    family.Add({{"method", method}, {"grpc_status", std::to_string(status)}}).Increment();
  };
  auto server = std::make_unique<sidecar::PinghelpGrpcServer>(ioc, config, options.catalog);
  if (auto error = server->listen()) {
    std::cerr << "pinghelp: --grpc-listen " << at.str() << ": " << *error << "\n";
    return 2;
  }
  at.port = server->port();
  server->start();
  return server;
}

int serve(Options& options) {
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
  std::signal(SIGPIPE, SIG_IGN);
  auto registry = metrics::makeRegistry();
  RequestCounters counters(*registry);
  boost::asio::io_context ioc{1};
  sidecar::PlainHttpServer server(
      ioc,
      [&](const sidecar::PlainRequest& r) {
        const char* method = RequestCounters::methodOf(r.target());
        auto res = std::string_view(method) == "metrics"
                       ? sidecar::textResponse(r, boost::beast::http::status::ok,
                                               metrics::serializeText({registry.get()}),
                                               metrics::kTextContentType)
                       : sidecar::handlePinghelpRequest(r, options.catalog);
        counters.count(method, res.result_int());
        return res;
      },
      options.idle);
  const auto& listen = options.listen;
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(listen.host, ec);
  if (ec) {
    std::cerr << "pinghelp: --listen: '" << listen.host << "' is not an IP address\n";
    return 2;
  }
  try {
    server.listen({address, listen.port});
  } catch (const boost::system::system_error& e) {
    std::cerr << "pinghelp: --listen " << listen.str() << ": " << e.code().message() << "\n";
    return 2;
  }
  std::unique_ptr<sidecar::PinghelpThriftServer> thriftServer;
  if (options.thriftListen) {
    auto started = startThrift(options);
    if (const int* exitCode = std::get_if<int>(&started)) {
      return *exitCode;
    }
    thriftServer = std::get<0>(std::move(started));
  }
  std::unique_ptr<sidecar::PinghelpGrpcServer> grpcServer;
  if (options.grpcListen) {
    auto started = startGrpc(ioc, options, *registry);
    if (const int* exitCode = std::get_if<int>(&started)) {
      return *exitCode;
    }
    grpcServer = std::get<0>(std::move(started));
  }
  server.start();
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) { ioc.stop(); });
  spdlog::info(
      "event=started service=pinghelp listen={} thrift_listen={} grpc_listen={} methods={}",
      listen.str(), options.thriftListen ? options.thriftListen->str() : "off",
      options.grpcListen ? options.grpcListen->str() : "off", options.catalog.methodJson.size());
  ioc.run();
  if (grpcServer) {
    grpcServer->stop();  // unlike Thrift's, no call waits on a thread: nothing to finish
  }
  if (thriftServer) {
    thriftServer->stop();  // in-flight calls get their replies; then every connection closes
  }
  spdlog::info("event=stopped service=pinghelp");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return sidecar::runParsed(readOptions(argc, argv), serve); }
