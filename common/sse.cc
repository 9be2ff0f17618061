#include "common/sse.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace arbiter::sse {
namespace {

constexpr absl::string_view kByteOrderMark = "\xEF\xBB\xBF";
// A buffer that held a large event is given back rather than kept for the
// rest of the stream.
constexpr size_t kKeptCapacity = 64 << 10;

void Clear(std::string& buffer) {
  if (buffer.capacity() > kKeptCapacity) {
    std::string().swap(buffer);
  } else {
    buffer.clear();
  }
}

}  // namespace

absl::Status Parser::Feed(absl::string_view bytes, EventHandler on_event) {
  if (!failed_.ok()) return failed_;
  size_t at = 0;
  if (after_cr_ && !bytes.empty()) {
    // CRLF split between two chunks: the CR already ended the line.
    if (bytes[0] == '\n') at = 1;
    after_cr_ = false;
  }
  while (at < bytes.size()) {
    const size_t end = bytes.find_first_of("\r\n", at);
    const absl::string_view piece = bytes.substr(
        at,
        end == absl::string_view::npos ? absl::string_view::npos : end - at);
    if (line_.size() + piece.size() + data_.size() > max_event_bytes_) {
      return failed_ = TooLarge();
    }
    if (end == absl::string_view::npos) {
      line_.append(piece.data(),
                   piece.size());  // The line goes on in the next chunk.
      break;
    }
    absl::Status status;
    if (line_.empty()) {
      status = Line(piece, on_event);
    } else {
      line_.append(piece.data(), piece.size());
      status = Line(line_, on_event);
      Clear(line_);
    }
    if (!status.ok()) return failed_ = status;
    at = end + 1;
    if (bytes[end] == '\r') {
      if (at == bytes.size()) {
        after_cr_ = true;
      } else if (bytes[at] == '\n') {
        ++at;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Parser::Line(absl::string_view line, EventHandler on_event) {
  if (first_line_) {
    first_line_ = false;
    absl::ConsumePrefix(&line, kByteOrderMark);
  }
  if (line.empty()) {  // A blank line ends the event.
    if (!has_data_) return absl::OkStatus();
    data_.pop_back();  // The last data line's "\n".
    ++events_;
    absl::Status status = on_event(data_);
    Clear(data_);
    has_data_ = false;
    return status;
  }
  if (line.front() == ':') return absl::OkStatus();  // A comment.
  const size_t colon = line.find(':');
  const absl::string_view field = line.substr(0, colon);
  if (field != "data") return absl::OkStatus();
  absl::string_view value = colon == absl::string_view::npos
                                ? absl::string_view()
                                : line.substr(colon + 1);
  absl::ConsumePrefix(&value, " ");
  data_.append(value.data(), value.size());
  data_.push_back('\n');
  has_data_ = true;
  return absl::OkStatus();
}

absl::Status Parser::TooLarge() {
  return absl::ResourceExhaustedError(
      absl::StrCat("an event is over ", max_event_bytes_, " bytes"));
}

}  // namespace arbiter::sse
