// One HTTP/1.1 request under one deadline; the status decides the exit code. Kept apart from the
// proxy's code on purpose: a probe must work when everything else is suspect.
#include "app/probe.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/program_options.hpp>
#include <charconv>
#include <cstdlib>
#include <iostream>
#include <variant>

#include "app/command_line.h"
#include "core/config.h"

namespace po = boost::program_options;

namespace sidecar {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

std::optional<ProbeUrl> parseProbeUrl(std::string_view text) {
  constexpr std::string_view scheme = "http://";
  if (!text.starts_with(scheme)) {
    return std::nullopt;
  }
  text.remove_prefix(scheme.size());
  ProbeUrl url;
  const auto slash = text.find_first_of("/?");
  std::string_view authority = text.substr(0, slash);
  if (slash != std::string_view::npos) {
    url.target = text.substr(slash);
    if (url.target.front() == '?') {
      url.target.insert(0, "/");
    }
  }
  if (url.target.find_first_of(" \r\n") != std::string::npos) {
    return std::nullopt;
  }
  // What follows the host: empty, or ":port".
  std::string_view rest;
  if (authority.starts_with('[')) {  // [v6]:port
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      return std::nullopt;
    }
    url.host = authority.substr(1, close - 1);
    rest = authority.substr(close + 1);
  } else {
    const auto colon = authority.find(':');
    url.host = authority.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view{} : authority.substr(colon);
  }
  if (url.host.empty() || url.host.find_first_of("@[] ") != std::string::npos ||
      (!authority.starts_with('[') && url.host.find(':') != std::string::npos)) {
    return std::nullopt;
  }
  if (!rest.empty()) {
    const auto port = rest.substr(1);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (!rest.starts_with(':') || port.empty() || ec != std::errc{} ||
        end != port.data() + port.size() || value == 0 || value > 65535) {
      return std::nullopt;
    }
    url.port = static_cast<uint16_t>(value);
  }
  return url;
}

std::optional<ProbeUrl> adminHealthUrl(std::string_view adminListen) {
  auto hp = parseHostPort(adminListen);
  if (!hp || hp->port == 0) {
    return std::nullopt;
  }
  ProbeUrl url;
  url.host = hp->host == "0.0.0.0" ? "127.0.0.1" : hp->host == "::" ? "::1" : hp->host;
  url.port = hp->port;
  url.target = "/health";
  return url;
}

namespace {

constexpr auto useTuple = asio::as_tuple(asio::use_awaitable);

// The reason for a failed probe, or an empty string for a 2xx.
asio::awaitable<std::string> probeOnce(const ProbeUrl& url, http::verb method) {
  auto executor = co_await asio::this_coro::executor;
  asio::ip::tcp::resolver resolver(executor);
  auto [rec, endpoints] =
      co_await resolver.async_resolve(url.host, std::to_string(url.port), useTuple);
  if (rec) {
    co_return "cannot resolve " + url.host + ": " + rec.message();
  }
  beast::tcp_stream stream(executor);
  auto [cec, peer] = co_await stream.async_connect(endpoints, useTuple);
  if (cec) {
    co_return "cannot connect: " + cec.message();
  }
  http::request<http::empty_body> req{method, url.target, 11};
  const bool v6 = url.host.find(':') != std::string::npos;
  req.set(http::field::host,
          (v6 ? "[" + url.host + "]" : url.host) + ":" + std::to_string(url.port));
  req.set(http::field::user_agent, "sidecar-probe");
  req.keep_alive(false);
  if (method == http::verb::post) {
    req.content_length(0);
  }
  auto [wec, wn] = co_await http::async_write(stream, req, useTuple);
  if (wec) {
    co_return "cannot send the request: " + wec.message();
  }
  beast::flat_buffer buffer;
  http::response_parser<http::empty_body> res;
  auto [hec, hn] = co_await http::async_read_header(stream, buffer, res, useTuple);
  if (hec) {
    co_return "no answer: " + hec.message();
  }
  const auto status = res.get().result_int();
  if (status / 100 != 2) {
    co_return "answered " + std::to_string(status) + " " + std::string(res.get().reason());
  }
  co_return std::string{};
}

po::options_description probeFlags() {
  po::options_description desc(
      "sidecar probe: one HTTP/1.1 request, for health checks in images without curl\n\n"
      "Usage: sidecar probe [http://host[:port]/path] [--timeout 2s] [--method GET|POST]\n\n"
      "Exits 0 when the answer is 2xx; otherwise 1, with one line on stderr saying why (refused,\n"
      "timed out, the status). A bad argument exits 2. Plain HTTP only: point it at the admin\n"
      "listener (http://127.0.0.1:9990/health, /ready), not at the mTLS port. Without a URL it\n"
      "asks /health on the admin listener SIDECAR_ADMIN_LISTEN names (default 127.0.0.1:9990;\n"
      "0.0.0.0 and :: are asked on loopback), as the sidecar beside it reads it.\n\nFlags");
  desc.add_options()("help,h", "print this help and exit")(
      "timeout", po::value<std::string>()->default_value("2s"),
      "give up after this long, resolving and connecting included (exit 1)")(
      "method", po::value<std::string>()->default_value("GET"),
      "GET, HEAD or POST (POST sends an empty body: POST /quitquitquit)")(
      "url", po::value<std::string>(), "what to ask");
  return desc;
}

struct ProbeRequest {
  ProbeUrl url;
  std::string text;  // the URL as the failure lines name it
  Duration timeout;
  http::verb method;
};

// The URL given, else /health on the admin listener of the sidecar beside us; or the exit code
// once it is found bad.
std::variant<std::pair<ProbeUrl, std::string>, int> probeTarget(const po::variables_map& vm) {
  if (vm.count("url")) {
    auto text = vm["url"].as<std::string>();
    auto url = parseProbeUrl(text);
    if (!url) {
      std::cerr << "sidecar probe: '" << text << "' is not http://host[:port]/path\n";
      return 2;
    }
    return std::pair{std::move(*url), std::move(text)};
  }
  // The image's HEALTHCHECK: whatever admin address the container was given.
  const char* env = std::getenv("SIDECAR_ADMIN_LISTEN");
  const std::string admin = env ? env : "127.0.0.1:9990";
  auto url = adminHealthUrl(admin);
  if (!url) {
    std::cerr << "sidecar probe: SIDECAR_ADMIN_LISTEN: '" << admin
              << "' is not host:port with a port from 1 to 65535\n";
    return 2;
  }
  const bool v6 = url->host.find(':') != std::string::npos;
  auto text = "http://" + (v6 ? "[" + url->host + "]" : url->host) + ":" +
              std::to_string(url->port) + url->target;
  return std::pair{std::move(*url), std::move(text)};
}

// The probe the command line asks for, or the exit code when there is nothing to ask.
std::variant<ProbeRequest, int> readRequest(int argc, const char* const* argv) {
  const auto desc = probeFlags();
  po::variables_map vm;
  if (auto done = parseCommandLine("sidecar probe", argc, argv, desc, "url", vm)) {
    return *done;
  }
  auto target = probeTarget(vm);
  if (const int* exitCode = std::get_if<int>(&target)) {
    return *exitCode;
  }
  auto& [url, text] = std::get<0>(target);
  const auto timeoutText = vm["timeout"].as<std::string>();
  const auto timeout = parseDuration(timeoutText);
  if (!timeout) {
    std::cerr << "sidecar probe: --timeout: '" << timeoutText << "' is not a duration\n";
    return 2;
  }
  const auto methodText = vm["method"].as<std::string>();
  const auto method = http::string_to_verb(methodText);
  if (method != http::verb::get && method != http::verb::head && method != http::verb::post) {
    std::cerr << "sidecar probe: --method: '" << methodText << "' is not GET, HEAD or POST\n";
    return 2;
  }
  return ProbeRequest{std::move(url), std::move(text), *timeout, method};
}

int probe(const ProbeRequest& request) {
  asio::io_context ioc{1};
  std::optional<std::string> failure;
  asio::co_spawn(ioc, probeOnce(request.url, request.method),
                 [&](std::exception_ptr e, std::string why) {
                   failure = e ? std::string("failed") : std::move(why);
                 });
  // One deadline for everything, name resolution included: run_for stops waiting, and the
  // pending operations are dropped with the io_context.
  ioc.run_for(request.timeout);
  if (!failure) {
    std::cerr << "sidecar probe: " << request.text << ": no answer within "
              << request.timeout.count() << " ms\n";
    // Not a return: destroying the io_context joins Asio's resolver thread, which may sit in
    // getaddrinfo well past the deadline.
    std::_Exit(1);
  }
  if (!failure->empty()) {
    std::cerr << "sidecar probe: " << request.text << ": " << *failure << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int runProbeCommand(int argc, const char* const* argv) {
  return runParsed(readRequest(argc, argv), probe);
}

}  // namespace sidecar
