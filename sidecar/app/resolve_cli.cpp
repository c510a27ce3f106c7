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
#include <variant>

#include "app/command_line.h"
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

po::options_description resolveFlags() {
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
  return desc;
}

struct ResolveRequest {
  registry::ServersetAddress address;
  Duration timeout;
  bool watch = false;
};

// The request the command line makes, or the exit code when there is nothing to resolve.
std::variant<ResolveRequest, int> readRequest(int argc, const char* const* argv) {
  const auto desc = resolveFlags();
  po::variables_map vm;
  if (auto done = parseCommandLine("sidecar resolve", argc, argv, desc, "address", vm)) {
    return *done;
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
  return ResolveRequest{std::move(*address), *timeout, vm.count("watch") > 0};
}

// Writes each listing as member lines: the first whole, then what changed; malformed members
// named on stderr once each.
class MemberPrinter {
 public:
  // False while s is not to be shown: with several ensembles, the first set printed is the whole
  // one, every ensemble listed.
  bool print(const registry::ServersetSnapshot& s) {
    if (first_ && s.unlisted > 0) {
      return false;
    }
    for (const auto& [name, why] : s.malformed) {
      if (reported_.insert(name).second) {
        std::cerr << "skipped malformed member " << name << ": " << why << "\n";
      }
    }
    for (const auto& [name, m] : shown_) {
      if (!s.members.count(name)) {
        std::cout << memberLine(m, "removed") << "\n";
      }
    }
    for (const auto& [name, m] : s.members) {
      if (!shown_.count(name)) {
        std::cout << memberLine(m, first_ ? nullptr : "added") << "\n";
      }
    }
    std::cout.flush();
    shown_ = s.members;
    first_ = false;
    return true;
  }
  // True until a listing was printed.
  bool waiting() const { return first_; }

 private:
  bool first_ = true;
  std::map<std::string, registry::ResolvedMember> shown_;
  std::set<std::string> reported_;
};

int resolve(const ResolveRequest& request) {
  // stdout carries the member lines; the resolver's own log lines (a stale or incomplete
  // listing, ZooKeeper out of reach while watching) go to stderr. A one-shot listing says why
  // it failed in its last line, so it shows errors only.
  spdlog::set_default_logger(spdlog::stderr_color_mt("resolve"));
  spdlog::set_level(request.watch ? spdlog::level::info : spdlog::level::err);
  boost::asio::io_context ioc{1};
  boost::asio::steady_timer deadline(ioc);
  int exitCode = 0;
  MemberPrinter printer;
  registry::ServersetResolver resolver(ioc, request.address, std::chrono::milliseconds(10'000),
                                       [&](const registry::ServersetSnapshot& s) {
                                         const bool wasFirst = printer.waiting();
                                         if (!printer.print(s)) {
                                           return;
                                         }
                                         if (wasFirst && !request.watch) {
                                           ioc.stop();
                                         }
                                         deadline.cancel();
                                       });
  resolver.start();
  deadline.expires_after(request.timeout);
  deadline.async_wait([&](const boost::system::error_code& ec) {
    if (!ec && printer.waiting()) {
      const auto why = resolver.unreachableReason();
      std::cerr << "sidecar resolve: no answer from ZooKeeper at " << resolver.unlisted()
                << " within " << request.timeout.count() << " ms"
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

}  // namespace

int runResolveCommand(int argc, const char* const* argv) {
  return runParsed(readRequest(argc, argv), resolve);
}

}  // namespace sidecar
