// Open-loop latency of OpenAI-shaped HTTP endpoints and arbiter's gRPC
// front, side by side: each target is offered a fixed request rate on a
// fixed schedule, and every latency is measured from the request's
// scheduled send time, so a stall delays the requests behind it and shows
// (no coordinated omission). Rows at each rate follow one another, in
// rounds, so ratios between targets hold on a busy machine.
//
//   open_loop_bench --target direct=http://127.0.0.1:18081
//       --target arbiter-grpc=grpc://127.0.0.1:50051
//       --target arbiter-http=http://127.0.0.1:8080 --rates 1000,3000,5000
//
// http:// targets get POST <base>/v1/chat/completions over keep-alive
// HTTP/1.1 connections (Boost.Beast; a request waits for a free connection
// when all are busy, and that wait counts); grpc:// targets get
// arbiter.v1.Gateway/Infer through the gRPC callback API. Each row also
// shows the kernel's TCP counters over it (connections opened, SYN
// retransmissions, listen-queue drops) and, with --nginx-status, the
// connections the upstream nginx accepted: a connection opened and closed
// under load, or a full listen backlog, shows there.
//
// With no --target it serves a static answer itself and measures that, a
// smoke test of the tool (`--quick`: 200 req/s for 1 s).

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "grpcpp/create_channel.h"

namespace arbiter::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr char kPrompt[] = "Say hello";

struct Target {
  std::string name;
  bool grpc = false;
  std::string host;
  std::string port;
  std::string path_prefix;  // HTTP: what comes before /v1/chat/completions.
};

struct Options {
  std::vector<Target> targets;
  std::vector<double> rates;
  double seconds = 10;
  int rounds = 1;
  int connections = 64;
  int grpc_channels = 4;
  std::string model = "mock";
  std::string route;
  // Requests still unanswered this long after the last was due are lost.
  double drain_seconds = 10;
  // http://HOST:PORT/PATH of an nginx stub_status page, or empty.
  std::string nginx_status;
  // Per target name, the processes whose CPU time each row reports.
  std::map<std::string, std::vector<int>> pids;
};

// Connection counters over a row: the kernel's (whole machine, loopback
// included) and, when given its stub_status page, those of the nginx that
// serves the upstream: how many connections it accepted.
struct Counters {
  int64_t active_opens = 0;
  int64_t syn_retrans = 0;
  int64_t listen_drops = 0;
  int64_t nginx_accepts = -1;  // -1: not known.
};

// One row's raw outcome: latency per request (-1: failed or lost).
struct RowResult {
  std::vector<int64_t> latency_ns;
  int64_t errors = 0;
  int64_t lost = 0;
  int64_t reconnects = 0;       // HTTP: connections the tool had to reopen.
  int64_t max_send_lag_ns = 0;  // How late the tool itself sent a request.
  std::string first_error;
  Counters counters;  // Over the row, after the connections were opened.
};

// Reads "Prefix: names..." / "Prefix: values..." line pairs.
std::map<std::string, int64_t> ReadCounterPairs(const std::string& file,
                                                const std::string& prefix) {
  std::map<std::string, int64_t> out;
  std::ifstream in(file);
  std::string names, values;
  while (std::getline(in, names) && std::getline(in, values)) {
    if (!absl::StartsWith(names, prefix)) continue;
    std::vector<std::string> n = absl::StrSplit(names, ' ');
    std::vector<std::string> v = absl::StrSplit(values, ' ');
    for (size_t i = 1; i < n.size() && i < v.size(); ++i) {
      int64_t value = 0;
      if (absl::SimpleAtoi(v[i], &value)) out[n[i]] = value;
    }
  }
  return out;
}

// The "accepts" figure of an nginx stub_status page, or -1.
int64_t NginxAccepts(const std::string& url) {
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://")) return -1;
  const size_t slash = rest.find('/');
  const std::string authority(rest.substr(0, slash));
  const std::string path(slash == absl::string_view::npos ? "/"
                                                          : rest.substr(slash));
  const size_t colon = authority.rfind(':');
  if (colon == std::string::npos) return -1;
  try {
    asio::io_context io;
    tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    stream.connect(resolver.resolve(authority.substr(0, colon),
                                    authority.substr(colon + 1)));
    http::request<http::empty_body> request(http::verb::get, path, 11);
    request.set(http::field::host, authority);
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    // "Active connections: 1 \nserver accepts handled requests\n 5 5 9 \n..."
    std::vector<absl::string_view> lines =
        absl::StrSplit(response.body(), '\n');
    if (lines.size() < 3) return -1;
    std::vector<absl::string_view> numbers =
        absl::StrSplit(lines[2], ' ', absl::SkipEmpty());
    int64_t accepts = -1;
    if (numbers.empty() || !absl::SimpleAtoi(numbers[0], &accepts)) return -1;
    return accepts;
  } catch (const std::exception&) {
    return -1;
  }
}

Counters ReadCounters(const Options& options) {
  auto tcp = ReadCounterPairs("/proc/net/snmp", "Tcp:");
  auto ext = ReadCounterPairs("/proc/net/netstat", "TcpExt:");
  return {
      tcp["ActiveOpens"], ext["TCPSynRetrans"], ext["ListenDrops"],
      options.nginx_status.empty() ? -1 : NginxAccepts(options.nginx_status)};
}

Counters Since(const Options& options, const Counters& before) {
  const Counters now = ReadCounters(options);
  return {now.active_opens - before.active_opens,
          now.syn_retrans - before.syn_retrans,
          now.listen_drops - before.listen_drops,
          // Less the connection that read the page.
          now.nginx_accepts < 0 || before.nginx_accepts < 0
              ? -1
              : now.nginx_accepts - before.nginx_accepts - 1};
}

// CPU seconds (user + system) the processes have used, or -1.
double CpuSeconds(const std::vector<int>& pids) {
  static const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  double total = 0;
  for (int pid : pids) {
    std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
    std::string stat((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    // Fields after "pid (comm) ": state is the first, utime the 12th.
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) return -1;
    std::vector<absl::string_view> fields =
        absl::StrSplit(absl::string_view(stat).substr(paren + 2), ' ');
    int64_t utime = 0, stime = 0;
    if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
        !absl::SimpleAtoi(fields[12], &stime)) {
      return -1;
    }
    total += static_cast<double>(utime + stime) / ticks;
  }
  return total;
}

// --- HTTP/1.1 keep-alive load -----------------------------------------------

// Runs one row against an HTTP target on one I/O thread: a timer releases
// requests at their scheduled times onto idle connections, or into a queue
// when every connection is busy.
class HttpLoad final {
 public:
  HttpLoad(const Target& target, const Options& options, double rate)
      : target_(target),
        options_(options),
        rate_(rate),
        total_(static_cast<int64_t>(rate * options.seconds)),
        max_connections_(options.connections),
        drain_(std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(options.drain_seconds))),
        timer_(io_),
        drain_timer_(io_) {
    request_.method(http::verb::post);
    request_.target(absl::StrCat(target.path_prefix, "/v1/chat/completions"));
    request_.set(http::field::host,
                 absl::StrCat(target.host, ":", target.port));
    request_.set(http::field::content_type, "application/json");
    request_.set(http::field::authorization, "Bearer sk-test");
    request_.keep_alive(true);
    request_.body() = absl::StrCat(
        R"({"model":")", options.model,
        R"(","messages":[{"role":"user","content":")", kPrompt, R"("}]})");
    request_.prepare_payload();
    result_.latency_ns.assign(total_, -1);
  }

  HttpLoad(const HttpLoad&) = delete;
  HttpLoad& operator=(const HttpLoad&) = delete;

  RowResult Run() {
    boost::system::error_code ec;
    tcp::resolver resolver(io_);
    auto endpoints = resolver.resolve(target_.host, target_.port, ec);
    if (ec) return Failed("resolve: " + ec.message());
    endpoint_ = *endpoints.begin();
    // Connections are opened before the clock starts, as a client's pool
    // would be warm.
    for (int i = 0; i < max_connections_; ++i) {
      auto connection = std::make_unique<Connection>(io_);
      connection->socket.connect(endpoint_, ec);
      if (ec) return Failed("connect: " + ec.message());
      connection->socket.set_option(tcp::no_delay(true));
      idle_.push_back(connection.get());
      connections_.push_back(std::move(connection));
    }
    const Counters before = ReadCounters(options_);
    start_ = Clock::now() + std::chrono::milliseconds(50);
    ScheduleNext();
    io_.run();
    result_.counters = Since(options_, before);
    for (int64_t i = 0; i < total_; ++i) {
      if (result_.latency_ns[i] < 0 && !answered_[i]) ++result_.lost;
    }
    return std::move(result_);
  }

 private:
  struct Connection {
    explicit Connection(asio::io_context& io) : socket(io) {}
    tcp::socket socket;
    beast::flat_buffer buffer;
    std::optional<http::response_parser<http::string_body>> parser;
    int64_t request = -1;
    int attempt = 0;
    bool used = false;  // Has answered a request: a failure may be a close.
  };

  RowResult Failed(std::string why) {
    result_.errors = total_;
    result_.first_error = std::move(why);
    return std::move(result_);
  }

  Clock::time_point Due(int64_t i) const {
    return start_ + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(i / rate_));
  }

  void ScheduleNext() {
    if (next_ >= total_) {
      StartDrainTimer();
      return;
    }
    timer_.expires_at(Due(next_));
    timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      const Clock::time_point now = Clock::now();
      while (next_ < total_ && Due(next_) <= now) {
        result_.max_send_lag_ns = std::max<int64_t>(
            result_.max_send_lag_ns,
            std::chrono::nanoseconds(now - Due(next_)).count());
        Dispatch(next_++);
      }
      ScheduleNext();
    });
  }

  void StartDrainTimer() {
    drain_timer_.expires_at(Due(total_) + drain_);
    drain_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      for (auto& connection : connections_) {
        boost::system::error_code ignored;
        connection->socket.close(ignored);
      }
      io_.stop();
    });
  }

  void Dispatch(int64_t i) {
    if (idle_.empty()) {
      queued_.push_back(i);
      return;
    }
    Connection* connection = idle_.back();
    idle_.pop_back();
    Send(*connection, i, 0);
  }

  void Send(Connection& c, int64_t i, int attempt) {
    c.request = i;
    c.attempt = attempt;
    c.parser.emplace();
    c.parser->body_limit(1 << 20);
    http::async_write(
        c.socket, request_, [this, &c](beast::error_code ec, size_t) {
          if (ec) return OnFailure(c, ec);
          http::async_read(c.socket, c.buffer, *c.parser,
                           [this, &c](beast::error_code ec, size_t) {
                             if (ec) return OnFailure(c, ec);
                             OnResponse(c);
                           });
        });
  }

  void OnResponse(Connection& c) {
    const auto& response = c.parser->get();
    const int64_t i = c.request;
    answered_[i] = true;
    if (response.result() == http::status::ok) {
      result_.latency_ns[i] =
          std::chrono::nanoseconds(Clock::now() - Due(i)).count();
    } else {
      ++result_.errors;
      if (result_.first_error.empty()) {
        result_.first_error = absl::StrCat("HTTP ", response.result_int(), ": ",
                                           response.body().substr(0, 200));
      }
    }
    c.used = true;
    if (!response.keep_alive()) {
      Reconnect(c, std::nullopt);
      return;
    }
    Release(c);
  }

  // A keep-alive connection the server closed is reopened and the request
  // sent again once, as an HTTP client library does.
  void OnFailure(Connection& c, beast::error_code ec) {
    const int64_t i = c.request;
    if (c.attempt == 0 && c.used) {
      Reconnect(c, i);
      return;
    }
    answered_[i] = true;
    ++result_.errors;
    if (result_.first_error.empty()) result_.first_error = ec.message();
    Reconnect(c, std::nullopt);
  }

  void Reconnect(Connection& c, std::optional<int64_t> resend) {
    ++result_.reconnects;
    boost::system::error_code ignored;
    c.socket.close(ignored);
    c.buffer.clear();
    c.used = false;
    c.socket.async_connect(
        endpoint_, [this, &c, resend](boost::system::error_code ec) {
          if (ec) {
            if (resend.has_value()) {
              answered_[*resend] = true;
              ++result_.errors;
              if (result_.first_error.empty()) {
                result_.first_error = "connect: " + ec.message();
              }
            }
            // Try again shortly; the request queue waits meanwhile.
            auto retry = std::make_shared<asio::steady_timer>(
                io_, std::chrono::milliseconds(10));
            retry->async_wait([this, &c, retry](boost::system::error_code) {
              Reconnect(c, std::nullopt);
            });
            return;
          }
          c.socket.set_option(tcp::no_delay(true), ec);
          if (resend.has_value()) {
            Send(c, *resend, 1);
          } else {
            Release(c);
          }
        });
  }

  void Release(Connection& c) {
    if (!queued_.empty()) {
      const int64_t i = queued_.front();
      queued_.pop_front();
      Send(c, i, 0);
      return;
    }
    idle_.push_back(&c);
    if (next_ >= total_ && idle_.size() == connections_.size()) {
      timer_.cancel();
      drain_timer_.cancel();
    }
  }

  const Target& target_;
  const Options& options_;
  const double rate_;
  const int64_t total_;
  const int max_connections_;
  const Clock::duration drain_;
  asio::io_context io_;  // Before the sockets: destroyed after them.
  asio::steady_timer timer_;
  asio::steady_timer drain_timer_;
  tcp::endpoint endpoint_;
  http::request<http::string_body> request_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<Connection*> idle_;
  std::deque<int64_t> queued_;
  Clock::time_point start_;
  int64_t next_ = 0;
  RowResult result_;
  std::vector<bool> answered_ = std::vector<bool>(total_, false);
};

// --- gRPC load ---------------------------------------------------------------

RowResult RunGrpc(const Target& target, const Options& options, double rate) {
  RowResult result;
  const int64_t total = static_cast<int64_t>(rate * options.seconds);
  result.latency_ns.assign(total, -1);
  const std::string address = absl::StrCat(target.host, ":", target.port);
  std::vector<std::unique_ptr<v1::Gateway::Stub>> stubs;
  for (int c = 0; c < std::max(1, options.grpc_channels); ++c) {
    grpc::ChannelArguments args;
    // A connection of its own per channel (channels share one otherwise).
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto channel = grpc::CreateCustomChannel(
        address, grpc::InsecureChannelCredentials(), args);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                   std::chrono::seconds(5))) {
      result.errors = total;
      result.first_error = "cannot connect to " + address;
      return result;
    }
    stubs.push_back(v1::Gateway::NewStub(channel));
  }
  v1::InferRequest request;
  v1::ChatMessage* message = request.add_messages();
  message->set_role(v1::ROLE_USER);
  message->set_content(kPrompt);
  if (!options.route.empty()) request.set_route(options.route);

  struct Call {
    grpc::ClientContext context;
    v1::InferResponse response;
    int64_t index = 0;
    Clock::time_point due;
  };
  const Counters before = ReadCounters(options);
  std::atomic<int64_t> finished{0};
  std::atomic<int64_t> errors{0};
  std::mutex error_mu;
  const Clock::time_point start = Clock::now() + std::chrono::milliseconds(50);
  auto due = [&](int64_t i) {
    return start + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double>(i / rate));
  };
  const auto deadline =
      std::chrono::system_clock::now() +
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::duration<double>(options.seconds +
                                        options.drain_seconds));
  for (int64_t i = 0; i < total; ++i) {
    std::this_thread::sleep_until(due(i));
    result.max_send_lag_ns = std::max<int64_t>(
        result.max_send_lag_ns,
        std::chrono::nanoseconds(Clock::now() - due(i)).count());
    auto* call = new Call;
    call->index = i;
    call->due = due(i);
    call->context.set_deadline(deadline);
    stubs[i % stubs.size()]->async()->Infer(
        &call->context, &request, &call->response,
        [&, call](grpc::Status status) {
          if (status.ok()) {
            result.latency_ns[call->index] =
                std::chrono::nanoseconds(Clock::now() - call->due).count();
          } else {
            ++errors;
            std::lock_guard lock(error_mu);
            if (result.first_error.empty()) {
              result.first_error = absl::StrCat("gRPC ", status.error_code(),
                                                ": ", status.error_message());
            }
          }
          delete call;
          ++finished;
        });
  }
  // Every call ends by its deadline.
  while (finished.load() < total) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  result.counters = Since(options, before);
  std::lock_guard lock(error_mu);
  result.errors = errors.load();
  return result;
}

// --- A static upstream for the smoke test ------------------------------------

// Answers every request with a fixed chat.completion, one thread per
// connection (a handful in a smoke test).
class StaticUpstream final {
 public:
  StaticUpstream() : acceptor_(io_, tcp::endpoint(tcp::v4(), 0)) {
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    thread_ = std::thread([this] { Accept(); });
  }
  ~StaticUpstream() {
    // Wakes the blocked accept (closing the socket alone does not).
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    thread_.join();
    for (auto& t : sessions_) t.join();
  }
  StaticUpstream(const StaticUpstream&) = delete;
  StaticUpstream& operator=(const StaticUpstream&) = delete;

  [[nodiscard]] int port() const { return acceptor_.local_endpoint().port(); }

 private:
  void Accept() {
    for (;;) {
      tcp::socket socket(io_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (ec) return;
      sessions_.emplace_back([s = std::move(socket)]() mutable {
        beast::flat_buffer buffer;
        boost::system::error_code ec;
        for (;;) {
          http::request<http::string_body> request;
          http::read(s, buffer, request, ec);
          if (ec) return;
          http::response<http::string_body> response(http::status::ok, 11);
          response.set(http::field::content_type, "application/json");
          response.body() =
              R"({"id":"chatcmpl-1","object":"chat.completion","model":"mock",)"
              R"("choices":[{"index":0,"message":{"role":"assistant",)"
              R"("content":"Hello."},"finish_reason":"stop"}]})";
          response.keep_alive(request.keep_alive());
          response.prepare_payload();
          http::write(s, response, ec);
          if (ec || !request.keep_alive()) return;
        }
      });
    }
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  std::vector<std::thread> sessions_;
};

// --- Report
// --------------------------------------------------------------------

struct Summary {
  int64_t ok = 0;
  double p50 = 0, p99 = 0, p999 = 0, max = 0;  // ms
};

Summary Summarize(const RowResult& row) {
  std::vector<int64_t> ns;
  for (int64_t v : row.latency_ns) {
    if (v >= 0) ns.push_back(v);
  }
  Summary s;
  s.ok = static_cast<int64_t>(ns.size());
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    return ns[static_cast<size_t>(q * static_cast<double>(ns.size() - 1))] /
           1e6;
  };
  s.p50 = at(0.5);
  s.p99 = at(0.99);
  s.p999 = at(0.999);
  s.max = ns.back() / 1e6;
  return s;
}

absl::StatusOr<Target> ParseTarget(const std::string& spec) {
  std::pair<std::string, std::string> parts = absl::StrSplit(spec, '=');
  Target target;
  target.name = parts.first;
  absl::string_view url = parts.second;
  if (absl::ConsumePrefix(&url, "grpc://")) {
    target.grpc = true;
  } else if (!absl::ConsumePrefix(&url, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--target ", spec,
                     ": expected NAME=http://HOST:PORT[/PREFIX] or "
                     "NAME=grpc://HOST:PORT"));
  }
  const size_t slash = url.find('/');
  absl::string_view authority = url.substr(0, slash);
  if (slash != absl::string_view::npos) {
    target.path_prefix = std::string(absl::StripSuffix(url.substr(slash), "/"));
  }
  const size_t colon = authority.rfind(':');
  if (target.name.empty() || colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--target ", spec, ": needs NAME= and a HOST:PORT"));
  }
  target.host = std::string(authority.substr(0, colon));
  target.port = std::string(authority.substr(colon + 1));
  return target;
}

int Main(int argc, char** argv) {
  CLI::App app{
      "Open-loop latency at fixed request rates, from each request's "
      "scheduled send time."};
  Options options;
  std::vector<std::string> target_specs;
  std::string rates = "1000,3000,5000";
  bool quick = false;
  app.add_option("--target", target_specs,
                 "NAME=http://HOST:PORT[/PREFIX] (POST .../v1/chat/completions)"
                 " or NAME=grpc://HOST:PORT (Gateway/Infer); the first is the "
                 "baseline of the overhead columns");
  app.add_option("--rates", rates, "requests per second, comma-separated");
  app.add_option("--seconds", options.seconds, "seconds per row");
  app.add_option("--rounds", options.rounds, "times to repeat every rate");
  app.add_option("--connections", options.connections,
                 "keep-alive HTTP connections per HTTP row");
  app.add_option("--grpc-channels", options.grpc_channels,
                 "gRPC channels (one connection each) per gRPC row");
  app.add_option("--model", options.model, "the HTTP body's model");
  app.add_option("--route", options.route, "InferRequest.route (gRPC)");
  app.add_option("--drain-seconds", options.drain_seconds,
                 "after the last request was due, how long answers are "
                 "awaited");
  app.add_option("--nginx-status", options.nginx_status,
                 "http://HOST:PORT/PATH of the upstream nginx's stub_status: "
                 "the connections it accepted during each row are shown");
  std::vector<std::string> pid_specs;
  app.add_option("--pid", pid_specs,
                 "NAME=PID[,PID...]: the processes serving target NAME, whose "
                 "CPU time per request each row shows");
  app.add_flag("--quick", quick, "200 req/s for 1 s (a smoke test)");
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    rates = "200";
    options.seconds = 1;
    options.drain_seconds = 5;
    options.connections = std::min(options.connections, 8);
  }
  for (absl::string_view r : absl::StrSplit(rates, ',', absl::SkipEmpty())) {
    double rate = 0;
    if (!absl::SimpleAtod(r, &rate) || rate <= 0) {
      std::cerr << "--rates: " << r << " is not a positive number\n";
      return 2;
    }
    options.rates.push_back(rate);
  }
  for (const std::string& spec : pid_specs) {
    std::pair<std::string, std::string> parts = absl::StrSplit(spec, '=');
    for (absl::string_view pid : absl::StrSplit(parts.second, ',')) {
      int value = 0;
      if (!absl::SimpleAtoi(pid, &value) || value <= 0) {
        std::cerr << "--pid " << spec << ": expected NAME=PID[,PID...]\n";
        return 2;
      }
      options.pids[parts.first].push_back(value);
    }
  }
  std::unique_ptr<StaticUpstream> upstream;
  if (target_specs.empty()) {
    upstream = std::make_unique<StaticUpstream>();
    target_specs.push_back(
        absl::StrCat("self=http://127.0.0.1:", upstream->port()));
  }
  for (const std::string& spec : target_specs) {
    auto target = ParseTarget(spec);
    if (!target.ok()) {
      std::cerr << target.status().message() << "\n";
      return 2;
    }
    options.targets.push_back(*std::move(target));
  }

  std::cout << absl::StrFormat(
      "open loop, %.0f s per row; latency from each request's scheduled send "
      "time; HTTP: %d keep-alive connections, gRPC: %d channels\n"
      "+: over the first target at that rate; over the row: opened = TCP "
      "connections opened (the whole machine's), synrtx = SYN "
      "retransmissions, lsndrp = listen-queue drops, accept = connections "
      "the upstream nginx accepted, reconn = connections this tool reopened, "
      "cpu µs = CPU time (user + system) of the target's processes per "
      "answered request\n",
      options.seconds, options.connections, options.grpc_channels);
  std::cout << absl::StrFormat(
      "%-5s %6s %-16s %7s %6s %8s %8s %9s %9s %8s %8s %8s %8s %6s %6s %6s "
      "%6s %6s %6s\n",
      "round", "req/s", "target", "ok", "errors", "p50 ms", "p99 ms",
      "p99.9 ms", "max ms", "+p50", "+p99", "+p99.9", "+max", "opened",
      "synrtx", "lsndrp", "accept", "reconn", "cpu µs");
  bool failed = false;
  for (int round = 1; round <= options.rounds; ++round) {
    for (double rate : options.rates) {
      std::optional<Summary> baseline;
      for (const Target& target : options.targets) {
        const auto pids = options.pids.find(target.name);
        const double cpu_before =
            pids == options.pids.end() ? -1 : CpuSeconds(pids->second);
        RowResult row = target.grpc ? RunGrpc(target, options, rate)
                                    : HttpLoad(target, options, rate).Run();
        const double cpu_after =
            pids == options.pids.end() ? -1 : CpuSeconds(pids->second);
        const Summary s = Summarize(row);
        const std::string cpu =
            cpu_before < 0 || cpu_after < 0 || s.ok == 0
                ? "-"
                : absl::StrFormat("%.0f", 1e6 * (cpu_after - cpu_before) /
                                              static_cast<double>(s.ok));
        if (!baseline.has_value()) baseline = s;
        auto plus = [](double v) { return absl::StrFormat("%+.2f", v); };
        std::cout << absl::StrFormat(
            "%-5d %6.0f %-16s %7d %6d %8.2f %8.2f %9.2f %9.2f %8s %8s %8s "
            "%8s %6d %6d %6d %6s %6d %6s\n",
            round, rate, target.name, s.ok, row.errors + row.lost, s.p50, s.p99,
            s.p999, s.max, plus(s.p50 - baseline->p50),
            plus(s.p99 - baseline->p99), plus(s.p999 - baseline->p999),
            plus(s.max - baseline->max), row.counters.active_opens,
            row.counters.syn_retrans, row.counters.listen_drops,
            row.counters.nginx_accepts < 0
                ? std::string("-")
                : absl::StrCat(row.counters.nginx_accepts),
            row.reconnects, cpu);
        if (row.max_send_lag_ns > 5'000'000) {
          std::cout << absl::StrFormat(
              "      (the generator sent one request %.1f ms late: a busy "
              "machine)\n",
              row.max_send_lag_ns / 1e6);
        }
        if (!row.first_error.empty()) {
          std::cout << "      first error: " << row.first_error << "\n";
        }
        if (row.errors + row.lost > 0) failed = true;
      }
    }
  }
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace arbiter::bench

int main(int argc, char** argv) { return arbiter::bench::Main(argc, argv); }
