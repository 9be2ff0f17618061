#include "retrieval/index_snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace arbiter::retrieval {
namespace {

constexpr char kMagic[8] = {'A', 'R', 'B', 'S', 'N', 'A', 'P', '1'};

// FNV-1a over 8-byte words (then the tail bytes): fast enough for
// gigabyte images, and any flipped or missing byte changes it.
uint64_t Checksum(absl::string_view bytes) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes.data() + i, 8);
    hash = (hash ^ word) * 0x100000001b3ULL;
  }
  for (; i < bytes.size(); ++i) {
    hash = (hash ^ static_cast<unsigned char>(bytes[i])) * 0x100000001b3ULL;
  }
  return hash;
}

template <typename T>
void Put(std::string& out, const T& value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(value));
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, absl::string_view bytes,
                      const std::string& path) {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      return Errno("writing", path);
    }
    bytes.remove_prefix(static_cast<size_t>(written));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteIndexSnapshot(const std::string& path,
                                const IndexSnapshot& snapshot) {
  std::string payload;
  payload.reserve(64 + snapshot.embedder_weights.size() * 4 +
                  snapshot.index_image.size());
  Put(payload, snapshot.position.removal);
  Put(payload, snapshot.position.chunk);
  Put(payload, static_cast<int64_t>(snapshot.embedder_weights.size()));
  if (!snapshot.embedder_weights.empty()) {
    payload.append(
        reinterpret_cast<const char*>(snapshot.embedder_weights.data()),
        snapshot.embedder_weights.size() * sizeof(float));
  }
  payload.append(snapshot.index_image);
  std::string header(kMagic, sizeof(kMagic));
  Put(header, static_cast<uint64_t>(payload.size()));
  Put(header, Checksum(payload));

  const std::filesystem::path target(path);
  std::error_code error;
  std::filesystem::create_directories(target.parent_path(), error);
  if (error) {
    return absl::InternalError(absl::StrCat(
        "creating ", target.parent_path().string(), ": ", error.message()));
  }
  const std::string temp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd =
      ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("creating", temp);
  absl::Status status = WriteAll(fd, header, temp);
  if (status.ok()) status = WriteAll(fd, payload, temp);
  if (status.ok() && ::fsync(fd) != 0) status = Errno("syncing", temp);
  if (::close(fd) != 0 && status.ok()) status = Errno("closing", temp);
  if (status.ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    status = Errno("renaming over", path);
  }
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return status;
  }
  // The rename itself is durable only once the directory is synced.
  const std::string dir = target.parent_path().empty()
                              ? std::string(".")
                              : target.parent_path().string();
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Errno("opening", dir);
  const bool synced = ::fsync(dir_fd) == 0;
  ::close(dir_fd);
  return synced ? absl::OkStatus() : Errno("syncing", dir);
}

absl::StatusOr<IndexSnapshot> ReadIndexSnapshot(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) {
      return absl::NotFoundError(absl::StrCat("no index snapshot at ", path));
    }
    return Errno("opening", path);
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  auto corrupt = [&](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat("index snapshot ", path, " is corrupt: ", what));
  };
  constexpr size_t kHeader = sizeof(kMagic) + 16;
  if (bytes.size() < kHeader ||
      std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return corrupt("not a snapshot (bad magic)");
  }
  uint64_t size = 0, checksum = 0;
  std::memcpy(&size, bytes.data() + sizeof(kMagic), 8);
  std::memcpy(&checksum, bytes.data() + sizeof(kMagic) + 8, 8);
  const absl::string_view payload = absl::string_view(bytes).substr(kHeader);
  if (payload.size() != size) {
    return corrupt(absl::StrCat(
        "expected ", size, " bytes after the header, found ", payload.size()));
  }
  if (Checksum(payload) != checksum) return corrupt("checksum mismatch");
  IndexSnapshot snapshot;
  int64_t weights = 0;
  if (payload.size() < 24) return corrupt("truncated position");
  std::memcpy(&snapshot.position.removal, payload.data(), 8);
  std::memcpy(&snapshot.position.chunk, payload.data() + 8, 8);
  std::memcpy(&weights, payload.data() + 16, 8);
  if (weights < 0 ||
      static_cast<uint64_t>(weights) > (payload.size() - 24) / sizeof(float)) {
    return corrupt("bad embedder weight count");
  }
  snapshot.embedder_weights.resize(weights);
  if (weights > 0) {
    std::memcpy(snapshot.embedder_weights.data(), payload.data() + 24,
                weights * sizeof(float));
  }
  snapshot.index_image =
      std::string(payload.substr(24 + weights * sizeof(float)));
  struct stat info;
  if (::stat(path.c_str(), &info) == 0) {
    snapshot.written = absl::FromTimeT(info.st_mtime);
  }
  return snapshot;
}

}  // namespace arbiter::retrieval
