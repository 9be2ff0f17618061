#pragma once

namespace arbiter::cli {

// Each runs one `arbiter` subcommand on the arguments after its name and
// returns the process exit code.
int RunServe(int argc, char** argv);
int RunCheckConfig(int argc, char** argv);
int RunSimServer(int argc, char** argv);
int RunInfer(int argc, char** argv);
int RunFeedback(int argc, char** argv);
int RunStats(int argc, char** argv);
int RunLoadgen(int argc, char** argv);

}  // namespace arbiter::cli
