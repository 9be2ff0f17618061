#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "retrieval/chunker.h"
#include "retrieval/embedder.h"

namespace faiss {
struct Index;
}

namespace arbiter::retrieval {

struct Document {
  std::string id;     // e.g. the file name without extension.
  std::string title;  // The first "# " heading, or the id.
  std::string text;
};

struct RetrieverOptions {
  ChunkOptions chunking;
  int embedding_dim = 512;
};

struct Chunk {
  int64_t id = 0;  // Dense, 0-based, stable for one build.
  std::string doc_id;
  std::string doc_title;
  int position = 0;  // Index of the chunk within its document.
  std::string text;
};

struct Hit {
  const Chunk* chunk = nullptr;  // Owned by the Retriever.
  float score = 0;               // Cosine similarity.
};

// An in-memory corpus: documents are chunked, embedded and indexed in FAISS
// (exact inner product over unit vectors, with chunk ids) once, at Build.
//
//   auto retriever = Retriever::Build(docs, {});
//   auto hits = (*retriever)->Search("reset my password", 4);
//
// Immutable after Build, so Search is safe from any number of threads.
class Retriever final {
 public:
  // Fails with INVALID_ARGUMENT on an empty document id or duplicate ids,
  // and with INTERNAL if FAISS fails.
  static absl::StatusOr<std::unique_ptr<Retriever>> Build(
      std::vector<Document> documents, const RetrieverOptions& options);

  ~Retriever();
  Retriever(const Retriever&) = delete;
  Retriever& operator=(const Retriever&) = delete;

  // Top-k chunks by cosine similarity, best first. INVALID_ARGUMENT for
  // k < 1 or an empty query.
  [[nodiscard]] absl::StatusOr<std::vector<Hit>> Search(absl::string_view query,
                                                        int k) const;

  // The query-side embedding, e.g. for a policy that compares prompts.
  [[nodiscard]] std::vector<float> Embed(absl::string_view text) const {
    return embedder_.Embed(text);
  }

  [[nodiscard]] size_t document_count() const { return document_count_; }
  [[nodiscard]] const std::vector<Chunk>& chunks() const { return chunks_; }

 private:
  Retriever(int dim);

  HashedNgramEmbedder embedder_;
  std::vector<Chunk> chunks_;
  size_t document_count_ = 0;
  std::unique_ptr<faiss::Index> index_;
};

// Parses a Markdown or text file into a Document: the id is the file name
// without its extension, the title the first "# " heading.
[[nodiscard]] Document ParseDocument(absl::string_view file_name,
                                     absl::string_view content);

struct Context {
  std::string block;  // The text placed in the prompt.
  struct Cited {
    const Chunk* chunk;
    float score;
    std::string marker;  // "[1]", "[2]", ...
  };
  std::vector<Cited> citations;
};

// Assembles hits (best first) into a context block with citation markers,
// skipping duplicate chunks and stopping before max_tokens would be exceeded
// (the first hit is cut to fit if it alone is too long):
//
//   [1] Reset your password (reset-your-password)
//   To reset your password, open ...
//
//   [2] ...
[[nodiscard]] Context AssembleContext(const std::vector<Hit>& hits,
                                      int max_tokens);

}  // namespace arbiter::retrieval
