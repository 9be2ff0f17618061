// arbiter: an inference gateway that picks, per request, a prompted,
// fine-tuned or RAG route from live cost and accuracy figures.

#include "gateway/cli/command_line.h"

int main(int argc, char** argv) {
  arbiter::cli::CommandLine command_line;
  return command_line.Main(argc, argv);
}
