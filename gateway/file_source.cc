#include "gateway/file_source.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gateway/embedded_files.h"

namespace arbiter {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ReadWholeFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read \"", path.string(), "\""));
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

class DiskFileSource final : public FileSource {
 public:
  explicit DiskFileSource(std::string base_dir)
      : base_dir_(std::move(base_dir)) {}

  absl::StatusOr<std::string> Read(const std::string& path) const override {
    return ReadWholeFile(Resolve(path));
  }

  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadFolder(
      const std::string& path) const override {
    fs::path dir = Resolve(path);
    std::error_code error;
    if (!fs::is_directory(dir, error)) {
      return absl::NotFoundError(
          absl::StrCat("\"", dir.string(), "\" is not a folder"));
    }
    std::vector<std::pair<std::string, std::string>> files;
    for (const auto& entry : fs::directory_iterator(dir, error)) {
      if (!entry.is_regular_file()) continue;
      auto content = ReadWholeFile(entry.path());
      if (!content.ok()) return content.status();
      files.emplace_back(entry.path().filename().string(), *std::move(content));
    }
    if (error) {
      return absl::UnavailableError(
          absl::StrCat("listing \"", dir.string(), "\": ", error.message()));
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  std::string Describe() const override {
    return absl::StrCat("folder \"", base_dir_, "\"");
  }

 private:
  fs::path Resolve(const std::string& path) const {
    fs::path p(path);
    return p.is_absolute() ? p : fs::path(base_dir_) / p;
  }

  const std::string base_dir_;
};

class EmbeddedFileSource final : public FileSource {
 public:
  absl::StatusOr<std::string> Read(const std::string& path) const override {
    for (const EmbeddedFile& file : EmbeddedFiles()) {
      if (file.path == path) return std::string(file.content);
    }
    return absl::NotFoundError(absl::StrCat("no embedded file \"", path, "\""));
  }

  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadFolder(
      const std::string& path) const override {
    std::string prefix = path;
    while (absl::EndsWith(prefix, "/")) prefix.pop_back();
    prefix += "/";
    std::vector<std::pair<std::string, std::string>> files;
    for (const EmbeddedFile& file : EmbeddedFiles()) {
      if (!absl::StartsWith(file.path, prefix)) continue;
      absl::string_view name = file.path.substr(prefix.size());
      if (name.find('/') != absl::string_view::npos) continue;
      files.emplace_back(std::string(name), std::string(file.content));
    }
    if (files.empty()) {
      return absl::NotFoundError(
          absl::StrCat("no embedded folder \"", path, "\""));
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  std::string Describe() const override { return "the embedded quickstart"; }
};

}  // namespace

std::unique_ptr<FileSource> MakeDiskFileSource(std::string base_dir) {
  return std::make_unique<DiskFileSource>(std::move(base_dir));
}

std::unique_ptr<FileSource> MakeEmbeddedFileSource() {
  return std::make_unique<EmbeddedFileSource>();
}

}  // namespace arbiter
