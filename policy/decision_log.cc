#include "policy/decision_log.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/hash/hash.h"
#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/quote.h"

namespace arbiter::policy {
namespace {

// A generation's table starts this big, or as big as the one before it.
constexpr size_t kInitialSlots = 1024;

// An embedding as kept: a float scale, then one signed byte per dimension.
size_t RecordBytes(int dim) { return sizeof(float) + static_cast<size_t>(dim); }

void Quantise(absl::Span<const float> embedding, int8_t* out) {
  float max_abs = 0;
  for (float x : embedding) {
    if (std::isfinite(x)) max_abs = std::max(max_abs, std::fabs(x));
  }
  const float scale = max_abs / 127;
  std::memcpy(out, &scale, sizeof scale);
  int8_t* codes = out + sizeof scale;
  for (size_t i = 0; i < embedding.size(); ++i) {
    const float x = embedding[i];
    codes[i] = scale > 0 && std::isfinite(x)
                   ? static_cast<int8_t>(
                         std::clamp(std::lrint(x / scale), -127L, 127L))
                   : 0;
  }
}

std::vector<float> Dequantise(const int8_t* record, int dim) {
  float scale = 0;
  std::memcpy(&scale, record, sizeof scale);
  const int8_t* codes = record + sizeof scale;
  std::vector<float> embedding(dim);
  for (int i = 0; i < dim; ++i) embedding[i] = codes[i] * scale;
  return embedding;
}

uint64_t RandomSalt() {
  std::random_device device;
  return uint64_t{device()} << 32 | device();
}

}  // namespace

// One generation: an open-addressing table (linear probing) of the requests
// it filed, and their embeddings in blocks. Nothing is ever erased from it
// alone, so it needs no tombstones: the log drops generations whole.
class DecisionLog::Generation final {
 public:
  struct Slot {
    uint64_t key = 0;        // 0: empty.
    uint32_t embedding = 0;  // 1 + index of its embedding, or 0.
    uint32_t feedback = 0;   // 1 once feedback came.
  };

  // `budget`: the bytes it may take.
  Generation(size_t slots, int dim, size_t records_per_block, size_t budget)
      : dim_(dim),
        records_per_block_(records_per_block),
        budget_(budget),
        slots_(std::max<size_t>(slots, 8)) {
    if (dim > 0) blocks_.reserve(budget / BlockBytes() + 1);
  }

  [[nodiscard]] size_t size() const { return used_; }
  [[nodiscard]] size_t capacity() const { return slots_.size(); }
  [[nodiscard]] size_t bytes() const {
    return sizeof(*this) + slots_.capacity() * sizeof(Slot) +
           blocks_.capacity() * sizeof(blocks_[0]) +
           blocks_.size() * BlockBytes();
  }

  // Whether one more request fits in the budget, growing the table or
  // adding a block of embeddings if it must.
  [[nodiscard]] bool MakeRoom(bool with_embedding) {
    if (bytes() > budget_) return false;
    // Past three quarters full, probes get long.
    if ((used_ + 1) * 4 > slots_.size() * 3) {
      const size_t others = bytes() - slots_.capacity() * sizeof(Slot);
      const size_t affordable = (budget_ - others) / sizeof(Slot);
      const size_t grown = std::min(slots_.size() * 2, affordable);
      if ((used_ + 1) * 4 > grown * 3) return false;
      Rehash(grown);
    }
    if (with_embedding && records_ == blocks_.size() * records_per_block_) {
      if (blocks_.size() == blocks_.capacity() ||
          bytes() + BlockBytes() > budget_) {
        return false;
      }
      blocks_.push_back(std::unique_ptr<int8_t[]>(new int8_t[BlockBytes()]));
    }
    return true;
  }

  // After MakeRoom said yes.
  void Insert(uint64_t key, absl::Span<const float> embedding) {
    Slot& slot = slots_[FindSlot(key)];
    slot.key = key;
    ++used_;
    if (embedding.empty()) return;
    const size_t record = records_++;
    Quantise(embedding, RecordAt(record));
    slot.embedding = static_cast<uint32_t>(record + 1);
  }

  // The request's slot, or null.
  [[nodiscard]] Slot* Find(uint64_t key) {
    Slot& slot = slots_[FindSlot(key)];
    return slot.key == key ? &slot : nullptr;
  }

  [[nodiscard]] std::vector<float> EmbeddingOf(const Slot& slot) {
    if (slot.embedding == 0) return {};
    return Dequantise(RecordAt(slot.embedding - 1), dim_);
  }

 private:
  [[nodiscard]] size_t BlockBytes() const {
    return records_per_block_ * RecordBytes(dim_);
  }
  [[nodiscard]] int8_t* RecordAt(size_t record) {
    return blocks_[record / records_per_block_].get() +
           (record % records_per_block_) * RecordBytes(dim_);
  }
  // Where `key` is, or the empty slot where it would go.
  [[nodiscard]] size_t FindSlot(uint64_t key) const {
    // The key's high bits pick the home slot, for any table size.
    size_t i = static_cast<size_t>(
        absl::Uint128High64(absl::uint128(key) * slots_.size()));
    while (slots_[i].key != key && slots_[i].key != 0) {
      if (++i == slots_.size()) i = 0;
    }
    return i;
  }
  void Rehash(size_t slots) {
    std::vector<Slot> old(slots);
    old.swap(slots_);
    for (const Slot& slot : old) {
      if (slot.key != 0) slots_[FindSlot(slot.key)] = slot;
    }
  }

  const int dim_;
  const size_t records_per_block_;
  const size_t budget_;
  std::vector<Slot> slots_;
  size_t used_ = 0;
  std::vector<std::unique_ptr<int8_t[]>> blocks_;
  size_t records_ = 0;
};

DecisionLog::DecisionLog(Options options)
    : options_(options),
      generation_bytes_(options.max_bytes / kGenerations),
      // Blocks of at most 256 embeddings, eight or more to a generation.
      records_per_block_(std::clamp<size_t>(
          generation_bytes_ /
              (8 * RecordBytes(std::max(options.embedding_dim, 0))),
          1, 256)),
      salt_(RandomSalt()) {
  generations_.reserve(kGenerations);
}

DecisionLog::~DecisionLog() = default;

uint64_t DecisionLog::KeyOf(absl::string_view request_id) const {
  const uint64_t key = absl::HashOf(salt_, request_id);
  return key == 0 ? 1 : key;  // 0 marks an empty slot.
}

void DecisionLog::Record(absl::string_view request_id,
                         absl::Span<const float> embedding) {
  if (generation_bytes_ == 0) return;
  const bool with_embedding =
      options_.embedding_dim > 0 &&
      embedding.size() == static_cast<size_t>(options_.embedding_dim);
  if (!with_embedding) embedding = {};
  const uint64_t key = KeyOf(request_id);
  std::lock_guard lock(mu_);
  if (!generations_.empty() && generations_.back()->Find(key) != nullptr) {
    return;
  }
  if (generations_.empty() || !generations_.back()->MakeRoom(with_embedding)) {
    if (generations_.size() == kGenerations) {
      generations_.erase(generations_.begin());  // Forgets the oldest.
    }
    // Sized for as many requests as the last one took (the traffic's mix
    // rarely changes), or small if that leaves no room for this one.
    const size_t small = std::min(
        kInitialSlots, generation_bytes_ / (4 * sizeof(Generation::Slot)));
    const size_t sized = generations_.empty()
                             ? small
                             : (generations_.back()->size() * 4 + 2) / 3;
    for (size_t slots : {sized, small}) {
      auto fresh = std::make_unique<Generation>(
          slots, options_.embedding_dim, records_per_block_, generation_bytes_);
      if (fresh->MakeRoom(with_embedding)) {
        generations_.push_back(std::move(fresh));
        break;
      }
    }
    // A budget too small for a single request keeps nothing.
    if (generations_.empty() || generations_.back()->size() != 0) return;
  }
  generations_.back()->Insert(key, embedding);
}

absl::StatusOr<std::vector<float>> DecisionLog::TakeFeedback(
    absl::string_view request_id) {
  const uint64_t key = KeyOf(request_id);
  std::lock_guard lock(mu_);
  for (auto it = generations_.rbegin(); it != generations_.rend(); ++it) {
    Generation::Slot* slot = (*it)->Find(key);
    if (slot == nullptr) continue;
    if (slot->feedback != 0) {
      return absl::AlreadyExistsError(absl::StrCat("request_id: feedback for ",
                                                   QuoteInput(request_id),
                                                   " was already recorded"));
    }
    slot->feedback = 1;
    return (*it)->EmbeddingOf(*slot);
  }
  return absl::NotFoundError(absl::StrCat(
      "request_id: no decision recorded for ", QuoteInput(request_id)));
}

size_t DecisionLog::size() const {
  std::lock_guard lock(mu_);
  size_t size = 0;
  for (const auto& generation : generations_) size += generation->size();
  return size;
}

size_t DecisionLog::bytes() const {
  std::lock_guard lock(mu_);
  size_t bytes = 0;
  for (const auto& generation : generations_) bytes += generation->bytes();
  return bytes;
}

}  // namespace arbiter::policy
