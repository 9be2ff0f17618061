// The YAML config loader: parse, validate, defaults. Any input gets a
// config or a list of errors; nothing else.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "gateway/config.h"
#include "gateway/file_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The quickstart's files, so that references in the input can resolve.
  static const std::shared_ptr<const arbiter::FileSource> files =
      arbiter::MakeEmbeddedFileSource();
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  auto loaded = arbiter::LoadConfigText(yaml, "fuzz", files);
  if (loaded.ok()) {
    (void)arbiter::CheckConfigReferences(loaded->config, *files);
  }
  return 0;
}
