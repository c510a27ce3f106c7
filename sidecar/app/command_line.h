#pragma once
// The first step every command of ours takes (sidecar resolve, sidecar probe, pinghelp): its
// flags parsed, --help answered, a bad flag named; so that they all answer alike.

#include <boost/program_options.hpp>
#include <iostream>
#include <optional>
#include <string_view>
#include <variant>

namespace sidecar {

// Parses argv into vm; positional names the flag one bare argument stands for (null: none).
// Returns the exit code when the command has nothing more to do: 0 once --help is printed, 2 once
// a bad flag is named on stderr (as "<command>: why (see --help)").
inline std::optional<int> parseCommandLine(std::string_view command, int argc,
                                           const char* const* argv,
                                           const boost::program_options::options_description& flags,
                                           const char* positional,
                                           boost::program_options::variables_map& vm) {
  namespace po = boost::program_options;
  po::positional_options_description bare;
  if (positional) {
    bare.add(positional, 1);
  }
  try {
    po::store(po::command_line_parser(argc, argv).options(flags).positional(bare).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << command << ": " << e.what() << " (see --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << flags;
    return 0;
  }
  return std::nullopt;
}

// A command's two steps: parsed, its request or the exit code it ends with already; run, the
// request's.
template <class Request, class Run>
int runParsed(std::variant<Request, int> parsed, Run run) {
  if (const int* exitCode = std::get_if<int>(&parsed)) {
    return *exitCode;
  }
  return run(std::get<Request>(parsed));
}

}  // namespace sidecar
