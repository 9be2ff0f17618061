#pragma once

// An incremental reader of Server-Sent Events (text/event-stream, as the
// WHATWG HTML standard defines it), for streamed answers of backends. Bytes
// go in as they arrive, split anywhere; each complete event comes out once
// its blank line has been read. Only an event's data is kept: its "data:"
// lines joined with "\n". Comments (":..."), "event:", "id:", "retry:" and
// unknown fields are ignored. Lines end in CRLF, LF or CR; a leading BOM is
// dropped. Memory is bounded: one event (data and the line being read)
// larger than max_event_bytes fails the stream.
//
//   sse::Parser parser(/*max_event_bytes=*/1 << 20);
//   absl::Status status = parser.Feed(bytes, [&](absl::string_view data) {
//     if (data == "[DONE]") done = true;
//     return absl::OkStatus();  // An error stops the stream.
//   });

#include <cstddef>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace arbiter::sse {

// Told each event's data; an error it returns stops Feed and the stream.
using EventHandler = absl::FunctionRef<absl::Status(absl::string_view data)>;

class Parser final {
 public:
  explicit Parser(size_t max_event_bytes) : max_event_bytes_(max_event_bytes) {}

  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // Reads `bytes`, calling on_event for every event they complete, in
  // order. Fails with RESOURCE_EXHAUSTED when an event grows over
  // max_event_bytes, or with on_event's error; once failed, every later
  // call returns the same error and reads nothing.
  [[nodiscard]] absl::Status Feed(absl::string_view bytes,
                                  EventHandler on_event);

  // True when the bytes so far end inside an event (a line or data not yet
  // closed by a blank line): a stream that stops here was cut off.
  [[nodiscard]] bool in_event() const { return !line_.empty() || has_data_; }
  [[nodiscard]] size_t events() const { return events_; }

 private:
  // Handles one whole line (without its end).
  absl::Status Line(absl::string_view line, EventHandler on_event);
  absl::Status TooLarge();

  const size_t max_event_bytes_;
  std::string line_;  // The line being read, when a chunk ended inside it.
  std::string data_;  // The event's data lines, each followed by "\n".
  bool has_data_ = false;
  bool after_cr_ = false;   // The last byte was CR: an LF next ends nothing.
  bool first_line_ = true;  // A BOM may start it.
  size_t events_ = 0;
  absl::Status failed_;
};

}  // namespace arbiter::sse
