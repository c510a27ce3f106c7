#pragma once
// Announces this instance as an ephemeral sequential member of a Finagle serverset, and keeps it
// so: health-gated, re-announced after session expiry or deletion, never two members of ours.
// Runs on the control io_context; the data path never waits on it.

#include "serverset.h"
#include "zk_session.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace registry {

struct AnnouncerConfig {
  std::string connect;  // host:port[,host:port][/chroot]
  std::string path;     // the serverset, e.g. /discovery/prod/pinghelp
  std::chrono::milliseconds sessionTimeout{10'000};
  std::string digest;   // "user:password" or empty; never logged
  ServiceInstance instance;
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
  Announcer(boost::asio::io_context& ioc, AnnouncerConfig config, AnnouncerEvents events = {});
  ~Announcer();

  void start();
  // The local service's health; the member exists only while healthy.
  void setHealthy(bool healthy);
  // Deletes the member (bounded by timeout), then calls done. Nothing is announced afterwards.
  void shutdown(std::chrono::milliseconds timeout, std::function<void()> done);

  bool announced() const { return !member_.empty(); }
  const std::string& member() const { return member_; }
  std::string statusJson() const;

 private:
  void openSession();
  void onEvent(ZkEvent event, ZkState state, const std::string& path);
  void reconcile();
  void ensureParents(std::size_t depth);
  void adoptOrCreate();
  void createMember();
  void withdraw();
  void failed(const char* step, ZkError error);
  void retryLater();
  void finishShutdown();

  boost::asio::io_context& ioc_;
  AnnouncerConfig config_;
  AnnouncerEvents events_;
  std::string data_;
  std::unique_ptr<ZkSession> session_;
  boost::asio::steady_timer retryTimer_;
  boost::asio::steady_timer shutdownTimer_;
  std::chrono::milliseconds backoff_{1'000};
  std::string member_;  // full path of our member node, empty when none
  std::string lastError_;
  bool healthy_ = false;
  bool busy_ = false;     // one ZooKeeper operation chain at a time
  bool dirty_ = false;    // something changed while busy
  bool withdrawing_ = false;
  bool everAnnounced_ = false;
  bool stopping_ = false;
  std::function<void()> onStopped_;
};

}  // namespace registry
