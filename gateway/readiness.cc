#include "gateway/readiness.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace arbiter {
namespace {

// host and port of an http(s) base URL; nullopt when it names none.
std::optional<std::pair<std::string, std::string>> HostPortOf(
    absl::string_view url) {
  std::string port = "80";
  if (absl::ConsumePrefix(&url, "https://")) {
    port = "443";
  } else if (!absl::ConsumePrefix(&url, "http://")) {
    return std::nullopt;
  }
  url = url.substr(0, url.find('/'));
  std::string host(url);
  if (absl::StartsWith(host, "[")) {
    const size_t end = host.find(']');
    if (end == std::string::npos) return std::nullopt;
    if (end + 1 < host.size() && host[end + 1] == ':') {
      port = host.substr(end + 2);
    }
    host = host.substr(1, end - 1);
  } else if (const size_t colon = host.rfind(':'); colon != std::string::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  if (host.empty()) return std::nullopt;
  return std::pair{host, port};
}

// Whether a TCP connection to host:port opens within `timeout`.
bool Connects(const std::string& host, const std::string& port,
              absl::Duration timeout) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) {
    return false;
  }
  bool connected = false;
  for (addrinfo* a = found; a != nullptr && !connected; a = a->ai_next) {
    const int fd =
        socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      connected = true;
    } else if (errno == EINPROGRESS) {
      pollfd poll_fd = {fd, POLLOUT, 0};
      int error = 0;
      socklen_t length = sizeof(error);
      connected =
          poll(&poll_fd, 1,
               static_cast<int>(absl::ToInt64Milliseconds(timeout))) == 1 &&
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 &&
          error == 0;
    }
    close(fd);
  }
  freeaddrinfo(found);
  return connected;
}

}  // namespace

Readiness::Readiness(const GatewayHost& host) : host_(host) {
  ProbeBackends();
  thread_ = std::thread([this] { Loop(); });
}

Readiness::~Readiness() {
  stop_.Notify();
  thread_.join();
}

Readiness::Report Readiness::Check(absl::Time now) const {
  Report report;
  const std::shared_ptr<Gateway> gateway = host_.Current();
  const v1::Config& config = gateway->config();
  for (int b = 0; b < config.backends_size(); ++b) {
    const std::string& name = config.backends(b).name();
    const BackendHealth& health = gateway->health(name);
    // Reachable but ejected takes no traffic either; a simulator always is,
    // and a backend a reload added is until its first probe says.
    bool reachable = true;
    if (config.backends(b).has_openai()) {
      std::lock_guard lock(reachable_mu_);
      auto it = reachable_.find(config.backends(b).openai().base_url());
      reachable = it == reachable_.end() || it->second;
    }
    const bool up = reachable && health.Available(now);
    report.backends.push_back({name, !reachable ? std::string("unreachable")
                                     : up       ? std::string("reachable")
                                                : health.Describe(now)});
    for (const v1::Route& route : config.routes()) {
      report.ready = report.ready || (up && route.backend() == name);
    }
  }
  return report;
}

void Readiness::Watch(std::function<void(bool ready)> watcher) {
  std::lock_guard lock(watch_mu_);
  watcher_ = std::move(watcher);
  if (watcher_ == nullptr) return;
  told_ready_ = Check(absl::Now()).ready;
  watcher_(told_ready_);
}

void Readiness::ProbeBackends() {
  const std::shared_ptr<Gateway> gateway = host_.Current();
  absl::flat_hash_map<std::string, bool> reachable;
  for (const v1::Backend& backend : gateway->config().backends()) {
    if (!backend.has_openai()) continue;
    const std::string& url = backend.openai().base_url();
    auto target = HostPortOf(url);
    reachable[url] =
        target.has_value() &&
        Connects(target->first, target->second, absl::Milliseconds(500));
  }
  std::lock_guard lock(reachable_mu_);
  reachable_ = std::move(reachable);
}

void Readiness::Loop() {
  constexpr absl::Duration kCheckEvery = absl::Milliseconds(200);
  constexpr int kChecksPerProbe = 5;
  for (int tick = 1; !stop_.WaitForNotificationWithTimeout(kCheckEvery);
       ++tick) {
    if (tick % kChecksPerProbe == 0) ProbeBackends();
    std::lock_guard lock(watch_mu_);
    if (watcher_ == nullptr) continue;
    const bool ready = Check(absl::Now()).ready;
    if (ready == told_ready_) continue;
    told_ready_ = ready;
    watcher_(ready);
  }
}

}  // namespace arbiter
