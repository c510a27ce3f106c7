// The Zipkin reporter: a queue the workers push sampled spans to, and one thread of its own that
// posts them as Zipkin v2 JSON, so that a collector that is slow, down or failing costs the data
// path nothing but the spans it drops.
#include "trace/tracer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <charconv>

#include "trace/zipkin_json.h"

namespace sidecar::trace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

TracerMetrics::TracerMetrics(prometheus::Registry& r) {
  auto& spans = prometheus::BuildCounter()
                    .Name("sidecar_trace_spans_total")
                    .Help(
                        "Sampled spans by what became of them: reported (the collector took "
                        "them), dropped_queue_full (more than the reporter's queue holds), "
                        "dropped_post_failed (the collector failed or did not answer in time).")
                    .Register(r);
  spansReported = &spans.Add({{"result", "reported"}});
  spansDroppedQueueFull = &spans.Add({{"result", "dropped_queue_full"}});
  spansDroppedPostFailed = &spans.Add({{"result", "dropped_post_failed"}});
  postFailures = &prometheus::BuildCounter()
                      .Name("sidecar_trace_post_failures_total")
                      .Help(
                          "Posts of spans to --zipkin-url that failed: no connection, a "
                          "timeout, or an answer other than 2xx.")
                      .Register(r)
                      .Add({});
  b3Malformed = &prometheus::BuildCounter()
                     .Name("sidecar_trace_b3_malformed_total")
                     .Help(
                         "Requests whose B3 trace headers could not be read; they were dropped, "
                         "not forwarded, and the request traced as if none came.")
                     .Register(r)
                     .Add({});
}

namespace {

// host, port and target of an http:// URL (checked when the flags were read).
struct Url {
  std::string host;
  std::string port = "80";
  std::string target = "/";
};

Url parseUrl(std::string_view url) {
  Url u;
  url.remove_prefix(std::string_view("http://").size());
  const auto slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  if (slash != std::string_view::npos) {
    u.target = std::string(url.substr(slash));
  }
  const auto colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos) {
    u.port = std::string(authority.substr(colon + 1));
    authority = authority.substr(0, colon);
  }
  if (authority.size() > 1 && authority.front() == '[' && authority.back() == ']') {
    authority = authority.substr(1, authority.size() - 2);
  }
  u.host = std::string(authority);
  return u;
}

double uniform() {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(gen);
}

}  // namespace

std::string tagValue(std::string_view value) { return std::string(value.substr(0, kMaxTagBytes)); }

Span makeSpan(Kind kind, const Context& context, std::string_view name, std::int64_t startUs,
              std::int64_t durationUs) {
  Span s;
  s.context = context;
  s.kind = kind;
  name = name.substr(0, 64);
  s.name.reserve(name.size());
  for (const char c : name) {
    s.name += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  s.timestampUs = startUs;
  s.durationUs = std::max<std::int64_t>(1, durationUs);
  return s;
}

Span httpSpan(Kind kind, const Context& context, std::string_view method, std::string_view target,
              unsigned status, std::int64_t startUs, std::int64_t durationUs) {
  Span s = makeSpan(kind, context, method, startUs, durationUs);
  s.tags.reserve(4);
  s.tags.emplace_back("http.method", tagValue(method));
  s.tags.emplace_back("http.path", tagValue(target.substr(0, target.find('?'))));
  if (status) {
    s.tags.emplace_back("http.status_code", std::to_string(status));
  }
  if (status == 0 || status >= 500) {
    s.tags.emplace_back("error", status ? std::to_string(status) : std::string("no answer"));
  }
  return s;
}

Tracer::Tracer(TracerConfig config, TracerMetrics& metrics)
    : config_(std::move(config)), metrics_(metrics) {
  queue_.reserve(config_.batchSize);
  thread_ = std::thread([this] { run(); });
}

Tracer::~Tracer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

bool Tracer::sampleNew() const {
  return config_.sampleRate >= 1.0 || (config_.sampleRate > 0.0 && uniform() < config_.sampleRate);
}

Context Tracer::join(const Context& in) const {
  if (!in.valid()) {
    // No ids came; a sampling decision may have (b3: 0, or X-B3-Flags: 1 alone).
    Context c = newTrace(in.debug || (in.sampled ? *in.sampled : sampleNew()));
    c.debug = in.debug;
    return c;
  }
  Context c = in;
  if (!c.sampled && !c.debug) {
    c.sampled = sampleNew();
  }
  return c;
}

void Tracer::report(Span span) {
  for (auto& [key, value] : span.tags) {
    if (value.size() > kMaxTagBytes) {
      value.resize(kMaxTagBytes);
    }
  }
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() >= config_.queueLimit) {
      metrics_.spansDroppedQueueFull->Increment();
      return;
    }
    queue_.push_back(std::move(span));
    wake = queue_.size() == config_.batchSize;
  }
  if (wake) {
    wake_.notify_one();
  }
}

void Tracer::run() {
  std::vector<Span> batch;
  batch.reserve(config_.batchSize);
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait_for(lock, config_.flushInterval,
                   [&] { return stopping_ || queue_.size() >= config_.batchSize; });
    const bool last = stopping_;
    batch.swap(queue_);
    lock.unlock();
    // Posted in batches of batchSize at most, so that one post stays small. After a failed
    // post the rest of the round is dropped and counted: a collector that is down or slow costs
    // one post timeout a round, not one a batch (nor the shutdown more than one).
    for (std::size_t from = 0; from < batch.size(); from += config_.batchSize) {
      const auto to = std::min(batch.size(), from + config_.batchSize);
      std::vector<Span> part(std::make_move_iterator(batch.begin() + from),
                             std::make_move_iterator(batch.begin() + to));
      if (!post(part)) {
        metrics_.spansDroppedPostFailed->Increment(static_cast<double>(batch.size() - to));
        break;
      }
    }
    batch.clear();
    lock.lock();
    if (last) {
      return;
    }
  }
}

bool Tracer::post(std::vector<Span>& batch) {
  if (batch.empty()) {
    return true;
  }
  const Url url = parseUrl(config_.zipkinUrl);
  const std::string body = encodeSpans(batch, config_.serviceName);
  const auto failed = [&](std::string_view why) {
    metrics_.postFailures->Increment();
    metrics_.spansDroppedPostFailed->Increment(static_cast<double>(batch.size()));
    static std::chrono::steady_clock::time_point lastLog{};
    const auto now = std::chrono::steady_clock::now();
    if (now - lastLog > std::chrono::seconds(10)) {  // one line per 10 s at most
      lastLog = now;
      spdlog::warn("event=zipkin_post_failed url={} spans={} reason=\"{}\"", config_.zipkinUrl,
                   batch.size(), why);
    }
  };
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  beast::error_code ec;
  asio::ip::tcp::resolver resolver(ioc);
  const auto addrs = resolver.resolve(url.host, url.port, ec);
  if (ec) {
    failed(ec.message());
    return false;
  }
  http::request<http::string_body> req{http::verb::post, url.target, 11};
  const bool v6 = url.host.find(':') != std::string::npos;
  req.set(http::field::host, (v6 ? "[" + url.host + "]" : url.host) + ":" + url.port);
  req.set(http::field::content_type, "application/json");
  req.set(http::field::connection, "close");
  req.body() = body;
  req.prepare_payload();
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  // One deadline for the whole post: a collector that hangs holds this thread, never a worker.
  stream.expires_after(config_.postTimeout);
  stream.async_connect(addrs, [&](beast::error_code e, const auto&) {
    if (e) {
      ec = e;
      return;
    }
    http::async_write(stream, req, [&](beast::error_code we, std::size_t) {
      if (we) {
        ec = we;
        return;
      }
      http::async_read(stream, buffer, res, [&](beast::error_code re, std::size_t) { ec = re; });
    });
  });
  ioc.run();
  if (ec) {
    failed(ec.message());
    return false;
  }
  if (res.result_int() / 100 != 2) {
    failed(fmt::format("status {}", res.result_int()));
    return false;
  }
  metrics_.spansReported->Increment(static_cast<double>(batch.size()));
  return true;
}

}  // namespace sidecar::trace
