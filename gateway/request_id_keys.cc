#include "gateway/request_id_keys.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gateway/request_id.h"

namespace arbiter {
namespace {

// A key file holds a few lines; anything larger is not one.
constexpr off_t kMaxKeyFileBytes = 1 << 20;

// Reads a regular file whole, with the mode it has.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path,
                                           mode_t* mode) {
  const std::string quoted = absl::StrCat("\"", path, "\"");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", quoted));
  }
  struct stat info {};
  std::string text;
  absl::Status status;
  if (::fstat(fd, &info) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", quoted));
  } else if (!S_ISREG(info.st_mode)) {
    status = absl::InvalidArgumentError(
        absl::StrCat(quoted, " is not a regular file"));
  } else if (info.st_size > kMaxKeyFileBytes) {
    status = absl::InvalidArgumentError(
        absl::StrCat(quoted, " has ", info.st_size,
                     " bytes; a key file has at most ", kMaxKeyFileBytes));
  } else {
    text.resize(static_cast<size_t>(info.st_size));
    size_t done = 0;
    while (done < text.size()) {
      const ssize_t got = ::read(fd, text.data() + done, text.size() - done);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        status =
            absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", quoted));
        break;
      }
      if (got == 0) break;  // Shrank while read: keep what is there.
      done += static_cast<size_t>(got);
    }
    text.resize(done);
  }
  ::close(fd);
  if (!status.ok()) {
    OPENSSL_cleanse(text.data(), text.size());
    return status;
  }
  *mode = info.st_mode;
  return text;
}

// "1 key", "2 keys (the first signs)".
std::string Count(size_t keys) {
  return keys == 1 ? "1 key" : absl::StrCat(keys, " keys (the first signs)");
}

absl::Status ShortKey(absl::string_view where, size_t size) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": the key has ", size, " characters; at least ",
                   RequestIdSigner::kMinKeyBytes,
                   " are needed (e.g. `openssl rand -base64 48`)"));
}

absl::StatusOr<RequestIdKeys> KeysFromVariable(const std::string& variable) {
  const char* value = std::getenv(variable.c_str());
  if (value == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("environment variable ", variable, " is not set"));
  }
  RequestIdKeys keys;
  int position = 0;
  for (absl::string_view item : absl::StrSplit(value, ',')) {
    ++position;
    item = absl::StripAsciiWhitespace(item);
    if (item.empty()) continue;
    if (item.size() < RequestIdSigner::kMinKeyBytes) {
      return ShortKey(
          absl::StrCat("key ", position, " of environment variable ", variable),
          item.size());
    }
    keys.keys.emplace_back(item);
  }
  if (keys.keys.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ", variable, " holds no key"));
  }
  keys.source = absl::StrCat(Count(keys.keys.size()),
                             " from environment variable ", variable);
  return keys;
}

absl::Status Prefixed(absl::string_view field, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(field, ": ", status.message()));
}

}  // namespace

absl::StatusOr<RequestIdKeys> ReadRequestIdKeyFile(const std::string& path) {
  mode_t mode = 0;
  auto text = ReadSecretFile(path, &mode);
  if (!text.ok()) return text.status();
  RequestIdKeys keys;
  absl::Status status;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    if (line.size() < RequestIdSigner::kMinKeyBytes) {
      status = ShortKey(absl::StrCat("\"", path, "\" line ", line_number),
                        line.size());
      break;
    }
    keys.keys.emplace_back(line);
  }
  OPENSSL_cleanse(text->data(), text->size());
  if (!status.ok()) {
    for (std::string& key : keys.keys) OPENSSL_cleanse(key.data(), key.size());
    return status;
  }
  if (keys.keys.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", path, "\" holds no key (one per line)"));
  }
  keys.source =
      absl::StrCat(Count(keys.keys.size()), " from file \"", path, "\"");
  if ((mode & (S_IRGRP | S_IROTH)) != 0) {
    keys.warnings.push_back(absl::StrFormat(
        "\"%s\" can be read by %s (mode %04o): whoever reads it can forge "
        "request ids; chmod 600 it",
        path, (mode & S_IROTH) != 0 ? "others" : "its group", mode & 07777));
  }
  return keys;
}

absl::StatusOr<RequestIdKeys> ResolveRequestIdKeys(
    const v1::Server& server,
    absl::FunctionRef<absl::StatusOr<std::string>()> fallback) {
  if (!server.request_id_key_file().empty()) {
    auto keys = ReadRequestIdKeyFile(server.request_id_key_file());
    if (!keys.ok()) {
      return Prefixed("server.request_id_key_file", keys.status());
    }
    for (std::string& warning : keys->warnings) {
      warning = absl::StrCat("server.request_id_key_file: ", warning);
    }
    return keys;
  }
  if (!server.request_id_key_env().empty()) {
    auto keys = KeysFromVariable(server.request_id_key_env());
    if (!keys.ok()) return Prefixed("server.request_id_key_env", keys.status());
    return keys;
  }
  auto key = fallback();
  if (!key.ok()) return key.status();
  RequestIdKeys keys;
  keys.source = "the gateway's own key (no key file or variable is set)";
  keys.keys.push_back(*std::move(key));
  return keys;
}

absl::StatusOr<std::string> RandomRequestIdKey() {
  std::string key(RequestIdSigner::kMinKeyBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()),
                 static_cast<int>(key.size())) != 1) {
    return absl::InternalError(
        "request id key: OpenSSL's random generator failed");
  }
  return key;
}

}  // namespace arbiter
