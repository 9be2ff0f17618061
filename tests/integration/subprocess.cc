#include "tests/integration/subprocess.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace arbiter::testing {

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(
    const std::vector<std::string>& argv) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return absl::InternalError("pipe failed");
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    dup2(pipe_fds[1], STDERR_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    std::vector<char*> args;
    for (const std::string& arg : argv)
      args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  auto process = std::unique_ptr<Subprocess>(new Subprocess());
  process->pid_ = pid;
  int fd = pipe_fds[0];
  process->reader_ = std::thread([p = process.get(), fd] { p->ReadLoop(fd); });
  return process;
}

Subprocess::~Subprocess() {
  Stop();
  if (reader_.joinable()) reader_.join();
}

void Subprocess::ReadLoop(int fd) {
  std::string partial;
  char buffer[4096];
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    partial.append(buffer, n);
    size_t newline;
    while ((newline = partial.find('\n')) != std::string::npos) {
      absl::MutexLock lock(&mu_);
      lines_.push_back(partial.substr(0, newline));
      partial.erase(0, newline + 1);
    }
  }
  close(fd);
  absl::MutexLock lock(&mu_);
  if (!partial.empty()) lines_.push_back(partial);
  eof_ = true;
}

absl::StatusOr<std::string> Subprocess::WaitForLine(const std::string& prefix,
                                                    absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  size_t checked = 0;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      for (; checked < lines_.size(); ++checked) {
        if (absl::StartsWith(lines_[checked], prefix)) {
          return lines_[checked].substr(prefix.size());
        }
      }
      if (eof_ || absl::Now() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("no line starting with \"", prefix, "\"; output:\n",
                         absl::StrJoin(lines_, "\n")));
      }
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

int Subprocess::Stop() {
  if (pid_ > 0) kill(pid_, SIGTERM);
  return Wait();
}

int Subprocess::Wait() {
  if (pid_ > 0) {
    int status = 0;
    waitpid(pid_, &status, 0);
    exit_code_ =
        WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    pid_ = -1;
  }
  // All output is read once the pipe closes; Output() after Wait() is whole.
  if (reader_.joinable()) reader_.join();
  return exit_code_;
}

std::string Subprocess::Output() {
  absl::MutexLock lock(&mu_);
  return absl::StrJoin(lines_, "\n");
}

int PortOf(const std::string& host_port) {
  int port = 0;
  size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return 0;
  std::string digits;
  for (char c : host_port.substr(colon + 1)) {
    if (c < '0' || c > '9') break;
    digits += c;
  }
  return absl::SimpleAtoi(digits, &port) ? port : 0;
}

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t size = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
  ::close(fd);
  return ntohs(address.sin_port);
}

void Subprocess::Signal(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

std::string ServingGateway::target() const {
  return absl::StrCat("127.0.0.1:", grpc_port);
}

absl::StatusOr<ServingGateway> StartServe(
    const std::string& binary, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {binary,
                                   "serve",
                                   "--grpc-listen",
                                   "127.0.0.1:0",
                                   "--metrics-listen",
                                   "127.0.0.1:0",
                                   "--http-listen",
                                   "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto process = Subprocess::Start(argv);
  if (!process.ok()) return process.status();
  ServingGateway gateway;
  gateway.process = *std::move(process);
  auto grpc_line =
      gateway.process->WaitForLine("grpc listening on ", absl::Seconds(60));
  if (!grpc_line.ok()) return grpc_line.status();
  auto metrics_line =
      gateway.process->WaitForLine("metrics on ", absl::Seconds(5));
  if (!metrics_line.ok()) return metrics_line.status();
  auto http_line =
      gateway.process->WaitForLine("http listening on ", absl::Seconds(5));
  if (!http_line.ok()) return http_line.status();
  // "http://host:port/path" or "https://...": the port before the path.
  auto port_of_url = [](std::string url) {
    url = url.substr(url.find("//") == std::string::npos ? 0
                                                         : url.find("//") + 2);
    return PortOf(url.substr(0, url.find('/')));
  };
  gateway.grpc_port = PortOf(*grpc_line);
  gateway.http_port = port_of_url(*http_line);
  gateway.metrics_port = port_of_url(*metrics_line);
  return gateway;
}

CommandResult RunCommand(const std::string& binary,
                         std::vector<std::string> args) {
  args.insert(args.begin(), binary);
  auto process = Subprocess::Start(args);
  if (!process.ok()) return {-1, std::string(process.status().message())};
  const int exit_code = (*process)->Wait();
  return {exit_code, (*process)->Output()};
}

double MetricSample(const std::string& metrics, const std::string& name,
                    const std::map<std::string, std::string>& want) {
  std::istringstream lines(metrics);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.starts_with(name + "{") && !line.starts_with(name + " ")) {
      continue;
    }
    bool all = true;
    for (const auto& [key, value] : want) {
      all =
          all && absl::StrContains(line, absl::StrCat(key, "=\"", value, "\""));
    }
    if (all) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return -1;
}

}  // namespace arbiter::testing
