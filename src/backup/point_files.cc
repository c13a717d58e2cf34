#include "continuum/backup/point_files.h"

#include <algorithm>

#include "dir_listing.h"

#include "point_util.h"

namespace continuum::backup {
namespace {

constexpr const char* kTypeNames[] = {"file", "dir", "symlink", "chardev", "blockdev", "fifo", "socket"};
constexpr int kMaxDepth = 4096;  // a crafted tree cannot recurse without bound

class Lister {
 public:
  explicit Lister(repo::Repository& repo) : repo_(repo) {}

  Result<std::vector<DirEntry>> Read(const repo::BlobId& tree_id, repo::Tree* tree) {
    std::string what = "directory tree " + tree_id.Hex();
    CONTINUUM_ASSIGN_OR_RETURN(*tree, repo_.GetTree(tree_id));
    return DecodeDirListing(tree->payload, tree->refs.size(), what);
  }

  Status Walk(const repo::BlobId& tree_id, const std::string& prefix, int depth) {
    if (depth > kMaxDepth) return DataLoss("directory tree " + tree_id.Hex() + " is nested too deeply");
    repo::Tree tree;
    CONTINUUM_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, Read(tree_id, &tree));
    for (const auto& e : entries) {
      std::string path = prefix.empty() ? e.name : prefix + "/" + e.name;
      Add(e, path);
      if (e.type == EntryType::kDir) CONTINUUM_RETURN_IF_ERROR(Walk(tree.refs[e.subtree], path, depth + 1));
    }
    return Status::Ok();
  }

  void Add(const DirEntry& e, const std::string& path) {
    out.push_back({.path = path,
                   .type = kTypeNames[static_cast<int>(e.type)],
                   .mode = e.mode,
                   .uid = e.uid,
                   .gid = e.gid,
                   .size = e.size,
                   .mtime_ns = e.mtime_ns,
                   .link_target = e.link_target});
  }

  std::vector<FileEntry> out;

 private:
  repo::Repository& repo_;
};

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i && path.compare(i, j - i, ".") != 0) parts.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

}  // namespace

Result<std::vector<FileEntry>> ListFiles(repo::Repository& repo, const PointInfo& point, const std::string& path) {
  if (point.type != PointType::kPath) {
    // Image points are listed by ListImageFiles (their filesystem, mounted).
    return FailedPrecondition("point " + point.id.Hex().substr(0, 12) + " is an image point, not a path point");
  }
  CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId root, PointRoot(repo, point));
  Lister lister(repo);
  repo::BlobId dir = root;
  std::string prefix;
  std::vector<std::string> parts = SplitPath(path);
  for (size_t i = 0; i < parts.size(); ++i) {
    repo::Tree tree;
    CONTINUUM_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, lister.Read(dir, &tree));
    auto it = std::find_if(entries.begin(), entries.end(), [&](const DirEntry& e) { return e.name == parts[i]; });
    if (it == entries.end()) return NotFound("no '" + path + "' in point " + point.id.Hex().substr(0, 12));
    prefix = prefix.empty() ? it->name : prefix + "/" + it->name;
    if (it->type != EntryType::kDir) {
      if (i + 1 != parts.size()) return NotFound("no '" + path + "' in point " + point.id.Hex().substr(0, 12));
      lister.Add(*it, prefix);
      return std::move(lister.out);
    }
    if (i + 1 == parts.size()) lister.Add(*it, prefix);  // the directory itself, then its contents
    dir = tree.refs[it->subtree];
  }
  CONTINUUM_RETURN_IF_ERROR(lister.Walk(dir, prefix, 0));
  return std::move(lister.out);
}

}  // namespace continuum::backup
