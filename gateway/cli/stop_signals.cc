#include "gateway/cli/stop_signals.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>

namespace arbiter::cli {
namespace {

// Written by the handler, which may touch nothing else.
volatile sig_atomic_t write_fd = -1;

}  // namespace

StopSignals& StopSignals::Install() {
  static StopSignals& signals = *new StopSignals();
  return signals;
}

StopSignals::StopSignals() {
  if (pipe2(fds_, O_CLOEXEC) != 0) fds_[0] = fds_[1] = -1;
  write_fd = fds_[1];
  struct sigaction action = {};
  action.sa_handler = &StopSignals::OnSignal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigemptyset(&set_);
  for (int signal : {SIGTERM, SIGINT, SIGHUP}) {
    sigaction(signal, &action, nullptr);
    sigaddset(&set_, signal);
  }
}

void StopSignals::Block() { pthread_sigmask(SIG_BLOCK, &set_, nullptr); }

void StopSignals::Unblock() { pthread_sigmask(SIG_UNBLOCK, &set_, nullptr); }

std::string StopSignals::WaitForStop(const std::function<void()>& on_reload) {
  for (;;) {
    unsigned char signal = 0;
    ssize_t n = read(fds_[0], &signal, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n != 1) return "SIGTERM";  // No pipe: stop rather than spin.
    if (signal == SIGHUP) {
      if (on_reload != nullptr) on_reload();
      continue;
    }
    return signal == SIGINT ? "SIGINT" : "SIGTERM";
  }
}

void StopSignals::OnSignal(int signal) {
  const int saved_errno = errno;
  const unsigned char byte = static_cast<unsigned char>(signal);
  [[maybe_unused]] ssize_t ignored = write(write_fd, &byte, 1);
  errno = saved_errno;
}

}  // namespace arbiter::cli
