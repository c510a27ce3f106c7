#pragma once
// Start-up checks and resolutions, each done once before the workers start.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <optional>
#include <string>

#include "core/config.h"

namespace sidecar {

// Raises the descriptor limit to its hard ceiling (as HAProxy does) and turns --max-connections 0
// into half of it: every connection may hold a second descriptor toward the local service.
std::size_t resolveMaxConnections(std::size_t asked);

// A private key anyone on the host can read is one the host's other users can steal: warns.
void warnIfReadableByOthers(const std::string& keyFile);

// An address literal as it is, a name through the resolver (first answer); none if it fails.
std::optional<boost::asio::ip::tcp::endpoint> resolveOne(boost::asio::io_context& ioc,
                                                         const HostPort& hp);

// The first address of an interface that is up and not loopback, IPv4 preferred.
std::string primaryAddress();

}  // namespace sidecar
