#pragma once

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace arbiter::testing {

// A child process whose stdout and stderr are captured line by line, for
// tests that start real servers. Stopped with SIGTERM at destruction.
class Subprocess final {
 public:
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      const std::vector<std::string>& argv);
  ~Subprocess();

  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Waits for an output line starting with `prefix` and returns the rest of
  // it. DEADLINE_EXCEEDED (with the output so far) if none comes in time or
  // the process exits.
  absl::StatusOr<std::string> WaitForLine(const std::string& prefix,
                                          absl::Duration timeout);
  // Sends SIGTERM and returns the exit code (or 128 + signal).
  int Stop();
  // Waits for the process to exit by itself and for all its output; returns
  // as Stop does.
  int Wait();
  std::string Output();
  // Sends `signal` to the process while it runs; returns at once.
  void Signal(int signal);
  // -1 once it has been waited for.
  [[nodiscard]] int pid() const { return pid_; }

 private:
  Subprocess() = default;
  void ReadLoop(int fd);

  int pid_ = -1;
  int exit_code_ = -1;
  std::thread reader_;
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
  bool eof_ ABSL_GUARDED_BY(mu_) = false;
};

// "127.0.0.1:1234" from a banner line's tail, e.g. "127.0.0.1:1234".
int PortOf(const std::string& host_port);

// A loopback port the OS just gave out, for a server (such as Prometheus)
// that cannot report the port it chose itself.
int FreePort();

// An `arbiter serve` on OS-chosen loopback ports, once its banner has said
// where it listens.
struct ServingGateway {
  std::unique_ptr<Subprocess> process;
  int grpc_port = 0;
  int metrics_port = 0;
  int http_port = 0;  // The OpenAI-compatible HTTP front.
  // "127.0.0.1:PORT" of the gRPC server.
  std::string target() const;
};

// Runs `binary serve` with `args` (e.g. {"--config", path}) on port 0 for
// gRPC and metrics, and waits for the banner; DEADLINE_EXCEEDED with the
// output when none comes.
absl::StatusOr<ServingGateway> StartServe(
    const std::string& binary, const std::vector<std::string>& args = {});

// What a command printed (stdout and stderr, as they came) and its exit
// code; -1 with the reason when it could not start.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};

// The value of the first sample of `name` in Prometheus text whose labels
// include every one of `want`; -1 when there is none.
double MetricSample(const std::string& metrics, const std::string& name,
                    const std::map<std::string, std::string>& want = {});

// Runs `binary args...` to its end.
CommandResult RunCommand(const std::string& binary,
                         std::vector<std::string> args);

// A test suite's setup failure, kept for its tests to report. Any failure
// recorded in SetUpTestSuite, fatal or not, makes gtest skip the suite's
// tests, and ctest counts a skipped test as passed: SetUpTestSuite calls
// SuiteSetupFailed instead, and each test's SetUp asserts
// SuiteSetupStatus().ok().
inline std::map<std::string, absl::Status>& SuiteSetupFailures() {
  static auto* failures = new std::map<std::string, absl::Status>;
  return *failures;
}
inline std::string CurrentSuiteName() {
  const ::testing::TestSuite* suite =
      ::testing::UnitTest::GetInstance()->current_test_suite();
  return suite == nullptr ? "" : suite->name();
}
inline void SuiteSetupFailed(const absl::Status& why) {
  SuiteSetupFailures()[CurrentSuiteName()] = why;
}
inline absl::Status SuiteSetupStatus() {
  auto it = SuiteSetupFailures().find(CurrentSuiteName());
  return it == SuiteSetupFailures().end() ? absl::OkStatus() : it->second;
}

}  // namespace arbiter::testing
