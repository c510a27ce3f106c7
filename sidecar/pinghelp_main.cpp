// pinghelp: the reference local service behind the sidecar.
#include "pinghelp.h"

#include <boost/asio/signal_set.hpp>
#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <iostream>

namespace po = boost::program_options;

int main(int argc, char** argv) {
  po::options_description desc(
      "pinghelp: the reference local service (GET /ping, GET /help, GET /help/<method>)\n\n"
      "Usage: pinghelp [flags]\n\nFlags");
  desc.add_options()("help,h", "print this help and exit")(
      "listen", po::value<std::string>()->default_value("127.0.0.1:8080"), "host:port to serve on")(
      "help-dir", po::value<std::string>()->default_value(PINGHELP_DEFAULT_HELP_DIR),
      "folder of *.json method descriptions")(
      "idle-timeout", po::value<std::string>()->default_value("60s"),
      "close keep-alive connections idle this long");
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
  auto listen = sidecar::parseHostPort(vm["listen"].as<std::string>());
  if (!listen) {
    std::cerr << "pinghelp: --listen: '" << vm["listen"].as<std::string>() << "' is not host:port\n";
    return 2;
  }
  auto idle = sidecar::parseDuration(vm["idle-timeout"].as<std::string>());
  if (!idle) {
    std::cerr << "pinghelp: --idle-timeout: '" << vm["idle-timeout"].as<std::string>()
              << "' is not a duration (use e.g. 250ms, 5s, 1m)\n";
    return 2;
  }
  auto loaded = sidecar::loadHelpCatalog(vm["help-dir"].as<std::string>());
  if (auto* error = std::get_if<std::string>(&loaded)) {
    std::cerr << "pinghelp: " << *error << "\n";
    return 2;
  }
  const auto catalog = std::get<sidecar::HelpCatalog>(std::move(loaded));

  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
  std::signal(SIGPIPE, SIG_IGN);
  boost::asio::io_context ioc{1};
  sidecar::PlainHttpServer server(
      ioc, [&](const sidecar::PlainRequest& r) { return sidecar::handlePinghelpRequest(r, catalog); },
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
  server.start();
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) { ioc.stop(); });
  spdlog::info("event=started service=pinghelp listen={} methods={}", listen->str(),
               catalog.methodJson.size());
  ioc.run();
  spdlog::info("event=stopped service=pinghelp");
  return 0;
}
