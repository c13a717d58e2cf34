#pragma once

#include <functional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/manifest.h"
#include "repo/master_index.h"

namespace continuum::repo {

using BlobSet = std::unordered_set<BlobId, BlobIdHash>;

// What one point needs, found by following tree refs from its roots.
struct WalkResult {
  std::vector<BlobId> blobs;    // every reachable blob that is indexed, roots included
  std::vector<BlobId> missing;  // referenced, in no index
  std::vector<BlobId> damaged;  // indexed, but known damaged or an unreadable tree
  std::string first_problem;    // for messages
};

// Walks the blob graph of manifests. Trees are read once and their refs cached,
// so walking many points that share trees costs one read per tree.
// Thread-safety: none.
class BlobWalker {
 public:
  using TreeReader = std::function<Result<Tree>(const BlobId&)>;
  // `damaged` (may be null) holds blobs already known unreadable (from a data check).
  BlobWalker(const MasterIndex* index, TreeReader read_tree, const BlobSet* damaged);

  WalkResult Walk(const std::vector<BlobId>& roots);

 private:
  const MasterIndex* index_;
  TreeReader read_tree_;
  const BlobSet* damaged_;
  std::unordered_map<BlobId, std::vector<BlobId>, BlobIdHash> refs_;  // readable trees
  std::unordered_map<BlobId, std::string, BlobIdHash> bad_trees_;     // tree -> why unreadable
};

}  // namespace continuum::repo
