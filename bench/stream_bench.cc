// Holds many concurrent streams against a slow simulated model and reports
// what each costs: heap bytes (mallinfo2) and RSS per stream while all are
// open, threads, and how late first deltas and ends are against the
// simulated schedule.
//
//   stream_bench [--streams 10000] [--via sim|http] [--ttft 2]
//                [--per-token 0.05] [--tokens 32] [--rounds 2]
//                [--spread SECONDS] [--event-threads N]
//
// All streams start at once unless --spread spreads their starts evenly.
//
// --via sim: the in-process SimBackend (one timer thread). --via http: the
// openai backend (event_threads curl threads, default 2, a connection per
// stream) reading SSE from a sim-server in a child process (its own file
// descriptors).

#include <dirent.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gateway/backends/openai_backend.h"
#include "gateway/backends/sim_backend.h"
#include "gateway/config.h"
#include "gateway/sim/sim_server.h"
#include "gateway/sim/simulator.h"

namespace arbiter {
namespace {

struct Options {
  int streams = 10'000;
  std::string via = "sim";
  double ttft = 2;
  double per_token = 0.05;
  int tokens = 32;
  int rounds = 2;
  double spread = 0;      // Seconds over which the streams start.
  int event_threads = 0;  // The openai backend's; 0 for the default.
};

bool ParseFlags(int argc, char** argv, Options& options) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    bool ok = false;
    if (flag == "--streams") ok = absl::SimpleAtoi(value, &options.streams);
    if (flag == "--ttft") ok = absl::SimpleAtod(value, &options.ttft);
    if (flag == "--per-token") ok = absl::SimpleAtod(value, &options.per_token);
    if (flag == "--tokens") ok = absl::SimpleAtoi(value, &options.tokens);
    if (flag == "--rounds") ok = absl::SimpleAtoi(value, &options.rounds);
    if (flag == "--spread") ok = absl::SimpleAtod(value, &options.spread);
    if (flag == "--event-threads") {
      ok = absl::SimpleAtoi(value, &options.event_threads) &&
           options.event_threads >= 0;
    }
    if (flag == "--via") {
      options.via = value;
      ok = options.via == "sim" || options.via == "http";
    }
    if (!ok) {
      std::fprintf(stderr, "bad flag %s %s\n", flag.c_str(), value);
      return false;
    }
  }
  return true;
}

std::shared_ptr<const sim::Simulator> MakeSimulator(const Options& options) {
  v1::SimBackend config;
  config.set_time_to_first_token_seconds(options.ttft);
  config.set_seconds_per_token(options.per_token);
  config.set_output_tokens(options.tokens);
  auto simulator = sim::Simulator::Create(config, {});
  if (!simulator.ok()) std::abort();
  return std::shared_ptr<const sim::Simulator>(*std::move(simulator));
}

size_t HeapInUse() { return mallinfo2().uordblks; }

size_t RssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
    }
  }
  return 0;
}

int ThreadCount() {
  int threads = 0;
  if (DIR* tasks = opendir("/proc/self/task")) {
    while (dirent* entry = readdir(tasks)) threads += entry->d_name[0] != '.';
    closedir(tasks);
  }
  return threads;
}

// Counts and times what the streams hear.
class Tally final : public StreamObserver {
 public:
  Tally(absl::Time start, std::atomic<int>& first, std::atomic<int>& ended,
        absl::Notification& all_ended, int total)
      : start_(start),
        first_(first),
        ended_(ended),
        all_ended_(all_ended),
        total_(total) {}

  void OnDelta(BackendDelta) override {
    ++deltas_;
    if (first_delta_ == absl::InfiniteFuture()) {
      first_delta_ = absl::Now();
      ++first_;
    }
  }
  void OnEnd(absl::Status status, BackendResponse usage) override {
    end_ = absl::Now();
    ok_ = status.ok();
    tokens_ = usage.output_tokens;
    if (++ended_ == total_) all_ended_.Notify();
  }

  absl::Duration first_delta() const { return first_delta_ - start_; }
  absl::Duration end() const { return end_ - start_; }
  bool ok() const { return ok_; }
  int64_t tokens() const { return tokens_; }
  int64_t deltas() const { return deltas_; }

 private:
  const absl::Time start_;
  std::atomic<int>& first_;
  std::atomic<int>& ended_;
  absl::Notification& all_ended_;
  const int total_;
  absl::Time first_delta_ = absl::InfiniteFuture();
  absl::Time end_;
  bool ok_ = false;
  int64_t tokens_ = 0;
  int64_t deltas_ = 0;
};

// CPU time this process has used (the child sim-server's is its own).
absl::Duration CpuTime() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return absl::DurationFromTimeval(usage.ru_utime) +
         absl::DurationFromTimeval(usage.ru_stime);
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

void PrintLateness(const char* what, std::vector<absl::Duration> late) {
  std::sort(late.begin(), late.end());
  auto at = [&](double q) {
    return Ms(late[static_cast<size_t>(q * (late.size() - 1))]);
  };
  std::printf("  %-28s p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n", what,
              at(0.5), at(0.99), Ms(late.back()));
}

// One round: every stream started at once, held, and ended.
bool RunRound(const Options& options, Backend* backend, int round) {
  const int threads_before = ThreadCount();
  std::atomic<int> first{0};
  std::atomic<int> ended{0};
  absl::Notification all_ended;
  std::vector<std::shared_ptr<Tally>> tallies;
  std::vector<std::shared_ptr<CallHandle>> calls;
  tallies.reserve(options.streams);
  calls.reserve(options.streams);
  malloc_trim(0);
  const size_t heap_before = HeapInUse();
  const size_t rss_before = RssBytes();
  const absl::Duration cpu_before = CpuTime();
  const absl::Time start = absl::Now();
  for (int i = 0; i < options.streams; ++i) {
    absl::SleepFor(start + absl::Seconds(options.spread * i / options.streams) -
                   absl::Now());
    BackendRequest request;
    request.model = "m";
    request.messages = {{"user", "How do I reset my password?"}};
    request.stream = true;
    request.seed = i;
    request.timeout = absl::Seconds(600);
    tallies.push_back(std::make_shared<Tally>(absl::Now(), first, ended,
                                              all_ended, options.streams));
    calls.push_back(backend->Stream(std::move(request), tallies.back()));
  }
  const absl::Duration started = absl::Now() - start;
  // Held: every stream is open and waiting for its first token. Measured
  // just before the first tokens are due.
  absl::SleepFor(absl::Seconds(options.ttft) - started -
                 absl::Milliseconds(200));
  const int threads_held = ThreadCount();
  const size_t heap_held = HeapInUse();
  const size_t rss_held = RssBytes();
  const int first_early = first.load();
  all_ended.WaitForNotification();
  const absl::Duration took = absl::Now() - start;
  const absl::Duration cpu = CpuTime() - cpu_before;

  int ok = 0;
  int64_t deltas = 0;
  std::vector<absl::Duration> first_late;
  std::vector<absl::Duration> end_late;
  for (const auto& tally : tallies) {
    ok += tally->ok();
    deltas += tally->deltas();
    first_late.push_back(tally->first_delta() - absl::Seconds(options.ttft));
    // The simulator pads an answer to the nearest word past --tokens.
    end_late.push_back(
        tally->end() -
        absl::Seconds(options.ttft + options.per_token * tally->tokens()));
  }
  const double n = options.streams;
  std::printf(
      "round %d: %d streams via %s (time to first token %.2f s, %d tokens of "
      "%.0f ms); started in %.0f ms; %d ended OK in %.1f s\n",
      round, options.streams, options.via.c_str(), options.ttft, options.tokens,
      options.per_token * 1000, Ms(started), ok, absl::ToDoubleSeconds(took));
  std::printf(
      "  held: heap %+.1f MiB (%.0f B/stream), RSS %+.1f MiB (%.0f "
      "B/stream); threads %d -> %d; first deltas before time: %d\n",
      (static_cast<double>(heap_held) - heap_before) / (1 << 20),
      (static_cast<double>(heap_held) - heap_before) / n,
      (static_cast<double>(rss_held) - rss_before) / (1 << 20),
      (static_cast<double>(rss_held) - rss_before) / n, threads_before,
      threads_held, first_early);
  std::printf("  CPU %.2f s for %lld deltas: %.1f us per delta\n",
              absl::ToDoubleSeconds(cpu), static_cast<long long>(deltas),
              absl::ToDoubleMicroseconds(cpu) / std::max<int64_t>(1, deltas));
  PrintLateness("first delta after TTFT", first_late);
  PrintLateness("end after schedule", end_late);
  return ok == options.streams;
}

int Run(const Options& options, int sim_port) {
  std::unique_ptr<Backend> backend;
  if (options.via == "sim") {
    backend = std::make_unique<SimBackend>("sim", MakeSimulator(options));
  } else {
    v1::OpenAIBackend config;
    config.set_base_url(absl::StrCat("http://127.0.0.1:", sim_port, "/v1"));
    config.set_max_connections(options.streams);
    config.set_max_queued_requests(0);
    config.set_timeout_seconds(600);
    if (options.event_threads > 0) {
      config.set_event_threads(options.event_threads);
    }
    ApplyOpenAIBackendDefaults(config);
    backend = MakeOpenAIBackend("sim-http", config, "", {});
  }
  // Round 1 opens the connections; later rounds find them open, as a
  // gateway in service does.
  bool ok = true;
  for (int round = 1; round <= options.rounds; ++round) {
    ok = RunRound(options, backend.get(), round) && ok;
  }
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace arbiter

int main(int argc, char** argv) {
  arbiter::Options options;
  if (!arbiter::ParseFlags(argc, argv, options)) return 2;
  int sim_port = 0;
  pid_t child = -1;
  if (options.via == "http") {
    // The server in a child process, started before any thread exists: its
    // sockets do not count against this process's descriptors or heap.
    int ports[2];
    if (pipe(ports) != 0) return 1;
    child = fork();
    if (child == 0) {
      auto server = arbiter::sim::SimServer::Start(
          arbiter::MakeSimulator(options), "127.0.0.1", 0);
      if (!server.ok()) _exit(1);
      const int port = (*server)->port();
      if (write(ports[1], &port, sizeof(port)) != sizeof(port)) _exit(1);
      (*server)->Wait();
      _exit(0);
    }
    if (read(ports[0], &sim_port, sizeof(sim_port)) != sizeof(sim_port)) {
      return 1;
    }
  }
  const int result = arbiter::Run(options, sim_port);
  if (child > 0) {
    kill(child, SIGTERM);
    waitpid(child, nullptr, 0);
  }
  return result;
}
