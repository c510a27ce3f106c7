#pragma once
// Announces this instance as an ephemeral sequential member of a Finagle serverset, and keeps it
// so: health-gated, re-announced after session expiry or deletion, never two members of ours.
// Runs on the control io_context; the data path never waits on it.

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "detail/one_shot_timer.h"
#include "serverset.h"
#include "zk_session.h"

namespace registry {

struct AnnouncerConfig {
  std::string connect;  // host:port[,host:port][/chroot]
  std::string path;     // the serverset, e.g. /discovery/prod/pinghelp
  std::chrono::milliseconds sessionTimeout{10'000};
  std::string digest;          // "user:password" or empty; never logged
  bool secureParents = false;  // see ZkSessionOptions
  ServiceInstance instance;
  // Retries (a new session after expiry, a failed step again) wait this long, doubling up to
  // maxRetryDelay; each kind of retry has its own delay, reset by success.
  std::chrono::milliseconds firstRetryDelay{1'000};
  std::chrono::milliseconds maxRetryDelay{60'000};
};

// Counts the announcer reports, for the metrics of whoever owns it.
struct AnnouncerEvents {
  std::function<void()> announced;
  std::function<void()> reannounced;  // after expiry or deletion
  std::function<void()> withdrawn;
  std::function<void(ZkState)> sessionState;
};

class Announcer {
 public:
  // connect: where sessions come from; empty means the ZooKeeper C client on ioc.
  Announcer(boost::asio::io_context& ioc, AnnouncerConfig config, AnnouncerEvents events = {},
            ZkSessionFactory connect = {});
  // Closes the session (ZooKeeper then removes an ephemeral member); no callback runs afterwards.
  ~Announcer();
  Announcer(const Announcer&) = delete;
  Announcer& operator=(const Announcer&) = delete;

  void start();
  // The local service's health; the member exists only while healthy.
  void setHealthy(bool healthy);
  // Deletes the member (bounded by timeout), then calls done. Nothing is announced afterwards.
  void shutdown(std::chrono::milliseconds timeout, std::function<void()> done);

  bool announced() const { return !member_.empty(); }
  std::string statusJson() const;

 private:
  void openSession();
  void onEvent(ZkEvent event, ZkState state, const std::string& path);
  void reconcile();
  void ensureParents(std::size_t depth);
  void adoptOrCreate();
  void createMember();
  void withdraw();
  void succeeded();
  void failed(const char* step, ZkError error);
  void finishShutdown();

  AnnouncerConfig config_;
  AnnouncerEvents events_;
  ZkSessionFactory connect_;
  std::string data_;
  std::unique_ptr<ZkSession> session_;
  // One timer per purpose, so that arming one never cancels the other.
  detail::OneShotTimer reopenTimer_;     // a new session after expiry, or after none could be made
  detail::OneShotTimer reconcileTimer_;  // a failed step again, on the same session
  detail::OneShotTimer shutdownTimer_;   // gives up on withdrawing at shutdown
  std::chrono::milliseconds reopenDelay_;
  std::chrono::milliseconds reconcileDelay_;
  std::string member_;  // full path of our member node, empty when none
  std::string lastError_;
  bool healthy_ = false;
  bool busy_ = false;   // one ZooKeeper operation chain at a time
  bool dirty_ = false;  // something changed while busy
  bool withdrawing_ = false;
  bool everAnnounced_ = false;
  bool stopping_ = false;
  std::function<void()> onStopped_;
};

}  // namespace registry
