// Time to first token of streamed chat completions with many streams open at
// once: each of --streams keep-alive connections sends a `stream: true`
// request, reads its Server-Sent Events as they arrive, and sends the next
// when the stream ends, for --seconds (the first starts spread over
// --ramp seconds, so that streams overlap in every phase rather than all
// starting together). Several targets are measured in turn, in rounds, so
// that one run compares a backend with arbiter in front of it.
//
//   ttft_bench --target direct=127.0.0.1:18100
//       --target arbiter-http=127.0.0.1:18090 --streams 1000 --seconds 10
//
// Time to first token: from writing the request to the first event whose
// delta has non-empty content. Also printed: the streams that ended
// cleanly, those that failed (connection errors, a status other than 200,
// no content), and the time to the end of the stream.

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace arbiter {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Target {
  std::string name;
  std::string host;
  std::string port;
};

struct Options {
  std::vector<Target> targets;
  int streams = 1000;
  double seconds = 10;
  double ramp = 2;
  int rounds = 1;
  std::string model = "mock";
};

struct Tally {
  std::vector<double> ttft_ms;
  std::vector<double> total_ms;
  int64_t failed = 0;
};

// One keep-alive connection that streams one request after another.
class Stream final : public std::enable_shared_from_this<Stream> {
 public:
  Stream(asio::io_context& io, const Target& target, std::string request,
         Clock::time_point stop, Tally& tally)
      : socket_(io),
        timer_(io),
        target_(target),
        request_(std::move(request)),
        stop_(stop),
        tally_(tally) {}

  void StartAfter(Clock::duration delay) {
    timer_.expires_after(delay);
    timer_.async_wait([self = shared_from_this()](beast::error_code error) {
      if (!error) self->Connect();
    });
  }

 private:
  void Connect() {
    tcp::resolver resolver(socket_.get_executor());
    beast::error_code error;
    auto endpoints = resolver.resolve(target_.host, target_.port, error);
    if (error) return Fail();
    asio::async_connect(
        socket_, endpoints,
        [self = shared_from_this()](beast::error_code error, const auto&) {
          if (error) return self->Fail();
          socket_base_nodelay(self->socket_);
          self->Send();
        });
  }

  static void socket_base_nodelay(tcp::socket& socket) {
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
  }

  void Send() {
    if (Clock::now() >= stop_) return Close();
    sent_ = Clock::now();
    first_.reset();
    scanned_ = 0;
    parser_.emplace();
    parser_->body_limit(64 << 20);
    asio::async_write(
        socket_, asio::buffer(request_),
        [self = shared_from_this()](beast::error_code error, size_t) {
          if (error) return self->Fail();
          self->Read();
        });
  }

  void Read() {
    bhttp::async_read_some(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code error, size_t) {
          self->OnRead(error);
        });
  }

  void OnRead(beast::error_code error) {
    if (error) return Fail();
    if (parser_->is_header_done() && parser_->get().result_int() != 200) {
      return Fail();
    }
    const std::string& body = parser_->get().body();
    if (!first_.has_value() && HasContent(body)) first_ = Clock::now();
    if (!parser_->is_done()) return Read();
    if (!first_.has_value()) return Fail();
    const Clock::time_point end = Clock::now();
    tally_.ttft_ms.push_back(Ms(*first_ - sent_));
    tally_.total_ms.push_back(Ms(end - sent_));
    if (!parser_->keep_alive()) return Close();
    Send();
  }

  // A delta with text: `"content":"` followed by something other than the
  // closing quote. Scans only what arrived since the last look.
  bool HasContent(const std::string& body) {
    static constexpr std::string_view kField = "\"content\":\"";
    size_t from = scanned_ >= kField.size() ? scanned_ - kField.size() : 0;
    for (;;) {
      const size_t at = body.find(kField, from);
      if (at == std::string::npos || at + kField.size() >= body.size()) {
        scanned_ = body.size();
        return false;
      }
      if (body[at + kField.size()] != '"') return true;
      from = at + kField.size();
    }
  }

  static double Ms(Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
  }

  void Fail() {
    ++tally_.failed;
    Close();
  }
  void Close() {
    beast::error_code ignored;
    socket_.close(ignored);
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  const Target& target_;
  const std::string request_;
  const Clock::time_point stop_;
  Tally& tally_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::response_parser<bhttp::string_body>> parser_;
  Clock::time_point sent_;
  std::optional<Clock::time_point> first_;
  size_t scanned_ = 0;
};

std::string RequestFor(const Target& target, const std::string& model) {
  const std::string body = absl::StrFormat(
      R"({"model":"%s","stream":true,"messages":[{"role":"user","content":"Tell me a story."}]})",
      model);
  return absl::StrFormat(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: "
      "application/json\r\nContent-Length: %d\r\n\r\n%s",
      target.host, target.port, body.size(), body);
}

double Percentile(std::vector<double>& values, double q) {
  if (values.empty()) return 0;
  const size_t at = std::min(
      values.size() - 1, static_cast<size_t>(q * (values.size() - 1) + 0.5));
  std::nth_element(values.begin(), values.begin() + at, values.end());
  return values[at];
}

Tally Measure(const Target& target, const Options& options) {
  asio::io_context io(1);
  Tally tally;
  const Clock::time_point start = Clock::now();
  const auto ramp = std::chrono::duration<double>(options.ramp);
  const Clock::time_point stop =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(options.seconds) + ramp);
  const std::string request = RequestFor(target, options.model);
  for (int i = 0; i < options.streams; ++i) {
    auto stream = std::make_shared<Stream>(io, target, request, stop, tally);
    stream->StartAfter(std::chrono::duration_cast<Clock::duration>(
        ramp * (static_cast<double>(i) / options.streams)));
  }
  io.run();
  return tally;
}

// NAME=HOST:PORT.
bool ParseTarget(const std::string& spec, Target& target) {
  std::pair<std::string, std::string> named =
      absl::StrSplit(spec, absl::MaxSplits('=', 1));
  const size_t colon = named.second.rfind(':');
  if (named.first.empty() || colon == std::string::npos) return false;
  target = {named.first, named.second.substr(0, colon),
            named.second.substr(colon + 1)};
  return true;
}

}  // namespace
}  // namespace arbiter

int main(int argc, char** argv) {
  arbiter::Options options;
  std::vector<std::string> target_specs;
  CLI::App app{"Time to first token with many concurrent streams."};
  app.add_option("--target", target_specs, "NAME=HOST:PORT, repeatable")
      ->required();
  app.add_option("--streams", options.streams, "concurrent streams")
      ->check(CLI::PositiveNumber);
  app.add_option("--seconds", options.seconds, "seconds per target")
      ->check(CLI::PositiveNumber);
  app.add_option("--ramp", options.ramp, "seconds over which streams start")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--rounds", options.rounds, "times to repeat every target")
      ->check(CLI::PositiveNumber);
  app.add_option("--model", options.model, "the request's model");
  CLI11_PARSE(app, argc, argv);
  for (const std::string& spec : target_specs) {
    arbiter::Target target;
    if (!arbiter::ParseTarget(spec, target)) {
      std::cerr << "ttft_bench: --target " << spec
                << " is not NAME=HOST:PORT\n";
      return 2;
    }
    options.targets.push_back(std::move(target));
  }
  std::cout << absl::StrFormat(
      "%d concurrent streams a target, %.0f s each after a %.1f s ramp; "
      "milliseconds\n",
      options.streams, options.seconds, options.ramp);
  std::cout << absl::StrFormat("%-5s %-16s %8s %7s %9s %9s %9s %9s %9s\n",
                               "round", "target", "streams", "failed",
                               "ttft p50", "p99", "p99.9", "max", "end p50");
  for (int round = 1; round <= options.rounds; ++round) {
    for (const arbiter::Target& target : options.targets) {
      arbiter::Tally tally = arbiter::Measure(target, options);
      std::vector<double>& t = tally.ttft_ms;
      std::cout << absl::StrFormat(
          "%-5d %-16s %8d %7d %9.2f %9.2f %9.2f %9.2f %9.2f\n", round,
          target.name, t.size(), tally.failed, arbiter::Percentile(t, 0.5),
          arbiter::Percentile(t, 0.99), arbiter::Percentile(t, 0.999),
          t.empty() ? 0.0 : *std::max_element(t.begin(), t.end()),
          arbiter::Percentile(tally.total_ms, 0.5));
      std::cout.flush();
    }
  }
  return 0;
}
