#pragma once
// The access log: one line per answered request, written by a background thread so that the
// request path never waits on the disk.

#include <spdlog/logger.h>

#include <memory>
#include <string>
#include <string_view>

namespace sidecar {

// "-" for stdout, else a file (appended to). Throws spdlog::spdlog_ex when it cannot be opened.
// When the writer falls behind, the oldest queued lines are dropped rather than a request slowed.
std::shared_ptr<spdlog::logger> makeAccessLog(const std::string& where);

// A value in a log field: quotes and backslashes escaped, control bytes as \xNN. Request targets
// and certificate identities come from callers: escaped, they cannot forge fields or lines.
std::string escapeForLog(std::string_view s);

// An identity as one log field: quoted and escaped, or "-" when there is none.
std::string identityLogField(std::string_view identity);

}  // namespace sidecar
