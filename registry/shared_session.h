#pragma once
// One ZooKeeper session per ensemble, shared by the readers of that ensemble (Finagle keeps one
// per ensemble too): a hundred routes on one ensemble cost its servers one session, one set of
// pings and one connection, not a hundred. Each reader gets its own ZkSession view: it sees the
// shared session's state changes, and the watch events of the paths it asked to watch; its
// completions never run after the view is destroyed. The shared session closes with its last
// view. An expired one is never repaired: the next view asked for makes a new one (each reader
// replaces its view on expiry, as it would a session of its own).

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <map>
#include <memory>
#include <string>

#include "zk_session.h"

namespace registry {

class SharedZkSessions {
 public:
  // real: makes the underlying sessions (empty: the ZooKeeper C client on ioc).
  explicit SharedZkSessions(boost::asio::io_context& ioc, ZkSessionFactory real = {});
  SharedZkSessions(const SharedZkSessions&) = delete;
  SharedZkSessions& operator=(const SharedZkSessions&) = delete;

  // For ResolverOptions::connect. Views asked for with the same connect string, timeout and
  // credentials share one live session. The factory must not outlive this object.
  ZkSessionFactory factory();

  // Underlying sessions open now (those with a view left).
  std::size_t open() const;

  struct Core;

 private:
  boost::asio::io_context& ioc_;
  ZkSessionFactory real_;
  std::map<std::string, std::weak_ptr<Core>> cores_;  // by connect string, timeout, digest
};

}  // namespace registry
