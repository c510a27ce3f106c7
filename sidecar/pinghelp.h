#pragma once
// pinghelp, the reference local service: /ping answers pong, /help describes the methods, from
// the help files under proto/help.

#include "http_server.h"

#include <map>
#include <string>
#include <variant>

namespace sidecar {

// The method descriptions, serialized once at start-up.
struct HelpCatalog {
  std::string indexJson;                         // GET /help
  std::map<std::string, std::string> methodJson; // GET /help/<name>
};

// Reads every *.json file in dir; each holds one method: name, method, path, description.
// On failure: one line naming the file and what is wrong with it.
std::variant<HelpCatalog, std::string> loadHelpCatalog(const std::string& dir);

PlainResponse handlePinghelpRequest(const PlainRequest& req, const HelpCatalog& catalog);

}  // namespace sidecar
