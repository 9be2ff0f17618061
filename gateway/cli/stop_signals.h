#pragma once

#include <csignal>
#include <functional>
#include <string>

namespace arbiter::cli {

// SIGTERM, SIGINT and SIGHUP for a serving command, taken by a handler that
// writes their number to a pipe the main thread reads. Not sigwait alone:
// libraries start threads of their own before main (OpenBLAS's pool), and a
// signal that reaches one of them while no thread waits in sigwait ends the
// process. Threads started between Block() and Unblock() leave the signals
// to the main thread.
//
//   StopSignals& signals = StopSignals::Install();
//   signals.Block();
//   ... start servers ...
//   signals.Unblock();
//   std::string why = signals.WaitForStop(reload);  // "SIGTERM"
class StopSignals final {
 public:
  // The one instance: signal handlers are process-wide and outlive callers.
  static StopSignals& Install();

  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // While threads are started, so that they inherit the mask.
  void Block();
  void Unblock();

  // Waits for SIGTERM or SIGINT and returns its name; calls on_reload for
  // each SIGHUP meanwhile, on this thread.
  [[nodiscard]] std::string WaitForStop(const std::function<void()>& on_reload);

 private:
  StopSignals();
  static void OnSignal(int signal);

  int fds_[2] = {-1, -1};
  sigset_t set_ = {};
};

}  // namespace arbiter::cli
