// `arbiter index add`'s documents: a JSON Lines file and a Markdown file.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "gateway/cli/commands.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view content(reinterpret_cast<const char*>(data), size);
  (void)arbiter::cli::DocumentsOfFile("documents.jsonl", content);
  (void)arbiter::cli::DocumentsOfFile("document.md", content);
  return 0;
}
