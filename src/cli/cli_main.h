#pragma once

namespace continuum::cli {

// Entry point of the `continuum` binary: parses the command line and runs a
// daemon (`agent`) or a client command against a daemon's control socket.
int CliMain(int argc, char** argv);

}  // namespace continuum::cli
