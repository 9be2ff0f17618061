#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "retrieval/store.h"

namespace arbiter::retrieval {

// What a collection's index snapshot holds: the index image, the embedder
// weights its vectors were made with, and the store position it covers.
struct IndexSnapshot {
  StorePosition position;
  std::vector<float> embedder_weights;
  std::string index_image;  // VectorIndex::Serialize().
  absl::Time written;       // Set by ReadIndexSnapshot from the file.
};

// Writes atomically: a temporary file beside `path`, fsync, rename, fsync of
// the directory. A crash leaves the old snapshot or the new one, never a mix.
absl::Status WriteIndexSnapshot(const std::string& path,
                                const IndexSnapshot& snapshot);

// NOT_FOUND when there is none; DATA_LOSS naming the fault when the file is
// truncated, altered or not a snapshot (a checksum covers every byte).
absl::StatusOr<IndexSnapshot> ReadIndexSnapshot(const std::string& path);

}  // namespace arbiter::retrieval
