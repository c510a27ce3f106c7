// The help-file loader and the ping/help routes.
#include "app/pinghelp.h"

#include <doctest/doctest.h>

#include <boost/json/parse.hpp>
#include <filesystem>
#include <fstream>

using namespace sidecar;
namespace fs = std::filesystem;

namespace {

struct HelpDir {
  fs::path path;
  HelpDir() {
    char name[] = "/tmp/pinghelp-unit-XXXXXX";
    path = mkdtemp(name);
  }
  ~HelpDir() { fs::remove_all(path); }
  void write(const std::string& file, const std::string& text) const {
    std::ofstream(path / file) << text;
  }
};

PlainRequest get(std::string target, http::verb verb = http::verb::get) {
  PlainRequest r{verb, target, 11};
  return r;
}

}  // namespace

TEST_CASE("the shipped help files load and describe ping and help") {
  auto loaded = loadHelpCatalog(PINGHELP_SOURCE_HELP_DIR);
  REQUIRE(std::holds_alternative<HelpCatalog>(loaded));
  auto& c = std::get<HelpCatalog>(loaded);
  CHECK(c.methodJson.count("ping") == 1);
  CHECK(c.methodJson.count("help") == 1);
  auto index = boost::json::parse(c.indexJson);
  CHECK(index.at("methods").as_array().size() == c.methodJson.size());
}

TEST_CASE("routes") {
  HelpDir dir;
  dir.write("ping.json", R"({"name":"ping","method":"GET","path":"/ping","description":"d"})");
  auto c = std::get<HelpCatalog>(loadHelpCatalog(dir.path.string()));
  auto ping = handlePinghelpRequest(get("/ping"), c);
  CHECK(ping.result() == http::status::ok);
  CHECK(ping.body() == "pong");
  CHECK(handlePinghelpRequest(get("/help"), c).body() == c.indexJson);
  auto one = handlePinghelpRequest(get("/help/ping"), c);
  CHECK(one.result() == http::status::ok);
  CHECK(boost::json::parse(one.body()).at("description") == "d");
  CHECK(handlePinghelpRequest(get("/help/nope"), c).result() == http::status::not_found);
  CHECK(handlePinghelpRequest(get("/other"), c).result() == http::status::not_found);
  auto post = handlePinghelpRequest(get("/ping", http::verb::post), c);
  CHECK(post.result() == http::status::method_not_allowed);
  CHECK(post[http::field::allow] == "GET, HEAD");
}

TEST_CASE("a broken help file is a start-up error naming the file") {
  HelpDir dir;
  dir.write("ping.json", R"({"name":"ping","method":"GET","path":"/ping","description":"d"})");
  dir.write("broken.json", R"({"name": "x", )");
  auto loaded = loadHelpCatalog(dir.path.string());
  REQUIRE(std::holds_alternative<std::string>(loaded));
  CHECK(std::get<std::string>(loaded).find("broken.json") != std::string::npos);

  HelpDir missingKey;
  missingKey.write("ping.json", R"({"name":"ping","method":"GET","path":"/ping"})");
  auto m = loadHelpCatalog(missingKey.path.string());
  REQUIRE(std::holds_alternative<std::string>(m));
  CHECK(std::get<std::string>(m).find("description") != std::string::npos);

  auto none = loadHelpCatalog("/nonexistent/help");
  REQUIRE(std::holds_alternative<std::string>(none));
  CHECK(std::get<std::string>(none).find("/nonexistent/help") != std::string::npos);
}
