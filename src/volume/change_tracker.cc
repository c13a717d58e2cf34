#include "continuum/volume/change_tracker.h"

#include <dirent.h>
#include <unistd.h>

#include <cctype>
#include <cstddef>
#include <cstring>

#include "continuum/common/checksum.h"
#include "continuum/io/file.h"

namespace continuum::volume {
namespace {

constexpr uint32_t kMagic = 0x54424343;  // "CCBT"
constexpr uint32_t kVersion = 1;

#pragma pack(push, 1)
struct BitmapHeader {
  uint32_t magic;
  uint32_t version;
  uint32_t granularity;
  uint32_t reserved;
  uint64_t nbits;
  uint64_t base_seq;
  uint64_t covered_seq;
  uint64_t bits_checksum;    // XXH3-64 of the bit words
  uint64_t header_checksum;  // XXH3-64 of the bytes before this field
};
#pragma pack(pop)
static_assert(sizeof(BitmapHeader) == 56);

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return name[0] != '.';
}

}  // namespace

std::string ChangeTracker::PathOf(const std::string& name) const { return dir_ + "/" + name + ".cbt"; }

Result<std::unique_ptr<ChangeTracker>> ChangeTracker::Open(const std::string& dir, uint64_t volume_size,
                                                           uint32_t granularity) {
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(dir, 0700));
  std::unique_ptr<ChangeTracker> t(new ChangeTracker(dir, volume_size, granularity));
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return PosixError("open bitmap directory " + dir, errno);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 4 && n.compare(n.size() - 4, 4, ".cbt") == 0) names.push_back(n.substr(0, n.size() - 4));
  }
  ::closedir(d);
  for (const auto& n : names) {
    const std::string path = t->PathOf(n);
    auto bm = t->Load(path);
    if (!bm.ok() && bm.status().code() == StatusCode::kDataLoss) {
      // Availability first, and nothing missed: every region changed since seq 0.
      const std::string aside = path + ".damaged";
      if (::rename(path.c_str(), aside.c_str()) != 0) return PosixError("set aside " + path, errno);
      Bitmap all;
      all.words.assign((t->Bits() + 63) / 64, ~uint64_t{0});
      if (t->Bits() % 64 != 0) all.words.back() = (uint64_t{1} << (t->Bits() % 64)) - 1;
      CONTINUUM_RETURN_IF_ERROR(t->SaveOne(n, &all, 0));
      t->open_events_.push_back(
          {"bitmap_damaged", bm.status().message() + "; kept as " + aside + ", and bitmap " + n +
                                 " now marks the whole volume changed (its next incremental pass reads everything)"});
      t->bitmaps_[n] = std::move(all);
      continue;
    }
    if (!bm.ok()) return bm.status();
    bm->dirty = false;
    t->bitmaps_[n] = std::move(bm).value();
  }
  return t;
}

Result<ChangeTracker::Bitmap> ChangeTracker::Load(const std::string& path) const {
  CONTINUUM_ASSIGN_OR_RETURN(std::string data, io::ReadFileToString(path));
  BitmapHeader h;
  if (data.size() < sizeof(h)) return DataLoss("changed-block bitmap " + path + " is truncated");
  std::memcpy(&h, data.data(), sizeof(h));
  if (h.magic != kMagic || h.version != kVersion ||
      h.header_checksum != Checksum64(&h, offsetof(BitmapHeader, header_checksum))) {
    return DataLoss("changed-block bitmap " + path + " has a bad header");
  }
  if (h.granularity != granularity_ || h.nbits != Bits()) {
    return DataLoss("changed-block bitmap " + path + " does not match the volume geometry");
  }
  size_t words = (h.nbits + 63) / 64;
  if (data.size() != sizeof(h) + words * 8) return DataLoss("changed-block bitmap " + path + " is truncated");
  if (Checksum64(data.data() + sizeof(h), words * 8) != h.bits_checksum) {
    return DataLoss("changed-block bitmap " + path + " fails its checksum");
  }
  Bitmap bm;
  bm.base_seq = h.base_seq;
  bm.covered_seq = h.covered_seq;
  bm.words.resize(words);
  std::memcpy(bm.words.data(), data.data() + sizeof(h), words * 8);
  return bm;
}

void ChangeTracker::Mark(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  uint64_t first = offset / granularity_;
  uint64_t last = (offset + length - 1) / granularity_;
  std::lock_guard lock(mu_);
  for (auto& [name, bm] : bitmaps_) {
    for (uint64_t b = first; b <= last && b / 64 < bm.words.size(); ++b) {
      bm.words[b / 64] |= 1ull << (b % 64);
    }
    bm.dirty = true;
  }
}

Status ChangeTracker::SaveOne(const std::string& name, Bitmap* bm, uint64_t covered_seq) {
  BitmapHeader h{};
  h.magic = kMagic;
  h.version = kVersion;
  h.granularity = granularity_;
  h.nbits = Bits();
  h.base_seq = bm->base_seq;
  h.covered_seq = covered_seq;
  h.bits_checksum = Checksum64(bm->words.data(), bm->words.size() * 8);
  h.header_checksum = Checksum64(&h, offsetof(BitmapHeader, header_checksum));
  std::string out(sizeof(h) + bm->words.size() * 8, '\0');
  std::memcpy(out.data(), &h, sizeof(h));
  std::memcpy(out.data() + sizeof(h), bm->words.data(), bm->words.size() * 8);
  CONTINUUM_RETURN_IF_ERROR(io::WriteFileAtomic(PathOf(name), out));
  bm->covered_seq = covered_seq;
  bm->dirty = false;
  return Status::Ok();
}

Status ChangeTracker::Save(uint64_t covered_seq) {
  std::lock_guard lock(mu_);
  for (auto& [name, bm] : bitmaps_) {
    if (!bm.dirty && bm.covered_seq == covered_seq) continue;
    CONTINUUM_RETURN_IF_ERROR(SaveOne(name, &bm, covered_seq));
  }
  return Status::Ok();
}

Status ChangeTracker::Create(const std::string& base, uint64_t seq) {
  if (!ValidName(base)) {
    return InvalidArgument("invalid bitmap name '" + base + "': use letters, digits, '-', '_' and '.'");
  }
  std::lock_guard lock(mu_);
  Bitmap bm;
  bm.base_seq = seq;
  bm.words.assign((Bits() + 63) / 64, 0);
  CONTINUUM_RETURN_IF_ERROR(SaveOne(base, &bm, seq));
  bitmaps_[base] = std::move(bm);
  return Status::Ok();
}

Result<uint64_t> ChangeTracker::Create(const std::string& base, const std::function<uint64_t()>& seq_now) {
  if (!ValidName(base)) {
    return InvalidArgument("invalid bitmap name '" + base + "': use letters, digits, '-', '_' and '.'");
  }
  {
    std::lock_guard lock(mu_);
    Bitmap bm;
    bm.base_seq = UINT64_MAX;
    bm.words.assign((Bits() + 63) / 64, 0);
    bitmaps_[base] = std::move(bm);
  }
  // Not under mu_: seq_now takes the volume's lock, and Mark runs outside it.
  const uint64_t seq = seq_now();
  std::lock_guard lock(mu_);
  auto it = bitmaps_.find(base);
  if (it == bitmaps_.end()) return FailedPrecondition("changed-block bitmap '" + base + "' was removed while being created");
  it->second.base_seq = seq;
  CONTINUUM_RETURN_IF_ERROR(SaveOne(base, &it->second, seq));
  return seq;
}

Status ChangeTracker::Remove(const std::string& base) {
  std::lock_guard lock(mu_);
  if (bitmaps_.erase(base) == 0) return NotFound("no changed-block bitmap '" + base + "'");
  if (::unlink(PathOf(base).c_str()) != 0) return PosixError("remove " + PathOf(base), errno);
  return io::SyncDir(dir_);
}

Result<std::vector<ChangedExtent>> ChangeTracker::Changes(const std::string& base) const {
  std::lock_guard lock(mu_);
  auto it = bitmaps_.find(base);
  if (it == bitmaps_.end()) return NotFound("no changed-block bitmap '" + base + "'");
  std::vector<ChangedExtent> out;
  uint64_t nbits = Bits();
  for (uint64_t b = 0; b < nbits; ++b) {
    if (!(it->second.words[b / 64] >> (b % 64) & 1)) {
      if ((b % 64) == 0 && it->second.words[b / 64] == 0) b += 63;
      continue;
    }
    uint64_t off = b * granularity_;
    uint64_t len = std::min<uint64_t>(granularity_, volume_size_ - off);
    if (!out.empty() && out.back().offset + out.back().length == off) {
      out.back().length += len;
    } else {
      out.push_back({off, len});
    }
  }
  return out;
}

std::vector<ChangeTracker::Info> ChangeTracker::List() const {
  std::lock_guard lock(mu_);
  std::vector<Info> out;
  for (const auto& [name, bm] : bitmaps_) {
    uint64_t bits = 0;
    for (uint64_t w : bm.words) bits += static_cast<uint64_t>(__builtin_popcountll(w));
    out.push_back({name, bm.base_seq, bm.covered_seq, bits * granularity_});
  }
  return out;
}

}  // namespace continuum::volume
