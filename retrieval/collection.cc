#include "retrieval/collection.h"

#include <algorithm>
#include <iostream>
#include <iterator>
#include <mutex>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "retrieval/index_snapshot.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {
namespace {

// A chunk is embedded with its document's title: it names the subject.
std::string EmbeddingText(absl::string_view title, absl::string_view text) {
  return absl::StrCat(title, "\n", text);
}

// A rebuild catches up with the writes made during it in rounds that let
// writers go on; the batch after a round of at most this many changes (or
// a quick one) is applied holding them off.
constexpr size_t kCatchUpUnderLock = 256;
// A catch-up round this quick leaves a batch that applies about as fast.
constexpr absl::Duration kQuickCatchUpRound = absl::Milliseconds(100);
constexpr int64_t kRebuildPage = 4096;
// How often the background thread prunes the change log.
constexpr absl::Duration kPruneInterval = absl::Seconds(10);

std::string Describe(StorePosition position) {
  return absl::StrCat("removal ", position.removal, ", chunk ", position.chunk);
}

}  // namespace

Collection::Collection(DocumentStore& store, std::string name,
                       CollectionOptions options)
    : store_(store),
      name_(std::move(name)),
      options_(std::move(options)),
      remote_(static_cast<bool>(options_.remote_embedder)),
      live_hold_(store.HoldRemovals(name_)) {}

Collection::~Collection() {
  {
    std::lock_guard lock(maintenance_mu_);
    stopping_ = true;
  }
  maintenance_cv_.notify_all();
  if (maintenance_.joinable()) maintenance_.join();
  std::thread grower;
  {
    std::lock_guard lock(grow_mu_);
    grower = std::move(grower_);
  }
  if (grower.joinable()) grower.join();
  if (changes_since_snapshot_ > 0) {
    if (absl::Status s = SaveSnapshot(); !s.ok()) Log(s.message());
  }
}

absl::StatusOr<std::unique_ptr<Collection>> Collection::Open(
    DocumentStore& store, const std::string& name,
    const CollectionOptions& options) {
  if (options.embedding_dim < 1) {
    return absl::InvalidArgumentError("embedding_dim: must be >= 1");
  }
  if (absl::Status s = store.CreateCollection(name); !s.ok()) return s;
  auto collection =
      std::unique_ptr<Collection>(new Collection(store, name, options));
  if (absl::Status s = collection->Load(); !s.ok()) return s;
  if (options.background_maintenance) {
    collection->maintenance_ =
        std::thread([raw = collection.get()] { raw->MaintenanceLoop(); });
  }
  return collection;
}

void Collection::Log(absl::string_view line) const {
  const std::string text = absl::StrCat("collection ", name_, ": ", line);
  if (options_.log) {
    options_.log(text);
  } else {
    std::cerr << text << std::endl;
  }
}

absl::StatusOr<std::vector<std::vector<float>>> Collection::EmbedTexts(
    const std::vector<std::string>& texts,
    const HashedNgramEmbedder* embedder) const {
  if (remote_) {
    if (texts.empty()) return std::vector<std::vector<float>>{};
    auto vectors = options_.remote_embedder(texts);
    if (!vectors.ok()) return vectors.status();
    for (const std::vector<float>& vector : *vectors) {
      if (static_cast<int>(vector.size()) != options_.embedding_dim) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the embedding server returned ", vector.size(),
            "-dim vectors; the collection expects ", options_.embedding_dim));
      }
    }
    return vectors;
  }
  std::vector<std::vector<float>> vectors;
  vectors.reserve(texts.size());
  for (const std::string& text : texts) {
    vectors.push_back(embedder->Embed(text));
  }
  return vectors;
}

absl::StatusOr<std::vector<float>> Collection::Embed(
    absl::string_view text) const {
  if (remote_) {
    auto vectors = EmbedTexts({std::string(text)}, nullptr);
    if (!vectors.ok()) return vectors.status();
    return std::move(vectors->front());
  }
  std::shared_ptr<const HashedNgramEmbedder> embedder;
  {
    std::shared_lock lock(mu_);
    embedder = embedder_;
  }
  return embedder->Embed(text);
}

absl::Status Collection::Load() {
  const std::string& path = options_.snapshot_path;
  std::string reason;
  if (!path.empty()) {
    // Keeps every removal while the snapshot's position is unknown.
    DocumentStore::RemovalHold snapshot_hold = store_.HoldRemovals(name_);
    auto snapshot = ReadIndexSnapshot(path);
    if (snapshot.ok()) {
      auto index = VectorIndex::Deserialize(snapshot->index_image);
      const IndexKind wanted = options_.index.kind;
      if (!index.ok()) {
        reason = absl::StrCat("index snapshot ", path,
                              " is corrupt: ", index.status().message());
      } else if ((*index)->dim() != options_.embedding_dim) {
        reason = absl::StrCat(
            "index snapshot ", path, " holds ", (*index)->dim(),
            "-d vectors, the config asks for ", options_.embedding_dim);
      } else if (wanted != IndexKind::kAuto && wanted != (*index)->kind()) {
        reason = absl::StrCat("index snapshot ", path, " is ",
                              IndexKindName((*index)->kind()),
                              ", the config asks for ", IndexKindName(wanted));
      } else if (!remote_ &&
                 static_cast<int>(snapshot->embedder_weights.size()) !=
                     options_.embedding_dim) {
        reason = absl::StrCat("index snapshot ", path,
                              " has no built-in embedder weights");
      } else {
        std::lock_guard write_lock(write_mu_);
        std::shared_ptr<HashedNgramEmbedder> embedder;
        if (!remote_) {
          embedder =
              std::make_shared<HashedNgramEmbedder>(options_.embedding_dim);
          embedder->SetWeights(std::move(snapshot->embedder_weights));
        }
        auto pending = Gather(DocumentStore::ReadOn::kReader,
                              snapshot->position, embedder.get(), false);
        if (absl::IsOutOfRange(pending.status())) {
          // Pruned past it (a copy, or an older one put back).
          reason = absl::StrCat(
              "index snapshot ", path,
              " is too old to replay: ", pending.status().message());
        } else if (!pending.ok()) {
          return pending.status();
        } else {
          (*index)->Remove(pending->removed);
          if (absl::Status s = (*index)->Add(pending->ids, pending->vectors);
              !s.ok()) {
            return s;
          }
          const std::string opened = absl::StrFormat(
              "loaded index snapshot %s (%s, %d vectors, at %s); replayed %d "
              "removals and %d additions",
              path, IndexKindName((*index)->kind()), (*index)->size(),
              Describe(snapshot->position), pending->removed.size(),
              pending->ids.size());
          {
            std::unique_lock lock(mu_);
            fitted_on_ = (*index)->size();
            built_size_ = (*index)->size();
            index_ = *std::move(index);
            ++index_generation_;
            embedder_ = std::move(embedder);
            position_ = pending->position;
            live_hold_.MoveTo(position_.removal);
          }
          snapshot_hold.MoveTo(snapshot->position.removal);
          {
            std::lock_guard lock(snapshot_mu_);
            snapshot_hold_ = std::move(snapshot_hold);
          }
          changes_since_snapshot_ = static_cast<int64_t>(
              pending->removed.size() + pending->ids.size());
          {
            std::lock_guard lock(stats_mu_);
            opened_from_ = opened;
            snapshot_saved_ = true;
            snapshot_position_ = snapshot->position;
            snapshot_time_ = snapshot->written;
            snapshot_bytes_ =
                static_cast<int64_t>(snapshot->index_image.size());
          }
          Log(opened);
          return absl::OkStatus();
        }
      }
    } else if (absl::IsNotFound(snapshot.status())) {
      reason = absl::StrCat("no index snapshot at ", path);
    } else {
      reason = std::string(snapshot.status().message());
    }
    Log(absl::StrCat(reason, "; rebuilding the index from the store"));
  }
  if (absl::Status s = Rebuild(); !s.ok()) return s;
  {
    std::lock_guard lock(stats_mu_);
    opened_from_ = path.empty()
                       ? "built from the store (no snapshot path)"
                       : absl::StrCat("rebuilt from the store: ", reason);
  }
  if (!path.empty()) {
    if (absl::Status s = SaveSnapshot(); !s.ok()) Log(s.message());
  }
  return absl::OkStatus();
}

absl::Status Collection::Rebuild() {
  StorePosition position;
  std::vector<StoredChunk> chunks;
  std::shared_ptr<const HashedNgramEmbedder> embedder;
  int64_t fitted_on = 0;
  // Keeps the removals after the rebuild's position until it is done.
  DocumentStore::RemovalHold hold = store_.HoldRemovals(name_);
  {
    // Writers go on: the chunks up to the position's last id, read after
    // it, are the ones it covers that are still there. The removals after
    // it are replayed below, and removing a chunk already gone is harmless.
    auto at = store_.Position();
    if (!at.ok()) return at.status();
    hold.MoveTo(at->removal);
    // In pages, each its own short read: one long read would keep SQLite
    // from checkpointing its log while writers go on.
    for (int64_t after = 0;;) {
      auto page = store_.ChunkPage(name_, after, at->chunk, kRebuildPage);
      if (!page.ok()) return page.status();
      if (page->empty()) break;
      after = page->back().id;
      std::move(page->begin(), page->end(), std::back_inserter(chunks));
    }
    position = *at;
    std::shared_lock lock(mu_);
    embedder = embedder_;
    fitted_on = fitted_on_;
  }
  const int dim = options_.embedding_dim;
  const int64_t n = static_cast<int64_t>(chunks.size());
  std::vector<int64_t> ids;
  std::vector<float> matrix;
  ids.reserve(n);
  matrix.reserve(n * dim);
  if (remote_) {
    // Server vectors are costly: use the stored ones, embed only the rest.
    std::vector<std::string> missing;
    for (const StoredChunk& chunk : chunks) {
      if (static_cast<int>(chunk.embedding.size()) != dim) {
        missing.push_back(EmbeddingText(chunk.doc_title, chunk.text));
      }
    }
    auto embedded = EmbedTexts(missing, nullptr);
    if (!embedded.ok()) return embedded.status();
    size_t next = 0;
    for (const StoredChunk& chunk : chunks) {
      const std::vector<float>& vector =
          static_cast<int>(chunk.embedding.size()) == dim ? chunk.embedding
                                                          : (*embedded)[next++];
      ids.push_back(chunk.id);
      matrix.insert(matrix.end(), vector.begin(), vector.end());
    }
  } else {
    std::vector<std::string> texts;
    texts.reserve(n);
    for (const StoredChunk& chunk : chunks) {
      texts.push_back(EmbeddingText(chunk.doc_title, chunk.text));
    }
    // Weights are learned again when the corpus has doubled since.
    if (embedder == nullptr || n >= std::max<int64_t>(64, 2 * fitted_on)) {
      auto fitted = std::make_shared<HashedNgramEmbedder>(dim);
      fitted->Fit(std::vector<absl::string_view>(texts.begin(), texts.end()));
      embedder = std::move(fitted);
      fitted_on = n;
    }
    for (size_t i = 0; i < chunks.size(); ++i) {
      std::vector<float> vector = embedder->Embed(texts[i]);
      ids.push_back(chunks[i].id);
      matrix.insert(matrix.end(), vector.begin(), vector.end());
    }
  }
  auto index = VectorIndex::Build(dim, options_.index, ids, matrix);
  if (!index.ok()) return index.status();
  matrix = {};
  // Writes went on meanwhile: catch up with them while writers go on, until
  // a round is small or quick; only the batch after it holds writers off.
  // While writers outpace the new index, rounds go on and the old index
  // serves. Changes committed between a round's Position and its
  // ChangesSince are applied again by the next round, which is harmless: a
  // re-added id replaces its row, a removed one is already gone.
  for (;;) {
    if (Stopping()) {
      return absl::CancelledError("closing: rebuild left unfinished");
    }
    const absl::Time round_start = absl::Now();
    auto pending =
        Gather(DocumentStore::ReadOn::kReader, position, embedder.get(), false);
    if (!pending.ok()) return pending.status();
    const size_t changes = pending->removed.size() + pending->ids.size();
    (*index)->Remove(pending->removed);
    if (absl::Status s = (*index)->Add(pending->ids, pending->vectors);
        !s.ok()) {
      return s;
    }
    position = pending->position;
    hold.MoveTo(position.removal);
    if (changes <= kCatchUpUnderLock ||
        absl::Now() - round_start <= kQuickCatchUpRound) {
      break;
    }
  }
  std::lock_guard write_lock(write_mu_);
  auto pending =
      Gather(DocumentStore::ReadOn::kReader, position, embedder.get(), false);
  if (!pending.ok()) return pending.status();
  (*index)->Remove(pending->removed);
  if (absl::Status s = (*index)->Add(pending->ids, pending->vectors); !s.ok()) {
    return s;
  }
  {
    std::unique_lock lock(mu_);
    index_ = *std::move(index);
    ++index_generation_;
    embedder_ = std::move(embedder);
    fitted_on_ = fitted_on;
    built_size_ = index_->size();
    position_ = pending->position;
    live_hold_.MoveTo(position_.removal);
  }
  ++rebuilds_;
  // The whole index is new: the next snapshot should not wait for changes.
  changes_since_snapshot_ += std::max<int64_t>(1, n);
  return absl::OkStatus();
}

absl::StatusOr<Collection::Pending> Collection::Gather(
    DocumentStore::ReadOn on, StorePosition since,
    const HashedNgramEmbedder* embedder, bool stored_vectors) {
  auto position = store_.Position(on);
  if (!position.ok()) return position.status();
  auto changes = store_.ChangesSince(name_, since, on);
  if (!changes.ok()) return changes.status();
  Pending pending;
  pending.position = *position;
  pending.removed = std::move(changes->removed_chunk_ids);
  const int dim = options_.embedding_dim;
  std::vector<std::string> to_embed;
  std::vector<size_t> to_embed_at;
  for (const StoredChunk& chunk : changes->added) {
    pending.ids.push_back(chunk.id);
    if ((stored_vectors || remote_) &&
        static_cast<int>(chunk.embedding.size()) == dim) {
      pending.vectors.insert(pending.vectors.end(), chunk.embedding.begin(),
                             chunk.embedding.end());
    } else {
      to_embed_at.push_back(pending.vectors.size());
      pending.vectors.resize(pending.vectors.size() + dim);
      to_embed.push_back(EmbeddingText(chunk.doc_title, chunk.text));
    }
  }
  auto embedded = EmbedTexts(to_embed, embedder);
  if (!embedded.ok()) return embedded.status();
  for (size_t i = 0; i < to_embed.size(); ++i) {
    std::copy((*embedded)[i].begin(), (*embedded)[i].end(),
              pending.vectors.begin() + to_embed_at[i]);
  }
  return pending;
}

absl::Status Collection::CatchUpLive(bool stored_vectors) {
  StorePosition since;
  std::shared_ptr<const HashedNgramEmbedder> embedder;
  {
    std::shared_lock lock(mu_);
    since = position_;
    embedder = embedder_;
  }
  auto pending = Gather(DocumentStore::ReadOn::kWriter, since, embedder.get(),
                        stored_vectors);
  if (!pending.ok()) return pending.status();
  bool growth_due = false;
  {
    std::unique_lock lock(mu_);
    index_->Remove(pending->removed);
    if (absl::Status s = index_->Add(pending->ids, pending->vectors); !s.ok()) {
      return s;
    }
    position_ = pending->position;
    live_hold_.MoveTo(position_.removal);
    growth_due = index_->GrowthDue();
  }
  changes_since_snapshot_ +=
      static_cast<int64_t>(pending->removed.size() + pending->ids.size());
  if (growth_due) StartGrower();
  return absl::OkStatus();
}

void Collection::StartGrower() {
  std::lock_guard lock(grow_mu_);
  if (growing_) return;
  if (grower_.joinable()) grower_.join();  // Done: it cleared growing_.
  growing_ = true;
  grower_ = std::thread([this] {
    GrowAhead();
    std::lock_guard lock(grow_mu_);
    growing_ = false;
  });
}

void Collection::GrowAhead() {
  const absl::Time start = absl::Now();
  std::unique_ptr<VectorIndex::Growth> growth;
  int64_t generation = 0;
  int64_t rows = 0;
  {
    std::shared_lock lock(mu_);
    growth = index_->StartGrowth();
    generation = index_generation_;
    rows = index_->size() + index_->tombstones();
  }
  if (growth == nullptr) return;
  // Slice by slice under the shared lock: searches go on throughout and a
  // writer waits for one slice at most.
  for (bool more = true; more;) {
    if (Stopping()) return;
    std::shared_lock lock(mu_);
    if (index_generation_ != generation) return;  // Rebuilt meanwhile.
    more = growth->CopySome();
  }
  growth->MoveToHugePages();
  bool grown = false;
  absl::Duration held;
  {
    std::unique_lock lock(mu_);
    const absl::Time locked = absl::Now();
    grown = index_generation_ == generation && growth->Finish();
    held = absl::Now() - locked;
  }
  const int64_t bytes = growth->bytes();
  growth.reset();      // Frees the old arrays, with no lock held.
  if (!grown) return;  // A writer outgrew an array first; the next will do.
  {
    std::lock_guard lock(stats_mu_);
    ++growths_;
    growth_hold_ = held;
  }
  Log(absl::StrFormat(
      "gave the index room ahead of need at %d rows: copied %.1f MiB in %s, "
      "holding index updates for %s",
      rows, bytes / 1048576.0, absl::FormatDuration(absl::Now() - start),
      absl::FormatDuration(held)));
}

absl::StatusOr<int64_t> Collection::Upsert(const Document& document,
                                           const std::string& metadata_json) {
  StoredDocument stored;
  stored.id = document.id;
  stored.title = document.title;
  stored.source = document.id;
  stored.metadata_json = metadata_json;
  stored.chunks = ChunkText(document.text, options_.chunking);
  std::vector<std::string> texts;
  for (const std::string& chunk : stored.chunks) {
    texts.push_back(EmbeddingText(document.title, chunk));
  }
  // Server calls happen before taking the write lock; built-in vectors are
  // made under it, so they match the embedder the index uses.
  if (remote_) {
    auto vectors = EmbedTexts(texts, nullptr);
    if (!vectors.ok()) return vectors.status();
    stored.embeddings = *std::move(vectors);
  }
  std::lock_guard write_lock(write_mu_);
  if (!remote_) {
    std::shared_ptr<const HashedNgramEmbedder> embedder;
    {
      std::shared_lock lock(mu_);
      embedder = embedder_;
    }
    for (const std::string& text : texts) {
      stored.embeddings.push_back(embedder->Embed(text));
    }
  }
  auto version = store_.Upsert(name_, stored);
  if (!version.ok()) return version.status();
  // The store is the truth; bring the index in step with it.
  if (absl::Status s = CatchUpLive(true); !s.ok()) return s;
  return version;
}

absl::Status Collection::Delete(const std::string& doc_id) {
  std::lock_guard write_lock(write_mu_);
  if (absl::Status s = store_.Delete(name_, doc_id); !s.ok()) return s;
  return CatchUpLive(true);
}

absl::StatusOr<int64_t> Collection::DeleteWhere(const std::string& key,
                                                const std::string& value_json) {
  std::lock_guard write_lock(write_mu_);
  auto deleted = store_.DeleteWhere(name_, key, value_json);
  if (!deleted.ok()) return deleted.status();
  if (absl::Status s = CatchUpLive(true); !s.ok()) return s;
  return deleted;
}

absl::Status Collection::SaveSnapshot() {
  if (options_.snapshot_path.empty()) return absl::OkStatus();
  if (absl::Status s = WriteSnapshot(); !s.ok()) return s;
  // The removals before the new snapshot's position no longer need keeping.
  return PruneChangeLog();
}

absl::Status Collection::PruneChangeLog() {
  return store_.PruneChangeLog(name_).status();
}

absl::Status Collection::WriteSnapshot() {
  std::lock_guard snapshot_lock(snapshot_mu_);
  IndexSnapshot snapshot;
  DocumentStore::RemovalHold writing = store_.HoldRemovals(name_);
  int64_t covered = 0;
  absl::Duration copy;
  {
    // The index and its position change together under mu_: holding it
    // shared makes the image and position agree while searches go on and
    // writers commit to the store (they wait only to update the index).
    std::shared_lock lock(mu_);
    const absl::Time start = absl::Now();
    auto image = index_->Serialize();
    copy = absl::Now() - start;
    if (!image.ok()) return image.status();
    snapshot.index_image = *std::move(image);
    snapshot.position = position_;
    writing.MoveTo(position_.removal);
    if (embedder_ != nullptr) snapshot.embedder_weights = embedder_->weights();
    covered = changes_since_snapshot_.exchange(0);
  }
  if (absl::Status s = WriteIndexSnapshot(options_.snapshot_path, snapshot);
      !s.ok()) {
    changes_since_snapshot_ += covered;
    return s;
  }
  snapshot_hold_ = std::move(writing);
  std::lock_guard lock(stats_mu_);
  snapshot_saved_ = true;
  snapshot_position_ = snapshot.position;
  snapshot_time_ = absl::Now();
  snapshot_bytes_ = static_cast<int64_t>(snapshot.index_image.size());
  snapshot_copy_ = copy;
  return absl::OkStatus();
}

bool Collection::RebuildDue() const {
  std::shared_lock lock(mu_);
  const IndexOptions& index = options_.index;
  const int64_t size = index_->size();
  if (index_->tombstones() >= 64 &&
      index_->tombstone_share() >= options_.rebuild_tombstone_share) {
    return true;
  }
  // Grown past what `auto` chose for (with slack, so it does not flap).
  if (index.kind == IndexKind::kAuto && index_->kind() == IndexKind::kFlat &&
      size >= index.auto_exact_below) {
    return true;
  }
  if (index.kind == IndexKind::kAuto && index_->kind() != IndexKind::kFlat &&
      size < index.auto_exact_below / 2) {
    return true;
  }
  const bool ivf = index_->kind() == IndexKind::kIvfFlat ||
                   index_->kind() == IndexKind::kIvfPq;
  if (ivf && size >= 4 * std::max<int64_t>(built_size_, 1)) return true;
  return !remote_ && size >= std::max<int64_t>(64, 2 * fitted_on_);
}

bool Collection::Stopping() {
  std::lock_guard lock(maintenance_mu_);
  return stopping_;
}

void Collection::MaintenanceLoop() {
  absl::Time last_snapshot = absl::Now();
  absl::Time last_prune = absl::Now();
  for (;;) {
    {
      std::unique_lock lock(maintenance_mu_);
      maintenance_cv_.wait_for(lock, std::chrono::seconds(1),
                               [this] { return stopping_; });
      if (stopping_) return;
    }
    if (RebuildDue()) {
      const IndexStats before = Stats();
      const absl::Time start = absl::Now();
      if (absl::Status s = Rebuild(); absl::IsCancelled(s)) {
        Log("background rebuild stopped: the collection is closing");
      } else if (!s.ok()) {
        Log(absl::StrCat("background rebuild failed: ", s.message()));
      } else {
        const IndexStats after = Stats();
        Log(absl::StrFormat(
            "rebuilt the index in the background in %s: %s with %d vectors "
            "and %d tombstones -> %s with %d vectors",
            absl::FormatDuration(absl::Now() - start),
            IndexKindName(before.kind), before.vectors, before.tombstones,
            IndexKindName(after.kind), after.vectors));
      }
    }
    const int64_t changes = changes_since_snapshot_;
    if (!options_.snapshot_path.empty() && changes > 0 &&
        (changes >= options_.snapshot_every_changes ||
         absl::Now() - last_snapshot >= options_.snapshot_interval)) {
      if (absl::Status s = SaveSnapshot(); !s.ok()) Log(s.message());
      last_snapshot = absl::Now();
    }
    if (absl::Now() - last_prune >= kPruneInterval) {
      if (absl::Status s = PruneChangeLog(); !s.ok()) {
        Log(absl::StrCat("pruning the change log failed: ", s.message()));
      }
      last_prune = absl::Now();
    }
  }
}

IndexStats Collection::Stats() const {
  IndexStats stats;
  {
    std::shared_lock lock(mu_);
    stats.kind = index_->kind();
    stats.vectors = index_->size();
    stats.tombstones = index_->tombstones();
    stats.memory_bytes = index_->MemoryBytes();
    stats.position = position_;
  }
  stats.rebuilds = rebuilds_;
  stats.snapshot_path = options_.snapshot_path;
  stats.changes_since_snapshot = changes_since_snapshot_;
  std::lock_guard lock(stats_mu_);
  stats.opened_from = opened_from_;
  stats.snapshot_saved = snapshot_saved_;
  stats.snapshot_position = snapshot_position_;
  stats.snapshot_time = snapshot_time_;
  stats.snapshot_bytes = snapshot_bytes_;
  stats.snapshot_copy = snapshot_copy_;
  stats.growths = growths_;
  stats.growth_hold = growth_hold_;
  return stats;
}

absl::StatusOr<std::vector<Neighbor>> Collection::VectorNeighbors(
    absl::string_view query, int k,
    const std::vector<MetadataFilter>& filters) const {
  std::optional<AllowedIds> allowed;
  if (!filters.empty()) {
    auto ids = store_.ChunkIdsMatching(name_, filters);
    if (!ids.ok()) return ids.status();
    allowed.emplace(*std::move(ids));
    if (allowed->empty()) return std::vector<Neighbor>{};
  }
  std::vector<float> vector;
  if (remote_) {
    auto embedded = Embed(query);
    if (!embedded.ok()) return embedded.status();
    vector = *std::move(embedded);
  }
  absl::StatusOr<std::vector<Neighbor>> found;
  {
    std::shared_lock lock(mu_);
    // The query is embedded like the index's vectors were.
    if (!remote_) vector = embedder_->Embed(query);
    found = index_->Search(vector, k, allowed ? &*allowed : nullptr);
  }
  return found;
}

absl::StatusOr<std::vector<SearchHit>> Collection::VectorSearch(
    absl::string_view query, int k,
    const std::vector<MetadataFilter>& filters) const {
  absl::StatusOr<std::vector<Neighbor>> found =
      VectorNeighbors(query, k, filters);
  if (!found.ok()) return found.status();
  std::vector<int64_t> ids;
  for (const Neighbor& neighbor : *found) ids.push_back(neighbor.id);
  // A chunk deleted since the index search is simply not found here.
  auto chunks = store_.ChunksById(ids);
  if (!chunks.ok()) return chunks.status();
  std::vector<SearchHit> hits;
  for (const StoredChunk& chunk : *chunks) {
    const size_t rank =
        std::find(ids.begin(), ids.end(), chunk.id) - ids.begin();
    hits.push_back({chunk.id, chunk.doc_id, chunk.doc_title, chunk.text,
                    (*found)[rank].score});
  }
  return hits;
}

absl::StatusOr<std::vector<SearchHit>> Collection::Search(
    absl::string_view query, int k, SearchMode mode,
    const std::vector<MetadataFilter>& filters) const {
  if (k < 1) return absl::InvalidArgumentError("k: must be >= 1");
  if (Words(query).empty()) {
    return absl::InvalidArgumentError("query: has no words to search for");
  }
  if (mode == SearchMode::kVector) return VectorSearch(query, k, filters);
  // Hybrid looks deeper into each list than it returns.
  const int depth = mode == SearchMode::kHybrid ? std::max(k * 4, 50) : k;
  auto keyword = store_.KeywordSearch(name_, query, depth, filters);
  if (!keyword.ok()) return keyword.status();
  if (mode == SearchMode::kKeyword) {
    std::vector<SearchHit> hits;
    for (KeywordHit& hit : *keyword) {
      hits.push_back({hit.chunk_id, std::move(hit.doc_id),
                      std::move(hit.doc_title), std::move(hit.text),
                      hit.score});
    }
    return hits;
  }
  // Vector hits are ids and scores only: of `depth`, just the fused top k
  // that keyword search did not return are read from the store.
  auto vector = VectorNeighbors(query, depth, filters);
  if (!vector.ok()) return vector.status();
  std::vector<int64_t> keyword_ids, vector_ids;
  absl::flat_hash_map<int64_t, SearchHit> by_id;
  for (const KeywordHit& hit : *keyword) {
    keyword_ids.push_back(hit.chunk_id);
    by_id[hit.chunk_id] = {hit.chunk_id, hit.doc_id, hit.doc_title, hit.text,
                           0};
  }
  for (const Neighbor& neighbor : *vector) vector_ids.push_back(neighbor.id);
  std::vector<FusedHit> top;
  std::vector<int64_t> to_read;
  for (const FusedHit& fused :
       ReciprocalRankFusion({keyword_ids, vector_ids})) {
    if (static_cast<int>(top.size()) == k) break;
    top.push_back(fused);
    if (!by_id.contains(fused.id)) to_read.push_back(fused.id);
  }
  if (!to_read.empty()) {
    auto chunks = store_.ChunksById(to_read);
    if (!chunks.ok()) return chunks.status();
    for (StoredChunk& chunk : *chunks) {
      by_id[chunk.id] = {chunk.id, std::move(chunk.doc_id),
                         std::move(chunk.doc_title), std::move(chunk.text), 0};
    }
  }
  std::vector<SearchHit> hits;
  for (const FusedHit& fused : top) {
    // A chunk deleted since the index search is simply not found.
    auto it = by_id.find(fused.id);
    if (it == by_id.end()) continue;
    SearchHit hit = it->second;
    hit.score = fused.score;
    hits.push_back(std::move(hit));
  }
  return hits;
}

}  // namespace arbiter::retrieval
