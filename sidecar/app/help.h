#pragma once
// pinghelp's method descriptions: the help files under proto/help, read and checked once at
// start-up. Pure (files and JSON only), so it can be fuzzed alone.

#include <map>
#include <string>
#include <string_view>
#include <variant>

namespace sidecar {

// The method descriptions, serialized once at start-up.
struct HelpCatalog {
  std::string indexJson;                          // GET /help
  std::map<std::string, std::string> methodJson;  // GET /help/<name>
};

// One help file's text: the method's JSON object, or why it is not one (empty name when ok).
struct HelpMethod {
  std::string name;
  std::string json;   // compact, as served
  std::string error;  // set when the text is not a valid description
};
HelpMethod parseHelpMethod(std::string_view text);

// Reads every *.json file in dir; each holds one method: name, method, path, description.
// On failure: one line naming the file and what is wrong with it.
std::variant<HelpCatalog, std::string> loadHelpCatalog(const std::string& dir);

}  // namespace sidecar
