#pragma once
// Reading flags from Boost.ProgramOptions' variables map: each reader checks the value and throws
// FlagError with one line naming the flag and what is wrong (the process prints it, exits 2).
// Internal to core/: config.cpp and the per-feature parsers share them.

#include <boost/program_options/variables_map.hpp>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "core/config.h"

namespace sidecar::flags {

namespace po = boost::program_options;

struct FlagError {
  std::string line;
};

// An error line quotes what the user gave; control bytes in it must not break the line.
std::string printable(std::string_view text);
bool readable(const std::string& path);
// The value of a required flag.
std::string need(const po::variables_map& vm, const char* name);
// "60m", "2s", "250ms": the largest unit that is exact.
std::string durationText(Duration d);
// "1MiB", "1KiB", "100": the largest unit that is exact.
std::string sizeText(uint64_t n);
// Every duration must be positive: a zero deadline fails everything it guards, and a zero period
// spins. A flag whose consumer cannot take any length passes a maximum.
Duration durationFlag(const po::variables_map& vm, const char* name,
                      std::optional<Duration> max = std::nullopt);
uint64_t sizeFlag(const po::variables_map& vm, const char* name);
uint64_t sizeFlag(const po::variables_map& vm, const char* name, uint64_t min, uint64_t max);
// Digits only, within [min, max] (Boost reads "-1" into an unsigned as its largest value).
uint64_t countFlag(const po::variables_map& vm, const char* name, uint64_t min, uint64_t max);
// Hosts, paths and identities go into request lines, JSON and logs: no spaces or control bytes.
bool hasSpaceOrControl(std::string_view text);
HostPort hostPortFlag(const po::variables_map& vm, const char* name);
std::string_view fileKind(std::filesystem::file_type type);
// A regular file (or a symbolic link to one) that we may read.
void checkRegularReadable(const char* name, const std::string& path);
// A required flag naming such a file.
std::string fileFlag(const po::variables_map& vm, const char* name);
// The outbound mesh's flags (config_outbound.cpp); none when neither --outbound-listen nor
// --thrift-route is given.
std::optional<OutboundConfig> outboundFlags(const po::variables_map& vm,
                                            const std::string& defaultCa);

// The inbound Thrift listener's flags (config_thrift.cpp); none when --thrift-listen is not given.
std::optional<ThriftConfig> thriftFlags(const po::variables_map& vm);
// --thrift-route, into the outbound mesh's config (config_thrift.cpp).
void thriftRouteFlags(const po::variables_map& vm, OutboundConfig& o);
// localhost, ::1 or 127.x: a listener only this host's processes reach.
bool loopbackHost(const std::string& host);

}  // namespace sidecar::flags
