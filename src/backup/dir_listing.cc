#include "dir_listing.h"

#include <algorithm>
#include <cstring>
#include <string_view>

namespace continuum::backup {
namespace {

// The listing is CBOR (RFC 8949), docs/format/repository.md "Directory trees":
// {"e": [entry...], "v": 1}, each entry a map with the short keys below, keys
// in bytewise order (the order the first versions, written with nlohmann::json,
// produced: encoding the same directory gives the same bytes, so the same tree
// id, across versions). Written and read here by hand: a backup of many small
// directories spent a fifth of its time building and freeing JSON documents.
//
// Keys: n name, t type, m mode, u uid, g gid, mt/ct times (ns), s size,
// i inode, l nlink, r rdev, lt symlink target, c chunks, d subtree, x xattrs
// (name -> bytes), h hard-link group.
constexpr const char* kTypeNames[] = {"f", "d", "l", "c", "b", "p", "s"};

enum Major : uint8_t { kUnsigned = 0, kNegative = 1, kBytes = 2, kText = 3, kArray = 4, kMap = 5, kTag = 6, kSimple = 7 };

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>* out) : out_(*out) {}

  void Head(Major major, uint64_t n) {
    const uint8_t m = static_cast<uint8_t>(major << 5);
    if (n <= 23) {
      out_.push_back(static_cast<uint8_t>(m | n));
    } else if (n <= 0xff) {
      out_.push_back(m | 24);
      out_.push_back(static_cast<uint8_t>(n));
    } else if (n <= 0xffff) {
      out_.push_back(m | 25);
      Be(n, 2);
    } else if (n <= 0xffffffffull) {
      out_.push_back(m | 26);
      Be(n, 4);
    } else {
      out_.push_back(m | 27);
      Be(n, 8);
    }
  }
  void Uint(uint64_t v) { Head(kUnsigned, v); }
  void Int(int64_t v) {
    if (v >= 0) {
      Head(kUnsigned, static_cast<uint64_t>(v));
    } else {
      Head(kNegative, static_cast<uint64_t>(-1 - v));
    }
  }
  void Text(std::string_view s) {
    Head(kText, s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void Bytes(const std::vector<uint8_t>& b) {
    Head(kBytes, b.size());
    out_.insert(out_.end(), b.begin(), b.end());
  }
  // A map entry: its key, then its value.
  void Uint(std::string_view key, uint64_t v) {
    Text(key);
    Uint(v);
  }
  void Int(std::string_view key, int64_t v) {
    Text(key);
    Int(v);
  }
  void Text(std::string_view key, std::string_view v) {
    Text(key);
    Text(v);
  }

 private:
  void Be(uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t>& out_;
};

// A bounds-checked reader of the subset of CBOR the listing uses: definite
// lengths only (the writer never produces others). Every failure is `false`,
// turned into kDataLoss by the caller; nothing here can read out of bounds,
// recurse without limit or allocate more than the input's size.
class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& in) : p_(in.data()), end_(in.data() + in.size()) {}

  bool AtEnd() const { return p_ == end_; }

  bool Head(uint8_t* major, uint64_t* n) {
    if (p_ == end_) return false;
    const uint8_t b = *p_++;
    *major = b >> 5;
    const uint8_t info = b & 31;
    if (info <= 23) {
      *n = info;
      return true;
    }
    int bytes = info == 24 ? 1 : info == 25 ? 2 : info == 26 ? 4 : info == 27 ? 8 : 0;
    if (bytes == 0 || end_ - p_ < bytes) return false;  // indefinite lengths and reserved values
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | *p_++;
    *n = v;
    return true;
  }
  bool Expect(Major major, uint64_t* n) {
    uint8_t m;
    return Head(&m, n) && m == major;
  }
  bool Uint(uint64_t* v) { return Expect(kUnsigned, v); }
  bool Int(int64_t* v) {
    uint8_t m;
    uint64_t n;
    if (!Head(&m, &n) || n > static_cast<uint64_t>(INT64_MAX)) return false;
    if (m == kUnsigned) {
      *v = static_cast<int64_t>(n);
      return true;
    }
    if (m == kNegative) {
      *v = -1 - static_cast<int64_t>(n);
      return true;
    }
    return false;
  }
  bool U32(uint32_t* v) {
    uint64_t n;
    if (!Uint(&n) || n > UINT32_MAX) return false;
    *v = static_cast<uint32_t>(n);
    return true;
  }
  bool Text(std::string_view* s) { return Str(kText, s); }
  bool Bytes(std::string_view* s) { return Str(kBytes, s); }
  // Skips one item of any type (unknown keys' values), nested at most `depth`.
  bool Skip(int depth = 16) {
    uint8_t m;
    uint64_t n;
    if (depth == 0 || !Head(&m, &n)) return false;
    switch (m) {
      case kUnsigned:
      case kNegative:
      case kSimple:  // simple values and floats: the head carried their bytes
        return true;
      case kBytes:
      case kText:
        if (n > Left()) return false;
        p_ += n;
        return true;
      case kArray:
      case kMap: {
        if (n > Left()) return false;  // every item takes at least a byte
        const uint64_t items = m == kMap ? 2 * n : n;
        for (uint64_t i = 0; i < items; ++i) {
          if (!Skip(depth - 1)) return false;
        }
        return true;
      }
      case kTag:
        return Skip(depth - 1);
    }
    return false;
  }
  uint64_t Left() const { return static_cast<uint64_t>(end_ - p_); }

 private:
  bool Str(Major major, std::string_view* s) {
    uint64_t n;
    if (!Expect(major, &n) || n > Left()) return false;
    *s = std::string_view(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }
  const uint8_t* p_;
  const uint8_t* end_;
};

Result<EntryType> TypeFromName(std::string_view s) {
  for (size_t i = 0; i < std::size(kTypeNames); ++i) {
    if (s == kTypeNames[i]) return static_cast<EntryType>(i);
  }
  return DataLoss("unknown entry type '" + std::string(s) + "'");
}

void EncodeEntry(const DirEntry& e, Writer& w) {
  const bool file = e.type == EntryType::kFile;
  const bool dir = e.type == EntryType::kDir;
  const bool link = e.type == EntryType::kSymlink;
  // n t m u g mt ct s i l, then the optional ones.
  uint64_t keys = 10 + (e.rdev != 0) + link + file + dir + !e.xattrs.empty() + (e.hardlink_group != 0);
  w.Head(kMap, keys);
  if (file) {
    w.Text("c");
    w.Head(kArray, e.chunks.size());
    for (int64_t c : e.chunks) w.Int(c);
  }
  w.Int("ct", e.ctime_ns);
  if (dir) w.Int("d", e.subtree);
  w.Uint("g", e.gid);
  if (e.hardlink_group) w.Uint("h", e.hardlink_group);
  w.Uint("i", e.inode);
  w.Uint("l", e.nlink);
  if (link) w.Text("lt", e.link_target);
  w.Uint("m", e.mode);
  w.Int("mt", e.mtime_ns);
  w.Text("n", e.name);
  if (e.rdev) w.Uint("r", e.rdev);
  w.Uint("s", e.size);
  w.Text("t", kTypeNames[static_cast<int>(e.type)]);
  w.Uint("u", e.uid);
  if (!e.xattrs.empty()) {
    w.Text("x");
    w.Head(kMap, e.xattrs.size());
    for (const auto& [k, v] : e.xattrs) {  // std::map: bytewise key order
      w.Text(k);
      w.Bytes(v);
    }
  }
}

// One entry; `why` says what was wrong (the caller adds where).
bool DecodeEntry(Reader& r, size_t ref_count, DirEntry* e, std::string* why) {
  uint64_t keys;
  if (!r.Expect(kMap, &keys) || keys > r.Left()) return (*why = "entry is not a map", false);
  bool have_n = false, have_t = false, have_m = false, have_u = false, have_g = false;
  bool have_c = false, have_d = false, have_lt = false;
  std::string_view type_name;
  for (uint64_t k = 0; k < keys; ++k) {
    std::string_view key;
    if (!r.Text(&key)) return (*why = "entry key is not a string", false);
    bool ok = true;
    std::string_view sv;
    if (key == "n") {
      ok = r.Text(&sv);
      e->name.assign(sv);
      have_n = true;
    } else if (key == "t") {
      ok = r.Text(&type_name);
      have_t = true;
    } else if (key == "m") {
      ok = r.U32(&e->mode);
      e->mode &= 07777;
      have_m = true;
    } else if (key == "u") {
      ok = r.U32(&e->uid);
      have_u = true;
    } else if (key == "g") {
      ok = r.U32(&e->gid);
      have_g = true;
    } else if (key == "mt") {
      ok = r.Int(&e->mtime_ns);
    } else if (key == "ct") {
      ok = r.Int(&e->ctime_ns);
    } else if (key == "s") {
      ok = r.Uint(&e->size);
    } else if (key == "i") {
      ok = r.Uint(&e->inode);
    } else if (key == "l") {
      ok = r.Uint(&e->nlink);
    } else if (key == "r") {
      ok = r.Uint(&e->rdev);
    } else if (key == "h") {
      ok = r.Uint(&e->hardlink_group);
    } else if (key == "lt") {
      ok = r.Text(&sv);
      e->link_target.assign(sv);
      have_lt = true;
    } else if (key == "d") {
      ok = r.Int(&e->subtree);
      have_d = true;
    } else if (key == "c") {
      uint64_t n;
      ok = r.Expect(kArray, &n) && n <= r.Left();
      if (ok) e->chunks.resize(n);
      for (uint64_t i = 0; ok && i < n; ++i) {
        ok = r.Int(&e->chunks[i]) && e->chunks[i] < static_cast<int64_t>(ref_count);
        if (!ok) *why = "ref out of range or not a number";
      }
      have_c = true;
    } else if (key == "x") {
      uint64_t n;
      ok = r.Expect(kMap, &n) && n <= r.Left();
      for (uint64_t i = 0; ok && i < n; ++i) {
        std::string_view name, value;
        ok = r.Text(&name) && r.Bytes(&value);
        if (ok) e->xattrs[std::string(name)].assign(value.begin(), value.end());
      }
      if (!ok && why->empty()) *why = "bad xattr";
    } else {
      ok = r.Skip();  // a newer writer's field: ignored, as before
    }
    if (!ok) {
      if (why->empty()) *why = "field '" + std::string(key) + "' has the wrong type";
      return false;
    }
  }
  if (!have_n || !have_t || !have_m || !have_u || !have_g) return (*why = "entry lacks a required field", false);
  auto type = TypeFromName(type_name);
  if (!type.ok()) return (*why = type.status().message(), false);
  e->type = *type;
  if (e->type == EntryType::kSymlink && !have_lt) return (*why = "symlink without a target", false);
  if (e->type == EntryType::kFile && !have_c) return (*why = "file without content list", false);
  if (e->type != EntryType::kFile && have_c) return (*why = "has content but is not a file", false);
  if (e->type == EntryType::kDir && (!have_d || e->subtree < 0 || e->subtree >= static_cast<int64_t>(ref_count))) {
    return (*why = "directory has no valid subtree", false);
  }
  return true;
}

}  // namespace

bool IsSafeEntryName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos && name.size() <= 255;
}

std::vector<uint8_t> EncodeDirListing(const std::vector<DirEntry>& entries) {
  std::vector<uint8_t> out;
  out.reserve(16 + entries.size() * 96);
  Writer w(&out);
  w.Head(kMap, 2);
  w.Text("e");
  w.Head(kArray, entries.size());
  for (const auto& e : entries) EncodeEntry(e, w);
  w.Uint("v", 1);
  return out;
}

Result<std::vector<DirEntry>> DecodeDirListing(const std::vector<uint8_t>& payload, size_t ref_count,
                                               const std::string& what) {
  const auto bad = [&]() { return DataLoss(what + ": not a directory listing"); };
  Reader r(payload);
  uint64_t keys;
  if (!r.Expect(kMap, &keys) || keys > r.Left()) return bad();
  bool have_v = false, have_e = false;
  std::vector<DirEntry> out;
  for (uint64_t k = 0; k < keys; ++k) {
    std::string_view key;
    if (!r.Text(&key)) return bad();
    if (key == "v") {
      uint64_t v;
      if (!r.Uint(&v) || v != 1) return bad();
      have_v = true;
    } else if (key == "e") {
      uint64_t n;
      if (have_e || !r.Expect(kArray, &n) || n > r.Left()) return bad();
      have_e = true;
      out.resize(n);
      for (uint64_t i = 0; i < n; ++i) {
        std::string why;
        if (!DecodeEntry(r, ref_count, &out[i], &why)) {
          const std::string who = out[i].name.empty() ? "entry " + std::to_string(i) : "entry '" + out[i].name + "'";
          return DataLoss(what + ": bad directory listing: " + who + ": " + why);
        }
        if (!IsSafeEntryName(out[i].name)) return DataLoss(what + ": unsafe entry name '" + out[i].name + "'");
      }
    } else if (!r.Skip()) {
      return bad();
    }
  }
  if (!have_v || !have_e || !r.AtEnd()) return bad();
  // Names are unique (written sorted, but a crafted listing need not be).
  std::vector<std::string_view> names;
  names.reserve(out.size());
  for (const auto& e : out) names.push_back(e.name);
  std::sort(names.begin(), names.end());
  auto dup = std::adjacent_find(names.begin(), names.end());
  if (dup != names.end()) return DataLoss(what + ": duplicate entry name '" + std::string(*dup) + "'");
  return out;
}

}  // namespace continuum::backup
