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

#include "app/pinghelp.h"
#include "app/pinghelp_thrift.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  po::options_description desc(
      "pinghelp: the reference local service (GET /ping, GET /help, GET /help/<method>; and\n"
      "ping(), help(), helpFor(name) over Thrift with --thrift-listen)\n\n"
      "Usage: pinghelp [flags]\n\nFlags");
  desc.add_options()("help,h", "print this help and exit")("version", "print the version and exit")(
      "listen", po::value<std::string>()->default_value("127.0.0.1:8080"), "host:port to serve on")(
      "help-dir", po::value<std::string>()->default_value(PINGHELP_DEFAULT_HELP_DIR),
      "folder of *.json method descriptions (when not given and the default is not installed: "
      "the source tree's proto/help, for runs from the build tree)")(
      "idle-timeout", po::value<std::string>()->default_value("60s"),
      "close keep-alive connections idle this long (HTTP and Thrift)")(
      "thrift-listen", po::value<std::string>(),
      "IP:port to serve ping(), help(), helpFor() on as framed, binary Thrift (off when not "
      "given)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "pinghelp: " << e.what() << " (see --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
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
  std::optional<sidecar::HostPort> thriftListen;
  if (vm.count("thrift-listen")) {
    const auto& text = vm["thrift-listen"].as<std::string>();
    thriftListen = sidecar::parseHostPort(text);
    boost::system::error_code notAnAddress;
    if (thriftListen) {
      boost::asio::ip::make_address(thriftListen->host, notAnAddress);
    }
    if (!thriftListen || notAnAddress) {
      std::cerr << "pinghelp: --thrift-listen: '" << text << "' is not IP:port\n";
      return 2;
    }
  }
  auto idle = sidecar::parseDuration(vm["idle-timeout"].as<std::string>());
  if (!idle) {
    std::cerr << "pinghelp: --idle-timeout: '" << vm["idle-timeout"].as<std::string>()
              << "' is not a duration (use e.g. 250ms, 5s, 1m)\n";
    return 2;
  }
  std::string helpDir = vm["help-dir"].as<std::string>();
  std::error_code fsError;
  if (vm["help-dir"].defaulted() && !std::filesystem::is_directory(helpDir, fsError) &&
      std::filesystem::is_directory(PINGHELP_SOURCE_HELP_DIR, fsError)) {
    helpDir = PINGHELP_SOURCE_HELP_DIR;  // not installed: the build tree's own sources
  }
  auto loaded = sidecar::loadHelpCatalog(helpDir);
  if (auto* error = std::get_if<std::string>(&loaded)) {
    std::cerr << "pinghelp: " << *error << "\n";
    return 2;
  }
  const auto catalog = std::get<sidecar::HelpCatalog>(std::move(loaded));

  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
  std::signal(SIGPIPE, SIG_IGN);
  // Requests by method of the service (ping, help, other) and status class; handles made once.
  auto registry = metrics::makeRegistry();
  auto& family = prometheus::BuildCounter()
                     .Name("pinghelp_requests_total")
                     .Help("Requests answered by pinghelp, by service method and status class.")
                     .Register(*registry);
  std::map<std::pair<std::string, unsigned>, prometheus::Counter*> counters;
  for (const char* method : {"ping", "help", "metrics", "other"}) {
    for (unsigned cls = 1; cls <= 5; ++cls) {
      counters[{method, cls}] =
          &family.Add({{"method", method}, {"code", std::to_string(cls) + "xx"}});
    }
  }
  auto methodOf = [](std::string_view target) -> const char* {
    target = target.substr(0, target.find('?'));
    if (target == "/ping") {
      return "ping";
    }
    if (target == "/help" || target.starts_with("/help/")) {
      return "help";
    }
    return target == "/metrics" ? "metrics" : "other";
  };
  boost::asio::io_context ioc{1};
  sidecar::PlainHttpServer server(
      ioc,
      [&](const sidecar::PlainRequest& r) {
        const char* method = methodOf(r.target());
        auto res = std::string_view(method) == "metrics"
                       ? sidecar::textResponse(r, boost::beast::http::status::ok,
                                               metrics::serializeText({registry.get()}),
                                               metrics::kTextContentType)
                       : sidecar::handlePinghelpRequest(r, catalog);
        unsigned cls = std::clamp(res.result_int() / 100, 1u, 5u);
        counters[{method, cls}]->Increment();
        return res;
      },
      *idle);
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(listen->host, ec);
  if (ec) {
    std::cerr << "pinghelp: --listen: '" << listen->host << "' is not an IP address\n";
    return 2;
  }
  try {
    server.listen({address, listen->port});
  } catch (const boost::system::system_error& e) {
    std::cerr << "pinghelp: --listen " << listen->str() << ": " << e.code().message() << "\n";
    return 2;
  }
  std::unique_ptr<sidecar::PinghelpThriftServer> thriftServer;
  if (thriftListen) {
    thriftServer = std::make_unique<sidecar::PinghelpThriftServer>(
        sidecar::ThriftListenConfig{
            .address = thriftListen->host, .port = thriftListen->port, .idleTimeout = *idle},
        std::make_shared<sidecar::PingHelpHandler>(sidecar::thriftMethodsOf(catalog)));
    if (auto error = thriftServer->start()) {
      std::cerr << "pinghelp: --thrift-listen " << thriftListen->str() << ": " << *error << "\n";
      return 2;
    }
    thriftListen->port = thriftServer->port();
  }
  server.start();
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) { ioc.stop(); });
  spdlog::info("event=started service=pinghelp listen={} thrift_listen={} methods={}",
               listen->str(), thriftListen ? thriftListen->str() : "off",
               catalog.methodJson.size());
  ioc.run();
  if (thriftServer) {
    thriftServer->stop();  // in-flight calls get their replies; then every connection closes
  }
  spdlog::info("event=stopped service=pinghelp");
  return 0;
}
