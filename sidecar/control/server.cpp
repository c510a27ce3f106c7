// Wires workers, the admin server, signals, TLS reloads and the graceful drain together.
#include "control/server.h"

#include "control/admin.h"
#include "control/health.h"
#include "http/plain_server.h"
#include "inbound/proxy.h"
#include "net/tls_context.h"

#include <metrics/metrics.h>
#include <registry/announcer.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <spdlog/async.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <array>
#include <csignal>
#include <iostream>

namespace sidecar {

namespace {

// Raises the descriptor limit to its hard ceiling (as HAProxy does) and turns --max-connections 0
// into half of it: every connection may hold a second descriptor toward the local service.
std::size_t resolveMaxConnections(std::size_t asked) {
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    rlimit raised = nofile;
    raised.rlim_cur = nofile.rlim_max == RLIM_INFINITY ? 1'048'576 : nofile.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      nofile = raised;
    }
  }
  const std::size_t fds = nofile.rlim_cur == RLIM_INFINITY ? 1'048'576 : nofile.rlim_cur;
  const std::size_t fit = fds > 128 ? (fds - 64) / 2 : 32;
  if (asked == 0) {
    return fit;
  }
  if (asked > fit) {
    spdlog::warn("event=limit_too_high max_connections={} descriptor_limit={} reason=\"each "
                 "connection may need two descriptors; expect accept failures past {}\"",
                 asked, fds, fit);
  }
  return asked;
}

// A private key anyone on the host can read is one the host's other users can steal.
void warnIfReadableByOthers(const std::string& keyFile) {
  struct stat st {};
  if (::stat(keyFile.c_str(), &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH))) {
    spdlog::warn("event=key_file_permissions file={} mode={:o} reason=\"readable by other users; "
                 "chmod 600 (or 640 with a dedicated group)\"",
                 keyFile, st.st_mode & 0777);
  }
}

// Admin connections open at once. Its users are a few probes and scrapers; the bound keeps a
// client that opens connections without end from taking the descriptors callers need, and fits
// (with the process's own ~20) in the 64 descriptors --max-connections 0 leaves aside. At the
// bound the connection waiting longest for a request is closed, so that a prober still gets in.
constexpr std::size_t kAdminMaxConnections = 32;
constexpr Duration kAdminIdleTimeout{30'000};

// The workers bind --listen with SO_REUSEPORT, which the kernel grants just as well to another
// process of the same user: a second sidecar started by mistake would silently take a share of
// the traffic. A socket bound without SO_REUSEPORT conflicts with any socket bound there, so
// binding one first tells whether someone else holds the address. It is closed before the
// workers bind. SO_REUSEADDR keeps a predecessor's TIME_WAIT connections from counting.
boost::system::error_code probeUnshared(asio::io_context& ioc, const tcp::endpoint& endpoint) {
  boost::system::error_code ec;
  if (endpoint.port() == 0) {
    return ec;  // the kernel picks a free port
  }
  tcp::acceptor probe(ioc);
  probe.open(endpoint.protocol(), ec);
  if (!ec) {
    probe.set_option(tcp::acceptor::reuse_address(true), ec);
  }
  if (!ec) {
    probe.bind(endpoint, ec);
  }
  return ec;
}

using Clock = std::chrono::system_clock;

struct FileStamp {
  ino_t inode = 0;
  long long mtimeNs = 0;
  off_t size = 0;
  bool operator==(const FileStamp&) const = default;
};

FileStamp stampOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return {};
  }
  return {st.st_ino, st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec, st.st_size};
}

std::optional<tcp::endpoint> resolveOne(asio::io_context& ioc, const HostPort& hp) {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(hp.host, ec);
  if (!ec) {
    return tcp::endpoint(address, hp.port);
  }
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(hp.host, std::to_string(hp.port), ec);
  if (ec || results.empty()) {
    return std::nullopt;
  }
  return results.begin()->endpoint();
}

// The first address of an interface that is up and not loopback, IPv4 preferred.
std::string primaryAddress() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return "127.0.0.1";
  }
  std::string v4, v6;
  for (auto* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) {
      continue;
    }
    char buf[INET6_ADDRSTRLEN] = {};
    if (i->ifa_addr->sa_family == AF_INET && v4.empty()) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof(buf));
      v4 = buf;
    } else if (i->ifa_addr->sa_family == AF_INET6 && v6.empty()) {
      auto* a6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
      if (!IN6_IS_ADDR_LINKLOCAL(&a6->sin6_addr)) {
        inet_ntop(AF_INET6, &a6->sin6_addr, buf, sizeof(buf));
        v6 = buf;
      }
    }
  }
  freeifaddrs(list);
  return !v4.empty() ? v4 : !v6.empty() ? v6 : "127.0.0.1";
}

class Server {
 public:
  explicit Server(const SidecarConfig& config)
      : config_(config),
        registry_(metrics::makeRegistry()),
        metrics_(*registry_, config.workers),
        announcerMetrics_(*registry_),
        signals_(control_, SIGINT, SIGTERM, SIGHUP),
        reloadTimer_(control_),
        drainTimer_(control_),
        graceTimer_(control_),
        abortTimer_(control_),
        admin_(control_, [this](const PlainRequest& r) { return handleAdminRequest(r, hooks()); },
               adminOptions()) {}

  int run() {
    auto tls = makeServerTlsContext(tlsFiles());
    if (auto* error = std::get_if<std::string>(&tls)) {
      std::cerr << "sidecar: " << *error << "\n";
      return 2;
    }
    auto& ctx = std::get<TlsContext>(tls);
    metrics_.certNotAfter->Set(static_cast<double>(ctx.certNotAfter));
    stamps_ = currentStamps();

    auto upstream = resolveOne(control_, config_.upstream);
    if (!upstream) {
      std::cerr << "sidecar: --upstream: cannot resolve '" << config_.upstream.host << "'\n";
      return 2;
    }
    auto listen = resolveOne(control_, config_.listen);
    auto adminListen = resolveOne(control_, config_.adminListen);
    if (!listen || !adminListen) {
      std::cerr << "sidecar: " << (listen ? "--admin-listen" : "--listen") << ": cannot resolve '"
                << (listen ? config_.adminListen.host : config_.listen.host) << "'\n";
      return 2;
    }
    std::shared_ptr<spdlog::logger> accessLog;
    if (!config_.accessLog.empty()) {
      try {
        accessLog = makeAccessLog(config_.accessLog);
      } catch (const std::exception& e) {
        std::cerr << "sidecar: --access-log '" << config_.accessLog << "': " << e.what() << "\n";
        return 2;
      }
    }
    warnIfReadableByOthers(config_.tlsKey);
    ProxyLimits limits = config_.limits;
    limits.maxConnections = resolveMaxConnections(limits.maxConnections);
    shared_.emplace(ProxyShared{limits, IdentityAllowList(config_.allowIdentities), *upstream,
                                &metrics_, accessLog, std::make_unique<ConnectionCount>(),
                                config_.upstream.str()});

    if (auto ec = probeUnshared(control_, *listen)) {
      std::cerr << "sidecar: --listen " << config_.listen.str() << ": " << ec.message() << "\n";
      return 2;
    }
    try {
      tcp::endpoint bound = *listen;
      for (unsigned i = 0; i < config_.workers; ++i) {
        workers_.push_back(std::make_unique<Worker>(*shared_, i, config_.workers));
        workers_.back()->listen(bound);
        bound = workers_.back()->localEndpoint();  // port 0 becomes the port the first one got
      }
    } catch (const boost::system::system_error& e) {
      std::cerr << "sidecar: --listen " << config_.listen.str() << ": " << e.code().message()
                << "\n";
      return 2;
    }
    try {
      admin_.listen(*adminListen);
    } catch (const boost::system::system_error& e) {
      std::cerr << "sidecar: --admin-listen " << config_.adminListen.str() << ": "
                << e.code().message() << "\n";
      return 2;
    }

    for (auto& w : workers_) {
      w->start(ctx.ssl);
    }
    admin_.start();
    if (config_.announce) {
      startAnnouncing(*config_.announce, *upstream, workers_.front()->localEndpoint().port(),
                      admin_.localEndpoint().port());
    }
    waitForSignal();
    scheduleReloadCheck();
    started_ = Clock::now();
    ready_ = true;
    spdlog::info("event=started listen={} admin={} upstream={} workers={} version={}",
                 endpointText(workers_.front()->localEndpoint()),
                 endpointText(admin_.localEndpoint()), endpointText(*upstream), workers_.size(),
                 SIDECAR_VERSION);
    control_.run();
    for (auto& w : workers_) {
      w->stop();
    }
    spdlog::info("event=stopped");
    return 0;
  }

 private:
  static std::string endpointText(const tcp::endpoint& e) {
    return HostPort{e.address().to_string(), e.port()}.str();
  }

  std::array<FileStamp, 3> currentStamps() const {
    return {stampOf(config_.tlsCert), stampOf(config_.tlsKey), stampOf(config_.tlsClientCa)};
  }

  PlainHttpServer::Options adminOptions() {
    return PlainHttpServer::Options{
        .idleTimeout = kAdminIdleTimeout,
        .maxConnections = kAdminMaxConnections,
        .name = "admin",
        .openChanged = [this](std::size_t open) {
          metrics_.adminConnectionsOpen->Set(static_cast<double>(open));
        },
        .refused = [this] { metrics_.adminConnectionsRefused->Increment(); },
        .evicted = [this] { metrics_.adminConnectionsEvicted->Increment(); },
    };
  }

  TlsFiles tlsFiles() const { return {config_.tlsCert, config_.tlsKey, config_.tlsClientCa}; }

  AdminHooks hooks() {
    return AdminHooks{
        .ready = [this] { return ready_ && !draining_ && (!announcer_ || announcer_->announced()); },
        .draining = [this] { return draining_; },
        .quit = [this](std::optional<Duration> grace) {
          asio::post(control_, [this, grace] { beginShutdown("quitquitquit", grace); });
        },
        .abort =
            [this] {
              spdlog::warn("event=abort source=abortabortabort");
              abortTimer_.expires_after(std::chrono::milliseconds(50));
              abortTimer_.async_wait([](auto) { std::_Exit(1); });
            },
        .metricsText =
            [this] { return metrics::serializeText({registry_.get(), &metrics_.collector}); },
        .metricsJson = [this] { return finagleMetricsJson(); },
        .serverInfoJson = [this] { return serverInfo(); },
        .announcerJson =
            [this] {
              return announcer_ ? announcer_->statusJson() : std::string("{\"enabled\":false}\n");
            },
    };
  }

  void startAnnouncing(const AnnounceConfig& a, const tcp::endpoint& upstream, uint16_t port,
                       uint16_t adminPort) {
    registry::ServiceInstance instance;
    const std::string host = a.advertiseHost.empty() ? primaryAddress() : a.advertiseHost;
    instance.serviceEndpoint = {host, port};
    instance.additionalEndpoints.emplace_back("admin", registry::Endpoint{host, adminPort});
    if (!a.endpointName.empty() && a.endpointName != "admin") {
      instance.additionalEndpoints.emplace_back(a.endpointName, registry::Endpoint{host, port});
    }
    instance.shard = a.shard;
    auto& m = announcerMetrics_;
    announcer_ = std::make_unique<registry::Announcer>(
        control_,
        registry::AnnouncerConfig{a.zkConnect, a.zkPath, a.zkSessionTimeout, a.zkDigest, instance},
        registry::AnnouncerEvents{
            .announced = [&m] { m.announcements->Increment(); m.announced->Set(1); },
            .reannounced = [&m] { m.reannouncements->Increment(); },
            .withdrawn = [&m] { m.withdrawals->Increment(); m.announced->Set(0); },
            .sessionState =
                [&m](registry::ZkState s) {
                  m.sessionConnected->Set(s == registry::ZkState::Connected ? 1 : 0);
                  if (s == registry::ZkState::Expired) {
                    m.announced->Set(0);
                  }
                },
        });
    announcer_->start();
    health_ = std::make_unique<HealthChecker>(
        control_, HealthChecker::Options{upstream, a.healthPath, a.healthInterval, a.rise, a.fall},
        [this](bool healthy) { announcer_->setHealthy(healthy); },
        [&m](bool ok) { (ok ? m.healthOk : m.healthFailed)->Increment(); });
    health_->start();
    spdlog::info("event=announcing zk={} path={} host={} port={} shard={}", a.zkConnect, a.zkPath,
                 host, port, a.shard ? std::to_string(*a.shard) : "none");
  }

  // The request path must never wait on the disk: a background thread writes, and when it falls
  // behind the oldest queued lines are dropped rather than the request slowed.
  static std::shared_ptr<spdlog::logger> makeAccessLog(const std::string& where) {
    spdlog::init_thread_pool(16384, 1);
    spdlog::sink_ptr sink;
    if (where == "-") {
      sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
    } else {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(where);
    }
    auto logger = std::make_shared<spdlog::async_logger>(
        "access", sink, spdlog::thread_pool(), spdlog::async_overflow_policy::overrun_oldest);
    logger->set_pattern("ts=%Y-%m-%dT%H:%M:%S.%f%z %v");
    logger->flush_on(spdlog::level::info);
    return logger;
  }

  // TwitterServer's flat /admin/metrics.json, with Finagle's names where one exists.
  std::string finagleMetricsJson() const {
    boost::json::object o;
    auto& m = metrics_;
    uint64_t requests = 0, failures = 0;
    for (std::size_t method = 0; method < ProxyMetrics::kMethods.size(); ++method) {
      for (unsigned cls = 1; cls <= 5; ++cls) {
        auto n = m.requests.value(ProxyMetrics::requestSeries(method, cls * 100));
        requests += n;
        failures += cls == 5 ? n : 0;
      }
    }
    o["srv/http/requests"] = requests;
    o["srv/http/success"] = requests - failures;
    o["srv/http/failures"] = failures;
    o["srv/http/pending"] = static_cast<int64_t>(m.pending.value(0));
    o["srv/http/connections"] = static_cast<int64_t>(m.connectionsOpen.value(0));
    o["srv/http/connects"] = m.connectionsTotal.value(0);
    o["srv/http/received_bytes"] = m.receivedBytes.value(0);
    o["srv/http/sent_bytes"] = m.sentBytes.value(0);
    o["srv/http/handshakes"] = m.handshakes.value(0);
    uint64_t failedHandshakes = 0;
    for (std::size_t i = 1; i <= 6; ++i) {
      failedHandshakes += m.handshakes.value(i);
    }
    o["srv/http/handshake_failures"] = failedHandshakes;
    auto stat = [&](const std::string& prefix, const metrics::ShardedHistogram& h) {
      auto s = h.snapshot(0);
      auto ms = [](double seconds) { return seconds * 1000.0; };
      o[prefix + ".count"] = s.count;
      o[prefix + ".sum"] = ms(s.sum);
      o[prefix + ".min"] = ms(s.min);
      o[prefix + ".max"] = ms(s.max);
      o[prefix + ".avg"] = s.count ? ms(s.sum) / static_cast<double>(s.count) : 0.0;
      for (auto [suffix, q] : {std::pair{".p50", 0.5}, {".p90", 0.9}, {".p95", 0.95},
                               {".p99", 0.99}, {".p9990", 0.999}, {".p9999", 0.9999}}) {
        o[prefix + suffix] = ms(s.quantile(h.bounds(), q));
      }
    };
    stat("srv/http/request_latency_ms", m.requestDuration);
    stat("srv/http/handshake_latency_ms", m.handshakeDuration);
    stat("clnt/local/request_latency_ms", m.upstreamDuration);
    o["clnt/local/connects"] = m.upstreamConnectsTotal->Value();
    o["clnt/local/connect_failures"] = m.upstreamConnectErrors->Value();
    o["clnt/local/timeouts"] = m.upstreamTimeouts->Value();
    o["clnt/local/stale_retries"] = m.upstreamStaleRetries->Value();
    o["clnt/local/pool_idle"] = m.upstreamPoolIdle->Value();
    o["tls/reloads"] = m.certReloadOk->Value();
    o["tls/reload_failures"] = m.certReloadFailed->Value();
    o["tls/certificate_expiry_seconds"] = m.certNotAfter->Value();
    o["announcer/announced"] = announcerMetrics_.announced->Value();
    o["announcer/zk_connected"] = announcerMetrics_.sessionConnected->Value();
    o["announcer/announcements"] = announcerMetrics_.announcements->Value();
    o["announcer/withdrawals"] = announcerMetrics_.withdrawals->Value();
    o["draining"] = draining_ ? 1 : 0;
    for (const auto& family : metrics::processMetrics()) {
      for (const auto& metric : family.metric) {
        o[family.name] = family.type == prometheus::MetricType::Counter ? metric.counter.value
                                                                         : metric.gauge.value;
      }
    }
    return boost::json::serialize(o) + "\n";
  }

  std::string serverInfo() const {
    auto start = std::chrono::duration_cast<std::chrono::seconds>(started_.time_since_epoch());
    auto uptime = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_);
    boost::json::value v = {{"name", "sidecar"},
                            {"version", SIDECAR_VERSION},
                            {"build", SIDECAR_BUILD},
                            {"start_time", start.count()},
                            {"uptime", uptime.count()}};
    return boost::json::serialize(v) + "\n";
  }

  void waitForSignal() {
    signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
      if (ec) {
        return;
      }
      if (signo == SIGHUP) {
        reloadTls("sighup");
      } else if (draining_) {
        spdlog::warn("event=forced_exit signal={}", signo);
        std::_Exit(1);
      } else {
        beginShutdown(signo == SIGTERM ? "sigterm" : "sigint", std::nullopt);
      }
      waitForSignal();
    });
  }

  void scheduleReloadCheck() {
    reloadTimer_.expires_after(config_.tlsReloadInterval);
    reloadTimer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) {
        return;
      }
      if (currentStamps() != stamps_) {
        reloadTls("file_changed");
      }
      scheduleReloadCheck();
    });
  }

  void reloadTls(const char* reason) {
    stamps_ = currentStamps();
    auto tls = makeServerTlsContext(tlsFiles());
    if (auto* error = std::get_if<std::string>(&tls)) {
      metrics_.certReloadFailed->Increment();
      spdlog::error("event=tls_reload_failed trigger={} error=\"{}\" action=kept_previous", reason,
                    *error);
      return;
    }
    auto& ctx = std::get<TlsContext>(tls);
    for (auto& w : workers_) {
      w->setTls(ctx.ssl);
    }
    metrics_.certReloadOk->Increment();
    metrics_.certNotAfter->Set(static_cast<double>(ctx.certNotAfter));
    spdlog::info("event=tls_reloaded trigger={} not_after={}", reason, ctx.certNotAfter);
  }

  void beginShutdown(const char* source, std::optional<Duration> grace) {
    if (draining_) {
      return;
    }
    draining_ = true;
    metrics_.draining->Set(1);
    const Duration timeout = grace.value_or(config_.drainTimeout);
    spdlog::info("event=draining source={} drain_timeout_ms={}", source, timeout.count());
    reloadTimer_.cancel();
    if (health_) {
      health_->stop();
    }
    // The member goes first; the listener keeps accepting for --deregister-grace so that callers'
    // resolvers see it gone before connections are refused.
    if (announcer_) {
      announcer_->shutdown(std::chrono::seconds(5), [this, timeout] {
        spdlog::info("event=deregistered grace_ms={}", config_.deregisterGrace.count());
        graceTimer_.expires_after(config_.deregisterGrace);
        graceTimer_.async_wait([this, timeout](const boost::system::error_code& ec) {
          if (!ec) {
            drainWorkers(timeout);
          }
        });
      });
    } else {
      drainWorkers(timeout);
    }
  }

  void drainWorkers(Duration timeout) {
    pendingWorkers_ = workers_.size();
    for (auto& w : workers_) {
      w->drain([this] {
        asio::post(control_, [this] {
          if (--pendingWorkers_ == 0) {
            finish("drained");
          }
        });
      });
    }
    drainTimer_.expires_after(timeout);
    drainTimer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) {
        finish("drain_timeout");
      }
    });
  }

  void finish(const char* why) {
    if (finished_) {
      return;
    }
    finished_ = true;
    spdlog::info("event=drain_done reason={}", why);
    drainTimer_.cancel();
    signals_.cancel();
    announcer_.reset();  // closes the session (its member is already gone)
    control_.stop();
  }

  const SidecarConfig& config_;
  asio::io_context control_{1};
  std::shared_ptr<prometheus::Registry> registry_;
  ProxyMetrics metrics_;
  AnnouncerMetrics announcerMetrics_;
  std::optional<ProxyShared> shared_;
  asio::signal_set signals_;
  asio::steady_timer reloadTimer_;
  asio::steady_timer drainTimer_;
  asio::steady_timer graceTimer_;
  asio::steady_timer abortTimer_;
  PlainHttpServer admin_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<registry::Announcer> announcer_;
  std::unique_ptr<HealthChecker> health_;
  std::array<FileStamp, 3> stamps_{};
  Clock::time_point started_ = Clock::now();
  std::size_t pendingWorkers_ = 0;
  bool ready_ = false;
  bool draining_ = false;
  bool finished_ = false;
};

}  // namespace

int runSidecar(const SidecarConfig& config) {
  std::signal(SIGPIPE, SIG_IGN);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
  spdlog::set_level(spdlog::level::from_str(config.logLevel));
  Server server(config);
  return server.run();
}

}  // namespace sidecar
