// Prints the ALIVE members of a serverset as JSON lines; with --watch, then each change.
#include "app/resolve_cli.h"

#include <registry/resolver.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/program_options.hpp>
#include <iostream>
#include <map>
#include <set>

#include "core/config.h"

namespace po = boost::program_options;

namespace sidecar {

namespace {

std::string memberLine(const registry::ResolvedMember& m, const char* change) {
  boost::json::object o;
  if (change) {
    o["change"] = change;
  }
  o["member"] = m.name;
  o["host"] = m.endpoint.host;
  o["port"] = m.endpoint.port;
  if (m.shard) {
    o["shard"] = *m.shard;
  }
  return boost::json::serialize(o);
}

}  // namespace

int runResolveCommand(int argc, const char* const* argv) {
  po::options_description desc(
      "sidecar resolve: print the members of a Finagle serverset\n\n"
      "Usage: sidecar resolve zk2!host:port[,host:port]!/path[!endpoint] [--watch]\n"
      "       sidecar resolve zk2!host:port[,host:port]#host:port[,host:port]!/path[!endpoint]\n"
      "       sidecar resolve zk!host:port[,host:port]!/path[!endpoint]\n\n"
      "Prints one JSON line per ALIVE member ({\"member\",\"host\",\"port\",\"shard\"}); "
      "malformed members are\nskipped and named on stderr. With --watch, then prints each "
      "change as it happens\n(lines with \"change\":\"added\" or \"removed\") until interrupted. "
      "'#' joins ensembles: their\nmembers are printed as one set, named member_N@ensemble, each "
      "host:port once. zk! is Finagle's\nolder form, on one ensemble."
      "\n\nFlags");
  desc.add_options()("help,h", "print this help and exit")("watch",
                                                           "keep running and print changes")(
      "timeout", po::value<std::string>()->default_value("10s"),
      "give up when ZooKeeper cannot be read within this long (exit 1)")(
      "address", po::value<std::string>(), "the serverset");
  po::positional_options_description pos;
  pos.add("address", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
  } catch (const po::error& e) {
    std::cerr << "sidecar resolve: " << e.what() << " (see --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  if (!vm.count("address")) {
    std::cerr << "sidecar resolve: the serverset address is required (zk2!host:port!/path)\n";
    return 2;
  }
  auto text = vm["address"].as<std::string>();
  auto address = registry::parseResolveAddress(text);
  if (!address) {
    std::cerr << "sidecar resolve: '" << text
              << "' is not zk2!host:port[,host:port][#host:port[,host:port]...]!/path[!endpoint] "
                 "or zk!host:port[,host:port]!/path[!endpoint]\n";
    return 2;
  }
  auto timeout = parseDuration(vm["timeout"].as<std::string>());
  if (!timeout) {
    std::cerr << "sidecar resolve: --timeout: '" << vm["timeout"].as<std::string>()
              << "' is not a duration\n";
    return 2;
  }
  const bool watch = vm.count("watch") > 0;

  // stdout carries the member lines; the resolver's own log lines (a stale or incomplete
  // listing, ZooKeeper out of reach while watching) go to stderr. A one-shot listing says why
  // it failed in its last line, so it shows errors only.
  spdlog::set_default_logger(spdlog::stderr_color_mt("resolve"));
  spdlog::set_level(watch ? spdlog::level::info : spdlog::level::err);
  boost::asio::io_context ioc{1};
  boost::asio::steady_timer deadline(ioc);
  int exitCode = 0;
  bool first = true;
  std::map<std::string, registry::ResolvedMember> shown;
  std::set<std::string> reported;
  registry::ServersetResolver resolver(
      ioc, *address, std::chrono::milliseconds(10'000), [&](const registry::ServersetSnapshot& s) {
        // With several ensembles, the first set printed is the whole one: every ensemble listed.
        if (first && s.unlisted > 0) {
          return;
        }
        for (const auto& [name, why] : s.malformed) {
          if (reported.insert(name).second) {
            std::cerr << "skipped malformed member " << name << ": " << why << "\n";
          }
        }
        for (const auto& [name, m] : shown) {
          if (!s.members.count(name)) {
            std::cout << memberLine(m, "removed") << "\n";
          }
        }
        for (const auto& [name, m] : s.members) {
          if (!shown.count(name)) {
            std::cout << memberLine(m, first ? nullptr : "added") << "\n";
          }
        }
        std::cout.flush();
        shown = s.members;
        if (first && !watch) {
          ioc.stop();
        }
        first = false;
        deadline.cancel();
      });
  resolver.start();
  deadline.expires_after(*timeout);
  deadline.async_wait([&](const boost::system::error_code& ec) {
    if (!ec && first) {
      const auto why = resolver.unreachableReason();
      std::cerr << "sidecar resolve: no answer from ZooKeeper at " << resolver.unlisted()
                << " within " << timeout->count() << " ms"
                << (why.empty() ? std::string() : ": " + why) << "\n";
      exitCode = 1;
      ioc.stop();
    }
  });
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) { ioc.stop(); });
  ioc.run();
  return exitCode;
}

}  // namespace sidecar
