#include "cli/cli_main.h"

int main(int argc, char** argv) { return continuum::cli::CliMain(argc, argv); }
